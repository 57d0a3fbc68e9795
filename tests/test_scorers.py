"""Neuron scorers as plug-ins: the registry, each statistics pass against a direct
computation, the equal-count match, a throw-away scorer from one file + one YAML, bad input."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import ROOT, tiny_llama, tiny_phi3
from langsub.errors import ConfigError
from langsub.model.ffn import find_ffns
from langsub.neurons.passes import GradientHooks, ImportanceHooks, ValueHooks
from langsub.neurons.scorers import SCORERS, Scorer, Stats, build_scorer, register
from langsub.training.loss import token_nll


def _compose(overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def test_every_scorer_has_its_yaml_and_every_yaml_a_scorer():
    names = {p.stem for p in (ROOT / "conf" / "selection").glob("*.yaml")}
    assert names == set(SCORERS) == {"lape", "significance", "activation", "plnd", "attribution"}
    for name in names:
        assert build_scorer(_compose([f"selection={name}"])).name == name


def _by_hand(model, ids, mask):
    """Per layer: a = act_fn(gate(x)) and h = a * up(x) from the captured MLP inputs."""
    mlps = [layer.mlp for layer in model.model.layers]
    xs = []
    hs = [m.register_forward_pre_hook(lambda m, a: xs.append(a[0].detach())) for m in mlps]
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    for h in hs:
        h.remove()
    out = []
    for m, x in zip(mlps, xs):
        x = x.reshape(-1, x.shape[-1])
        if hasattr(m, "gate_up_proj"):  # fused (phi3): gate is the first half
            gate, up = m.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = m.gate_proj(x), m.up_proj(x)
        a = (m.act_fn if hasattr(m, "act_fn") else m.activation_fn)(gate)
        out.append((a, a * up, m.down_proj.weight))
    return out


@pytest.mark.parametrize("make", [tiny_llama, tiny_phi3], ids=["separate", "fused"])
def test_value_and_importance_passes_equal_a_direct_computation(make):
    model = make()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 101, (2, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # padding never counts
    values, importance = ValueHooks(model, 2), ImportanceHooks(model, 2)
    for hooks in (values, importance):
        hooks.set_batch(1, mask)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    for hooks in (values, importance):
        hooks.remove()
    w = mask.reshape(-1).double()
    for l, (a, h, w_down) in enumerate(_by_hand(model, ids, mask)):
        want_v = (w[:, None] * a.double().clamp(min=0)).sum(0)
        want_i = (w[:, None] * h.double().abs()).sum(0) * w_down.double().norm(dim=0)
        torch.testing.assert_close(values.sums[l, :, 1], want_v, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(importance.sums[l, :, 1], want_i, rtol=1e-5, atol=1e-6)
        assert values.sums[l, :, 0].eq(0).all()  # the other language's column untouched
    assert importance.n_tokens.tolist() == [0, 28]


def test_importance_is_the_output_change_when_the_neuron_is_deactivated(llama):
    """PLND's definition, for one token and neuron: ‖down(h) - down(h with h_i = 0)‖."""
    ids = torch.randint(0, 101, (1, 8), generator=torch.Generator().manual_seed(1))
    (_, h, _), _ = _by_hand(llama, ids, torch.ones_like(ids))
    down = llama.model.layers[0].mlp.down_proj
    t, i = 5, 17
    off = h[t].clone()
    off[i] = 0
    change = (down(h[t]) - down(off)).norm()
    hooks = ImportanceHooks(llama, 1)
    hooks.set_batch(0, torch.zeros_like(ids).index_fill_(1, torch.tensor([t]), 1))
    with torch.no_grad():
        llama(input_ids=ids)
    hooks.remove()
    torch.testing.assert_close(hooks.sums[0, i, 0].float(), change, rtol=1e-5, atol=1e-6)


def test_gradient_pass_equals_autograd_of_the_loss_and_trains_nothing(llama):
    ids = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(2))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    for p in llama.parameters():
        p.requires_grad_(False)
    hooks = GradientHooks(llama, 1)
    hooks.set_batch(0, batch["attention_mask"])
    with torch.enable_grad():
        nll, _ = token_nll(llama, batch, None)
        nll.backward()
    hooks.remove()
    assert all(p.grad is None for p in llama.parameters())
    # by hand: keep h, ask autograd for dL/dh
    mlps = [layer.mlp for layer in llama.model.layers]
    hs = []

    def keep(m, a):
        hs.append(a[0])
    handles = [m.down_proj.register_forward_pre_hook(keep) for m in mlps]
    emb = llama.get_input_embeddings()(ids).requires_grad_(True)
    with torch.enable_grad():
        out = llama(inputs_embeds=emb, attention_mask=batch["attention_mask"])
        logits = out.logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 101), ids[:, 1:].reshape(-1),
                                                 reduction="sum")
        grads = torch.autograd.grad(loss, hs)
    for h in handles:
        h.remove()
    for l, (h, g) in enumerate(zip(hs, grads)):
        want = (h.detach() * g).abs().reshape(-1, h.shape[-1]).double().sum(0)
        torch.testing.assert_close(hooks.sums[l, :, 0], want, rtol=1e-4, atol=1e-6)


def _stats(L=2, N=6, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Stats(torch.rand(L, N, K, generator=g, dtype=torch.float64) * 100,
                 torch.tensor([100, 100, 100]))


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_match_keeps_exactly_the_other_scorer_s_counts(scope):
    cfg = _compose([f"scope={scope}", "selection=plnd", "selection.match=lape"])
    like = [[torch.tensor([0, 3]), torch.tensor([5])], [torch.tensor([], dtype=torch.long),
                                                        torch.tensor([1, 2, 4])],
            [torch.tensor([2]), torch.tensor([], dtype=torch.long)]]
    stats = _stats()
    got = build_scorer(cfg).matched(stats, like)
    for mine, theirs in zip(got, like):
        if scope == "layer":
            assert [len(t) for t in mine] == [len(t) for t in theirs]
        assert sum(map(len, mine)) == sum(map(len, theirs))
        assert all(torch.equal(t, t.sort().values) for t in mine)
    # the most specific by the scorer's own ranking: language 2's single neuron is its top share
    share = stats.sums / stats.sums.sum(-1, keepdim=True)
    if scope == "global":
        top = int(torch.argmax(share[..., 2]))
        assert [t.tolist() for t in got[2]] == [[top % 6] if top < 6 else [],
                                                [top % 6] if top >= 6 else []]


def test_the_activation_scorer_is_lape_s_maths_on_the_values():
    """Same sums in, same masks out: the scorers differ only in their statistic."""
    cfg = _compose(["rho=0.25"])
    stats = _stats(seed=3)
    lape_masks, _ = build_scorer(cfg, "lape").select(stats, 0, tiny_llama(ffn=6))
    act_masks, _ = build_scorer(cfg, "activation").select(stats, 0, tiny_llama(ffn=6))
    assert [[t.tolist() for t in m] for m in lape_masks] == [[t.tolist() for t in m] for m in act_masks]


class TopValues(Scorer):
    """A throw-away scorer: each language's 3 neurons of largest mean value, in every layer."""

    name = "top_values"
    statistic = "values"

    def select(self, stats, k, model):
        mean = stats.sums / stats.n_tokens
        return [[torch.sort(torch.topk(mean[l, :, j], 3).indices).values
                 for l in range(mean.shape[0])] for j in range(mean.shape[2])], None


@pytest.fixture(scope="module")
def top_values():
    register(TopValues)
    yield TopValues
    SCORERS.pop(TopValues.name)


def test_a_scorer_is_one_file_and_one_yaml(top_values, tmp_path):
    """The throw-away scorer above plus one YAML run the real main job, untouched."""
    from langsub.run import run

    conf = tmp_path / "conf" / "selection"
    conf.mkdir(parents=True)
    (conf / "top_values.yaml").write_text("name: top_values\nmatch: null\n")
    cfg = _compose([f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "selection=top_values",
                    "debug=fast", f"paths.output_dir={tmp_path / 'run'}",
                    f"paths.cache_dir={tmp_path / 'cache'}", "export=false"])
    m = run(cfg)
    assert m["selection"] == "top_values" and m["neurons"] == 3 * 4  # 4 layers
    assert m["ppl_after/target"] != m["ppl_before/target"]
    stats = list((tmp_path / "cache" / "stats").glob("*.json"))
    assert len(stats) == 1 and '"statistic": "values"' in stats[0].read_text()


@pytest.mark.parametrize("overrides,line", [
    (["selection=plnd", "selection.match=plnd"], "selection.match=plnd: a scorer cannot match itself"),
    (["selection=plnd", "selection.match=nope"], "selection.match=nope: allowed is another scorer"),
    (["selection=attribution", "model.quantize=nf4"],
     "selection=attribution needs gradients through the FFN activations, and model.quantize=nf4"),
    (["selection=activation", "method.activation_files=[a.pt,b.pt]"],
     "method.activation_files hold firing counts: selection=activation needs the values pass"),
])
def test_bad_selection_is_one_line_before_loading(overrides, line):
    from langsub.validate import check_config

    with pytest.raises(ConfigError, match=line.replace("[", r"\[")) as e:
        check_config(_compose(overrides))
    assert str(e.value).count(line) == 1


def test_an_unknown_scorer_is_refused_before_hydra(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "selection=nope",
                        f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "selection=nope is unknown; available: activation, attribution, lape, plnd, " \
           "significance" in r.stderr and not (tmp_path / "run").exists()
