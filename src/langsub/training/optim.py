"""Weight decay of the weights the model uses, for tensors that train as offsets of frozen ones.

A sparse method trains Δ on a frozen slice W_S; the model uses W_S + Δ. AdamW's decoupled
decay on Δ alone gives Δ ← Δ − lr·wd·Δ, whereas decaying the weight the model uses,
(W_S + Δ) ← (W_S + Δ)(1 − lr·wd), needs Δ ← Δ − lr·wd·(W_S + Δ): the missing −lr·wd·W_S is
subtracted after each step. An optimizer with coupled (L2) decay adds wd·p to the gradient
instead; there the missing wd·W_S is added to Δ's gradient before the step. Either way Δ
follows exactly the trajectory W_S would have followed had it trained itself.

Which tensors are offsets is asked of the model: any module with a `delta` parameter and an
`offset()` method (the frozen tensor that delta is added to) takes part.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def offset_modules(model: nn.Module) -> dict[int, nn.Module]:
    """id(delta parameter) -> the module whose `offset()` that delta is added to."""
    return {id(m.delta): m for m in model.modules()
            if isinstance(getattr(m, "delta", None), nn.Parameter)
            and callable(getattr(m, "offset", None))}


def _decayed(optimizer: torch.optim.Optimizer, offsets: dict, decoupled: bool):
    """(group's lr, group's weight decay, delta, its module) for every offset delta that this
    step decays the way `decoupled` says (groups without decay left out)."""
    for group in optimizer.param_groups:
        wd = group.get("weight_decay", 0.0)
        if not wd or bool(group.get("decoupled_weight_decay", False)) != decoupled:
            continue
        for p in group["params"]:
            m = offsets.get(id(p))
            if m is not None and p.grad is not None:  # no gradient: the optimizer skips it too
                yield float(group["lr"]), float(wd), p, m


def attach_real_weight_decay(optimizer: torch.optim.Optimizer,
                             model: nn.Module) -> list[RemovableHandle]:
    """Make `optimizer`'s weight decay act on W_S + Δ for every offset delta of `model`
    (per param group: its current lr and weight_decay). Returns the hooks' handles; none when
    the model has no offset deltas. Exact for decoupled decay (AdamW) and coupled L2 decay."""
    offsets = offset_modules(model)
    if not offsets:
        return []
    wanted = {id(p) for g in optimizer.param_groups if g.get("weight_decay", 0.0)
              for p in g["params"]}
    for key, m in offsets.items():  # fail before training, not at the first step
        if key in wanted and m.offset().shape != m.delta.shape:
            raise RuntimeError(f"{type(m).__name__}: offset {tuple(m.offset().shape)} does not "
                               f"match its delta {tuple(m.delta.shape)}")

    @torch.no_grad()
    def coupled(opt, args, kwargs):
        for _, wd, p, m in _decayed(opt, offsets, decoupled=False):
            p.grad.add_(m.offset().to(p.grad.dtype), alpha=wd)

    @torch.no_grad()
    def decoupled(opt, args, kwargs):
        for lr, wd, p, m in _decayed(opt, offsets, decoupled=True):
            p.sub_(m.offset().to(p.dtype), alpha=lr * wd)

    return [optimizer.register_step_pre_hook(coupled),
            optimizer.register_step_post_hook(decoupled)]
