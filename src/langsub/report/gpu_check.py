"""The table of scripts/gpu_check_paper.sh: measured peak GPU memory against the dry run's
plan, and tokens/s, per base (bf16, nf4). Prints it and writes OUT/gpu_check.json.

    langsub report gpu-check OUT_DIR
"""
from __future__ import annotations

import json
from pathlib import Path
from langsub.errors import ArgParser


def main(argv=None) -> list[dict]:

    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("outputs/gpu_check_paper"),
                    help="the directory gpu_check_paper.sh wrote")
    out = ap.parse_args(argv).out
    rows = []
    for q in ("null", "nf4"):
        plan, run = out / f"plan_{q}" / "plan.json", out / f"paper_{q}" / "metrics.json"
        if not (plan.is_file() and run.is_file()):
            print(f"{q}: missing {plan if not plan.is_file() else run}")
            continue
        p, m = json.loads(plan.read_text()), json.loads(run.read_text())
        peak = m.get("peak_gpu_memory_gb")
        rows.append({"base": "bf16" if q == "null" else q, "plan_peak_gb": round(p["peak_gb"], 2),
                     "measured_peak_gb": peak,
                     "ratio": round(peak / p["peak_gb"], 3) if peak else None,
                     "stats_tokens_per_s": m.get("stats_tokens_per_s"),
                     "train_tokens_per_s": m.get("train_tokens_per_s"),
                     "train_seconds": m.get("train_seconds"),
                     "optimizer_steps": m.get("optimizer_steps")})
    print(f"{'base':<6}{'plan GB':>9}{'measured GB':>13}{'ratio':>7}{'stats tok/s':>13}"
          f"{'train tok/s':>13}")
    for r in rows:
        print(f"{r['base']:<6}{r['plan_peak_gb']:>9}{r['measured_peak_gb']!s:>13}{r['ratio']!s:>7}"
              f"{r['stats_tokens_per_s']!s:>13}{r['train_tokens_per_s']!s:>13}")
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
