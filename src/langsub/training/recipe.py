"""The training recipe a config amounts to, in words and numbers (plan.json, metrics.json)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

SCHEDULES = {"warmup_cosine": "cosine", "constant": "constant"}  # _target_ function -> word


def schedule_name(cfg: DictConfig) -> str:
    """"constant", "cosine", … from the scheduler's `_target_` (no scheduler: constant)."""
    node = cfg.get("scheduler")
    if not node:
        return "constant"
    fn = str(node.get("_target_", "")).rsplit(".", 1)[-1]
    return SCHEDULES.get(fn, fn)


def recipe(cfg: DictConfig) -> dict:
    """Optimizer, schedule, budgets and identification of the run, as it will train."""
    sched = cfg.get("scheduler") or {}
    random_match = OmegaConf.select(cfg, "recipe.random_match", default=None) \
        or cfg.method.get("match")
    return {"lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay,
            "schedule": schedule_name(cfg),
            "warmup_ratio": sched.get("warmup_ratio", 0.0) if sched else 0.0,
            "grad_clip": cfg.trainer.get("gradient_clip_val"),
            "batch_size": cfg.data.batch_size, "block_size": cfg.data.block_size,
            "max_tokens": cfg.train.get("max_tokens"), "epochs": cfg.train.get("epochs"),
            "val_every_n_steps": cfg.train.val_every_n_steps,
            "ident_langs": list(cfg.data.langs), "ident_max_tokens": cfg.data.ident_max_tokens,
            "random_match": random_match}
