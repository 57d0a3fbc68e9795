"""Component benchmarks: each prints a table and writes JSON (docs/BENCHMARKS.md).

    langsub bench loss                     # chunked vs plain loss at Gemma's vocabulary
    langsub bench NAME --help              # a benchmark's own options

The training step itself is `langsub profile` (bench/step.py).
"""
from __future__ import annotations

import importlib
import sys

BENCHES = {  # name -> (module, what it measures)
    "loss": ("loss", "the chunked loss against the plain [B, T, V] logits (time, memory)"),
    "loglikelihood": ("loglikelihood", "benchmark scoring: the head at continuation positions "
                      "vs lm-eval's HFLM"),
    "alignment": ("alignment", "the alignment analysis' hidden-state pass vs one sentence at a "
                  "time"),
    "scorers": ("scorers", "each neuron scorer's statistics pass against the plain forward"),
    "frozen-head": ("frozen_head", "a frozen bf16 head times a strided vs contiguous input (CPU)"),
    "gguf": ("gguf", "an exported GGUF in llama.cpp against its PyTorch model"),
    "portability": ("portability", "a delta on its own base, on a sibling, composed with others"),
}


def usage() -> str:
    w = max(map(len, BENCHES))
    return "usage: langsub bench NAME [options]\n\nbenchmarks:\n" + "\n".join(
        f"  {n:<{w}}  {h}" for n, (_, h) in BENCHES.items())


def main(argv=None) -> None:
    from langsub.errors import fail

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] not in BENCHES:
        fail(f"unknown benchmark {argv[0]!r}; allowed: {', '.join(BENCHES)}")
    sys.argv[0] = f"langsub bench {argv[0]}"
    importlib.import_module(f"langsub.bench.{BENCHES[argv[0]][0]}").main(argv[1:])
