"""A fair comparison: every method's learning rate chosen by one rule on the validation
split from the same grid around its default, then the chosen rate repeated over seeds.

    python train.py -m experiment=compare lang=af
    python -m langsub.report outputs/multirun/<time>

The rule: among a method's grid points whose general validation perplexity rose by at most
`max_general_rise` (the paper's "no forgetting"), the best target validation perplexity.
Choosing by the target alone would pick rates that trade a few points of target for tens of
points of general perplexity. `hydra_plugins/langsub_compare` runs the two phases.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from langsub.errors import ConfigError
from langsub.io import atomic_write_text

TARGET, GENERAL = "valid_ppl_after/target", "valid_ppl_after/general"


def check(methods, lr_factors, seeds, max_general_rise) -> None:
    """Refuse an empty grid, seed or method list and a negative tolerance, one line each."""
    out = []
    for key, v in (("methods", methods), ("lr_factors", lr_factors), ("seeds", seeds)):
        if not v:
            out.append(f"hydra.sweeper.{key}={list(v or [])}: allowed is a non-empty list")
    if any(not isinstance(f, (int, float)) or f <= 0 for f in lr_factors or []):
        out.append(f"hydra.sweeper.lr_factors={list(lr_factors)}: allowed are numbers > 0")
    if lr_factors and (min(lr_factors) > 0.1 + 1e-9 or max(lr_factors) < 10 - 1e-9):
        out.append(f"hydra.sweeper.lr_factors={list(lr_factors)}: a fair grid spans at least "
                   "10x either side of each default (min <= 0.1, max >= 10)")
    if not isinstance(max_general_rise, (int, float)) or max_general_rise < 0:
        out.append(f"hydra.sweeper.max_general_rise={max_general_rise!r}: allowed is a number >= 0")
    if out:
        raise ConfigError("\n".join(out))


def grid(default_lr: float, factors) -> list[float]:
    """The learning rates of one method: its default times each factor (3 significant digits)."""
    return [float(f"{default_lr * f:.3g}") for f in factors]


def rise(m: dict, phase_key: str = "valid_ppl") -> float:
    """Relative change of general perplexity (validation split) from before to after."""
    return m[f"{phase_key}_after/general"] / m[f"{phase_key}_before/general"] - 1


def choose(runs: list[dict], max_general_rise: float) -> dict:
    """For one method's grid runs: the chosen lr, whether any point met the rule, and why."""
    ok = [m for m in runs if rise(m) <= max_general_rise]
    if ok:
        best = min(ok, key=lambda m: m[TARGET])
        return {"lr": best["lr"], "met_rule": True, "general_rise": rise(best),
                "valid_target": best[TARGET]}
    best = min(runs, key=rise)  # nothing kept general perplexity: the least forgetting
    return {"lr": best["lr"], "met_rule": False, "general_rise": rise(best),
            "valid_target": best[TARGET]}


def write_choice(sweep_dir: Path, choice: dict, spec: dict) -> None:
    atomic_write_text(Path(sweep_dir) / "compare.json",
                      json.dumps({**spec, "chosen": choice}, indent=1))


def summary(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var)
