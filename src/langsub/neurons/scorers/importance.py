"""Scorers on what a neuron does to the output: `plnd` (deactivation) and `attribution`
(gradient × activation)."""
from __future__ import annotations

from langsub.neurons.scorers.base import Scorer, register


def _quantized_problem(cfg, name: str, what: str) -> list[str]:
    q = (cfg.get("model") or {}).get("quantize")
    if q is None:
        return []
    return [f"selection={name} needs {what}, and model.quantize={q} loads packed FFN weights "
            "for training only; score on the unquantized base (model.quantize=null) or use "
            "selection=lape or activation"]


@register
class Plnd(Scorer):
    """PLND (Zhao et al. 2024, "How do LLMs handle multilingualism"): the importance of neuron
    i for a language is ‖the change of the FFN output‖ when i is deactivated, |h_i|·‖W_down[:, i]‖
    per token (h: the input of down_proj), all neurons at once in one forward pass; specific
    where important for the language and not for the others (LAPE's entropy and τ on the
    per-token mean importance)."""

    name = "plnd"
    statistic = "importance"

    @classmethod
    def problems(cls, cfg):
        return _quantized_problem(cfg, cls.name, "down_proj's column norms")


@register
class Attribution(Scorer):
    """Taylor importance: |h_i · ∂L/∂h_i| of the language's LM loss L summed over its tokens
    (one backward pass per batch, no weight gradients); specific as for plnd."""

    name = "attribution"
    statistic = "gradients"

    @classmethod
    def problems(cls, cfg):
        return _quantized_problem(cfg, cls.name, "gradients through the FFN activations")
