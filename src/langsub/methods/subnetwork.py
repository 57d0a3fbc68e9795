"""`lape` and `random`: train θ_i = {W_gate[i,:], W_up[i,:], W_down[:,i]} of chosen neurons."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from langsub.errors import ConfigError
from langsub.methods.base import Method, MethodConfig, is_str_list, problem, register
from langsub.methods.sparse import (add_delta_states, add_neuron_deltas, delta_state,
                                    merge_neuron_deltas)
from langsub.model.ffn import COMPONENTS, find_ffns
from langsub.neurons.lape import select_random, select_random_global


@dataclass
class LapeConfig(MethodConfig):
    """Which components of the neurons train, and where the neurons come from."""

    lr: float = 1e-4
    components: list[str] = field(default_factory=lambda: list(COMPONENTS))
    neurons: str | None = None          # a mask file instead of identifying
    neurons_langs: list[str] | None = None
    activation_files: list[str] | None = None
    neurons_from: str | None = None     # train the target's data on this language's neurons

    def problems(self) -> list[str]:
        out = super().problems()
        c = self.components
        if not is_str_list(c) or not c or any(x not in COMPONENTS for x in c):
            out.append(problem("components", c, f"a non-empty subset of {list(COMPONENTS)}"))
        if self.neurons is not None and not Path(str(self.neurons)).is_file():
            out.append(f"method.neurons={self.neurons}: file does not exist")
        nl = self.neurons_langs
        if nl is not None and (not is_str_list(nl) or not nl or len(set(nl)) != len(nl)):
            out.append(problem("neurons_langs", nl, "a non-empty list of distinct language "
                                                    "codes or null"))
        af = self.activation_files
        if af is not None and (not is_str_list(af) or not af):
            out.append(problem("activation_files", af, "a non-empty list of files or null"))
        for f in af if is_str_list(af) else []:
            if not Path(f).is_file():
                out.append(f"method.activation_files: {f} does not exist")
        if self.neurons_from is not None and not isinstance(self.neurons_from, str):
            out.append(problem("neurons_from", self.neurons_from, "a language code or null"))
        return out


@register
class Lape(Method):
    """Language-specific neurons found by LAPE (or read from `neurons`)."""

    name = "lape"
    needs_neurons = True
    Config = LapeConfig

    def source(self, lang: str) -> str:
        """Whose neurons train: the target's, or `neurons_from`'s (the transfer check)."""
        return self.config.neurons_from or lang

    def neurons(self, masks: dict, lang: str, model: nn.Module, seed: int):
        return masks[self.source(lang)]

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        if neurons is None or sum(len(n) for n in neurons) == 0:
            raise ConfigError("the neuron set is empty: nothing would train (raise rho, lower "
                              "threshold, or use rho=auto; with selection=significance raise "
                              "alpha or give more identification text)")
        add_neuron_deltas(model, neurons, self.config.components)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return merge_neuron_deltas(model)

    def delta(self, model: nn.Module) -> dict:
        return delta_state(model)

    def trained_state(self, model: nn.Module) -> dict:
        return {k: v.to("cpu", copy=True) for k, v in delta_state(model).items()}

    def rebase(self, base: nn.Module, state: dict) -> nn.Module:
        """The deltas added to the base's slices (float32, cast once: the run's own merge)."""
        return add_delta_states(base, [("the trained deltas", state)])


@dataclass
class RandomConfig(LapeConfig):
    match: str = "layer"   # layer: LAPE's count in every layer | global: its total, anywhere

    def problems(self) -> list[str]:
        out = super().problems()
        if self.match not in ("layer", "global"):
            out.append(problem("match", self.match, "'layer' or 'global'"))
        return out


@register
class Random(Lape):
    """A random subnetwork with as many neurons as LAPE gives the target (the control)."""

    name = "random"
    Config = RandomConfig

    def neurons(self, masks: dict, lang: str, model: nn.Module, seed: int):
        like, n = masks[self.source(lang)], find_ffns(model)[0].n_neurons
        if self.config.match == "layer":
            return select_random([len(t) for t in like], n, seed)
        return select_random_global(sum(len(t) for t in like), len(like), n, seed)
