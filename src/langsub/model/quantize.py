"""A quantized frozen base: `model.quantize=nf4` (4-bit NormalFloat, QLoRA's) or `int8`.

    python train.py method=lape lang=af model.quantize=nf4

bitsandbytes does the quantization, through transformers' `BitsAndBytesConfig`: every linear
layer of the decoder becomes a `Linear4bit` (`Linear8bitLt`) whose packed weight is never
written to; embeddings, norms and the LM head keep the model's dtype. It was chosen over
torchao's `NF4Tensor` because transformers loads any hub checkpoint into it, peft's LoRA and
IA3 wrap its layers (QLoRA) without conversion, and its 4-bit kernels run on this CPU as on
CUDA. The sparse methods add their float32 deltas beside the quantized product
(`methods.sparse.HookedNeuronDelta`); full and FFN-only fine-tuning would have to write the
packed weights and are refused.
"""
from __future__ import annotations

import importlib.util

import torch
from torch import nn

from langsub.errors import ConfigError

QUANTIZATIONS = ("nf4", "int8")
DEVICES = ("cpu", "cuda", "gpu", "auto")  # where bitsandbytes' 4-bit and 8-bit kernels run
INSTALL = "pip install 'langsub[quant]' (bitsandbytes>=0.45)"


def backend_problems(quantize, accelerator) -> list[str]:
    """One line if `model.quantize` cannot run here: bitsandbytes missing, or a device its
    kernels do not support."""
    if quantize is None:
        return []
    if importlib.util.find_spec("bitsandbytes") is None:
        return [f"model.quantize={quantize} needs bitsandbytes, which is not installed: "
                f"{INSTALL}, or model.quantize=null"]
    if str(accelerator) not in DEVICES:
        return [f"model.quantize={quantize} with trainer.accelerator={accelerator}: bitsandbytes "
                f"runs on {', '.join(DEVICES[:2])}; use trainer.accelerator=cpu or gpu, or "
                "model.quantize=null"]
    return []


def quantization_config(cfg_model):
    """transformers' `BitsAndBytesConfig` for `cfg_model.quantize` (None: full precision).
    nf4 as QLoRA: double-quantized block constants, compute in the model's dtype."""
    quantize = cfg_model.get("quantize")
    if quantize is None:
        return None
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"model.quantize={quantize!r}: allowed is one of {list(QUANTIZATIONS)} "
                          "or null")
    from transformers import BitsAndBytesConfig

    if quantize == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=getattr(torch, cfg_model.get("dtype",
                                                                                  "float32")))


def keep_differentiable(model: nn.Module) -> nn.Module:
    """Turn off bitsandbytes' CPU inference layout: on a CPU with AVX512-BF16 a 4-bit layer
    in eval mode re-packs its weight once and from then on multiplies in bfloat16 through a
    kernel with no backward, so a later training step would get no gradient through any
    quantized layer (only along the residual stream). With it off, every call dequantizes
    the packed weight (never written) and multiplies in the compute dtype, with autograd."""
    for m in model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
    return model


def is_quantized(linear: nn.Module) -> bool:
    """True for a bitsandbytes linear whose weight is packed (not a float tensor)."""
    w = getattr(linear, "weight", None)
    return w is not None and not w.is_floating_point() and \
        type(w).__name__ in ("Params4bit", "Int8Params")


@torch.no_grad()
def dense_weight(linear: nn.Module) -> torch.Tensor:
    """The weight a linear computes with: its own tensor, or the dequantized packed one
    ([out_features, in_features], in the layer's compute dtype)."""
    w = linear.weight
    if not is_quantized(linear):
        return w
    import bitsandbytes.functional as bf

    if getattr(w, "quant_state", None) is not None:  # 4-bit
        return bf.dequantize_4bit(w.data, w.quant_state)
    scb = w.SCB if getattr(w, "SCB", None) is not None else linear.state.SCB  # moved at 1st call
    scale = scb.float()[:, None] / 127.0  # int8: one absmax per output row
    return (w.data.float() * scale).to(torch.float16)


def logical_numel(p: torch.Tensor) -> int:
    """How many weights a parameter holds (a 4-bit one packs two per byte)."""
    state = getattr(p, "quant_state", None)
    return int(torch.Size(state.shape).numel()) if state is not None else p.numel()


def packed_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every quantized weight's packed storage (name -> bytes), to check that
    training never writes to them."""
    return {n: m.weight.data.detach().clone() for n, m in model.named_modules()
            if is_quantized(m)}
