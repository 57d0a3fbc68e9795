"""Neuron scorers: how the language-specific neurons are found. One small module per family,
registered in one table (`base.SCORERS`); `selection=<name>` (conf/selection/<name>.yaml)
chooses one, `selection.match=<name>` sizes it like another."""
from langsub.neurons.scorers.base import (SCORERS, STATISTICS, Scorer, Stats, build_scorer,
                                          config_problems, register, selection_of)
from langsub.neurons.scorers import frequency, importance  # noqa: E402,F401  (registration)

__all__ = ["SCORERS", "STATISTICS", "Scorer", "Stats", "build_scorer", "config_problems",
           "register", "selection_of"]
