"""Benchmark the output head's product on a CPU: a [262,144 x 640] bf16 weight (Gemma 3's)
times 16 hidden states sliced the way transformers' `logits_to_keep` slices them (strided)
or made contiguous first (`model/load.contiguous_head_input`), with the weight frozen
(after training) or trainable (a fresh model); prints a table, writes JSON.

    langsub bench frozen-head     # writes docs/benchmarks/frozen_head.json
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from langsub.paths import project_root
from langsub.errors import ArgParser

ROOT = project_root()


def main(argv=None) -> None:

    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/frozen_head.json")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    out, rounds = a.out, a.rounds
    torch.manual_seed(0)
    head = torch.nn.Linear(640, 262_144, bias=False).to(torch.bfloat16)
    hidden = torch.randn(16, 30, 640, dtype=torch.bfloat16)
    rows = []
    for frozen in (False, True):
        head.weight.requires_grad_(not frozen)
        for name, x in (("strided (hidden[:, -1:])", hidden[:, -1:]),
                        ("contiguous copy", hidden[:, -1:].contiguous())):
            with torch.no_grad():
                head(x)
                ts = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    head(x)
                    ts.append(time.perf_counter() - t0)
            rows.append({"weight": "frozen" if frozen else "trainable", "input": name,
                         "s": round(statistics.median(ts), 4)})
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {rounds}")
    print("| weight | input | s |\n|---|---|---|")
    for r in rows:
        print(f"| {r['weight']} | {r['input']} | {r['s']} |")
    Path(out).write_text(json.dumps({"torch": torch.__version__, "threads":
                                     torch.get_num_threads(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
