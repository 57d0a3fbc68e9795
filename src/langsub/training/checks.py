"""The training stage's keys, checked before anything loads: the step budget, the trainer
(devices, accumulation, FSDP), the optimizer and schedule objects, a recipe's languages."""
from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf

PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")


def strategy_name(cfg: DictConfig) -> str:
    """The trainer's strategy as a name: its `_target_` or the string (`ddp`, ``)."""
    s = cfg.trainer.get("strategy")
    return str(s.get("_target_", "") if isinstance(s, DictConfig) else s or "")


def is_sharded_config(cfg: DictConfig) -> bool:
    """The configured strategy shards the weights (FSDP)."""
    return "fsdp" in strategy_name(cfg).lower()


def _devices_ok(v) -> bool:
    """Lightning's `devices`: n >= 1, -1 (all), 'auto', a list of indices or "0,1"."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return v >= 1 or v == -1
    if isinstance(v, (list, ListConfig)):
        return len(v) > 0 and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                  for i in v)
    if isinstance(v, str):
        parts = [x.strip() for x in v.split(",") if x.strip()]
        return v == "auto" or v == "-1" or (bool(parts) and all(x.isdigit() for x in parts)
                                            and (len(parts) > 1 or int(parts[0]) >= 1
                                                 or v.endswith(",")))
    return False


def _trainer_problems(cfg: DictConfig) -> list[str]:
    """Devices; FSDP: GPUs only (Lightning's rule), and an unsharded strategy for the
    passes that run before the method is applied."""
    t, out = cfg.trainer, []
    devices = t.get("devices")
    if devices is not None and not _devices_ok(devices):
        out.append(f"trainer.devices={devices!r}: allowed is a positive integer, a list of "
                   "device indices, 'auto' or -1 (all)")
    target = strategy_name(cfg)
    if not is_sharded_config(cfg):
        return out
    if t.get("accelerator") not in ("gpu", "cuda") and not target.endswith("CPUFSDPStrategy"):
        out.append(f"trainer.accelerator={t.get('accelerator')}: trainer.strategy={target} runs on "
                   "GPUs only (allowed: gpu, cuda); on CPU, trainer=fsdp_cpu exercises the same path")
    if t.get("eval_strategy") is None:
        out.append(f"trainer.eval_strategy=None: with {target} the statistics pass and the "
                   "'before' evaluation need an unsharded strategy (allowed: ddp or a DDPStrategy)")
    return out


def _budget_problems(cfg: DictConfig) -> list[str]:
    t = cfg.train
    if t.get("max_tokens") is None and t.get("max_steps") is None:
        return ["train.max_tokens and train.max_steps are both null: set a budget"]
    return []


def _recipe_problems(cfg: DictConfig) -> list[str]:
    """The optimizer and schedule are objects built from config: each needs a `_target_`."""
    out = []
    for key, required in (("optimizer", True), ("scheduler", False)):
        node = cfg.get(key)
        if node is None and not required:
            continue
        if not isinstance(node, DictConfig) or not node.get("_target_"):
            out.append(f"{key}={OmegaConf.to_container(node) if isinstance(node, DictConfig) else node!r}: "
                       f"allowed is a config with a _target_ (conf/{key}/*.yaml)"
                       + ("" if required else " or null"))
    return out


def _recipe_langs_problems(cfg: DictConfig) -> list[str]:
    """A recipe (experiment=paper) identifies over a fixed language set: all must be there."""
    want = list(OmegaConf.select(cfg, "recipe.ident_langs", default=None) or [])
    missing = [l for l in want if l not in list(cfg.data.get("langs") or [])]
    if missing:
        return [f"data.langs={list(cfg.data.langs)}: the recipe identifies over {want}; "
                f"missing {missing}"]
    return []


def config_problems(cfg: DictConfig) -> list[str]:
    """The budget, the trainer, the optimizer and schedule, the recipe's languages."""
    return _budget_problems(cfg) + _trainer_problems(cfg) + _recipe_problems(cfg) \
        + _recipe_langs_problems(cfg)
