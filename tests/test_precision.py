"""Precision: trainable tensors keep float32 masters on a bf16 model, merges add in float32 and
round once, weight decay acts on the weights the model uses, `langsub.export` reproduces the
run's export bit for bit."""
from __future__ import annotations

import functools
import json

import pytest
import torch

from conftest import ROOT, TINY, tiny_llama
from langsub.methods import build_method
from langsub.methods.precision import precision_problems
from langsub.methods.sparse import merge_neuron_deltas, parametrized_linears
from langsub.training.optim import attach_real_weight_decay

BF16 = torch.bfloat16
MASK = [torch.tensor([1, 5, 7]), torch.tensor([0, 63])]


def embedded_bf16():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(TINY, dtype=BF16)


def embedded_neurons(n=32, seed=0):
    """n random neurons in each of the embedded model's 4 layers (1536 neurons wide)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(1536, generator=g)[:n].sort().values for _ in range(4)]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


@pytest.fixture(scope="module")
def batch(tok):
    """2 x 64 tokens of Afrikaans from the embedded corpus, through the embedded tokenizer."""
    lines = (ROOT / "data" / "corpus" / "af.jsonl").read_text().splitlines()[:200]
    text = " ".join(json.loads(line)["text"] for line in lines)
    ids = tok(text, return_tensors="pt")["input_ids"][0][:128].view(2, 64)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def fit_three_steps(model, batch, ckpt):
    """3 AdamW steps (lr 1e-5, no decay) of the real LightningModule, bf16-mixed on the CPU,
    then a checkpoint as the main job writes it."""
    import lightning as L
    from torch.utils.data import DataLoader

    from langsub.training.module import CausalLMModule

    module = CausalLMModule(model, [], optimizer=functools.partial(
        torch.optim.AdamW, lr=1e-5, weight_decay=0))
    trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", max_steps=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    model.train()
    trainer.fit(module, DataLoader([batch] * 3, batch_size=None))
    trainer.save_checkpoint(ckpt)
    return torch.load(ckpt, map_location="cpu", weights_only=False)


def _trained(model, name):
    """The tensors whose movement counts: FFN weights (full, ffn) or the deltas (lape)."""
    return {n: p for n, p in model.named_parameters()
            if p.requires_grad and (name == "lape" or ".mlp." in n)}


@pytest.mark.parametrize("name", ["full", "ffn", "lape"])
def test_bf16_model_trains_float32_masters(name, batch, tmp_path):
    model = embedded_bf16()
    method = build_method({"name": name})
    method.apply(model, embedded_neurons() if name == "lape" else None)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    assert all(p.dtype == BF16 for p in frozen.values())
    start = {n: p.detach().clone() for n, p in _trained(model, name).items()}
    ckpt = fit_three_steps(model, batch, tmp_path / "last.ckpt")
    moved = sum(int((p.detach() != start[n]).sum()) for n, p in _trained(model, name).items())
    assert moved >= 0.95 * sum(p.numel() for p in start.values())  # bf16 alone: 7.7 % (full)
    now = dict(model.named_parameters())
    assert all(now[n].dtype == BF16 and torch.equal(now[n], p) for n, p in frozen.items())
    state = ckpt["state_dict"]
    assert set(state) == {f"model.{n}" for n in trainable}
    assert all(v.dtype == torch.float32 for v in state.values())
    adam = ckpt["optimizer_states"][0]["state"].values()
    assert all(s[k].dtype == torch.float32 for s in adam for k in ("exp_avg", "exp_avg_sq"))
    merged = method.merge(model)
    assert {p.dtype for p in merged.parameters()} == {BF16}  # the shipped dtype


def test_dense_merge_rounds_each_master_once():
    model = tiny_llama().to(BF16)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = build_method({"name": "ffn"})
    method.apply(model)
    masters = {}
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p), alpha=1e-3)
                masters[n] = p.detach().clone()
    merged = dict(method.merge(model).named_parameters())
    assert masters and all(merged[n].dtype == BF16 for n in base)
    for n, p in base.items():
        assert torch.equal(merged[n], masters[n].to(BF16) if n in masters else p)


def test_sparse_merge_adds_in_float32_and_rounds_once():
    model = tiny_llama().to(BF16)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    build_method({"name": "lape"}).apply(model, MASK)
    up = model.model.layers[0].mlp.up_proj.parametrizations.weight
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        up.original[1] = 1.0  # W = 1 (bf16); ulp 2^-7; Δ = 2^-8 + 2^-20 tips it up to 1 + 2^-7
        for _, lin in parametrized_linears(model):
            d = lin.parametrizations.weight[0].delta
            d.copy_(torch.randn(d.shape, generator=g) * 1e-3)
        up[0].delta[0] = 2.0 ** -8 + 2.0 ** -20  # in bf16 it would be 2^-8: a tie, to 1.0
    deltas = {n: (lin.parametrizations.weight[0].dim, lin.parametrizations.weight[0].index,
                  lin.parametrizations.weight[0].delta.detach().clone())
              for n, lin in parametrized_linears(model)}
    merge_neuron_deltas(model)
    merged = model.state_dict()
    assert torch.equal(merged["model.layers.0.mlp.up_proj.weight"][1],
                       torch.full((32,), 1.0 + 2.0 ** -7, dtype=BF16))
    for name, (dim, index, delta) in deltas.items():
        w = base[name + ".weight"]
        if name == "model.layers.0.mlp.up_proj":
            w = w.clone()
            w[1] = 1.0
        want = w.clone()
        if dim == 0:
            want[index] = (w[index].float() + delta).to(BF16)
        else:
            want[:, index] = (w[:, index].float() + delta).to(BF16)
        got = merged[name + ".weight"]
        assert got.dtype == BF16 and torch.equal(got, want), name


def _peft_expected(model, name):
    """Each adapted weight's merge by hand: float32 arithmetic, one rounding to bf16."""
    from peft.tuners.ia3 import IA3Layer
    from peft.tuners.lora import LoraLayer

    out = {}
    for n, m in model.named_modules():
        if isinstance(m, LoraLayer):
            w = m.get_base_layer().weight
            out[n] = (w.float() + m.get_delta_weight("default").float()).to(BF16)
        elif isinstance(m, IA3Layer):
            w = m.get_base_layer().weight
            out[n] = (w.float() * m.ia3_l["default"].float()).to(BF16)
    return out


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_peft_merge_is_exact(name):
    """peft's merge_and_unload already adds in float32 and rounds once: checked, not assumed."""
    model = tiny_llama().to(BF16)
    method = build_method({"name": name})
    model = method.apply(model)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:  # lora_B starts at 0 and IA3 at 1: give them something to add
                p.add_(torch.randn(p.shape, generator=g) * (3e-3 if "lora" in n else 1e-2))
    want = _peft_expected(model, name)
    prefix = "base_model.model."
    merged = dict(method.merge(model).named_modules())
    assert want
    for n, w in want.items():
        got = merged[n.removeprefix(prefix)].weight
        assert got.dtype == BF16 and torch.equal(got, w), n


@pytest.mark.parametrize("name", ["lape", "random", "lora", "ia3"])
def test_methods_without_autocast_train_a_bf16_model(name):
    """needs_autocast=False: their float32 tensors meet bf16 activations without autocast."""
    model = tiny_llama().to(BF16)
    method = build_method({"name": name})
    assert not method.needs_autocast
    model = method.apply(model, MASK if method.needs_neurons else None)
    x = torch.randint(0, 101, (2, 12))
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and all(g is not None and g.dtype == torch.float32 for g in grads)


def test_dense_method_on_bf16_needs_autocast():
    """needs_autocast=True: ffn's float32 weights meet bf16 activations; autocast computes."""
    model = tiny_llama().to(BF16)
    method = build_method({"name": "ffn"})
    assert method.needs_autocast
    method.apply(model)
    x = torch.randint(0, 101, (2, 12))
    with pytest.raises(RuntimeError, match="dtype"):
        model(input_ids=x, labels=x)
    with torch.autocast("cpu", dtype=BF16):
        loss = model(input_ids=x, labels=x).loss
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize("name,dtype,precision,sharded,found", [
    ("ffn", "bfloat16", "32-true", False, ["method=ffn", "model.dtype=bfloat16",
                                          "trainer.precision=32-true", "bf16-mixed"]),
    ("full", "float16", "32", False, ["method=full", "model.dtype=float16"]),
    ("full", "bfloat16", "bf16-mixed", False, []),
    ("ffn", "float32", "32-true", False, []),
    ("lape", "bfloat16", "32-true", False, []),
    ("lora", "bfloat16", "32-true", False, []),
    ("lape", "float32", "bf16-true", False, ["trainer.precision=bf16-true", "master"]),
    ("full", "bfloat16", "16-true", False, ["trainer.precision=16-true"]),
    ("lape", "bfloat16", "bf16-mixed", True, ["under FSDP", "model.dtype=float32"]),
    ("full", "bfloat16", "bf16-mixed", True, []),
    ("lape", "float32", "bf16-mixed", True, []),
])
def test_precision_problems(name, dtype, precision, sharded, found):
    lines = precision_problems(build_method({"name": name}), dtype, precision, sharded=sharded)
    assert (len(lines) == 1) == bool(found)
    assert all(word in lines[0] for word in found) if found else lines == []


def _decay_setup(lr=0.01, wd=0.1):
    model = tiny_llama()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    build_method({"name": "lape"}).apply(model, MASK)
    lins = parametrized_linears(model)
    deltas = [lin.parametrizations.weight[0].delta for _, lin in lins]
    return model, base, lins, deltas


def test_real_weight_decay_with_zero_gradient():
    """One AdamW step with a zero gradient: W_S + Δ = W_S (1 - lr wd), everything else equal."""
    lr, wd = 0.01, 0.1
    model, base, lins, deltas = _decay_setup()
    opt = torch.optim.AdamW([{"params": deltas[:3], "weight_decay": wd},
                             {"params": deltas[3:], "weight_decay": 0.0}], lr=lr)
    assert len(attach_real_weight_decay(opt, model)) == 2
    for d in deltas:
        d.grad = torch.zeros_like(d)
    opt.step()
    slices = {n + ".weight": (lin.parametrizations.weight[0].dim,
                              lin.parametrizations.weight[0].index, i < 3)
              for i, (n, lin) in enumerate(lins)}
    merge_neuron_deltas(model)
    for k, w in model.state_dict().items():
        if k not in slices:
            assert torch.equal(w, base[k]), k
            continue
        dim, index, decayed = slices[k]
        rest = torch.ones(w.shape[dim], dtype=torch.bool)
        rest[index] = False
        assert torch.equal(w.index_select(dim, rest.nonzero()[:, 0]),
                           base[k].index_select(dim, rest.nonzero()[:, 0]))
        got, w_s = w.index_select(dim, index), base[k].index_select(dim, index)
        want = w_s * (1 - lr * wd) if decayed else w_s
        assert torch.allclose(got, want, rtol=1e-6, atol=0), k


@pytest.mark.parametrize("opt_cls", [torch.optim.AdamW, torch.optim.SGD])
def test_delta_follows_the_real_weight(opt_cls):
    """Δ with the hook follows, to float32 rounding, the path W_S itself takes when it trains
    with the same gradients: decoupled (AdamW) and coupled L2 (SGD) decay."""
    model, _, lins, deltas = _decay_setup()
    real = [torch.nn.Parameter(lin.parametrizations.weight[0].offset().clone())
            for _, lin in lins]
    opt_d = opt_cls(deltas, lr=0.01, weight_decay=0.1)
    opt_r = opt_cls(real, lr=0.01, weight_decay=0.1)
    attach_real_weight_decay(opt_d, model)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        for d, r in zip(deltas, real):
            d.grad = torch.randn(d.shape, generator=g)
            r.grad = d.grad.clone()
        opt_d.step()
        opt_r.step()
    for (_, lin), d, r in zip(lins, deltas, real):
        offset = lin.parametrizations.weight[0].offset()
        assert not torch.equal(d, torch.zeros_like(d))
        assert torch.allclose(offset + d, r, rtol=0, atol=1e-6)


def test_no_offset_deltas_no_hooks():
    model = build_method({"name": "full"}).apply(tiny_llama())
    opt = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
    assert attach_real_weight_decay(opt, model) == []


def test_export_cli_reproduces_the_run_export_bit_for_bit(tmp_path, tok):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from langsub.export import delta_metadata, export_model, main

    model = embedded_bf16()
    method = build_method({"name": "lape"})
    method.apply(model, embedded_neurons())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, lin in parametrized_linears(model):
            d = lin.parametrizations.weight[0].delta
            d.copy_(torch.randn(d.shape, generator=g) * 1e-4)
    delta = method.delta(model)
    assert all(v.dtype == torch.float32 for k, v in delta.items() if k.endswith(".delta"))
    run = tmp_path / "run"
    meta = delta_metadata(model, delta, method="lape")
    export_model(run, method.merge(model), tok, delta, meta)
    with safe_open(str(run / "delta.safetensors"), "pt") as f:
        assert f.metadata()["dtype"] == "bfloat16"
    main(["--base", str(TINY), "--delta", str(run / "delta.safetensors"),
          "--out", str(tmp_path / "cli")])
    ours, cli = load_file(str(run / "export" / "model.safetensors")), \
        load_file(str(tmp_path / "cli" / "model.safetensors"))
    base = embedded_bf16().state_dict()
    assert set(ours) == set(cli)
    assert all(cli[k].dtype == BF16 and torch.equal(ours[k], cli[k]) for k in ours)
    assert any(not torch.equal(ours[k], base[k]) for k in ours)  # the deltas did something
