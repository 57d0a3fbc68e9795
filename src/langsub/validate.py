"""Check a whole run config before any model is loaded; report every problem, one line each.

Scalar keys are checked by a table of (key, rule) rows here; everything else by the stage
that reads the keys (`STAGE_CHECKS`: the method, the data, the training, …). The last check
builds the model on the meta device (no weights) and only runs when everything else passed.
"""
from __future__ import annotations

import sys

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from langsub.errors import ConfigError
from langsub.methods.checks import shape_problems
from langsub.methods.precision import DTYPES
from langsub.model.quantize import QUANTIZATIONS
from langsub.training.checks import PRECISIONS


def _int(lo=None, hi=None, null=False):
    """Rule: an integer in [lo, hi] (or null)."""
    def rule(v):
        if v is None:
            return null
        return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo) \
            and (hi is None or v <= hi)
    bounds = f" >= {lo}" if hi is None and lo is not None else f" in [{lo}, {hi}]" if lo is not None else ""
    return rule, f"an integer{bounds}" + (" or null" if null else "")


def _num(lo=None, hi=None, lo_open=False, hi_open=False, null=False):
    """Rule: a number in the given (open or closed) interval (or null)."""
    def rule(v):
        if v is None:
            return null
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            return False
        return (lo is None or (v > lo if lo_open else v >= lo)) and \
            (hi is None or (v < hi if hi_open else v <= hi))
    left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
    where = f" in {left}{lo}, {'inf' if hi is None else hi}{right}" if lo is not None else ""
    return rule, f"a number{where}" + (" or null" if null else "")


def _choice(*allowed):
    return (lambda v: v in allowed), "one of " + ", ".join(repr(a) for a in allowed)


def _bool():
    return (lambda v: isinstance(v, bool)), "true or false"


def _langs(min_len=1):
    def rule(v):
        return isinstance(v, (list, tuple, ListConfig)) and len(v) >= min_len and \
            all(isinstance(x, str) and x for x in v) and len(set(v)) == len(v)
    return rule, f"a list of at least {min_len} distinct language codes"


RULES = {
    "seed": _int(0), "threshold": _num(0, 1, True, True), "scope": _choice("global", "layer"),
    "alpha": _num(0, 1, True, True),
    "objective": _choice("target", "target_and_general"),
    "general": _langs(1), "analysis_eval_tokens": _int(1), "resume": _bool(),
    "dry_run": _bool(), "debug_errors": _bool(),
    "model.dtype": _choice(*DTYPES), "model.quantize": _choice(None, *QUANTIZATIONS),
    "model.revision": ((lambda v: v is None or isinstance(v, str) and v != ""),
                       "a hub commit, branch or tag, or null"), "model.gradient_checkpointing": _bool(),
    "model.attn_implementation": _choice(None, "eager", "sdpa", "flash_attention_2",
                                         "flash_attention_3", "flex_attention"),
    # LAPE's entropy is over languages: it needs at least two to tell them apart
    "data.langs": _langs(2), "data.eval_langs": _langs(1), "data.block_size": _int(2),
    "data.batch_size": _int(1), "data.eval_batch_size": _int(1), "data.num_workers": _int(0),
    "data.track_blocks": _int(0, null=True),
    "data.ident_max_tokens": _int(1, null=True), "data.eval_max_tokens": _int(1, null=True),
    "train.lr": _num(0, lo_open=True), "train.weight_decay": _num(0),
    "train.warmup_ratio": _num(0, 1, hi_open=True), "train.max_tokens": _int(1, null=True),
    "train.max_steps": _int(1, null=True), "train.epochs": _int(1, null=True),
    "train.val_every_n_steps": _int(1),
    "train.checkpoint_every_n_steps": _int(1),
    "train.early_stopping_patience": _int(1, null=True),
    "trainer.precision": _choice(*PRECISIONS),
    "trainer.gradient_clip_val": _num(0, lo_open=True, null=True),
    "trainer.accumulate_grad_batches": _int(1, null=True),
    "auto_budget.min_neurons": _int(1, null=True),
    "auto_budget.min_fraction_params": _num(0, 1, lo_open=True, null=True),
}


def _rule_problems(cfg: DictConfig) -> list[str]:
    out = []
    for key, (ok, allowed) in RULES.items():
        v = OmegaConf.select(cfg, key, default=None)
        if isinstance(v, ListConfig):
            v = list(v)
        if not ok(v):
            out.append(f"{key}={v!r}: allowed is {allowed}")
    return out


def _rho_problems(cfg: DictConfig) -> list[str]:
    rho = cfg.rho
    if rho == "auto":
        b = cfg.get("auto_budget") or {}
        if b.get("min_neurons") is None and b.get("min_fraction_params") is None:
            return ["rho=auto needs a budget: set auto_budget.min_neurons or "
                    "auto_budget.min_fraction_params"]
        return []
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho <= 1:
        return [f"rho={rho!r}: allowed is a number in (0, 1] or 'auto'"]
    return []


# Stages that check their own keys: each module's `config_problems(cfg) -> list[str]`, in
# this order (a new stage with keys of its own adds its module here, not its rules to this
# file). The order is the report's order.
STAGE_CHECKS = ("langsub.methods.checks", "langsub.data.checks", "langsub.training.checks",
                "langsub.evaluation.benchmarks", "langsub.evaluation.heldout",
                "langsub.neurons.scorers",
                "langsub.analysis.fidelity", "langsub.model.sources", "langsub.export.checks")


def _stage_problems(cfg: DictConfig) -> list[str]:
    import importlib

    return [p for name in STAGE_CHECKS for p in importlib.import_module(name).config_problems(cfg)]


def settle_general(cfg: DictConfig) -> None:
    """`general` is the ability the target must not cost: the target itself is taken out of
    it, in one line (`lang=de` with the default list); a list of the target alone is refused."""
    target, general = cfg.lang.get("code"), cfg.get("general")
    if not isinstance(general, (list, ListConfig)) or target not in general:
        return
    rest = [l for l in general if l != target]
    if not rest:
        raise ConfigError(f"general={list(general)}: holds only the target lang={target}; "
                          "allowed is a list with at least one language that is not trained "
                          "(e.g. general=[en,de])")
    print(f"[langsub] general={list(general)} holds the target lang={target}: general ability "
          f"is measured on {rest}", file=sys.stderr, flush=True)
    with open_dict(cfg):
        cfg.general = rest


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of `cfg`; cheap, loads no weights. The one
    change it makes: the target is taken out of `general` (`settle_general`)."""
    from langsub.analysis import wanted

    code = OmegaConf.select(cfg, "lang.code", default=None)
    if not isinstance(code, str) or not code:
        raise ConfigError(f"lang.code={code!r}: allowed is a language code (conf/lang/<code>.yaml)")
    problems = _rule_problems(cfg) + _rho_problems(cfg)
    if not problems:
        settle_general(cfg)
    try:
        wanted(cfg.get("analysis"))
    except ConfigError as e:
        problems.append(str(e))
    problems += _stage_problems(cfg)
    if not problems:  # only when the cheap checks pass: this one reads the model config
        problems += shape_problems(cfg)
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))  # each problem once
