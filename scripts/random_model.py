"""A real model's shapes with random weights, saved as a transformers checkpoint (for GPU
checks of memory and speed without downloading the weights).

    python scripts/random_model.py llama31_8b /tmp/llama8b_random
    python scripts/random_model.py llama31_8b /tmp/small --set num_hidden_layers=2 hidden_size=256

The architecture is `conf/model/<name>.yaml`'s `arch`; the tokenizer is the embedded
model's (its ids are all below the real vocabulary size). Built on the GPU when there is
one, in the config's dtype.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> Path:
    from transformers import AutoTokenizer

    from langsub.model.load import random_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a conf/model/<name>.yaml with an `arch`")
    ap.add_argument("out", type=Path)
    ap.add_argument("--set", nargs="*", default=[], help="arch overrides key=value")
    a = ap.parse_args(argv)
    cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{a.model}.yaml")
    cfg.arch = OmegaConf.merge(cfg.arch, OmegaConf.from_dotlist(a.set))
    model = random_model(cfg)  # the package's own: seeded, in model.dtype, on the GPU if any
    model.save_pretrained(a.out)
    AutoTokenizer.from_pretrained(ROOT / "assets" / "tiny-llama").save_pretrained(a.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"{a.model}: {n:,} random parameters ({cfg.dtype}) -> {a.out}")
    return a.out


if __name__ == "__main__":
    main()
