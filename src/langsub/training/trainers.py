"""Lightning trainers from `cfg.trainer`, the run's step budget, and what sharded
training (FSDP) needs on top.

FSDP wraps the LightningModule in place at its first trainer call, and the method is applied
after the statistics pass and the "before" evaluation; so those two run under
`trainer.eval_strategy` (DDP: replicated, nothing wrapped), and only fitting and the "after"
evaluation are sharded. `auto_wrap_policy: decoder_layers` shards per decoder layer (the
classes transformers names in `_no_split_modules`).
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import hydra
import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import DictConfig, OmegaConf
from torch import nn

from langsub.errors import ConfigError


def decoder_layer_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The module classes transformers never splits (`_no_split_modules`): FSDP's wrap units."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    found = {type(m) for m in model.modules() if type(m).__name__ in names}
    if not found:
        raise ConfigError(f"auto_wrap_policy=decoder_layers: {type(model).__name__} names no "
                         "decoder layer class (_no_split_modules); set the policy explicitly")
    return found


def make_trainer(cfg_trainer: DictConfig, model: nn.Module | None = None, evaluation: bool = False,
                 **kwargs) -> L.Trainer:
    """`lightning.Trainer` from the trainer config; `evaluation=True` uses `eval_strategy`."""
    t = OmegaConf.to_container(cfg_trainer, resolve=True)
    eval_strategy = t.pop("eval_strategy", None)
    if evaluation and eval_strategy is not None:
        t["strategy"] = eval_strategy
    strategy = t.get("strategy")
    if isinstance(strategy, dict) and strategy.get("auto_wrap_policy") == "decoder_layers":
        if model is None:
            raise ConfigError("auto_wrap_policy=decoder_layers needs the model")
        t["strategy"] = hydra.utils.instantiate(
            strategy, auto_wrap_policy=decoder_layer_classes(model))
    from langsub.training.progress import PhaseProgress

    callbacks = list(kwargs.pop("callbacks", None) or [])
    if not any(isinstance(c, PhaseProgress) for c in callbacks):  # every phase reports
        callbacks.append(PhaseProgress())
    return hydra.utils.instantiate(t, callbacks=callbacks, **kwargs)


def is_sharded(trainer: L.Trainer) -> bool:
    """Each process holds only shards of the weights: rebuild before merging or exporting."""
    return isinstance(trainer.strategy, FSDPStrategy)


def build_trainers(cfg: DictConfig, model) -> tuple[L.Trainer, L.Trainer]:
    """(fit trainer, evaluation trainer): the same one unless the strategy shards (FSDP),
    where the statistics pass and the "before" evaluation run under trainer.eval_strategy.

    Lightning's val_check_interval counts batches, not optimizer steps: scaled by the
    accumulation so that validation runs every train.val_every_n_steps optimizer steps.
    """
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if cfg.train.get("early_stopping_patience"):
        callbacks.append(L.pytorch.callbacks.EarlyStopping(
            "val/ppl", patience=cfg.train.early_stopping_patience, mode="min"))
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    accumulate = cfg.trainer.get("accumulate_grad_batches") or 1
    fit = make_trainer(cfg.trainer, model, callbacks=callbacks, logger=loggers or False,
                       max_steps=1, val_check_interval=cfg.train.val_every_n_steps * accumulate,
                       check_val_every_n_epoch=None,
                       max_epochs=cfg.train.get("epochs") or -1,
                       default_root_dir=cfg.paths.output_dir,
                       # tracking forgetting: validate once before step 1 (the curve's start)
                       **({"num_sanity_val_steps": -1} if cfg.data.get("track_blocks") else {}))
    if cfg.trainer.get("eval_strategy") is None:
        return fit, fit
    return fit, make_trainer(cfg.trainer, model, evaluation=True, logger=loggers or False,
                             enable_checkpointing=False, default_root_dir=cfg.paths.output_dir)


def tokens_per_step(cfg: DictConfig, world_size: int) -> int:
    """Tokens one optimizer step sees: batch × block × processes × accumulated batches."""
    return cfg.data.batch_size * cfg.data.block_size * world_size * \
        (cfg.trainer.get("accumulate_grad_batches") or 1)


def budget_steps(cfg: DictConfig, world_size: int) -> int:
    """Optimizer steps of the run: train.max_steps, else train.max_tokens / tokens per step."""
    if cfg.train.get("max_steps"):
        return int(cfg.train.max_steps)
    return max(1, math.ceil(cfg.train.max_tokens / tokens_per_step(cfg, world_size)))


@contextmanager
def _full_state_dict_in_place(module, world_size: int, rank0_only: bool = True):
    """Lightning's full-state-dict context without offload_to_cpu (already on the CPU)."""
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.state_dict_type(module, StateDictType.FULL_STATE_DICT,
                              FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
                              FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only)):
        yield


def _no_cpu_offload(fn):
    """Run a Lightning FSDP method with `_full_state_dict_in_place` as its state-dict context."""
    import lightning.fabric.strategies.model_parallel as fabric_mp
    import lightning.pytorch.strategies.fsdp as pl_fsdp

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        saved = pl_fsdp._get_full_state_dict_context, fabric_mp._get_full_state_dict_context
        pl_fsdp._get_full_state_dict_context = _full_state_dict_in_place
        fabric_mp._get_full_state_dict_context = _full_state_dict_in_place
        try:
            return fn(*args, **kwargs)
        finally:
            pl_fsdp._get_full_state_dict_context, fabric_mp._get_full_state_dict_context = saved
    return wrapper


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy on CPU processes (gloo): `trainer=fsdp_cpu`, for tests only.

    Two things differ from `FSDPStrategy`, both CPU-only: Lightning refuses FSDP without a
    GPU and torch's FSDP shards on the CPU only with `device_id=cpu`, which this passes; and
    torch 2.13's FSDP crashes (SIGSEGV) gathering a full state dict with offload_to_cpu=True,
    which Lightning always sets, when the tensors are on the CPU already, so checkpoints
    gather without offloading. Wrapping, mixed requires_grad with use_orig_params, the
    sharded optimizer, checkpoint saving and loading and gradient clipping are Lightning's
    and torch's own code: the FSDP path of the main job runs without a GPU.
    """

    lightning_module_state_dict = _no_cpu_offload(FSDPStrategy.lightning_module_state_dict)
    optimizer_state = _no_cpu_offload(FSDPStrategy.optimizer_state)
    load_checkpoint = _no_cpu_offload(FSDPStrategy.load_checkpoint)

    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if not any(isinstance(m, FSDP) for m in model.modules()):
            model = FSDP(module=model, cpu_offload=self.cpu_offload,
                         mixed_precision=self.mixed_precision_config,
                         sharding_strategy=self.sharding_strategy,
                         device_id=torch.device("cpu"), **self.kwargs)
        return model
