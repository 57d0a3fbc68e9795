"""The precision rule of every method, and which trainer precisions can compute it.

Every trainable tensor keeps float32 master values (and so float32 gradients and optimizer
state) whatever the model's dtype; frozen weights stay in the dtype the model was loaded in.
With bfloat16 weights and no float32 copy, an update of lr·(Adam's unit step) = 1e-5 is below
half a unit in the last place of most weights and rounds away. The compute dtype follows the
trainer: the sparse deltas are cast to the activations' dtype where they are used, peft casts
its adapters' outputs back, and dense float32 weights on a half-precision model compute
through autocast (`trainer.precision=bf16-mixed` or `16-mixed`).
"""
from __future__ import annotations

import torch
from torch import nn

DTYPES = ("float32", "bfloat16", "float16")  # the weight dtypes a model loads and ships in
HALF = (torch.float16, torch.bfloat16)
AUTOCAST = ("bf16-mixed", "16-mixed")
HALF_TRUE = ("bf16-true", "16-true")
LEGACY = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}


def master_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a trainable tensor keeps: float32, or float64 where the weight already is."""
    return torch.promote_types(dtype, torch.float32)


def keep_fp32_masters(model: nn.Module) -> dict[str, torch.dtype]:
    """Cast every trainable parameter below float32 to float32, in place: the Parameter object
    stays the same, so peft, tied weights and optimizers keep pointing at it. Returns
    `name -> the dtype it was loaded in` for `restore_dtypes`."""
    loaded = {}
    for name, p in model.named_parameters():
        if p.requires_grad and p.is_floating_point() and p.dtype != master_dtype(p.dtype):
            loaded[name] = p.dtype
            p.data = p.data.to(master_dtype(p.dtype))
    return loaded


@torch.no_grad()
def restore_dtypes(model: nn.Module, loaded: dict[str, torch.dtype]) -> nn.Module:
    """Cast the master values back to the dtype each was loaded in (rounding once), so the
    exported model has the dtype it was shipped in."""
    params = dict(model.named_parameters())
    missing = sorted(set(loaded) - set(params))
    if missing:
        raise KeyError(f"the model has no parameter {missing[0]} ({len(missing)} of "
                       f"{len(loaded)} trained tensors missing): was it re-wrapped?")
    for name, dtype in loaded.items():
        params[name].data = params[name].data.to(dtype)
    return model


def dtype_name(dtype: torch.dtype | str) -> str:
    """"bfloat16" for torch.bfloat16 (config and metadata spelling)."""
    return str(dtype).removeprefix("torch.")


def precision_problems(method, model_dtype: torch.dtype | str, trainer_precision,
                       sharded: bool = False) -> list[str]:
    """One line per combination of method, `model.dtype` and `trainer.precision` (and FSDP,
    `sharded`) that cannot keep the float32 master values or cannot compute with them."""
    dtype = getattr(torch, model_dtype) if isinstance(model_dtype, str) else model_dtype
    given = str(trainer_precision)
    precision = LEGACY.get(given, given)
    where = (f"method={method.name} with model.dtype={dtype_name(dtype)} and "
             f"trainer.precision={given}")
    out = []
    if precision in HALF_TRUE:
        out.append(f"trainer.precision={given}: Lightning casts the whole model to "
                   f"{precision.split('-')[0]}, the trainable tensors' float32 master values "
                   "included; allowed is 32-true, bf16-mixed or 16-mixed (model.dtype sets "
                   "the frozen weights' dtype)")
    elif method.needs_autocast and dtype in HALF and precision not in AUTOCAST:
        out.append(f"{where}: its float32 master weights meet {dtype_name(dtype)} activations "
                   "and compute only under autocast; allowed is trainer.precision=bf16-mixed "
                   "or 16-mixed, or model.dtype=float32")
    if sharded and dtype in HALF and not method.trains_all_weights:
        out.append(f"{where} under FSDP: FSDP flattens a layer's frozen and trainable weights "
                   f"into one tensor of one dtype, and the trainable ones are float32; allowed "
                   "is model.dtype=float32 (FSDP computes in trainer.precision's dtype), "
                   "method=full, or a strategy without sharding")
    return out
