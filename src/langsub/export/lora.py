"""A neuron delta as an exact peft LoRA adapter, for transformers/peft and vLLM.

    python train.py method=lape lang=af export.lora=true          # export/lora/
    langsub export --delta delta.safetensors --lora out/ [--delta …]

k trained neurons of one linear change k rows (gate, up: ΔW[idx, :] = D) or k columns
(down: ΔW[:, idx] = E). Both are rank-≤k products with a one-hot S (k × n): ΔW = Sᵀ·D
(B = Sᵀ, A = D) and ΔW = E·S (B = E, A = S). So the adapter is the delta itself, no SVD:
rank k per module (`rank_pattern`), alpha = rank (scale 1), float32 factors. Several
deltas (languages) become one adapter each, or one merged adapter whose factors are
stacked per module (ranks add; where languages share a neuron the updates add, as
`langsub.export` adds deltas).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

PREFIX = "base_model.model."
VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values


def factors(delta: dict, shapes: dict[str, tuple[int, int]]) -> dict[str, tuple]:
    """{module: (A [k, in], B [out, k])} of one delta (float32); `shapes`: each module's
    weight shape [out, in]."""
    out = {}
    for name in sorted({k.rsplit(".", 1)[0] for k in delta}):
        d, idx, dim = delta[f"{name}.delta"].float(), delta[f"{name}.index"].long(), \
            int(delta[f"{name}.dim"])
        module = name[: -len(".weight")] if name.endswith(".weight") else name
        n_out, n_in = shapes[module]
        k = len(idx)
        if dim == 0:  # rows: ΔW = Sᵀ D, S one-hot [k, out]
            b = torch.zeros(n_out, k)
            b[idx, torch.arange(k)] = 1.0
            out[module] = (d.reshape(k, n_in), b)
        else:  # columns: ΔW = E S, S one-hot [k, in]
            a = torch.zeros(k, n_in)
            a[torch.arange(k), idx] = 1.0
            out[module] = (a, d.reshape(n_out, k))
    return out


def stack(parts: list[dict[str, tuple]]) -> dict[str, tuple]:
    """One adapter from several: per module, A stacked on rows and B on columns (the sum of
    the updates)."""
    out: dict[str, tuple] = {}
    for p in parts:
        for m, (a, b) in p.items():
            if m in out:
                a0, b0 = out[m]
                out[m] = (torch.cat([a0, a]), torch.cat([b0, b], 1))
            else:
                out[m] = (a, b)
    return out


def write(out: Path, fac: dict[str, tuple], base_model: str | None = None) -> dict:
    """adapter_config.json (peft's LoraConfig: per-module ranks, alpha = rank) and
    adapter_model.safetensors, written to a temporary directory and renamed."""
    from peft import LoraConfig

    ranks = {m: a.shape[0] for m, (a, _) in fac.items()}
    r = max(ranks.values())
    cfg = LoraConfig(r=r, lora_alpha=r, target_modules=sorted(ranks), lora_dropout=0.0,
                     bias="none", task_type="CAUSAL_LM", base_model_name_or_path=base_model,
                     rank_pattern={f"^{m}$": k for m, k in ranks.items()},
                     alpha_pattern={f"^{m}$": k for m, k in ranks.items()})
    tensors = {}
    for m, (a, b) in fac.items():
        tensors[f"{PREFIX}{m}.lora_A.weight"] = a.contiguous()
        tensors[f"{PREFIX}{m}.lora_B.weight"] = b.contiguous()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg.save_pretrained(str(tmp))
    save_file(tensors, str(tmp / "adapter_model.safetensors"))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return {"lora": str(out), "bytes": (out / "adapter_model.safetensors").stat().st_size,
            "max_rank": r, "ranks": ranks,
            "vllm_max_lora_rank": next((v for v in VLLM_RANKS if v >= r), None)}


def shapes_of(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    return {n: tuple(m.weight.shape) for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


def export(deltas: list[dict], model: torch.nn.Module, out: Path, base_model=None,
           merged: bool = True) -> list[dict]:
    """One adapter for all `deltas` (`merged`) into `out`, or one per delta into
    `out/<i>`; `model` gives the linears' shapes."""
    shapes = shapes_of(model)
    parts = [factors(d, shapes) for d in deltas]
    if merged or len(parts) == 1:
        return [write(out, stack(parts), base_model)]
    return [write(out / str(i), p, base_model) for i, p in enumerate(parts)]


def summary(info: dict) -> str:
    return json.dumps({k: v for k, v in info.items() if k != "ranks"})
