"""Exports: the merged model as a plain transformers checkpoint, and the trained slices alone.

Apply deltas to a base model (several languages compose into one model):

    python -m langsub.export --base assets/tiny-llama --out merged/ \
        --delta outputs/lape/af/<time>/delta.safetensors outputs/lape/is/<time>/delta.safetensors

Each delta is "trained slice - base slice" for its own neurons. Deltas add: where two
languages share a neuron, the merged slice is base + delta_1 + delta_2 (task arithmetic);
everywhere else each delta acts alone, exactly as in its own run.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from langsub.errors import CheckpointError
from langsub.io import atomic_write


def export_model(out_dir: Path, merged, tokenizer, delta: dict | None = None,
                 method_name: str = "") -> Path:
    """Write `delta.safetensors` (if given) and `export/` (the merged model, plain keys)."""
    if delta:
        atomic_write(out_dir / "delta.safetensors", lambda p: save_file(
            delta, p, metadata={"format": "langsub-neuron-delta", "method": method_name}))
    final, tmp = out_dir / "export", out_dir / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


@torch.no_grad()
def apply_deltas(model: torch.nn.Module, paths: list[str | Path]) -> torch.nn.Module:
    """Add every `delta.safetensors` in `paths` to `model`'s weights, in place."""
    modules = dict(model.named_modules())
    for path in paths:
        t = load_file(str(path))
        names = sorted({k.rsplit(".", 1)[0] for k in t})
        missing = [n for n in names if n not in modules]
        if missing:
            raise CheckpointError(f"{path}: the model has no module {missing[0]} "
                             f"({len(missing)} of {len(names)} missing): another architecture?")
        for name in names:
            w = modules[name].weight
            dim, index = int(t[f"{name}.dim"]), t[f"{name}.index"]
            delta = t[f"{name}.delta"].to(w.dtype)
            expect = (len(index), w.shape[1]) if dim == 0 else (w.shape[0], len(index))
            if tuple(delta.shape) != expect or int(index.max()) >= w.shape[dim]:
                raise CheckpointError(f"{path}: {name} delta {tuple(delta.shape)} does not fit "
                                 f"weight {tuple(w.shape)}")
            w.index_add_(dim, index.to(w.device), delta.to(w.device))
    return model


def main(argv=None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = argparse.ArgumentParser(description="Apply langsub neuron deltas to a base model.")
    ap.add_argument("--base", required=True, help="base model directory or hub id")
    ap.add_argument("--delta", nargs="+", required=True, help="delta.safetensors files")
    ap.add_argument("--out", required=True, help="output directory (save_pretrained)")
    a = ap.parse_args(argv)
    model = AutoModelForCausalLM.from_pretrained(a.base, dtype=torch.float32)
    apply_deltas(model, a.delta)
    model.save_pretrained(a.out)
    AutoTokenizer.from_pretrained(a.base).save_pretrained(a.out)
    print(f"applied {len(a.delta)} delta(s) to {a.base} -> {a.out}")


if __name__ == "__main__":
    main()
