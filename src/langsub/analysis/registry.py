"""The analyses' table: each is registered once with a `before` hook (on the base model) and
an `after` hook (on the fine-tuned, merged model), and runs the same from the main job and
from `langsub analyze`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from langsub.errors import ConfigError
from langsub.tables import registrar


@dataclass
class AnalysisContext:
    """What every analysis may read: the run's config, data, masks and where to write."""

    cfg: object
    out_dir: Path                       # <run dir>/analysis
    tokenizer: object
    dm: object                          # the LangDataModule
    masks: dict | None = None           # every language's LAPE mask (None: not identified)
    trained: list[torch.Tensor] | None = None   # the neurons that train (None: not a subnetwork)
    logger: object = None
    state: dict = field(default_factory=dict)   # what `before` keeps for `after`, per analysis

    @property
    def target(self) -> str:
        return self.cfg.lang.code


class Analysis:
    """Base class: `before` sees the base model, `after` the fine-tuned one and its delta
    (None for methods without a neuron delta); each returns scalars for metrics.json.
    `needs_after`: the fine-tuned model is loaded for it (analyze skips that otherwise)."""

    name = "base"
    needs_after = True

    def before(self, ctx: AnalysisContext, model) -> dict:
        return {}

    def after(self, ctx: AnalysisContext, model, delta: dict | None) -> dict:
        return {}


ANALYSES: dict[str, type[Analysis]] = {}


register = registrar(ANALYSES, "analysis")


def wanted(value) -> list[Analysis]:
    """The analyses named by the `analysis` key: a name, a list of names, `all`, or empty."""
    if value is None or isinstance(value, str):
        names = [] if not value else list(ANALYSES) if value == "all" else [value]
    else:
        names = [str(v) for v in value]
        names = list(ANALYSES) if "all" in names else names
    bad = [k for k in names if k not in ANALYSES]
    if bad:
        raise ConfigError(f"analysis={value!r}: {bad[0]!r} is unknown; allowed is a list of "
                          f"{', '.join(ANALYSES)}, or 'all'")
    return [ANALYSES[k]() for k in dict.fromkeys(names)]


def run_before(analyses: list[Analysis], ctx: AnalysisContext, model) -> dict:
    if analyses:
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for a in analyses:
        out.update(a.before(ctx, model))
    return out


def run_after(analyses: list[Analysis], ctx: AnalysisContext, model, delta) -> dict:
    out = {}
    for a in analyses:
        out.update(a.after(ctx, model, delta))
    return out
