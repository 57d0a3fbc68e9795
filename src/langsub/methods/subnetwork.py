"""`lape` and `random`: train θ_i = {W_gate[i,:], W_up[i,:], W_down[:,i]} of chosen neurons."""
from __future__ import annotations

from torch import nn

from langsub.methods import Method, register
from langsub.sparse import COMPONENTS, add_neuron_deltas, delta_state, merge_neuron_deltas


@register
class Lape(Method):
    """Language-specific neurons found by LAPE (or read from `neurons`)."""

    name = "lape"
    needs_neurons = True

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        if neurons is None or sum(len(n) for n in neurons) == 0:
            raise ValueError("the neuron set is empty: nothing would train "
                             "(raise rho, lower threshold, or use rho=auto)")
        add_neuron_deltas(model, neurons, self.cfg.get("components") or COMPONENTS)
        return model

    def merge(self, model: nn.Module) -> nn.Module:
        return merge_neuron_deltas(model)

    def delta(self, model: nn.Module) -> dict:
        return delta_state(model)


@register
class Random(Lape):
    """A random subnetwork with as many neurons as LAPE gives the target (the control)."""

    name = "random"
