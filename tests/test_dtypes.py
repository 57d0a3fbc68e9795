"""`${fast_dtype:...}`: bfloat16 only where the hardware computes it natively."""
import torch
from hydra import compose, initialize_config_dir

import langsub  # noqa: F401  (registers the resolver)
from langsub.model import dtypes
from conftest import ROOT


def test_cpu_without_native_bf16_gets_float32(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert dtypes.fast_dtype("cpu") == "float32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert dtypes.fast_dtype("cpu") == "bfloat16"


def test_gpu_without_bf16_or_cuda_gets_float32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dtypes.fast_dtype("gpu") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert dtypes.fast_dtype("gpu") == "bfloat16"
    assert dtypes.fast_dtype("auto") == "bfloat16"


def test_gemma_config_resolves_to_this_machine_s_fast_dtype():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=gemma3_270m"])
        given = compose("train", overrides=["model=gemma3_270m", "model.dtype=bfloat16"])
    assert cfg.model.dtype == dtypes.fast_dtype(cfg.trainer.accelerator)
    assert cfg.model.dtype == ("bfloat16" if dtypes.cpu_has_bf16() else "float32")
    assert given.model.dtype == "bfloat16"  # a dtype given on the command line wins
