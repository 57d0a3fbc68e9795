"""A fair comparison: every method's learning rate chosen by one rule on the validation
split from the same grid around its default, then the chosen rate repeated over seeds.

    python train.py -m experiment=compare lang=af
    langsub report outputs/multirun/<time>

The rule: among a method's grid points whose general validation perplexity rose by at most
`max_general_rise` (the paper's "no forgetting"), the best target validation perplexity.
"General" is the held-out text's valid half (Tatoeba in the general languages,
evaluation/heldout.py) when the runs measured it, else the corpus' valid split: the corpus
is the training register, where full fine-tuning *lowers* general perplexity while it
forgets elsewhere, so a rule reading it cannot see forgetting.
Choosing by the target alone would pick rates that trade a few points of target for tens of
points of general perplexity. `hydra_plugins/langsub_compare` runs the two phases.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from langsub.errors import ConfigError
from langsub.io import atomic_write_text
from langsub.report.charts import pct

TARGET, GENERAL = "valid_ppl_after/target", "valid_ppl_after/general"


def check(methods, lr_factors, seeds, max_general_rise) -> None:
    """Refuse an empty grid, seed or method list and a negative tolerance, one line each."""
    out = []
    for key, v in (("methods", methods), ("lr_factors", lr_factors), ("seeds", seeds)):
        if not v:
            out.append(f"hydra.sweeper.{key}={list(v or [])}: allowed is a non-empty list")
    if any(not isinstance(f, (int, float)) or f <= 0 for f in lr_factors or []):
        out.append(f"hydra.sweeper.lr_factors={list(lr_factors)}: allowed are numbers > 0")
    if lr_factors and (min(lr_factors) > 0.3165 or max(lr_factors) < 3.16 - 1e-9):
        out.append(f"hydra.sweeper.lr_factors={list(lr_factors)}: a fair grid spans at least "
                   "a decade around each default (min <= 0.316, max >= 3.16; the default "
                   "grid: 0.1 ... 10)")
    if not isinstance(max_general_rise, (int, float)) or max_general_rise < 0:
        out.append(f"hydra.sweeper.max_general_rise={max_general_rise!r}: allowed is a number >= 0")
    if out:
        raise ConfigError("\n".join(out))


def grid(default_lr: float, factors) -> list[float]:
    """The learning rates of one method: its default times each factor (3 significant digits)."""
    return [float(f"{default_lr * f:.3g}") for f in factors]


HELDOUT = "heldout_valid_ppl"


def general_source(runs: list[dict]) -> str:
    """The general term's metric prefix: held-out valid text when every run has it."""
    has = [isinstance(m.get(f"{HELDOUT}_after/general"), (int, float)) for m in runs]
    return HELDOUT if has and all(has) else "valid_ppl"


def rule_text(source: str, max_general_rise: float) -> str:
    where = "held-out valid (Tatoeba)" if source == HELDOUT else "valid"
    return f"best valid target ppl with general {where} ppl rise <= {max_general_rise:.0%}"


def rise(m: dict, phase_key: str | None = None) -> float:
    """Relative change of general perplexity (validation half) from before to after; by
    default of the held-out text when the run measured it."""
    phase_key = phase_key or general_source([m])
    return m[f"{phase_key}_after/general"] / m[f"{phase_key}_before/general"] - 1


def choose(runs: list[dict], max_general_rise: float) -> dict:
    """For one method's grid runs: the chosen lr, whether any point met the rule, and why."""
    src = general_source(runs)
    ok = [m for m in runs if rise(m, src) <= max_general_rise]
    if ok:
        best = min(ok, key=lambda m: m[TARGET])
        return {"lr": best["lr"], "met_rule": True, "general_rise": rise(best, src),
                "valid_target": best[TARGET], "general": src}
    best = min(runs, key=lambda m: rise(m, src))  # nothing kept it: the least forgetting
    return {"lr": best["lr"], "met_rule": False, "general_rise": rise(best, src),
            "valid_target": best[TARGET], "general": src}


def write_choice(sweep_dir: Path, choice: dict, spec: dict) -> None:
    atomic_write_text(Path(sweep_dir) / "compare.json",
                      json.dumps({**spec, "chosen": choice}, indent=1))


SHARED = ("rule", "lr_factors", "seeds", "max_general_rise")  # what sweeps must agree on


def read_spec(root: Path) -> dict | None:
    """The sweep's compare.json; for a folder of comparison sweeps (one method each, as they
    are run on a small machine, `root/<sweep>/compare.json`) their union, provided they used
    the same rule, grid factors, seeds and tolerance, and no method was chosen twice."""
    p = Path(root) / "compare.json"
    if p.is_file():
        return json.loads(p.read_text())
    parts = {q.parent.name: json.loads(q.read_text())
             for q in sorted(Path(root).glob("*/compare.json"))}
    if not parts:
        return None
    (first, spec), *rest = parts.items()
    spec = {**spec, "methods": list(spec["methods"]), "grid": dict(spec["grid"]),
            "chosen": dict(spec["chosen"])}
    tuned_in = dict.fromkeys(spec["methods"], first)
    for name, other in rest:
        for key in SHARED:
            if other.get(key) != spec.get(key):
                raise ConfigError(f"{root}: the sweeps {first} and {name} differ in {key} "
                                  f"({spec.get(key)} vs {other.get(key)}): one report compares "
                                  "methods tuned the same way")
        for method in other["methods"]:
            if method in tuned_in:
                raise ConfigError(f"{root}: method {method} was tuned in two sweeps "
                                  f"({tuned_in[method]}, {name}); keep one")
            tuned_in[method] = name
            spec["methods"].append(method)
        spec["grid"].update(other["grid"])
        spec["chosen"].update(other["chosen"])
    return spec


def summary(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var)


def at_chosen(runs: list[dict], method: str, lr: float) -> list[dict]:
    """The runs of `method` at the chosen lr (the grid's first seed and the repeats; when the
    grid points left the benchmarks out, the seeds' runs that measured everything)."""
    rs = [m for m in runs if m["method"] == method and math.isclose(m["lr"], lr)]
    full = [m for m in rs if m.get("compare_phase") != "grid"]
    return sorted(full or rs, key=lambda m: m["seed"])


def by_method_and_rate(runs: list[dict]) -> list[tuple[str, list[dict]]]:
    """(label, runs) outside a fair comparison: the runs of each method and learning rate
    (seeds together), labelled by the method, and by its rate where it ran at several."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for m in runs:
        groups.setdefault((m["method"], m["lr"]), []).append(m)
    rates = Counter(method for method, _ in groups)
    return [(method if rates[method] == 1 else f"{method} {lr:g}",
             sorted(rs, key=lambda m: m["seed"]))
            for (method, lr), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1]))]


def run_groups(runs: list[dict], spec: dict | None) -> list[tuple[str, list[dict]]]:
    """(label, runs) of a report's per-method tables: each chosen rate's runs in a fair
    comparison (`spec`), else the runs of each method and rate."""
    if spec is None:
        return by_method_and_rate(runs)
    return [(m, at_chosen(runs, m, c["lr"])) for m, c in spec["chosen"].items()]


def _mean_of(runs: list[dict], key: str, fmt: str) -> str:
    vals = [m[key] for m in runs if isinstance(m.get(key), (int, float))]
    return format(sum(vals) / len(vals), fmt) if vals else "–"


def _peak(runs: list[dict]) -> str:
    """The largest peak memory of the runs (GPU allocated, else the CPU process's RSS)."""
    vals = [m.get("peak_gpu_memory_gb") or m.get("peak_rss_gb") for m in runs]
    vals = [v for v in vals if isinstance(v, (int, float))]
    return f"{max(vals):.2f}" if vals else "–"


def table(runs: list[dict], spec: dict) -> str:
    """Per method: chosen lr, mean ± std over seeds and each seed's value (test split); the
    general change is read from the text the rule read (held-out test halves when it chose on
    held-out text, else the corpus)."""
    chosen = {method: at_chosen(runs, method, c["lr"]) for method, c in spec["chosen"].items()}
    held_out = general_source([m for rs in chosen.values() for m in rs]) == HELDOUT
    gkey, where = ("heldout_ppl", "held-out ") if held_out else ("ppl", "")
    lines = [f"Rule: {spec['rule']} (validation split); grid: default x "
             f"{', '.join(f'{f:g}' for f in spec['lr_factors'])}; seeds {spec['seeds']}.", "",
             "| method | chosen lr | met rule | seeds | target ppl Δ % (mean ± std) | per seed "
             f"| {where}general ppl Δ % (mean ± std) | per seed | train s | peak GB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for method, c in spec["chosen"].items():
        rs = chosen[method]
        if not rs:
            continue
        t = [pct(m["ppl_after/target"], m["ppl_before/target"]) for m in rs]
        g = [pct(m[f"{gkey}_after/general"], m[f"{gkey}_before/general"]) for m in rs]
        (tm, ts), (gm, gs) = summary(t), summary(g)
        lines.append(f"| {method} | {c['lr']:g} | {'yes' if c['met_rule'] else 'no'} | "
                     f"{len(rs)} | {tm:+.2f} ± {ts:.2f} | {', '.join(f'{v:+.2f}' for v in t)} | "
                     f"{gm:+.2f} ± {gs:.2f} | {', '.join(f'{v:+.2f}' for v in g)} | "
                     f"{_mean_of(rs, 'train_seconds', '.0f')} | {_peak(rs)} |")
    return "\n".join(lines)


def grid_points(runs: list[dict], spec: dict, method: str) -> list[dict]:
    """The grid runs of `method` (first seed) the rule chose from: the `compare_phase=grid`
    ones when the sweep re-measured the chosen rate in full."""
    rs = [r for r in runs if r["method"] == method and r["seed"] == spec["seeds"][0]]
    return [r for r in rs if r.get("compare_phase") == "grid"] or rs


def grid_table(runs: list[dict], spec: dict) -> str:
    """Every grid point (first seed): validation changes, the basis of the choice."""
    lines = ["| method | lr | valid target Δ % | valid general Δ % | chosen |", "|---|---|---|---|---|"]
    for m in sorted((r for method in spec["grid"] if method in spec["methods"]
                     for r in grid_points(runs, spec, method)),
                    key=lambda r: (spec["methods"].index(r["method"]), r["lr"])):
        c = spec["chosen"][m["method"]]["lr"]
        lines.append(f"| {m['method']} | {m['lr']:g} | "
                     f"{pct(m[TARGET], m['valid_ppl_before/target']):+.2f} | "
                     f"{100 * rise(m):+.2f} | {'◀' if math.isclose(m['lr'], c) else ''} |")
    return "\n".join(lines)


def pareto_figure(runs: list[dict], spec: dict, path: Path) -> None:
    """Every grid point: target vs general change on the validation split; each method's
    Pareto front (no other point of the method is better on both) joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, method in enumerate(spec["methods"]):
        pts = sorted((pct(m[TARGET], m["valid_ppl_before/target"]), 100 * rise(m), m["lr"])
                     for m in grid_points(runs, spec, method))
        if not pts:
            continue
        color = f"C{i}"
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, s=18, label=method)
        front, best_g = [], math.inf
        for p in pts:  # sorted by target change: a point is on the front if it forgets less
            if p[1] < best_g:
                front.append(p)
                best_g = p[1]
        ax.plot([p[0] for p in front], [p[1] for p in front], color=color, lw=1)
        c = spec["chosen"][method]["lr"]
        for p in pts:
            if math.isclose(p[2], c):
                ax.scatter([p[0]], [p[1]], facecolors="none", edgecolors=color, s=120, lw=1.5)
    ax.axhline(100 * spec.get("max_general_rise", 0.01), color="k", lw=0.6, ls="--")
    ax.set(xlabel="target ppl change, % (validation; lower is better)",
           ylabel="general ppl change, % (validation)", yscale="symlog",
           title="every grid point; circled: the chosen lr; line: each method's Pareto front")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
