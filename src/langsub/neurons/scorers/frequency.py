"""Scorers on the forward activations: `lape` (firing probability), `significance` (tests on
the same counts) and `activation` (the mean positive activation value)."""
from __future__ import annotations

from langsub.neurons.scorers.base import Scorer, Stats, register
from langsub.neurons.significance import select_significant


@register
class Lape(Scorer):
    """LAPE (Tang et al. 2024): entropy over languages of p[l,i,k], the share of the
    language's tokens where act_fn(gate_proj(x))_i > 0; the masks of the released code."""

    name = "lape"
    statistic = "counts"


@register
class Significance(Scorer):
    """Neurons whose firing probability is significantly above every other language's
    (one-sided two-proportion tests at `alpha`, Bonferroni): the size follows the statistics."""

    name = "significance"
    statistic = "counts"
    fixed_size = False

    def select(self, stats: Stats, k: int, model):
        return select_significant(stats.sums, stats.n_tokens, alpha=self.cfg.alpha), None


@register
class Activation(Scorer):
    """LAPE's entropy over languages of the mean positive activation value (the sums the
    authors' activation script records) instead of the firing probability: a neuron that
    fires for every language but far more strongly for one is specific here, not in LAPE."""

    name = "activation"
    statistic = "values"
