"""Exports: the merged model as a plain transformers checkpoint, and the trained slices alone.

Apply deltas to a base model (several languages compose into one model):

    python -m langsub.export --base assets/tiny-llama --out merged/ \
        --delta outputs/lape/af/<time>/delta.safetensors outputs/lape/is/<time>/delta.safetensors

Each delta is "trained slice - base slice" for its own neurons, in float32. Deltas add: where
two languages share a neuron, the merged slice is base + delta_1 + delta_2 (task arithmetic);
everywhere else each delta acts alone, exactly as in its own run. The base loads in the dtype
the run used (the deltas' metadata; `--dtype` overrides) and the sums are the run's own merge
(`methods.sparse.add_slices`: float32, cast once), so one delta reproduces the run's `export/`
bit for bit.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from langsub.errors import CheckpointError
from langsub.io import atomic_write
from langsub.methods.precision import dtype_name
from langsub.methods.sparse import add_slices

DTYPES = ("float32", "bfloat16", "float16")


def export_model(out_dir: Path, merged, tokenizer, delta: dict | None = None,
                 method_name: str = "") -> Path:
    """Write `delta.safetensors` (if given; its metadata names the merged model's dtype, the
    one the base is loaded in to apply it) and `export/` (the merged model, plain keys)."""
    if delta:
        meta = {"format": "langsub-neuron-delta", "method": method_name,
                "dtype": dtype_name(next(merged.parameters()).dtype)}
        atomic_write(out_dir / "delta.safetensors", lambda p: save_file(delta, p, metadata=meta))
    final, tmp = out_dir / "export", out_dir / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


@torch.no_grad()
def apply_deltas(model: torch.nn.Module, paths: list[str | Path]) -> torch.nn.Module:
    """Add every `delta.safetensors` in `paths` to `model`'s weights, in place: each weight's
    deltas summed in float32 and cast once. Every file is checked before a weight changes."""
    modules = dict(model.named_modules())
    slices: dict[str, list] = {}
    for path in paths:
        t = load_file(str(path))
        names = sorted({k.rsplit(".", 1)[0] for k in t})
        missing = [n for n in names if n not in modules]
        if missing:
            raise CheckpointError(f"{path}: the model has no module {missing[0]} "
                             f"({len(missing)} of {len(names)} missing): another architecture?")
        for name in names:
            w = modules[name].weight
            dim, index, delta = int(t[f"{name}.dim"]), t[f"{name}.index"], t[f"{name}.delta"]
            expect = (len(index), w.shape[1]) if dim == 0 else (w.shape[0], len(index))
            if tuple(delta.shape) != expect or int(index.max()) >= w.shape[dim]:
                raise CheckpointError(f"{path}: {name} delta {tuple(delta.shape)} does not fit "
                                 f"weight {tuple(w.shape)}")
            slices.setdefault(name, []).append((dim, index, delta))
    for name, parts in slices.items():
        w = modules[name].weight
        w.copy_(add_slices(w, parts))
    return model


def delta_dtype(paths: list[str | Path]) -> str:
    """The dtype the deltas' run loaded its model in (their metadata; float32 if absent)."""
    found = set()
    for path in paths:
        with safe_open(str(path), "pt") as f:
            found.add((f.metadata() or {}).get("dtype", "float32"))
    if len(found) > 1:
        raise CheckpointError(f"the deltas come from runs in different dtypes {sorted(found)}: "
                              "choose one with --dtype")
    dtype = found.pop()
    if dtype not in DTYPES:
        raise CheckpointError(f"delta metadata dtype={dtype!r}: expected one of {DTYPES}")
    return dtype


def main(argv=None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser(description="Apply langsub neuron deltas to a base model.")
    ap.add_argument("--base", required=True, help="base model directory or hub id")
    ap.add_argument("--delta", nargs="+", required=True, help="delta.safetensors files")
    ap.add_argument("--out", required=True, help="output directory (save_pretrained)")
    ap.add_argument("--dtype", choices=DTYPES, default=None,
                    help="load the base in this dtype (default: the one the deltas' run used)")
    a = ap.parse_args(argv)
    dtype = a.dtype or delta_dtype(a.delta)
    model = AutoModelForCausalLM.from_pretrained(a.base, dtype=getattr(torch, dtype))
    apply_deltas(model, a.delta)
    model.save_pretrained(a.out)
    AutoTokenizer.from_pretrained(a.base).save_pretrained(a.out)
    print(f"applied {len(a.delta)} delta(s) to {a.base} ({dtype}) -> {a.out}")


if __name__ == "__main__":
    main()
