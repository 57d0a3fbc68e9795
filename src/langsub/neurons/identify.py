"""Identify: every language's LAPE mask, from a mask file, the original code's activation
files, or statistics (cached, else counted in one pass over the identification text)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from langsub.errors import MaskError
from langsub.io import fingerprint
from langsub.model.ffn import find_ffns
from langsub.model.quantize import logical_numel
from langsub.neurons import lape
from langsub.neurons.cache import load_stats, save_stats, stats_meta
from langsub.neurons.counting import ActivationStats
from langsub.neurons.masks import load_activation_stats, load_neurons
from langsub.neurons.significance import select_significant
from langsub.training.trainers import make_trainer


@dataclass
class Identification:
    """Every language's mask and how it was made (for metrics.json and the figures)."""

    masks: dict[str, list[torch.Tensor]]
    stats_cache_hit: bool | None = None
    rho_used: float | None = None
    over_zero: torch.Tensor | None = None
    n_tokens: torch.Tensor | None = None


def gather_stats(cfg: DictConfig, module, dm, subsample: tuple[float, int] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """over_zero [L,N,K], n_tokens [K] and whether they came from the cache. `subsample`
    (fraction, seed): over that random share of each language's identification blocks
    (`langsub.stability`), cached under its own key."""
    meta = stats_meta(cfg, module.model, dm.tokenizer, dm)
    if subsample is not None:
        meta["subsample"] = {"fraction": subsample[0], "seed": subsample[1]}
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
    trainer.predict(module, dataloaders=dm.identification_dataloaders(subsample),
                    return_predictions=False)
    if trainer.is_global_zero:
        save_stats(path, cb.over_zero, cb.n_tokens, meta)
    return cb.over_zero, cb.n_tokens, False


def choose_rho(cfg: DictConfig, over_zero, n_tokens, k: int, model) -> float:
    """cfg.rho, or with rho=auto the smallest ρ giving language k its budget."""
    if cfg.rho != "auto":
        return float(cfg.rho)
    b = cfg.auto_budget
    per_neuron = 3 * find_ffns(model)[0].down.out_features
    return lape.auto_rho(over_zero, n_tokens, k, min_fraction_params=b.get("min_fraction_params"),
                         min_neurons=b.get("min_neurons"), threshold=cfg.threshold,
                         params_per_neuron=per_neuron,
                         total_params=sum(logical_numel(p) for p in model.parameters()),
                         scope=cfg.scope)


def _activation_files(files: list[str], langs: list[str], model):
    """The original code's {"n", "over_zero"} files, one per language of data.langs."""
    over_zero, n_tokens = load_activation_stats(files)
    ffns = find_ffns(model)
    want = (len(ffns), ffns[0].n_neurons)
    if len(n_tokens) != len(langs) or tuple(over_zero.shape[:2]) != want:
        raise MaskError(f"method.activation_files: {len(n_tokens)} files of shape "
                        f"{tuple(over_zero.shape[:2])}, expected {len(langs)} (data.langs) of "
                        f"shape {want}")
    return over_zero, n_tokens


def identify(cfg: DictConfig, module, dm, source: str) -> Identification:
    """All languages' masks; `source` is the language whose budget rho=auto meets."""
    model, m = module.model, cfg.method
    if m.get("neurons"):
        ffns = find_ffns(model)
        masks = load_neurons(m.neurons, m.get("neurons_langs"), n_layers=len(ffns),
                             n_neurons=ffns[0].n_neurons)
        if source not in masks:
            raise MaskError(f"neurons of {source}: {m.neurons} has no mask for it "
                            f"(has: {sorted(masks)}; set method.neurons_langs)")
        return Identification(masks)
    if m.get("activation_files"):
        over_zero, n_tokens = _activation_files(list(m.activation_files), dm.langs, model)
        hit = None
    else:
        over_zero, n_tokens, hit = gather_stats(cfg, module, dm)
    sel, rho = select(cfg, over_zero, n_tokens, dm.langs.index(source), model)
    return Identification(dict(zip(dm.langs, sel)), hit, rho, over_zero, n_tokens)


def select(cfg: DictConfig, over_zero, n_tokens, k: int, model):
    """(every language's mask, the rho used or None) by `cfg.selection`: LAPE's fixed share
    (rho, or rho=auto meeting language k's budget), or the significance tests (alpha)."""
    if cfg.get("selection", "lape") == "significance":  # the size follows the statistics
        return select_significant(over_zero, n_tokens, alpha=cfg.alpha), None
    rho = choose_rho(cfg, over_zero, n_tokens, k, model)
    return lape.select_neurons(over_zero, n_tokens, rho=rho, threshold=cfg.threshold,
                               scope=cfg.scope), rho
