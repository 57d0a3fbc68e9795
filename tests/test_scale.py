"""Real model configs build on the meta device; dry runs count what will train; no download."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import ROOT
from langsub.model.load import meta_model
from langsub.training.dryrun import dry_run
from langsub.model.ffn import find_ffns

REAL = ["llama31_8b", "mistral_nemo", "qwen25_7b", "gemma2_9b", "aya_expanse_8b",
        "gemma3_1b", "gemma3_4b", "gemma3_12b"]


def _cfg(overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("name", REAL)
def test_real_configs_build_on_meta(name):
    cfg = _cfg([f"model={name}"])
    model = meta_model(cfg.model)
    ffns = find_ffns(model)
    assert len(ffns) == cfg.model.arch.num_hidden_layers
    assert ffns[0].n_neurons == cfg.model.arch.intermediate_size
    assert next(model.parameters()).device.type == "meta"


def test_dry_run_plans_the_chunked_loss_for_a_262k_vocabulary():
    from langsub.training.dryrun import dry_run

    out = dry_run(_cfg(["model=gemma3_12b", "method=lape", "dry_run=true"]), None)
    assert out["logits_unchunked_gb"] > 10 * out["logits_gb"]  # 5.4 GB of logits -> one chunk
    off = dry_run(_cfg(["model=gemma3_12b", "method=lape", "dry_run=true",
                        "model.loss_chunk=null"]), None)
    assert off["logits_gb"] == off["logits_unchunked_gb"] == out["logits_unchunked_gb"]


def test_dry_run_counts_a_known_mask(tmp_path):
    # 3 languages × 32 layers; af gets 2 neurons in every layer = 64 neurons
    mask = [[torch.tensor([1, 2])] * 32 for _ in range(3)]
    torch.save(mask, tmp_path / "m.pth")
    cfg = _cfg(["model=llama31_8b", f"method.neurons={tmp_path / 'm.pth'}",
                "method.neurons_langs=[mt,af,is]", "lang=af"])
    out = dry_run(cfg)
    assert out["neurons"] == 64
    assert out["trainable_params"] == 64 * 3 * 4096
    assert 8.0e9 < out["total_params"] < 8.1e9
    down = _cfg(["model=llama31_8b", f"method.neurons={tmp_path / 'm.pth'}",
                 "method.neurons_langs=[mt,af,is]", "lang=af", "method.components=[down]"])
    assert dry_run(down)["trainable_params"] == 64 * 4096


def test_dry_run_llama31_with_a_2581_neuron_afrikaans_mask(tmp_path):
    """The size of the released llama-3.1 Afrikaans set: 2581 × 3 × 4096 trainable."""
    g = torch.Generator().manual_seed(0)
    per_layer = [81] * 21 + [80] * 11  # 2581 over 32 layers
    af = [torch.randperm(14336, generator=g)[:n].sort().values for n in per_layer]
    other = [torch.tensor([0])] * 32
    langs = ["mt", "af", "is", "cy", "mk", "lv", "lt", "sl", "sk", "et", "ka", "ne"]
    torch.save([other, af] + [other] * 10, tmp_path / "llama31.pth")
    out = dry_run(_cfg(["model=llama31_8b", f"method.neurons={tmp_path / 'llama31.pth'}",
                        f"method.neurons_langs=[{','.join(langs)}]", "lang=af"]))
    assert out["neurons"] == 2581
    assert out["trainable_params"] == 2581 * 3 * 4096 == 31_715_328
    assert round(100 * out["trainable_fraction"], 2) == 0.39


def test_dry_run_estimates_lape_and_lora():
    lape = dry_run(_cfg(["model=mistral_nemo", "rho=0.01"]))
    assert lape["neurons"] == round(0.01 * 40 * 14336)
    assert lape["trainable_params"] == lape["neurons"] * 3 * 5120
    lora = dry_run(_cfg(["model=qwen25_7b", "method=lora"]))
    assert 0 < lora["trainable_fraction"] < 0.05


def test_unsupported_families_refused():
    from transformers import MixtralConfig, MixtralForCausalLM

    from langsub.model.ffn import UnsupportedModelError

    with torch.device("meta"):
        moe = MixtralForCausalLM(MixtralConfig(num_hidden_layers=1, hidden_size=32,
                                               intermediate_size=64, num_attention_heads=4,
                                               num_key_value_heads=2, num_local_experts=2))
    with pytest.raises(UnsupportedModelError, match="supported FFNs"):
        find_ffns(moe)


def test_memory_plan_by_hand():
    from types import SimpleNamespace

    from langsub.training.dryrun import activation_bytes, memory_plan

    c = SimpleNamespace(hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1, vocab_size=10)
    # per token and layer: 4·8 + 2·8 + 2·4 + 4·16 = 120 elements; 2 bytes; 3 tokens
    a = activation_bytes(c, tokens=3, act_bytes=2, checkpointing=False)
    assert a["activations_gb"] * 1e9 == 2 * 120 * 2 * 3
    assert a["logits_gb"] * 1e9 == 3 * 10 * (2 + 4 + 4)
    chunked = activation_bytes(c, tokens=3, act_bytes=2, checkpointing=False, loss_rows=2)
    assert chunked["logits_gb"] * 1e9 == 2 * 10 * (2 + 4) + 3 * 8 * 2  # one chunk + dL/dh
    assert chunked["logits_unchunked_gb"] == a["logits_gb"]
    ck = activation_bytes(c, tokens=3, act_bytes=2, checkpointing=True)
    assert ck["activations_gb"] * 1e9 == 2 * 8 * 2 * 3 + 120 * 2 * 3
    # 1000 weights as the method left them: 990 frozen bf16 + 10 trainable float32 masters;
    # the 10 trainable ones' gradients and two AdamW states are float32 too
    m = memory_plan(weights_bytes=990 * 2 + 10 * 4, trainable=10, act=a)
    assert (m["weights_gb"], m["gradients_gb"], m["optimizer_gb"]) == (2.02e-6, 4e-8, 8e-8)
    assert m["peak_gb"] == sum(v for k, v in m.items()
                               if k not in ("peak_gb", "logits_unchunked_gb"))
    # full fine-tuning under bf16-mixed: autocast's bf16 copies of the fp32 masters
    f = memory_plan(weights_bytes=1000 * 4, trainable=1000, act=a, autocast_copies=2 * 1000)
    assert f["autocast_gb"] == 2e-6
    held = sum(v for k, v in a.items() if k != "logits_unchunked_gb")  # the plain loss's, not held
    assert f["peak_gb"] == pytest.approx(held + 4e-6 + 4e-6 + 8e-6 + 2e-6)


def test_dry_run_counts_float32_masters_of_a_bf16_model(tmp_path):
    """llama31_8b loads bf16: the frozen weights count 2 bytes, every trainable tensor, its
    gradient and AdamW's two states 4 bytes each (lape's deltas add to the weights, full's
    masters replace them)."""
    mask = [[torch.tensor([1, 2])] * 32]
    torch.save(mask, tmp_path / "m.pth")
    out = dry_run(_cfg(["model=llama31_8b", f"method.neurons={tmp_path / 'm.pth'}",
                        "method.neurons_langs=[af]", "lang=af"]))
    total, trainable = out["total_params"], out["trainable_params"]
    assert out["weights_gb"] * 1e9 == pytest.approx(2 * total + 4 * trainable, rel=1e-12)
    assert out["gradients_gb"] * 1e9 == pytest.approx(4 * trainable, rel=1e-12)
    assert out["optimizer_gb"] * 1e9 == pytest.approx(8 * trainable, rel=1e-12)
    full = out["compare"]["full"]
    assert full["weights_gb"] * 1e9 == pytest.approx(4 * total, rel=1e-12)
    assert full["gradients_gb"] == pytest.approx(full["weights_gb"], rel=1e-12)


def test_dry_run_writes_plan_beside_lora_and_full(tmp_path):
    import json

    mask = [[torch.tensor([1, 2])] * 32]
    torch.save(mask, tmp_path / "m.pth")
    out = dry_run(_cfg(["model=llama31_8b", "data=glotcc", "trainer=gpu",
                        f"method.neurons={tmp_path / 'm.pth'}", "method.neurons_langs=[af]"]),
                  tmp_path)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["trainable_params"] == 64 * 3 * 4096 and plan["precision"] == "bf16-mixed"
    assert set(plan["compare"]) == {"lora", "full"}
    full = plan["compare"]["full"]
    assert full["trainable_params"] == full["total_params"] == out["total_params"]
    assert full["optimizer_gb"] == 2 * full["weights_gb"]  # AdamW: two float32 states
    assert plan["peak_gb"] < plan["compare"]["lora"]["peak_gb"] < full["peak_gb"]
