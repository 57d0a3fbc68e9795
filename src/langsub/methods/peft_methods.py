"""`lora` and `ia3` through peft (not hand-written); targets default to the FFN family's.

Their adapters are float32 masters (`Method.apply`; peft upcasts them too) and peft casts
their outputs back to the activations' dtype, so they need no autocast. peft 0.21's
`merge_and_unload()` without `safe_merge` merges exactly: LoRA adds its float32 ΔW in place
(`W += ΔW`, computed in float32 and rounded once into W's dtype), IA3 writes
`(W * l).to(W.dtype)`; `safe_merge=True` would round ΔW to W's dtype before adding.
(tests/test_precision.py checks both against W.float() + ΔW, cast once.)"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from langsub.errors import ConfigError
from langsub.methods.base import Method, MethodConfig, is_number, is_str_list, problem, register
from langsub.model.ffn import model_family


def _wrap(model: nn.Module, config) -> nn.Module:
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except ValueError as e:  # peft names the missing target modules
        raise ConfigError(f"peft could not wrap the model: {e}") from None


def _targets_problem(key: str, v) -> list[str]:
    ok = v is None or (is_str_list(v) and len(v) > 0)
    return [] if ok else [problem(key, v, "a non-empty list of module names or null "
                                          "(the FFN family's default)")]


@dataclass
class LoraConfig(MethodConfig):
    """The paper's code: r 32, alpha 64, dropout 0.1 on gate/up/down."""

    r: int = 32
    alpha: float = 64
    dropout: float = 0.1
    targets: list[str] | None = None
    use_dora: bool = False
    use_rslora: bool = False

    def problems(self) -> list[str]:
        out = super().problems()
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            out.append(problem("r", self.r, "an integer >= 1"))
        if not is_number(self.alpha) or self.alpha <= 0:
            out.append(problem("alpha", self.alpha, "a number > 0"))
        if not is_number(self.dropout) or not 0 <= self.dropout < 1:
            out.append(problem("dropout", self.dropout, "a number in [0, 1)"))
        for key in ("use_dora", "use_rslora"):
            if not isinstance(getattr(self, key), bool):
                out.append(problem(key, getattr(self, key), "true or false"))
        return out + _targets_problem("targets", self.targets)


@register
class LoRA(Method):
    """LoRA (or DoRA with use_dora=true) on the FFN family's gate/up/down by default."""

    name = "lora"
    Config = LoraConfig

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        from peft import LoraConfig as PeftLoraConfig

        c = self.config
        targets = c.targets or list(model_family(model).lora_targets)
        return _wrap(model, PeftLoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                                           target_modules=list(targets), use_dora=c.use_dora,
                                           use_rslora=c.use_rslora, task_type="CAUSAL_LM"))

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload(safe_merge=False)  # exact, see above


@dataclass
class IA3Config(MethodConfig):
    """Scaling vectors on k/v/down, down as the feed-forward module (peft's Llama default)."""

    targets: list[str] | None = None
    feedforward: list[str] | None = None

    def problems(self) -> list[str]:
        out = super().problems() + _targets_problem("targets", self.targets)
        out += _targets_problem("feedforward", self.feedforward)
        if not out and self.targets and self.feedforward \
                and not set(self.feedforward) <= set(self.targets):
            out.append(problem("feedforward", self.feedforward,
                               f"a subset of method.targets={list(self.targets)}"))
        return out


@register
class IA3(Method):
    name = "ia3"
    Config = IA3Config

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        from peft import IA3Config as PeftIA3Config

        c, fam = self.config, model_family(model)
        return _wrap(model, PeftIA3Config(
            target_modules=list(c.targets or fam.ia3_targets),
            feedforward_modules=list(c.feedforward or fam.ia3_feedforward),
            task_type="CAUSAL_LM"))

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload(safe_merge=False)  # exact, see above
