"""Dry run: what a run will train and hold in memory, from the config alone (meta device).

    python train.py model=llama31_8b method=lape lang=af dry_run=true
"""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from langsub.ffn import find_ffns
from langsub.identify import neuron_source
from langsub.lape import load_neurons, select_random_global
from langsub.methods import build_method, count_params


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
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config(cfg_model))


def dry_run(cfg: DictConfig) -> dict:
    """Trainable/total parameters and a memory estimate, with no weights loaded."""
    model = meta_model(cfg.model)
    ffns = find_ffns(model)
    L, N = len(ffns), ffns[0].n_neurons
    method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
    mask, source = None, None
    if method.needs_neurons:
        if cfg.method.get("neurons"):
            mask = load_neurons(cfg.method.neurons, cfg.method.get("neurons_langs"), L, N)[
                neuron_source(cfg)]
            source = str(cfg.method.neurons)
        else:  # identification not run: assume ρ·L·N neurons (an upper estimate per language)
            rho = cfg.rho if cfg.rho != "auto" else 0.05
            mask = select_random_global(round(rho * L * N), L, N, cfg.seed)
            source = f"estimate: rho={rho} of {L}x{N} neurons"
    _, total = count_params(model)
    model = method.prepare(model, mask)
    trainable, _ = count_params(model)
    bytes_w = torch.finfo(getattr(torch, cfg.model.dtype)).bits // 8
    est = {"weights_gb": total * bytes_w / 1e9,
           "grads_and_adam_gb": trainable * (bytes_w + 8) / 1e9}
    out = {"model": cfg.model.name, "method": cfg.method.name, "layers": L, "ffn_width": N,
           "neurons": int(sum(len(t) for t in mask)) if mask is not None else None,
           "neuron_source": source, "trainable_params": trainable, "total_params": total,
           "trainable_fraction": trainable / total, **est}
    for k, v in out.items():
        print(f"{k:>20}: {v:,.4f}" if isinstance(v, float) else f"{k:>20}: {v}")
    return out
