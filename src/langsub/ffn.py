"""Find the gated FFN (gate/up/down) of each decoder layer of a transformers causal LM.

Two families are supported: separate `gate_proj`/`up_proj`/`down_proj` (Llama, Mistral,
Qwen2/3, Gemma, Aya/Cohere) and a fused `gate_up_proj` whose first half is the gate
(Phi-3). Neuron i is row i of gate and up, column i of down.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

SUPPORTED = ("separate gate_proj/up_proj/down_proj (Llama, Mistral, Qwen2/3, Gemma, Cohere)",
             "fused gate_up_proj + down_proj (Phi-3)")


class UnsupportedModelError(ValueError):
    """The model has no gated FFN that langsub can address neuron by neuron."""


@dataclass
class GatedFFN:
    """Handles on one layer's FFN; `fused` means gate and up share `gate_up_proj`."""

    mlp: nn.Module
    down: nn.Linear
    act: nn.Module
    gate: nn.Linear | None = None
    up: nn.Linear | None = None
    gate_up: nn.Linear | None = None

    @property
    def fused(self) -> bool:
        return self.gate_up is not None

    @property
    def n_neurons(self) -> int:
        return self.down.in_features


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of a causal LM (`model.model.layers` for most families)."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else model
    for cand in (base, getattr(base, "model", None), getattr(model, "model", None)):
        layers = getattr(cand, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise UnsupportedModelError(
        f"{type(model).__name__}: no decoder layer list found; supported FFNs: "
        + "; ".join(SUPPORTED))


def find_ffns(model: nn.Module) -> list[GatedFFN]:
    """One `GatedFFN` per decoder layer, or `UnsupportedModelError` naming what is supported."""
    out = []
    for i, layer in enumerate(decoder_layers(model)):
        mlp = getattr(layer, "mlp", None) or getattr(layer, "feed_forward", None)
        if mlp is None:
            raise UnsupportedModelError(
                f"{type(model).__name__} layer {i} has no `mlp` module; supported FFNs: "
                + "; ".join(SUPPORTED))
        if hasattr(mlp, "experts") or hasattr(mlp, "router"):
            raise UnsupportedModelError(
                f"{type(model).__name__} layer {i} has a mixture-of-experts FFN "
                f"({type(mlp).__name__}); supported FFNs: " + "; ".join(SUPPORTED))
        act = getattr(mlp, "act_fn", None) or getattr(mlp, "activation_fn", None)
        down = getattr(mlp, "down_proj", None)
        if act is not None and down is not None and hasattr(mlp, "gate_up_proj"):
            out.append(GatedFFN(mlp, down, act, gate_up=mlp.gate_up_proj))
        elif act is not None and down is not None and hasattr(mlp, "gate_proj") \
                and hasattr(mlp, "up_proj"):
            out.append(GatedFFN(mlp, down, act, gate=mlp.gate_proj, up=mlp.up_proj))
        else:
            raise UnsupportedModelError(
                f"{type(model).__name__} layer {i}: {type(mlp).__name__} is not a gated FFN; "
                "supported FFNs: " + "; ".join(SUPPORTED))
    if len({id(f.act) for f in out}) != len(out):
        raise UnsupportedModelError(f"{type(model).__name__}: layers share one activation "
                                    "module, statistics hooks need one per layer")
    return out
