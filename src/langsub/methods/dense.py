"""`full` (every weight) and `ffn` (every gate/up/down weight).

Their float32 masters replace the model's weights: on a half-precision model they compute
through autocast (`needs_autocast`), and `merge` (the base class's) casts them back to the
dtype the model was loaded in."""
from __future__ import annotations

from torch import nn

from langsub.methods.base import Method, register
from langsub.model.ffn import find_ffns


@register
class Full(Method):
    name = "full"
    needs_autocast = True
    trains_all_weights = True
    supports_quantized = False

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model


@register
class FFNOnly(Method):
    name = "ffn"
    needs_autocast = True
    supports_quantized = False

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        for f in find_ffns(model):
            for lin in f.linears():
                for p in lin.parameters():
                    p.requires_grad_(True)
        return model
