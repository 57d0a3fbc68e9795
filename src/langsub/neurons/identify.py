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
from langsub.neurons.cache import load_stats, save_stats, stats_meta
from langsub.neurons.counting import ActivationStats
from langsub.neurons.masks import load_activation_stats, load_neurons
from langsub.neurons.passes import HOOKS
from langsub.neurons.scorers import Stats, build_scorer, selection_of
from langsub.training.trainers import make_trainer


@dataclass
class Identification:
    """Every language's mask and how it was made (for metrics.json and the figures)."""

    masks: dict[str, list[torch.Tensor]]
    stats_cache_hit: bool | None = None
    rho_used: float | None = None
    over_zero: torch.Tensor | None = None
    n_tokens: torch.Tensor | None = None


def gather_stats(cfg: DictConfig, module, dm, subsample: tuple[float, int] | None = None,
                 statistic: str = "counts") -> tuple[torch.Tensor, torch.Tensor, bool]:
    """sums [L,N,K] of `statistic` (counts: LAPE's over_zero), n_tokens [K] and whether they
    came from the cache. `subsample` (fraction, seed): over that random share of each
    language's identification blocks (`langsub.stability`), cached under its own key."""
    meta = stats_meta(cfg, module.model, dm.tokenizer, dm)
    if statistic != "counts":  # the counts keep the key they always had
        meta["statistic"] = statistic
    if subsample is not None:
        meta["subsample"] = {"fraction": subsample[0], "seed": subsample[1]}
    path = Path(cfg.paths.cache_dir) / "stats" / fingerprint(meta)
    cached = load_stats(path, meta)
    hit = cached is not None
    if module._trainer is not None:  # every rank the same decision (a sweep job may write
        hit = module.trainer.strategy.reduce_boolean_decision(hit, all=True)  # it meanwhile)
    if hit:
        return cached[0], cached[1], True
    hooks = HOOKS[statistic]
    cb = ActivationStats(len(dm.langs), hooks)
    trainer = make_trainer(cfg.trainer, evaluation=True, callbacks=[cb], logger=False,
                           enable_checkpointing=False, enable_model_summary=False,
                           inference_mode=not hooks.backward)  # a backward needs autograd
    trainer.predict(module, dataloaders=dm.identification_dataloaders(subsample),
                    return_predictions=False)
    if trainer.is_global_zero:
        save_stats(path, cb.sums, cb.n_tokens, meta)
    return cb.sums, cb.n_tokens, False


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
    scorer, match = build_scorer(cfg), selection_of(cfg).get("match")
    k = dm.langs.index(source)

    def stats_for(s):
        if m.get("activation_files"):  # counts only (config_problems refuses the others)
            return (*_activation_files(list(m.activation_files), dm.langs, model), None)
        return gather_stats(cfg, module, dm, statistic=s.statistic)

    sums, n_tokens, hit = stats_for(scorer)
    stats = Stats(sums, n_tokens)
    sel, rho = scorer.select(stats, k, model)
    if match is not None:  # exactly the other scorer's count per language (and layer)
        other = build_scorer(cfg, match)
        o_sums, o_n, o_hit = stats_for(other) if other.statistic != scorer.statistic \
            else (sums, n_tokens, hit)
        like, rho = other.select(Stats(o_sums, o_n), k, model)
        sel = scorer.matched(stats, like)
        hit = None if hit is None or o_hit is None else hit and o_hit
    return Identification(dict(zip(dm.langs, sel)), hit, rho, sums, n_tokens)


def select(cfg: DictConfig, sums, n_tokens, k: int, model):
    """(every language's mask, the rho used or None) by the scorer `cfg.selection` names."""
    return build_scorer(cfg).select(Stats(sums, n_tokens), k, model)
