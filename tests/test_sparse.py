"""Sparse neuron training: only the chosen slices move, exports match, deltas compose."""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from conftest import tiny_llama, tiny_phi3
from langsub.export import apply_deltas
from langsub.model.ffn import UnsupportedModelError, find_ffns
from langsub.methods import build_method, count_params
from langsub.methods.sparse import add_neuron_deltas, delta_state, merge_neuron_deltas

MASK = [torch.tensor([1, 5, 7]), torch.tensor([0, 63])]


def _train(model, steps=3, lr=0.05, seed=0):
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    x = torch.randint(0, 101, (2, 12))
    for _ in range(steps):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    return x


def _changed(base: dict, new: dict) -> dict[str, set]:
    """key -> set of changed rows (gate/up) or columns (down) or 'any'."""
    out = {}
    for k, v in base.items():
        diff = v != new[k]
        if diff.any():
            out[k] = set((diff.nonzero()[:, 1] if "down_proj" in k else diff.nonzero()[:, 0]).tolist())
    return out


@pytest.mark.parametrize("components", [["gate", "up", "down"], ["down"], ["up", "down"], ["gate"]])
def test_only_selected_slices_change(components):
    model = tiny_llama()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    add_neuron_deltas(model, MASK, components)
    _train(model)
    merge_neuron_deltas(model)
    new = model.state_dict()
    assert set(new) == set(base), "merged model must have the plain keys"
    changed = _changed(base, new)
    expect = {f"model.layers.{l}.mlp.{c}_proj.weight": set(MASK[l].tolist())
              for l in range(2) for c in components}
    assert changed == expect  # bit-for-bit elsewhere, every selected slice moved


def test_trainable_count_and_frozen_originals():
    model = tiny_llama()
    deltas = add_neuron_deltas(model, MASK)
    assert sum(p.numel() for p in deltas) == 5 * 3 * 32
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".delta") for n in trainable)


def test_deltas_are_float32_on_a_bf16_model_and_know_their_offset():
    """The deltas are float32 masters from the start; `offset()` is the frozen slice W_S."""
    model = tiny_llama().to(torch.bfloat16)
    deltas = add_neuron_deltas(model, MASK)
    assert all(d.dtype == torch.float32 for d in deltas)
    up = model.model.layers[1].mlp.up_proj.parametrizations.weight
    down = model.model.layers[1].mlp.down_proj.parametrizations.weight
    assert torch.equal(up[0].offset(), up.original[[0, 63]])
    assert torch.equal(down[0].offset(), down.original[:, [0, 63]])
    assert up[0].offset().dtype == torch.bfloat16
    assert [n for n, _ in up[0].named_parameters()] == ["delta"]  # W not registered twice


def test_parametrized_forward_equals_merged_weight():
    model = tiny_llama()
    add_neuron_deltas(model, MASK)
    x = _train(model)
    with torch.no_grad():
        sparse_logits = model(input_ids=x).logits
        mlp = model.model.layers[0].mlp
        w = mlp.gate_proj.weight.materialize()
        assert torch.equal(w[[0, 2]], mlp.gate_proj.parametrizations.weight.original[[0, 2]])
    merge_neuron_deltas(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    with torch.no_grad():
        assert torch.allclose(model(input_ids=x).logits, sparse_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("align", [1, 8])
def test_sliced_linear_gradients_equal_the_merged_weight(dim, bias, align, monkeypatch):
    """SlicedWeight's products and gradients equal those of the merged weight, float64, with
    the delta products unpadded (the CPU path) and padded to 8 neurons (the CUDA path)."""
    import torch.nn.functional as F

    from langsub.methods import sparse
    from langsub.methods.sparse import SlicedWeight

    monkeypatch.setitem(sparse.ALIGN, "cpu", align)

    g = torch.Generator().manual_seed(dim)
    w = torch.randn(12, 8, dtype=torch.float64, generator=g)
    idx = torch.tensor([1, 5, 6]) if dim == 0 else torch.tensor([0, 3, 7])
    delta = torch.randn((3, 8) if dim == 0 else (12, 3), dtype=torch.float64, generator=g,
                        requires_grad=True)
    x = torch.randn(2, 4, 8, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(12, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    sliced = lambda x, d, b: F.linear(x, SlicedWeight(w, d, idx, dim), b)  # noqa: E731
    merged = lambda x, d, b: F.linear(x, w.index_add(dim, idx, d), b)  # noqa: E731
    inputs = (x, delta, b)
    out_s, out_m = sliced(*inputs), merged(*inputs)
    assert torch.allclose(out_s, out_m)
    gy = torch.randn_like(out_s)
    want = [t for t in inputs if t is not None]
    assert all(torch.allclose(a, c) for a, c in zip(torch.autograd.grad(out_s, want, gy),
                                                    torch.autograd.grad(out_m, want, gy)))
    assert torch.autograd.gradcheck(sliced, inputs)


def test_fused_gate_up_phi3():
    model = tiny_phi3()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    add_neuron_deltas(model, MASK, ["gate", "down"])
    _train(model)
    merge_neuron_deltas(model)
    changed = _changed(base, model.state_dict())
    assert changed == {"model.layers.0.mlp.gate_up_proj.weight": {1, 5, 7},
                       "model.layers.1.mlp.gate_up_proj.weight": {0, 63},
                       "model.layers.0.mlp.down_proj.weight": {1, 5, 7},
                       "model.layers.1.mlp.down_proj.weight": {0, 63}}
    model2 = tiny_phi3()
    add_neuron_deltas(model2, MASK, ["up"])
    _train(model2)
    merge_neuron_deltas(model2)
    assert _changed(base, model2.state_dict()) == {
        "model.layers.0.mlp.gate_up_proj.weight": {64 + 1, 64 + 5, 64 + 7},
        "model.layers.1.mlp.gate_up_proj.weight": {64, 127}}


def test_deltas_apply_and_compose(tmp_path):
    from safetensors.torch import save_file

    from langsub.export import delta_metadata

    trained = []
    for seed, mask in ((0, MASK), (1, [torch.tensor([5, 9]), torch.tensor([63])])):
        m = tiny_llama()
        add_neuron_deltas(m, mask)
        _train(m, seed=seed)
        d = delta_state(m)
        save_file(d, tmp_path / f"d{seed}.safetensors", metadata=delta_metadata(m, d))
        trained.append(merge_neuron_deltas(m).state_dict())
    base = tiny_llama().state_dict()
    one = apply_deltas(tiny_llama(), [tmp_path / "d0.safetensors"]).state_dict()
    assert all(torch.equal(one[k], trained[0][k]) for k in base)
    both = apply_deltas(tiny_llama(), [tmp_path / "d0.safetensors", tmp_path / "d1.safetensors"])
    both = both.state_dict()
    for k in base:  # deltas add: base + (t0 - base) + (t1 - base)
        assert torch.allclose(both[k], trained[0][k] + trained[1][k] - base[k], atol=1e-6)
    with pytest.raises(ValueError, match="does not fit|has no module"):
        apply_deltas(tiny_llama(hidden=16, ffn=32), [tmp_path / "d0.safetensors"])


@pytest.mark.parametrize("bad", [[], ["gate", "proj"], ["down", "attn"]])
def test_bad_components(bad):
    with pytest.raises(ValueError, match="method.components"):
        add_neuron_deltas(tiny_llama(), MASK, bad)


def test_empty_neuron_set_rejected():
    with pytest.raises(ValueError, match="empty"):
        build_method({"name": "lape"}).prepare(tiny_llama(), [torch.tensor([], dtype=torch.long)] * 2)


def test_unsupported_ffn():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UnsupportedModelError, match="supported"):
        find_ffns(model)


@pytest.mark.parametrize("name,frac", [("full", 1.0), ("ffn", None), ("lora", None), ("ia3", None)])
def test_dense_and_peft_methods_train_something(name, frac):
    model = build_method({"name": name}).prepare(tiny_llama())
    trainable, total = count_params(model)
    assert trainable > 0
    if frac is not None:
        assert trainable == total
    x = _train(model, steps=1)
    merged = build_method({"name": name}).merge(model)
    assert merged(input_ids=x).logits.shape == (2, 12, 101)
    assert set(merged.state_dict()) == set(tiny_llama().state_dict())


def test_exported_model_gives_the_trained_logits(tmp_path, embedded):
    """export/ loaded with plain AutoModelForCausalLM = the trained parametrized model."""
    from transformers import AutoModelForCausalLM

    from langsub.export import export_model

    _, tok = embedded
    model = tiny_llama()
    method = build_method({"name": "lape"})
    method.prepare(model, MASK)
    x = _train(model)
    with torch.no_grad():
        trained = model(input_ids=x).logits
    delta = method.delta(model)
    export_model(tmp_path, method.merge(model), tok, delta)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "export", dtype=torch.float32).eval()
    with torch.no_grad():
        assert (plain(input_ids=x).logits - trained).abs().max() <= 1e-5
    assert (tmp_path / "delta.safetensors").stat().st_size < 50_000


def test_peft_missing_targets_one_clear_error():
    with pytest.raises(ValueError, match="peft could not wrap the model"):
        build_method({"name": "lora", "targets": ["no_such_proj"]}).prepare(tiny_llama())
    with pytest.raises(ValueError, match="method='nope' is unknown; available"):
        build_method({"name": "nope"})
