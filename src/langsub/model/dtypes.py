"""`${fast_dtype:<accelerator>}` in a model config: bfloat16 where the hardware computes it
natively, float32 where it does not.

A CPU without AVX512-BF16 or AMX emulates bfloat16 matmuls ~150x slower than float32 (measured
on an AVX2-only EPYC: 0.35 against 50 GFLOP/s, 2 threads); one with them runs bfloat16 ~3x
faster than float32. GPUs: bfloat16 where `torch.cuda.is_bf16_supported()` (Ampere and newer).
The stats and "before" caches key on the resolved dtype, and metrics.json records it (`dtype`).
"""
from __future__ import annotations

from omegaconf import OmegaConf


def cpu_has_bf16() -> bool:
    """Native bfloat16 dot products on this CPU (AVX512-BF16 or AMX tiles)."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch: ask the kernel
        try:
            flags = open("/proc/cpuinfo", encoding="ascii", errors="ignore").read()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def fast_dtype(accelerator: str | None = "auto") -> str:
    """"bfloat16" or "float32" for the accelerator a run uses (cpu, gpu, cuda or auto)."""
    import torch

    gpu = accelerator in ("gpu", "cuda") or (accelerator in (None, "auto")
                                             and torch.cuda.is_available())
    if gpu:
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() \
            else "float32"
    return "bfloat16" if cpu_has_bf16() else "float32"


def register() -> None:
    if not OmegaConf.has_resolver("fast_dtype"):
        OmegaConf.register_new_resolver("fast_dtype", fast_dtype)
