"""Fine-tuning methods: one small module each, registered in one table.

A method decides which parameters train (`prepare`) and how the result becomes a plain
transformers model again (`merge`). Nothing else in langsub branches on the method name.
"""
from __future__ import annotations

from torch import nn


class Method:
    """Base class. `needs_neurons`: the method trains a neuron subnetwork (lape, random)."""

    name = "base"
    needs_neurons = False

    def __init__(self, **cfg):
        self.cfg = cfg

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        """Freeze/wrap `model` so that exactly this method's parameters train; return it."""
        raise NotImplementedError

    def merge(self, model: nn.Module) -> nn.Module:
        """The trained model as a plain transformers model (in place where possible)."""
        return model

    def delta(self, model: nn.Module) -> dict | None:
        """The trained tensors alone, for `delta.safetensors`; None if not meaningful."""
        return None


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} is registered twice")
    METHODS[cls.name] = cls
    return cls


def build_method(cfg: dict) -> Method:
    """The method named by `cfg["name"]`, configured by the rest of `cfg`."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    if name not in METHODS:
        raise ValueError(f"method={name!r} is unknown; available: {sorted(METHODS)}")
    return METHODS[name](**cfg)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) where total counts the base model once (not the deltas/adapters)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


from langsub.methods import dense, peft_methods, subnetwork  # noqa: E402,F401  (registration)
