"""Tokenizer and causal LM from a local directory or the hub; the same model on the meta
device (no weights) for dry runs and config checks."""
from __future__ import annotations

import os

import torch
from omegaconf import DictConfig, OmegaConf


def load_tokenizer(cfg_model: DictConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg_model.get("tokenizer") or cfg_model.get("path")
                                        or cfg_model.hub_id, revision=cfg_model.get("revision"))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg_model: DictConfig, tok=None, quantized: bool = True, on_cpu: bool = False):
    """Tokenizer and causal LM from a local directory (or the hub when only hub_id is set);
    its linear layers quantized when `model.quantize` is set (and `quantized`: False loads
    the full-precision base that a quantized run's delta is shipped on). A quantized model
    is placed by the loader: this process's GPU (LOCAL_RANK), or the CPU with `on_cpu`."""
    from transformers import AutoModelForCausalLM

    from langsub.model.quantize import keep_differentiable, quantization_config

    src = cfg_model.get("path") or cfg_model.hub_id
    tok = tok or load_tokenizer(cfg_model)
    quantization = quantization_config(cfg_model) if quantized else None
    placement = {}
    if quantization is not None:  # bitsandbytes quantizes where the weights land
        gpu = torch.cuda.is_available() and not on_cpu
        placement["device_map"] = {"": f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if gpu else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(
        src, dtype=getattr(torch, cfg_model.get("dtype", "float32")),
        attn_implementation=cfg_model.get("attn_implementation"),
        revision=cfg_model.get("revision"), quantization_config=quantization, **placement)
    if quantized and cfg_model.get("quantize"):
        keep_differentiable(model)
    if cfg_model.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    return model, tok


def model_config(cfg_model: DictConfig):
    """The transformers config: local path, else the offline `arch` values, else the hub."""
    from transformers import AutoConfig

    if cfg_model.get("path"):
        return AutoConfig.from_pretrained(cfg_model.path)
    if cfg_model.get("arch"):
        arch = OmegaConf.to_container(cfg_model.arch, resolve=True)
        return AutoConfig.for_model(arch.pop("model_type"), **arch)
    return AutoConfig.from_pretrained(cfg_model.hub_id)


def meta_model(cfg_model: DictConfig):
    """The model with its real shapes and no storage (torch's meta device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config(cfg_model))
