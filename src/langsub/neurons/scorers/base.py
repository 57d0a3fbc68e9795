"""A neuron scorer: which statistics pass it needs, and how it turns the statistics into
every language's mask.

A scorer is a `Scorer` subclass registered under its `name`, plus `conf/selection/<name>.yaml`
(`selection=<name>`). Its `statistic` names the pass (`neurons/passes.py`): `counts` (tokens
where act_fn(gate_proj(x))_i > 0: LAPE), `values` (sums of the positive part of that
activation), `importance` (sums of ‖the FFN output's change‖ when neuron i is deactivated) or
`gradients` (sums of |activation × ∂loss/∂activation| of the language's LM loss). The sums
are [layers, neurons, languages]; dividing by the language's token count gives per-token means.

The default selection is LAPE's, on whichever statistic: normalise the per-token means over
languages, keep the lowest-entropy ρ among neurons with some mean above τ (the `threshold`
quantile of all means), give each to every language above τ. `selection.match=<scorer>`
keeps exactly that scorer's count per language (per layer with scope=layer), ranked by this
scorer's `specificity`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from langsub.errors import ConfigError
from langsub.model.ffn import find_ffns
from langsub.model.quantize import logical_numel
from langsub.neurons import lape
from langsub.tables import registrar

Mask = list[torch.Tensor]
STATISTICS = ("counts", "values", "importance", "gradients")
SCORERS: dict[str, type["Scorer"]] = {}
register = registrar(SCORERS, "scorer")  # add a Scorer subclass under its `name`, once


@dataclass
class Stats:
    """One statistics pass: sums [L, N, K] and the tokens per language [K]."""

    sums: torch.Tensor
    n_tokens: torch.Tensor


def choose_rho(cfg: DictConfig, stats: Stats, k: int, model) -> float:
    """cfg.rho, or with rho=auto the smallest ρ giving language k its budget."""
    if cfg.rho != "auto":
        return float(cfg.rho)
    b = cfg.auto_budget
    per_neuron = 3 * find_ffns(model)[0].down.out_features
    return lape.auto_rho(stats.sums, stats.n_tokens, k,
                         min_fraction_params=b.get("min_fraction_params"),
                         min_neurons=b.get("min_neurons"), threshold=cfg.threshold,
                         params_per_neuron=per_neuron,
                         total_params=sum(logical_numel(p) for p in model.parameters()),
                         scope=cfg.scope)


class Scorer:
    """LAPE's selection over the scorer's statistic; subclasses name the statistic and may
    replace `select` (a size of their own) or `specificity` (their ranking under `match`)."""

    name = "base"
    statistic = "counts"
    fixed_size = True   # rho decides the size (False: the statistics do, e.g. significance)

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    @classmethod
    def problems(cls, cfg: DictConfig) -> list[str]:
        """One line per setting this scorer cannot work with (checked before loading)."""
        return []

    def select(self, stats: Stats, k: int, model) -> tuple[list[Mask], float | None]:
        """(every language's mask in data.langs order, the ρ used or None)."""
        rho = choose_rho(self.cfg, stats, k, model)
        return lape.select_neurons(stats.sums, stats.n_tokens, rho=rho,
                                   threshold=self.cfg.threshold, scope=self.cfg.scope), rho

    def specificity(self, stats: Stats) -> torch.Tensor:
        """[K, L, N]: how much neuron (l, i) belongs to language k — its share of the
        per-token means over languages (0 where a neuron has none)."""
        mean = stats.sums.double() / torch.as_tensor(stats.n_tokens, dtype=torch.float64)
        share = mean / mean.sum(-1, keepdim=True)
        return torch.nan_to_num(share, nan=0.0).permute(2, 0, 1)

    def matched(self, stats: Stats, like: list[Mask]) -> list[Mask]:
        """Every language's mask with exactly as many neurons as `like` gives it (per layer
        with scope=layer, else in total), the most specific by this scorer."""
        spec = self.specificity(stats)
        n_layers, n_neurons = spec.shape[1:]
        out = []
        for k, mask in enumerate(like):
            counts = [len(t) for t in mask]
            if self.cfg.scope == "layer":
                out.append([torch.sort(torch.argsort(spec[k, l], descending=True, stable=True)[:c])
                            .values for l, c in enumerate(counts)])
                continue
            top = torch.argsort(spec[k].reshape(-1), descending=True, stable=True)[:sum(counts)]
            rows, cols = top // n_neurons, top % n_neurons
            out.append([torch.sort(cols[rows == l]).values for l in range(n_layers)])
        return out


def selection_of(cfg: DictConfig) -> dict:
    """The `selection` group as a dict (a bare string from an older config: its name)."""
    sel = cfg.get("selection") or {"name": "lape"}
    return {"name": sel, "match": None} if isinstance(sel, str) else dict(sel)


def build_scorer(cfg: DictConfig, name: str | None = None) -> Scorer:
    name = name or selection_of(cfg)["name"]
    if name not in SCORERS:
        raise ConfigError(f"selection={name} is unknown; available: {', '.join(sorted(SCORERS))}")
    return SCORERS[name](cfg)


def config_problems(cfg: DictConfig) -> list[str]:
    """`selection` and `selection.match`: known scorers, not itself; each scorer's own checks."""
    sel = selection_of(cfg)
    name, match = sel.get("name"), sel.get("match")
    if name not in SCORERS:
        return [f"selection={name} is unknown; available: {', '.join(sorted(SCORERS))}"]
    out = []
    if match is not None:
        if match not in SCORERS:
            out.append(f"selection.match={match}: allowed is another scorer's name "
                       f"({', '.join(sorted(set(SCORERS) - {name}))}) or null")
        elif match == name:
            out.append(f"selection.match={match}: a scorer cannot match itself; allowed is "
                       f"another scorer's name ({', '.join(sorted(set(SCORERS) - {name}))}) or null")
    m = cfg.get("method") or {}
    if m.get("activation_files") and SCORERS[name].statistic != "counts":
        out.append(f"method.activation_files hold firing counts: selection={name} needs the "
                   f"{SCORERS[name].statistic} pass (allowed with activation_files: "
                   f"{', '.join(sorted(n for n, s in SCORERS.items() if s.statistic == 'counts'))})")
    for n in dict.fromkeys([name] + ([match] if match in SCORERS else [])):
        out += SCORERS[n].problems(cfg)
    return out
