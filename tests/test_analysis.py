"""Analysis maths: component reversal against an independent path (tiny hand-built models);
alignment pooling over content tokens only (the embedded model, with and without a BOS)."""
from __future__ import annotations

import datasets
import pytest
import torch
from torch.nn.utils import parametrize

from conftest import TINY, tiny_llama, tiny_phi3
from langsub.analysis.maths import component_reversal, deactivation_matrix, pooled_states
from langsub.evaluation.perplexity import perplexity
from langsub.model.ffn import find_ffns
from langsub.methods.sparse import add_neuron_deltas, delta_state, merge_neuron_deltas, original_slices

MASK = [torch.tensor([1, 5, 7]), torch.tensor([0, 63])]


def _data(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 101, (4, 12), generator=g)
    return datasets.Dataset.from_dict({"input_ids": x, "attention_mask": torch.ones_like(x),
                                       "labels": x}).with_format("torch")


def _component_deltas(model, comp):
    """(delta parameter, rows of it) that belong to `comp` in every layer."""
    out = []
    for ffn in find_ffns(model):
        lin = ffn.gate_up if ffn.fused and comp != "down" else getattr(ffn, comp)
        if not parametrize.is_parametrized(lin, "weight"):
            continue
        p = lin.parametrizations.weight[0]
        if ffn.fused and comp != "down":
            rows = (p.index < ffn.n_neurons) if comp == "gate" else (p.index >= ffn.n_neurons)
            out.append((p.delta, rows))
        else:
            out.append((p.delta, slice(None)))
    return out


@pytest.mark.parametrize("make,components", [
    (tiny_llama, ["gate", "up", "down"]), (tiny_phi3, ["gate", "up", "down"]),
    (tiny_llama, ["down"]), (tiny_phi3, ["up", "down"])])
@torch.no_grad()
def test_component_reversal(make, components):
    """revert_<c> equals the parametrized model with c's deltas zeroed; `before` is the base
    model exactly; the fine-tuned weights come back bit for bit."""
    ds = _data()
    base_ppl = perplexity(make(), ds)
    model = make()
    add_neuron_deltas(model, MASK, components)
    for p in model.parameters():
        if p.requires_grad:
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(p.numel()))
    expect = {"full": perplexity(model, ds)}
    for c in components:
        parts = _component_deltas(model, c)
        saved = [d[rows].clone() for d, rows in parts]
        for d, rows in parts:
            d[rows] = 0
        expect[f"revert_{c}"] = perplexity(model, ds)
        for (d, rows), s in zip(parts, saved):
            d[rows] = s
    delta, original = delta_state(model), original_slices(model)
    merge_neuron_deltas(model)
    tuned = {k: v.clone() for k, v in model.state_dict().items()}
    got = component_reversal(model, delta, original, ds)
    assert list(got) == ["full"] + [f"revert_{c}" for c in components] + ["before"]
    assert got["before"] == base_ppl
    for k, v in expect.items():
        assert got[k] == pytest.approx(v, rel=1e-5), k
        assert k == "full" or got[k] != got["full"], k  # each reversal really changes something
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in tuned.items())


TEXTS = ["Alle menslike wesens word vry gebore.", "All human beings are born free."]


def _bos_tokenizer():
    """The embedded tokenizer made to prepend <s> (offline: a tokenizer_config option)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY, add_bos_token=True)


@torch.no_grad()
def _all_states(model, ids):
    """Hidden states [n_layers + 1, T, d] of one sequence, every position."""
    return torch.stack(model(input_ids=ids, output_hidden_states=True).hidden_states)[:, 0]


@torch.no_grad()
def test_pooling_skips_the_bos_the_tokenizer_adds(embedded):
    """With a BOS-adding tokenizer (as Llama-3's, Mistral's) the pooled vector is the mean
    over the text's own positions, not over all of them; the BOS still conditions them."""
    model, _ = embedded
    tok = _bos_tokenizer()
    got = pooled_states(model, tok, TEXTS)
    assert got.shape == (2, model.config.num_hidden_layers + 1, model.config.hidden_size)
    for i, t in enumerate(TEXTS):
        ids = tok(t, return_tensors="pt").input_ids
        assert ids[0, 0] == tok.bos_token_id and (ids[0, 1:] != tok.bos_token_id).all()
        hs = _all_states(model, ids)
        assert torch.allclose(got[i], hs[:, 1:].mean(1), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(got[i], hs.mean(1), rtol=1e-3, atol=1e-4)


@torch.no_grad()
def test_pooling_unchanged_without_special_tokens(embedded):
    """The embedded tokenizer adds no special token: every position is pooled, as before."""
    model, tok = embedded
    got = pooled_states(model, tok, TEXTS)
    for i, t in enumerate(TEXTS):
        enc = tok(t, return_tensors="pt", return_special_tokens_mask=True)
        assert not enc.special_tokens_mask.any()
        assert torch.allclose(got[i], _all_states(model, enc.input_ids).mean(1),
                              rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no content token"):
        pooled_states(model, _bos_tokenizer(), [""])  # only the BOS: nothing to pool


@torch.no_grad()
def test_pooling_in_padded_batches_equals_one_text_at_a_time(embedded):
    """Texts of different lengths batched (right padding, masked) pool as they do alone, with
    or without a BOS, and the LM head sees one position per text, not every position."""
    model, tok = embedded
    texts = TEXTS + ["Kort.", "Die Universele Verklaring van Menseregte is deur die Algemene "
                     "Vergadering aanvaar en afgekondig."]
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda _m, inp, _o: seen.append(inp[0].shape[1]))
    try:
        for t in (tok, _bos_tokenizer()):
            batched = pooled_states(model, t, texts, batch_size=3)
            alone = torch.cat([pooled_states(model, t, [x], batch_size=1) for x in texts])
            assert torch.allclose(batched, alone, rtol=1e-5, atol=1e-5)
    finally:
        hook.remove()
    assert seen and set(seen) == {1}


@torch.no_grad()
def test_deactivation_matrix_logs_each_language_and_measures_the_rise(caplog):
    """matrix[k][j] = ppl with k's neurons off / ppl − 1, against the base model's ppl; a
    progress line per masked language (minutes each on a real model)."""
    model, ds = tiny_llama(), {"x": _data(1), "y": _data(2)}
    masks = {"a": MASK, "b": [torch.tensor([], dtype=torch.long)] * 2}
    with caplog.at_level("INFO", logger="langsub"):
        r = deactivation_matrix(model, ds, masks)
    assert r["base_ppl"] == {j: perplexity(model, ds[j]) for j in ds}
    assert all(v != 0 for v in r["matrix"][0]) and r["matrix"][1] == [0.0, 0.0]
    lines = [m for m in caplog.messages if m.startswith("deactivation:")]
    assert len(lines) == 2 and "a's neurons off" in lines[0] and "(2/2)" in lines[1]


def test_progress_lines_share_one_clock():
    from langsub.clock import clock

    assert (clock(0.4), clock(59.9), clock(102), clock(3600)) == ("0s", "59s", "1m42s", "60m00s")
