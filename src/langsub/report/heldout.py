"""report.md's held-out view: in-register vs held-out change, per language, benchmarks.

Runs are grouped by method (and, in a fair comparison, taken at the chosen rate): each cell
is mean ± sample std over the group's seeds, so a figure comes with its spread.
"""
from __future__ import annotations

import math

from langsub.report.charts import grouped_bars, pct
from langsub.report.compare import run_groups, summary


def present(runs: list[dict]) -> bool:
    return any("heldout_ppl_after/target" in m or "heldout_ppl_after/general" in m for m in runs)


def groups(runs: list[dict], spec: dict | None) -> list[tuple[str, list[dict]]]:
    """(method, runs): at the chosen rate in a comparison, else every run of the method (by
    rate where it ran at several)."""
    return [(label, rs) for label, rs in run_groups([m for m in runs if present([m])], spec)
            if rs]


def _changes(rs: list[dict], after: str, before: str, scale=None) -> list[float]:
    """Each run's change: after − before times `scale` (points), else in percent."""
    return [(m[after] - m[before]) * scale if scale else pct(m[after], m[before])
            for m in rs if isinstance(m.get(after), (int, float))
            and isinstance(m.get(before), (int, float))]


def _cell(rs: list[dict], after: str, before: str, scale=None) -> str:
    vals = _changes(rs, after, before, scale)
    if not vals:
        return "–"
    mean, sd = summary(vals)
    return f"{mean:+.2f} ± {sd:.2f}" if len(vals) > 1 else f"{mean:+.2f}"


def _keys(runs: list[dict], prefix: str) -> list[str]:
    """Metric names after `prefix` present in any run, in first-seen order."""
    return list(dict.fromkeys(k[len(prefix):] for m in runs for k in m if k.startswith(prefix)))


def table(runs: list[dict], spec: dict | None) -> str:
    """Perplexity change, %: corpus (training register) beside held-out text."""
    gs = groups(runs, spec)
    langs = [k for k in _keys(runs, "heldout_ppl_after/") if k.count("/") == 1]
    head = ["method", "seeds", "corpus target", "held-out target", "corpus general",
            "held-out general", *langs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, rs in gs:
        cells = [_cell(rs, "ppl_after/target", "ppl_before/target"),
                 _cell(rs, "heldout_ppl_after/target", "heldout_ppl_before/target"),
                 _cell(rs, "ppl_after/general", "ppl_before/general"),
                 _cell(rs, "heldout_ppl_after/general", "heldout_ppl_before/general")]
        cells += [_cell(rs, f"heldout_ppl_after/{l}", f"heldout_ppl_before/{l}") for l in langs]
        lines.append(f"| {method} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def benchmark_table(runs: list[dict], spec: dict | None) -> str:
    """Benchmark change after − before (accuracy points ×100, chrF points), mean ± std, and
    the base model's score with lm-eval's stderr."""
    gs = groups(runs, spec)
    metrics = [k for k in _keys(runs, "lm_eval_after/")
               if not k.endswith("_stderr") and ("/acc" in k or "/chrf" in k)
               and not k.endswith("acc_norm")]
    if not metrics or not gs:
        return ""
    first = gs[0][1][0]
    head = ["method", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = []
    for k in metrics:
        v, se = first.get(f"lm_eval_before/{k}"), first.get(f"lm_eval_before/{k}_stderr")
        scale = 1 if k.endswith("chrf") else 100
        base.append("–" if v is None else f"{scale * v:.1f}" + (
            f" ± {scale * se:.1f}" if isinstance(se, (int, float)) and math.isfinite(se) else ""))
    lines.append("| base (before) | " + " | ".join(base) + " |")
    for method, rs in gs:
        cells = [_cell(rs, f"lm_eval_after/{k}", f"lm_eval_before/{k}",
                       1 if k.endswith("chrf") else 100) for k in metrics]
        lines.append(f"| {method} Δ | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def retrieval_table(runs: list[dict], spec: dict | None) -> str:
    """Tatoeba bitext retrieval accuracy (%) before → after, at the alignment layer and the
    best layer (analysis=[alignment])."""
    keys = [f"retrieval_after/{k}" for k in _keys(runs, "retrieval_after/")]
    if not keys:
        return ""
    lines = ["| method | seeds | " + " | ".join(k.split("/", 1)[1] for k in keys) + " |",
             "|" + "---|" * (len(keys) + 2)]
    for method, rs in groups(runs, spec):
        rs = [m for m in rs if keys[0] in m]
        if not rs:
            continue
        cells = []
        for k in keys:
            b = [100 * m[k.replace("_after/", "_before/")] for m in rs]
            a = [100 * m[k] for m in rs]
            cells.append(f"{summary(b)[0]:.1f} → {summary(a)[0]:.1f}")
        lines.append(f"| {method} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


FIGURE = (("corpus target", "ppl_after/target", "ppl_before/target"),
          ("held-out target", "heldout_ppl_after/target", "heldout_ppl_before/target"),
          ("held-out general", "heldout_ppl_after/general", "heldout_ppl_before/general"))


def figure(runs: list[dict], spec: dict | None, path) -> None:
    """heldout.png: per group, the corpus target beside held-out target and general (mean
    change %, the seeds' sd as error bars): how much of a gain is the register."""
    gs = groups(runs, spec)
    series = {}
    for label, after, before in FIGURE:
        stats = [summary(_changes(rs, after, before) or [math.nan]) for _, rs in gs]
        series[label] = ([s[0] for s in stats], [s[1] for s in stats])
    grouped_bars([label.replace(" ", "\n", 1) for label, _ in gs], series,
                 "perplexity change, % (lower is better)", path,
                 "the training register beside held-out text")


def section(runs: list[dict], spec: dict | None) -> str:
    bench, retrieval = benchmark_table(runs, spec), retrieval_table(runs, spec)
    return ("## Held-out text and benchmarks\n\nPerplexity change, % (test halves; mean ± "
            "std over seeds): the corpus (the training register) beside held-out text "
            "(evaluation/heldout.py).\n\n" + table(runs, spec) + "\n\n"
            + "![held-out](heldout.png)\n\n"
            + (f"Benchmarks (eval=heldout): the base model's score (accuracy %, chrF; ± "
               f"lm-eval's stderr), then each method's change in points.\n\n{bench}\n\n"
               if bench else "")
            + (f"Tatoeba bitext retrieval, target ↔ en (accuracy %, before → after; the "
               f"alignment layer, and `_best` over layers):\n\n{retrieval}\n\n"
               if retrieval else ""))
