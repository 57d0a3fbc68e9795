"""`full` (every weight) and `ffn` (every gate/up/down weight)."""
from __future__ import annotations

from torch import nn

from langsub.ffn import find_ffns
from langsub.methods import Method, register


@register
class Full(Method):
    name = "full"

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model


@register
class FFNOnly(Method):
    name = "ffn"

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        for f in find_ffns(model):
            for lin in (f.gate, f.up, f.gate_up, f.down):
                if lin is not None:
                    for p in lin.parameters():
                        p.requires_grad_(True)
        return model
