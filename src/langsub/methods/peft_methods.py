"""`lora` and `ia3` through peft (not hand-written)."""
from __future__ import annotations

from torch import nn

from langsub.methods import Method, register


def _wrap(model: nn.Module, config) -> nn.Module:
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except ValueError as e:  # peft names the missing target modules
        raise ValueError(f"peft could not wrap the model: {e}") from None


@register
class LoRA(Method):
    """LoRA on gate/up/down by default (r=32, alpha=64, dropout 0.1: the paper's code)."""

    name = "lora"

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        from peft import LoraConfig

        c = self.cfg
        return _wrap(model, LoraConfig(r=c.get("r", 32), lora_alpha=c.get("alpha", 64),
                                       lora_dropout=c.get("dropout", 0.1),
                                       target_modules=list(c.get("targets") or
                                                           ["gate_proj", "up_proj", "down_proj"]),
                                       task_type="CAUSAL_LM"))

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()


@register
class IA3(LoRA):
    """IA3 on k/v/down with down as the feed-forward module (peft's Llama default)."""

    name = "ia3"

    def prepare(self, model: nn.Module, neurons=None) -> nn.Module:
        from peft import IA3Config

        c = self.cfg
        return _wrap(model, IA3Config(
            target_modules=list(c.get("targets") or ["k_proj", "v_proj", "down_proj"]),
            feedforward_modules=list(c.get("feedforward") or ["down_proj"]),
            task_type="CAUSAL_LM"))
