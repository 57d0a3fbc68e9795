"""Where neuron i of a gated FFN lives: ONE table of FFN families, and handles per layer.

Neuron i is row i of the gate and of the up projection and column i of the down projection;
its activation is act_fn(gate(x))_i. Families differ only in where those rows are stored:
separate `gate_proj`/`up_proj` (Llama, Mistral, Qwen2/3, Gemma, Cohere/Aya) or one fused
`gate_up_proj` (Phi-3: gate rows first, then up rows). Every other module asks a `GatedFFN`
(rows, slices, weights, activations, peft targets) and never reads a family's names itself;
a new family is one `Family` row in `FAMILIES`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from langsub.errors import UnsupportedModelError

COMPONENTS = ("gate", "up", "down")


def _gate_first(idx: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """Fused rows [gate 0..n-1 | up 0..n-1] (Phi-3's `chunk(2)`)."""
    return {"gate": idx, "up": idx + n}


@dataclass(frozen=True)
class Family:
    """One FFN layout: module names, how fused rows are laid out, peft's default targets."""

    name: str
    models: str
    gate: str | None
    up: str | None
    down: str
    gate_up: str | None = None
    fused_rows: Callable[[torch.Tensor, int], dict[str, torch.Tensor]] | None = None
    lora_targets: tuple[str, ...] = ()
    ia3_targets: tuple[str, ...] = ()
    ia3_feedforward: tuple[str, ...] = ()

    def matches(self, mlp: nn.Module) -> bool:
        names = [self.down] + ([self.gate_up] if self.gate_up else [self.gate, self.up])
        return all(isinstance(getattr(mlp, n, None), nn.Linear) for n in names)


FAMILIES = (
    Family("fused", "Phi-3", gate=None, up=None, down="down_proj", gate_up="gate_up_proj",
           fused_rows=_gate_first, lora_targets=("gate_up_proj", "down_proj"),
           ia3_targets=("qkv_proj", "down_proj"), ia3_feedforward=("down_proj",)),
    # Gemma 1-3: GELU-tanh gate, > 0 exactly where its input is, so LAPE's count is unchanged
    Family("separate", "Llama, Mistral, Qwen2/3, Gemma 1-3, Cohere", gate="gate_proj",
           up="up_proj", down="down_proj",
           lora_targets=("gate_proj", "up_proj", "down_proj"),
           ia3_targets=("k_proj", "v_proj", "down_proj"), ia3_feedforward=("down_proj",)),
)
SUPPORTED = "; ".join(f"{f.name}: {f.down}+{f.gate_up or f.gate + '/' + f.up} ({f.models})"
                      for f in FAMILIES)


@dataclass
class GatedFFN:
    """One layer's FFN and the answers to "where is neuron i" for it."""

    mlp: nn.Module
    act: nn.Module
    family: Family

    @property
    def down(self) -> nn.Linear:
        return getattr(self.mlp, self.family.down)

    @property
    def gate(self) -> nn.Linear | None:
        return getattr(self.mlp, self.family.gate) if self.family.gate else None

    @property
    def up(self) -> nn.Linear | None:
        return getattr(self.mlp, self.family.up) if self.family.up else None

    @property
    def gate_up(self) -> nn.Linear | None:
        return getattr(self.mlp, self.family.gate_up) if self.family.gate_up else None

    @property
    def fused(self) -> bool:
        return self.family.gate_up is not None

    @property
    def n_neurons(self) -> int:
        return self.down.in_features

    def linears(self) -> list[nn.Linear]:
        """The FFN's weight matrices (what FFN-only fine-tuning trains)."""
        return [m for m in (self.gate, self.up, self.gate_up, self.down) if m is not None]

    def slices(self, idx: torch.Tensor, components=COMPONENTS) -> list[tuple[nn.Linear, torch.Tensor, int]]:
        """(linear, index, dim) holding the chosen components of neurons `idx`: rows (dim 0)
        of gate/up, columns (dim 1) of down; fused gate/up rows share one sorted index."""
        out = []
        if self.fused:
            rows = self.family.fused_rows(idx, self.n_neurons)
            rows = [rows[c] for c in ("gate", "up") if c in components]
            if rows:
                out.append((self.gate_up, torch.cat(rows).sort().values, 0))
        else:
            out += [(getattr(self, c), idx, 0) for c in ("gate", "up") if c in components]
        if "down" in components:
            out.append((self.down, idx, 1))
        return out

    def parts(self, linear: nn.Module, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Component -> positions in `index` (a slice index of `linear`, as from `slices`)."""
        if linear is self.down:
            return {"down": torch.arange(len(index))}
        if not self.fused:
            return {"gate" if linear is self.gate else "up": torch.arange(len(index))}
        every = torch.arange(self.n_neurons)
        out = {}
        for c, rows in self.family.fused_rows(every, self.n_neurons).items():
            pos = torch.isin(index, rows.to(index.device)).nonzero().view(-1)
            if len(pos):
                out[c] = pos
        return out

    def weights(self) -> dict[str, torch.Tensor]:
        """Each component's matrix: gate/up [n_neurons, hidden], down [hidden, n_neurons]."""
        if self.fused:
            w = self.gate_up.weight
            rows = self.family.fused_rows(torch.arange(self.n_neurons, device=w.device),
                                          self.n_neurons)
            out = {c: w.index_select(0, rows[c]) for c in ("gate", "up")}
        else:
            out = {"gate": self.gate.weight, "up": self.up.weight}
        return {**out, "down": self.down.weight}

    def activation(self, out: torch.Tensor) -> torch.Tensor:
        """act_fn(gate(x)) [..., n_neurons] from the activation module's output."""
        n = self.n_neurons
        return out if out.shape[-1] == n else out[..., :n]

    def scale_activation(self, out: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The activation module's output with neuron i multiplied by keep[i]."""
        n = self.n_neurons
        if out.shape[-1] == n:
            return out * keep.to(out)
        return torch.cat([out[..., :n] * keep.to(out), out[..., n:]], -1)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of a causal LM (`model.model.layers` for most families)."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    for cand in (base, getattr(base, "model", None), getattr(model, "model", None)):
        layers = getattr(cand, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise UnsupportedModelError(
        f"{type(model).__name__}: no decoder layer list found; supported FFNs: {SUPPORTED}")


def _layer_ffn(model: nn.Module, i: int, layer: nn.Module) -> GatedFFN:
    name = type(model).__name__
    mlp = getattr(layer, "mlp", None) or getattr(layer, "feed_forward", None)
    if mlp is None:
        raise UnsupportedModelError(f"{name} layer {i} has no `mlp` module; supported FFNs: "
                                    f"{SUPPORTED}")
    if hasattr(mlp, "experts") or hasattr(mlp, "router"):
        raise UnsupportedModelError(f"{name} layer {i} has a mixture-of-experts FFN "
                                    f"({type(mlp).__name__}); supported FFNs: {SUPPORTED}")
    act = getattr(mlp, "act_fn", None) or getattr(mlp, "activation_fn", None)
    family = next((f for f in FAMILIES if f.matches(mlp)), None)
    if act is None or family is None:
        raise UnsupportedModelError(f"{name} layer {i}: {type(mlp).__name__} is not a gated "
                                    f"FFN; supported FFNs: {SUPPORTED}")
    return GatedFFN(mlp, act, family)


def find_ffns(model: nn.Module) -> list[GatedFFN]:
    """One `GatedFFN` per decoder layer, or `UnsupportedModelError` naming what is supported."""
    out = [_layer_ffn(model, i, layer) for i, layer in enumerate(decoder_layers(model))]
    if len({id(f.act) for f in out}) != len(out):
        raise UnsupportedModelError(f"{type(model).__name__}: layers share one activation "
                                    "module, statistics hooks need one per layer")
    return out


def model_family(model: nn.Module) -> Family:
    """The FFN family of a model (every layer has the same)."""
    return find_ffns(model)[0].family
