"""`full` (every weight) and `ffn` (every gate/up/down weight)."""
from __future__ import annotations

from torch import nn

from langsub.methods.base import Method, register
from langsub.model.ffn import find_ffns


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
            for lin in f.linears():
                for p in lin.parameters():
                    p.requires_grad_(True)
        return model
