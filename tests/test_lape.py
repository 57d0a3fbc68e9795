"""Tests for langsub.lape: parity with the published LAPE algorithm, maths, I/O."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from langsub.neurons.masks import load_activation_stats, load_neurons, neurons_to_json
from langsub.neurons.lape import (
    auto_rho,
    lape_entropy,
    select_neurons,
    select_random,
    select_random_global,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared/reference"
LLAMA_LANGS = ["en", "zh", "fr", "es", "vi", "id", "ja"]
LLAMA_COUNTS = [95, 583, 1022, 838, 836, 1068, 582]
MISTRAL_COUNTS = [76, 1190, 919, 838, 1554, 1445]


# --------------------------------------------------------------------------- reference


def _group(merged_index, lang, indice, num_layers, num_langs):
    """The original's per-language grouping loop, with bincount fixed to cover all languages."""
    final_indice = []
    for index in indice.split(torch.bincount(lang, minlength=num_langs).tolist()):
        lang_index = [tuple(row.tolist()) for row in merged_index[index]]
        lang_index.sort()
        layer_index = [[] for _ in range(num_layers)]
        for l, h in lang_index:
            layer_index[l].append(h)
        for l, h in enumerate(layer_index):
            layer_index[l] = torch.tensor(h).long()
        final_indice.append(layer_index)
    return final_indice


def _reference_probs(over_zero, n, filter_rate):
    """Published code up to the inf-filtered entropy and thresholds."""
    activation_probs = over_zero / n
    normed_activation_probs = activation_probs / activation_probs.sum(dim=-1, keepdim=True)
    normed_activation_probs[torch.isnan(normed_activation_probs)] = 0
    log_probs = torch.where(normed_activation_probs > 0, normed_activation_probs.log(), 0)
    entropy = -torch.sum(normed_activation_probs * log_probs, dim=-1)
    flattened_probs = activation_probs.flatten()
    top_prob_value = flattened_probs.kthvalue(round(len(flattened_probs) * filter_rate)).values.item()
    top_position = (activation_probs > top_prob_value).sum(dim=-1)
    entropy[top_position == 0] = torch.inf
    activation_bar = flattened_probs.kthvalue(round(len(flattened_probs) * filter_rate)).values.item()
    return activation_probs, entropy, activation_bar


def reference_lape(over_zero, n, top_rate, filter_rate):
    """Transcription of identify.py (global scope)."""
    activation_probs, entropy, activation_bar = _reference_probs(over_zero, n, filter_rate)
    flattened_entropy = entropy.flatten()
    top_entropy_value = round(len(flattened_entropy) * top_rate)
    _, index = flattened_entropy.topk(top_entropy_value, largest=False)
    row_index = index // entropy.size(1)
    col_index = index % entropy.size(1)
    selected_probs = activation_probs[row_index, col_index].transpose(0, 1)
    lang, indice = torch.where(selected_probs > activation_bar)
    merged_index = torch.stack((row_index, col_index), dim=-1)
    return _group(merged_index, lang, indice, over_zero.shape[0], over_zero.shape[-1])


def reference_lape_layer(over_zero, n, top_rate, filter_rate):
    """Same, but the lowest-entropy selection is made layer by layer."""
    activation_probs, entropy, activation_bar = _reference_probs(over_zero, n, filter_rate)
    rows, cols = [], []
    for l in range(entropy.size(0)):
        _, index = entropy[l].topk(round(entropy.size(1) * top_rate), largest=False)
        rows.append(torch.full_like(index, l))
        cols.append(index)
    row_index, col_index = torch.cat(rows), torch.cat(cols)
    selected_probs = activation_probs[row_index, col_index].transpose(0, 1)
    lang, indice = torch.where(selected_probs > activation_bar)
    merged_index = torch.stack((row_index, col_index), dim=-1)
    return _group(merged_index, lang, indice, over_zero.shape[0], over_zero.shape[-1])


def make_stats(L, N, K, seed, ties=False):
    """Seeded activation counts: shared background plus neurons boosted for one language."""
    g = torch.Generator().manual_seed(seed)
    if ties:
        n = torch.full((K,), 3, dtype=torch.long)
        return torch.randint(0, 4, (L, N, K), generator=g), n
    n = torch.randint(500, 5000, (K,), generator=g)
    p = torch.rand(L, N, 1, generator=g) * 0.3 * torch.rand(L, N, K, generator=g)
    special = torch.rand(L, N, generator=g) < 0.15
    lang = torch.randint(0, K, (L, N), generator=g)
    boost = torch.zeros(L, N, K).scatter_(-1, lang.unsqueeze(-1), 1.0) * special.unsqueeze(-1)
    p = torch.where(boost > 0, 0.5 + 0.5 * torch.rand(L, N, K, generator=g), p)
    return (p * n).round().long(), n


def assert_same(got, want):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert len(a) == len(b)
        for l, (x, y) in enumerate(zip(a, b)):
            assert x.dtype == torch.int64, (k, l)
            assert x.tolist() == y.tolist(), f"language {k} layer {l}"


# --------------------------------------------------------------------------- parity

CASES = [  # K, L, N, rho, threshold
    (2, 1, 16, 0.1, 0.8),
    (2, 3, 64, 0.05, 0.95),
    (2, 8, 300, 0.01, 0.9),
    (5, 1, 300, 0.05, 0.9),
    (5, 3, 16, 0.1, 0.95),
    (5, 8, 64, 0.01, 0.8),
    (7, 1, 64, 0.01, 0.95),
    (7, 3, 300, 0.05, 0.95),
    (7, 8, 16, 0.1, 0.9),
    (7, 8, 300, 0.01, 0.95),
    (20, 1, 16, 0.05, 0.8),
    (20, 3, 64, 0.1, 0.9),
    (20, 8, 300, 0.01, 0.95),
    (20, 3, 300, 0.1, 0.8),
    (5, 8, 300, 0.1, 0.95),
    (2, 3, 300, 0.05, 0.8),
]


@pytest.mark.parametrize("K,L,N,rho,threshold", CASES)
def test_matches_published_algorithm(K, L, N, rho, threshold):
    over_zero, n = make_stats(L, N, K, seed=K * 1000 + L * 100 + N)
    got = select_neurons(over_zero, n, rho=rho, threshold=threshold)
    assert_same(got, reference_lape(over_zero, n, rho, threshold))
    assert len(got) == K and all(len(layers) == L for layers in got)
    assert sum(t.numel() for layers in got for t in layers) > 0


@pytest.mark.parametrize("K,L,N,rho,threshold", [(5, 3, 64, 0.05, 0.8), (7, 8, 300, 0.1, 0.9)])
def test_matches_published_algorithm_with_ties(K, L, N, rho, threshold):
    over_zero, n = make_stats(L, N, K, seed=7, ties=True)
    got = select_neurons(over_zero, n, rho=rho, threshold=threshold)
    assert_same(got, reference_lape(over_zero, n, rho, threshold))


@pytest.mark.parametrize("K,L,N,rho,threshold", [(5, 3, 64, 0.05, 0.9), (7, 8, 300, 0.1, 0.95)])
def test_layer_scope_matches_per_layer_reference(K, L, N, rho, threshold):
    over_zero, n = make_stats(L, N, K, seed=3)
    got = select_neurons(over_zero, n, rho=rho, threshold=threshold, scope="layer")
    assert_same(got, reference_lape_layer(over_zero, n, rho, threshold))


def test_trailing_language_without_neurons_keeps_its_entry():
    # language 2 never fires: the original's bincount split would drop it
    over_zero = torch.tensor([[[9, 0, 0], [0, 8, 0], [1, 1, 0], [0, 0, 0]]])
    got = select_neurons(over_zero, torch.tensor([10, 10, 10]), rho=1.0, threshold=0.8)
    assert [t.tolist() for t in got[0]] == [[0]]
    assert [t.tolist() for t in got[1]] == [[1]]
    assert [t.tolist() for t in got[2]] == [[]] and got[2][0].dtype == torch.int64


def test_hand_checked_tiny_example():
    # probs: n0 [.9, 0], n1 [0, .8], n2 [.5, .5], n3 [.1, .1]; threshold 0.5 -> 4th smallest
    # of 8 probs = 0.1 = tau. n3 never exceeds tau (entropy inf); entropies n0 = n1 = 0,
    # n2 = log 2. rho 0.75 takes 3 neurons: n0 -> lang 0, n1 -> lang 1, n2 -> both.
    over_zero = torch.tensor([[[9, 0], [0, 8], [5, 5], [1, 1]]])
    n = torch.tensor([10, 10])
    got = select_neurons(over_zero, n, rho=0.75, threshold=0.5)
    assert [t.tolist() for t in got[0]] == [[0, 2]]
    assert [t.tolist() for t in got[1]] == [[1, 2]]
    got = select_neurons(over_zero, n, rho=0.5, threshold=0.5)  # takes 2: n0, n1
    assert [[t.tolist() for t in lang] for lang in got] == [[[0]], [[1]]]
    # threshold 0.75 -> tau = 6th smallest = 0.5: n2 no longer exceeds it, even at rho 1
    got = select_neurons(over_zero, n, rho=1.0, threshold=0.75)
    assert [[t.tolist() for t in lang] for lang in got] == [[[0]], [[1]]]


# --------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("K", [2, 5, 7])
def test_entropy_uniform_and_one_hot(K):
    over_zero = torch.zeros(1, 3, K, dtype=torch.long)
    over_zero[0, 0] = 4  # uniform over languages
    over_zero[0, 1, 1] = 7  # one language only
    probs, entropy = lape_entropy(over_zero, torch.full((K,), 10))
    assert probs.dtype == torch.float32 and entropy.dtype == torch.float32
    assert probs.shape == (1, 3, K) and entropy.shape == (1, 3)
    assert entropy[0, 0].item() == pytest.approx(math.log(K), rel=1e-6)
    assert entropy[0, 1].item() == 0
    assert entropy[0, 2].item() == 0  # never fires: NaN normalisation mapped to 0


def test_entropy_normalises_by_token_counts():
    over_zero = torch.tensor([[[10, 20]]])
    probs, entropy = lape_entropy(over_zero, torch.tensor([100, 200]))
    assert probs[0, 0].tolist() == pytest.approx([0.1, 0.1])
    assert entropy.item() == pytest.approx(math.log(2), rel=1e-6)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"rho": 0}, "rho"),
        ({"rho": 1.5}, "rho"),
        ({"threshold": 1.0}, "threshold"),
        ({"threshold": 0}, "threshold"),
        ({"scope": "foo"}, "scope"),
    ],
)
def test_bad_arguments(kwargs, key):
    over_zero, n = make_stats(2, 16, 3, seed=0)
    with pytest.raises(ValueError, match=key):
        select_neurons(over_zero, n, **kwargs)


def test_language_without_tokens():
    over_zero, _ = make_stats(2, 16, 3, seed=0)
    with pytest.raises(ValueError, match="language 1 has no tokens"):
        select_neurons(over_zero, torch.tensor([10, 0, 10]))


def test_bad_shapes():
    with pytest.raises(ValueError, match="over_zero"):
        select_neurons(torch.zeros(4, 3, dtype=torch.long), torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="n_tokens"):
        select_neurons(torch.zeros(2, 4, 3, dtype=torch.long), torch.tensor([1, 1]))


# --------------------------------------------------------------------------- released masks


def _released(name):
    path = REFERENCE / name
    if not path.exists():
        pytest.skip("../shared/reference not present: released LAPE masks are only available "
                    "in the development checkout")
    return path


def test_load_released_llama_mask():
    path = _released("LLaMA-2-7B.neuron.pth")
    masks = load_neurons(path, LLAMA_LANGS, n_layers=32, n_neurons=11008)
    assert list(masks) == LLAMA_LANGS
    assert all(len(layers) == 32 for layers in masks.values())
    assert [sum(t.numel() for t in masks[lang]) for lang in LLAMA_LANGS] == LLAMA_COUNTS
    assert all(t.dtype == torch.int64 for layers in masks.values() for t in layers)
    with pytest.raises(ValueError, match="4096"):
        load_neurons(path, LLAMA_LANGS, n_layers=32, n_neurons=4096)
    with pytest.raises(ValueError, match="has 7 languages but method.neurons_langs lists 6"):
        load_neurons(path, LLAMA_LANGS[:6])
    assert list(load_neurons(path)) == [str(k) for k in range(7)]


def test_load_released_mistral_mask():
    path = _released("Mistral-7B.neuron.pth")
    langs = ["a", "b", "c", "d", "e", "f"]
    masks = load_neurons(path, langs, n_layers=32, n_neurons=14336)
    assert [sum(t.numel() for t in masks[lang]) for lang in langs] == MISTRAL_COUNTS
    with pytest.raises(ValueError, match="has 6 languages but method.neurons_langs lists 7"):
        load_neurons(path, LLAMA_LANGS)
    with pytest.raises(ValueError, match="layers"):
        load_neurons(path, langs, n_layers=40)


# --------------------------------------------------------------------------- JSON / stats I/O


def test_json_round_trip(tmp_path):
    over_zero, n = make_stats(3, 64, 4, seed=11)
    langs = ["af", "nl", "de", "en"]
    neurons = dict(zip(langs, select_neurons(over_zero, n, rho=0.1, threshold=0.9)))
    path = tmp_path / "neurons.json"
    path.write_text(json.dumps({"langs": neurons_to_json(neurons), "rho": 0.1, "counts": [1, 2]}))
    back = load_neurons(path, n_layers=3, n_neurons=64)
    assert list(back) == langs
    for lang in langs:
        assert [t.tolist() for t in back[lang]] == [t.tolist() for t in neurons[lang]]
    assert list(load_neurons(path, ["de", "af"])) == ["de", "af"]
    with pytest.raises(ValueError, match="xx"):
        load_neurons(path, ["af", "xx"])
    with pytest.raises(ValueError, match="3 layers, max neuron index .*; model has 16 neurons"):
        load_neurons(path, n_neurons=16)
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"af": [[3, 1, 3], [], [0]]}))
    assert [t.tolist() for t in load_neurons(flat)["af"]] == [[1, 3], [], [0]]


def test_corrupt_files_rejected(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="cannot read"):
        load_neurons(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"langs": {"af": [[1, 2]')
    with pytest.raises(ValueError, match="cannot read"):
        load_neurons(bad_json)
    with pytest.raises(ValueError, match="cannot read"):
        load_neurons(tmp_path / "missing.pth")


def test_load_activation_stats(tmp_path):
    over_zero, n = make_stats(3, 64, 4, seed=5)
    paths = []
    for k in range(4):  # the original activation.py output format (int32 counts)
        paths.append(tmp_path / f"activation.{k}.train.llama-7b")
        torch.save({"n": int(n[k]), "over_zero": over_zero[..., k].to(torch.int32)}, paths[-1])
    oz, nt = load_activation_stats([str(p) for p in paths])
    assert oz.dtype == torch.int64 and nt.dtype == torch.int64
    assert torch.equal(oz, over_zero) and torch.equal(nt, n)
    assert_same(select_neurons(oz, nt, rho=0.05, threshold=0.9),
                select_neurons(over_zero, n, rho=0.05, threshold=0.9))
    torch.save({"n": 5, "over_zero": torch.zeros(2, 64, dtype=torch.int32)}, tmp_path / "odd")
    with pytest.raises(ValueError, match="shape"):
        load_activation_stats(paths + [tmp_path / "odd"])


# --------------------------------------------------------------------------- random baseline


def test_select_random():
    counts = [0, 5, 64, 17]
    a = select_random(counts, 64, seed=1)
    assert [t.numel() for t in a] == counts
    for t in a:
        assert t.dtype == torch.int64
        assert t.tolist() == sorted(set(t.tolist())) and all(0 <= i < 64 for i in t.tolist())
    assert [t.tolist() for t in select_random(torch.tensor(counts), 64, seed=1)] == [t.tolist() for t in a]
    assert [t.tolist() for t in select_random(counts, 64, seed=2)] != [t.tolist() for t in a]
    with pytest.raises(ValueError, match="counts_per_layer"):
        select_random([65], 64, seed=0)


def test_select_random_global():
    a = select_random_global(100, 4, 50, seed=3)
    assert len(a) == 4 and sum(t.numel() for t in a) == 100
    for t in a:
        assert t.tolist() == sorted(set(t.tolist())) and all(0 <= i < 50 for i in t.tolist())
    assert [t.tolist() for t in select_random_global(100, 4, 50, seed=3)] == [t.tolist() for t in a]
    assert [t.tolist() for t in select_random_global(100, 4, 50, seed=4)] != [t.tolist() for t in a]
    with pytest.raises(ValueError, match="total"):
        select_random_global(201, 4, 50, seed=0)


# --------------------------------------------------------------------------- auto_rho


def _count(over_zero, n, lang, rho, scope="global"):
    return sum(t.numel() for t in select_neurons(over_zero, n, rho=rho, threshold=0.9, scope=scope)[lang])


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_auto_rho_min_neurons(scope):
    over_zero, n = make_stats(3, 64, 4, seed=9)
    size = 3 * 64 if scope == "global" else 64
    rho = auto_rho(over_zero, n, 2, min_neurons=10, threshold=0.9, scope=scope)
    assert _count(over_zero, n, 2, rho, scope) >= 10
    if rho > 1 / size + 1e-12:
        assert _count(over_zero, n, 2, rho - 1 / size, scope) < 10


def test_auto_rho_fraction_of_params():
    over_zero, n = make_stats(3, 64, 4, seed=9)
    # 1% of 24000 params at 30 params per neuron = 8 neurons
    rho = auto_rho(over_zero, n, 0, min_fraction_params=0.01, threshold=0.9,
                   params_per_neuron=30, total_params=24000)
    assert _count(over_zero, n, 0, rho) >= 8
    assert rho == pytest.approx(1 / 192) or _count(over_zero, n, 0, rho - 1 / 192) < 8


def test_auto_rho_errors():
    over_zero, n = make_stats(3, 64, 4, seed=9)
    with pytest.raises(ValueError, match="min_neurons or min_fraction_params"):
        auto_rho(over_zero, n, 0, threshold=0.9)
    with pytest.raises(ValueError, match="at most"):
        auto_rho(over_zero, n, 0, min_neurons=10_000, threshold=0.9)
    with pytest.raises(ValueError, match="params_per_neuron"):
        auto_rho(over_zero, n, 0, min_fraction_params=0.1)
