"""Language fidelity per method in the report: the share of greedy continuations written in
the target language, before and after, and the share in the most frequent other language
(`analysis=[fidelity]`; see langsub.analysis.fidelity).

    python train.py -m experiment=compare model=gemma3_270m lang=af analysis=[fidelity]
    langsub report outputs/multirun/<time>
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from langsub.report.compare import run_groups, summary

KEY = "fidelity_{}/target_share"


def present(runs: list[dict]) -> bool:
    return any(KEY.format("after") in m for m in runs)


def _others(runs: list[dict]) -> list[str]:
    """The other languages worth a column: the three most often most frequent, before or after."""
    seen = {}
    for m in runs:
        for phase in ("before", "after"):
            lang = m.get(f"fidelity_{phase}/top_other")
            if lang:
                seen[lang] = seen.get(lang, 0) + 1
    return [l for l, _ in sorted(seen.items(), key=lambda kv: -kv[1])[:3]]


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean, std = summary([100 * v for v in values])
    return f"{mean:.0f}" if len(values) == 1 or std == 0 else f"{mean:.0f} ± {std:.0f}"


def table(runs: list[dict], spec: dict | None) -> str:
    """Per method (at its chosen rate, every seed, when a fair comparison chose one; else
    every run): % of continuations in the target and in the top other languages."""
    runs = [m for m in runs if KEY.format("after") in m]
    target = runs[0]["lang"]
    others = _others(runs)
    head = ["method", "runs", f"{target} before", f"{target} after"]
    head += [f"{o} {p}" for o in others for p in ("before", "after")]
    lines = ["Share of greedy continuations (%) classified as each language (py3langid, the first "
             "line with a letter), mean ± std over the runs.", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for label, rs in run_groups(runs, spec):
        if not rs:
            continue
        row = [label, str(len(rs))]
        for lang in (target, *others):
            for phase in ("before", "after"):
                key = KEY.format(phase) if lang == target else f"fidelity_{phase}/share/{lang}"
                row.append(_cell([m.get(key, 0.0) for m in rs if KEY.format(phase) in m]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def examples(root: Path, runs: list[dict], n: int = 3) -> str:
    """A few prompts with their continuations before and after, from one run per method."""
    out = []
    for m in runs:
        d = Path(root) / m["_dir"] / "analysis"
        before, after = d / "fidelity_before.jsonl", d / "fidelity_after.jsonl"
        if not (before.is_file() and after.is_file()):
            continue
        b = [json.loads(l) for l in before.read_text(encoding="utf-8").splitlines()][:n]
        a = [json.loads(l) for l in after.read_text(encoding="utf-8").splitlines()][:n]
        out.append(f"**{m['method']}** (lr {m['lr']:g}, seed {m['seed']}):\n")
        out += ["| prompt | before | after |", "|---|---|---|"]
        for x, y in zip(b, a):
            cell = lambda r: f"{_short(r['continuation'])} *({r['lang']})*"  # noqa: E731
            out.append(f"| {_short(x['prompt'])} | {cell(x)} | {cell(y)} |")
        out.append("")
    return "\n".join(out)


def _short(text: str, limit: int = 90) -> str:
    t = " ".join(text.split()).replace("|", "\\|")
    return t if len(t) <= limit else t[: limit - 1] + "…"


def one_per_method(runs: list[dict], spec: dict | None) -> list[dict]:
    """The first seed at the chosen rate of every method (or the first run of each)."""
    out = []
    for method in dict.fromkeys(m["method"] for m in runs):
        rs = [m for m in runs if m["method"] == method and KEY.format("after") in m]
        if spec and method in spec["chosen"]:
            rs = [m for m in rs if math.isclose(m["lr"], spec["chosen"][method]["lr"])]
        if rs:
            out.append(min(rs, key=lambda m: m["seed"]))
    return out
