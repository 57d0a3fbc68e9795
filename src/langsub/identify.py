"""From a model and a corpus to neuron masks: cached statistics, selection, outputs."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig

from langsub import lape
from langsub.ffn import find_ffns
from langsub.strategies import make_trainer
from langsub.stats import ActivationStats, file_digest, fingerprint, load_stats, save_stats


def model_identity(model, tokenizer, cfg_model: DictConfig) -> dict:
    """What makes statistics reusable: weights, tokenizer (hashes of small files, else sizes)."""
    ident = {"name_or_path": str(model.config._name_or_path), "files": {}}
    root = Path(cfg_model.path) if cfg_model.get("path") else None
    if root is not None:
        for p in sorted(root.iterdir()):
            if p.suffix in (".json", ".safetensors", ".bin", ".model"):
                ident["files"][p.name] = file_digest(p) if p.stat().st_size < 64 << 20 \
                    else p.stat().st_size
    ident["vocab"] = len(tokenizer)
    return ident


def stats_meta(cfg: DictConfig, model, tokenizer, dm) -> dict:
    corpus = {lang: dm.corpus_identity(lang) for lang in dm.langs}
    return {"model": model_identity(model, tokenizer, cfg.model), "corpus": corpus,
            "langs": list(dm.langs), "ident_max_tokens": dm.ident_max_tokens,
            "block_size": dm.block_size, "version": 1}


def gather_stats(cfg: DictConfig, module, dm) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """over_zero [L,N,K], n_tokens [K] and whether they came from the cache."""
    meta = stats_meta(cfg, module.model, dm.tokenizer, dm)
    path = Path(cfg.paths.cache_dir) / "stats" / fingerprint(meta)
    cached = load_stats(path, meta)
    hit = cached is not None
    if module._trainer is not None:  # every rank the same decision (a sweep job may write
        hit = module.trainer.strategy.reduce_boolean_decision(hit, all=True)  # it meanwhile)
    if hit:
        return cached[0], cached[1], True
    cb = ActivationStats(len(dm.langs))
    trainer = make_trainer(cfg.trainer, evaluation=True, callbacks=[cb], logger=False,
                           enable_checkpointing=False, enable_model_summary=False)
    trainer.predict(module, dataloaders=dm.identification_dataloaders(),
                    return_predictions=False)
    if trainer.is_global_zero:
        save_stats(path, cb.over_zero, cb.n_tokens, meta)
    return cb.over_zero, cb.n_tokens, False


def choose_rho(cfg: DictConfig, over_zero, n_tokens, k: int, model) -> float:
    """cfg.rho, or with rho=auto the smallest ρ giving language k its budget."""
    if cfg.rho != "auto":
        return float(cfg.rho)
    b = cfg.auto_budget
    d = find_ffns(model)[0]
    per_neuron = 3 * d.down.out_features
    return lape.auto_rho(over_zero, n_tokens, k, min_fraction_params=b.get("min_fraction_params"),
                         min_neurons=b.get("min_neurons"), threshold=cfg.threshold,
                         params_per_neuron=per_neuron,
                         total_params=sum(p.numel() for p in model.parameters()),
                         scope=cfg.scope)


def neuron_source(cfg: DictConfig) -> str:
    """Whose neurons train: the target's, or `method.neurons_from`'s (the transfer check)."""
    return cfg.method.get("neurons_from") or cfg.lang.code


def neurons_for_run(cfg: DictConfig, module, dm) -> tuple[dict, dict]:
    """All languages' masks and facts about how they were made (for metrics.json)."""
    model, source = module.model, neuron_source(cfg)
    ffns = find_ffns(model)
    info = {"stats_cache_hit": None, "rho_used": None}
    if cfg.method.get("neurons"):
        masks = lape.load_neurons(cfg.method.neurons, cfg.method.get("neurons_langs"),
                                  n_layers=len(ffns), n_neurons=ffns[0].n_neurons)
        if source not in masks:
            raise ValueError(f"neurons of {source}: {cfg.method.neurons} has no mask for it "
                             f"(has: {sorted(masks)}; set method.neurons_langs)")
        return masks, info
    if cfg.method.get("activation_files"):  # the original code's {"n", "over_zero"} files
        over_zero, n_tokens = lape.load_activation_stats(list(cfg.method.activation_files))
        if len(n_tokens) != len(dm.langs) or over_zero.shape[:2] != (len(ffns), ffns[0].n_neurons):
            raise ValueError(f"method.activation_files: {len(n_tokens)} files of shape "
                             f"{tuple(over_zero.shape[:2])}, expected {len(dm.langs)} (data.langs)"
                             f" of shape {(len(ffns), ffns[0].n_neurons)}")
        hit = None
    else:
        over_zero, n_tokens, hit = gather_stats(cfg, module, dm)
    k = dm.langs.index(source)
    rho = choose_rho(cfg, over_zero, n_tokens, k, model)
    sel = lape.select_neurons(over_zero, n_tokens, rho=rho, threshold=cfg.threshold,
                              scope=cfg.scope)
    info.update(stats_cache_hit=hit, rho_used=rho, over_zero=over_zero, n_tokens=n_tokens)
    return dict(zip(dm.langs, sel)), info


def random_like(mask: list[torch.Tensor], n_neurons: int, seed: int, match: str):
    """A random subnetwork with the same count as `mask` (per layer or in total)."""
    if match == "layer":
        return lape.select_random([len(t) for t in mask], n_neurons, seed)
    return lape.select_random_global(sum(len(t) for t in mask), len(mask), n_neurons, seed)


def write_neurons_json(path: Path, masks: dict, target: str, trained: list, meta: dict) -> None:
    from langsub.stats import atomic_write_text

    out = {target: lape.neurons_to_json({target: trained})[target],
           "counts": {l: int(sum(len(t) for t in m)) for l, m in masks.items()},
           "langs": lape.neurons_to_json(masks), "meta": meta}
    atomic_write_text(path, json.dumps(out))
