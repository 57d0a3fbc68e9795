"""Component benchmarks: each prints a table and writes JSON (docs/BENCHMARKS.md).

    langsub bench loss                     # chunked vs plain loss at Gemma's vocabulary
    langsub bench NAME --help              # a benchmark's own options

The training step itself is `langsub profile` (bench/step.py).
"""
from __future__ import annotations

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
    from langsub.cli import named_command

    named_command(sys.argv[1:] if argv is None else list(argv), BENCHES, __name__, usage(),
                  "benchmark")
