"""What a fine-tuning method is, and the one table of methods.

A method is a `Method` subclass with a `Config` dataclass (its YAML's keys, checked in
`__post_init__`: an unknown key or a bad value is refused before any model loads) and one
registration. It decides which neurons it trains (`neurons`), which parameters train
(`prepare`), and how the result becomes a plain transformers model again (`merge`).
`apply` is what callers use: `prepare`, then the precision rule of `precision.py` (float32
master values for what trains). Nothing outside `methods/` branches on a method's name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from langsub.errors import ConfigError
from langsub.model.quantize import logical_numel
from langsub.tables import registrar
from langsub.methods.precision import keep_fp32_masters, restore_dtypes


def problem(key: str, value, allowed: str) -> str:
    return f"method.{key}={value!r}: allowed is {allowed}"


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_str_list(v) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


@dataclass
class MethodConfig:
    """Keys every method has: its name and its default learning rate (`train.lr`)."""

    name: str
    lr: float = 1e-4

    def problems(self) -> list[str]:
        """One line per bad value; subclasses add theirs."""
        return [] if is_number(self.lr) and self.lr > 0 else [problem("lr", self.lr, "a number > 0")]

    def __post_init__(self):
        found = self.problems()
        if found:
            raise ConfigError("\n".join(found))


class Method:
    """Base class. `needs_neurons`: the method trains a neuron subnetwork (lape, random).
    `needs_autocast`: its float32 weights replace the model's own, so on a half-precision
    model they compute only under autocast (`precision.precision_problems`).
    `trains_all_weights`: nothing stays frozen (one dtype throughout, even under FSDP).
    `supports_quantized`: it keeps the base's weights frozen, so they may be quantized
    (`model.quantize`)."""

    name = "base"
    needs_neurons = False
    needs_autocast = False
    trains_all_weights = False
    supports_quantized = True
    Config = MethodConfig

    def __init__(self, config: MethodConfig):
        self.config = config
        self.loaded_dtypes: dict = {}  # trainable parameter -> its dtype before `apply`
        self.applied_neurons = None     # what `apply` was given (`rebase` applies it again)

    def source(self, lang: str) -> str:
        """The language whose neurons train when `lang` is the target."""
        return lang

    def neurons(self, masks: dict, lang: str, model: nn.Module, seed: int):
        """The per-layer neuron indices this method trains, given every language's LAPE mask."""
        return None

    def apply(self, model: nn.Module, neurons=None) -> nn.Module:
        """The one place that decides what trains: `prepare`, then the precision rule (every
        trainable tensor float32, frozen weights in the model's dtype)."""
        model = self.prepare(model, neurons)
        self.loaded_dtypes = keep_fp32_masters(model)
        self.applied_neurons = neurons
        return model

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        """Freeze/wrap `model` so that exactly this method's parameters train; return it."""
        raise NotImplementedError

    def merge(self, model: nn.Module) -> nn.Module:
        """The trained model as a plain transformers model (in place where possible), in the
        dtype it was loaded in: here, the float32 masters cast back once."""
        return restore_dtypes(model, self.loaded_dtypes)

    def trained_state(self, model: nn.Module) -> dict:
        """CPU copies of what trained, by parameter name (what `rebase` puts on a base)."""
        return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
                if p.requires_grad}

    @torch.no_grad()
    def rebase(self, base: nn.Module, state: dict) -> nn.Module:
        """`state` (from `trained_state`) on another base of the same shapes, merged: how a
        quantized run ships its training on the full-precision base (QLoRA's merge)."""
        model = self.apply(base, self.applied_neurons)
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if set(params) != set(state):
            odd = sorted(set(params) ^ set(state))
            raise KeyError(f"trained tensors and the rebased model differ in {len(odd)} names, "
                           f"e.g. {odd[0]}")
        for name, t in state.items():
            params[name].copy_(t)
        return self.merge(model)

    def delta(self, model: nn.Module) -> dict | None:
        """The trained tensors alone, for `delta.safetensors`; None if not meaningful."""
        return None


METHODS: dict[str, type[Method]] = {}


register = registrar(METHODS, "method")  # add a Method subclass under its `name`, once


def build_method(cfg: dict) -> Method:
    """The method named by `cfg["name"]`, its config checked (ConfigError: every problem)."""
    cfg = dict(cfg)
    name = cfg.get("name")
    if name not in METHODS:
        raise ConfigError(f"method={name!r} is unknown; available: {', '.join(sorted(METHODS))}")
    cls = METHODS[name]
    known = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError("\n".join(
            f"method.{k}: not a key of method={name} (its keys: {', '.join(sorted(known))})"
            for k in unknown))
    return cls(cls.Config(**cfg))


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) where total counts the base model once (not the deltas/adapters);
    a quantized weight counts its weights, not its packed bytes."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(logical_numel(p) for p in model.parameters())
    return trainable, total
