"""Tokenizer and causal LM from the model's source (`model/sources.py`: a directory, a GGUF
or the hub); the same model on the meta device (no weights) for dry runs and config checks."""
from __future__ import annotations

import os

import torch
from omegaconf import DictConfig, OmegaConf


def load_tokenizer(cfg_model: DictConfig):
    from transformers import AutoTokenizer

    from langsub.model.sources import resolve

    tok = AutoTokenizer.from_pretrained(cfg_model.get("tokenizer") or resolve(cfg_model),
                                        revision=_revision(cfg_model))
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
    from langsub.model.sources import resolve, source_of

    src = resolve(cfg_model)
    tok = tok or load_tokenizer(cfg_model)
    quantization = quantization_config(cfg_model) if quantized else None
    placement = {}
    if quantization is not None:  # bitsandbytes quantizes where the weights land
        gpu = torch.cuda.is_available() and not on_cpu
        placement["device_map"] = {"": f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if gpu else "cpu"}
    if source_of(cfg_model).key == "random_init":
        model = random_model(cfg_model)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=getattr(torch, cfg_model.get("dtype", "float32")),
            attn_implementation=cfg_model.get("attn_implementation"),
            revision=_revision(cfg_model), quantization_config=quantization, **placement)
    if quantized and cfg_model.get("quantize"):
        keep_differentiable(model)
    if cfg_model.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    contiguous_head_input(model)
    return model, tok


def random_model(cfg_model: DictConfig):
    """`model.random_init`: the architecture of `model.arch` with seeded random weights, built
    in `model.dtype` on the GPU when there is one (a CPU init of a big model dominates)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(int(cfg_model.get("seed") or 0))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(
            model_config(cfg_model), dtype=getattr(torch, cfg_model.get("dtype", "float32")),
            attn_implementation=cfg_model.get("attn_implementation"))
    return model  # the trainer places it (on the GPU it was built on: no copy)


def contiguous_head_input(model) -> None:
    """Hand the output head a contiguous input. transformers slices the hidden states for
    `logits_to_keep` (generation, the alignment pass), and on CPUs with bfloat16 kernels
    (torch 2.13) a frozen bf16 weight times a strided input takes a path ~500x slower than
    the same product on a contiguous copy: Gemma's 262 K-row head went from 0.05 s to 25-40 s
    a batch once training had frozen it (docs/BENCHMARKS.md)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, torch.nn.Linear):
        head.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))


def _revision(cfg_model: DictConfig) -> str | None:
    """A hub revision applies to a hub id only (a GGUF's pins the file it downloads)."""
    from langsub.model.sources import source_of

    return cfg_model.get("revision") if source_of(cfg_model).key == "hub_id" else None


def model_config(cfg_model: DictConfig):
    """The transformers config: the local source, else the offline `arch` values, else the hub."""
    from transformers import AutoConfig

    from langsub.model import sources

    if sources.source_of(cfg_model).key not in ("hub_id", "random_init"):
        return sources.config(cfg_model)
    if cfg_model.get("arch"):
        arch = OmegaConf.to_container(cfg_model.arch, resolve=True)
        return AutoConfig.for_model(arch.pop("model_type"), **arch)
    return AutoConfig.from_pretrained(cfg_model.hub_id)


def meta_model(cfg_model: DictConfig):
    """The model with its real shapes and no storage (torch's meta device)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config(cfg_model))
