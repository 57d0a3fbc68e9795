"""Analysis maths on tiny hand-built models: component reversal against an independent path."""
from __future__ import annotations

import datasets
import pytest
import torch
from torch.nn.utils import parametrize

from conftest import tiny_llama, tiny_phi3
from langsub.analysis.maths import component_reversal
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
