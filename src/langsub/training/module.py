"""The LightningModule: a transformers causal LM fine-tuned by one method, with perplexities."""
from __future__ import annotations

import time

import lightning as L
import torch
from torch import nn

from langsub.errors import CheckpointError, ConfigError, TrainingDiverged
from langsub.evaluation.perplexity import TokenPerplexity, geomean
from langsub.training.checkpoints import check_trainable_keys
from langsub.training.loss import token_nll
from langsub.training.optim import attach_real_weight_decay
from langsub.training.trainers import is_sharded


def _key(lang: str) -> str:
    """A ModuleDict key for a language code (`to`, Tongan, is an nn.Module attribute)."""
    return f"lang_{lang}"


class CausalLMModule(L.LightningModule):
    """Trains whatever the method left trainable; measures perplexity per language.

    `predict_step` runs the decoder only (the statistics pass needs FFN activations, not
    logits). `test_step` feeds one Perplexity metric per evaluation language; the phase
    ("before"/"after") names the results. Validation measures `val_langs` (the target first:
    `val/ppl`, what the best checkpoint is chosen by; then `val/ppl/<lang>` for each and
    `val/ppl/general`, the geometric mean over `general`). Checkpoints hold only the
    trainable tensors.
    """

    def __init__(self, model: nn.Module, eval_langs: list[str], optimizer=None, scheduler=None,
                 val_langs: list[str] | None = None, general: list[str] | None = None,
                 loss_chunk: int | str | None = "auto"):
        super().__init__()
        self.model = model
        self.loss_chunk = loss_chunk  # positions per chunk of the loss (training/loss.py)
        self.stats_backward = False   # a statistics pass that needs gradients (neurons/passes.py)
        self.eval_langs = list(eval_langs)
        self.val_langs = list(val_langs or eval_langs[:1])
        self.general = [l for l in general or [] if l in self.val_langs]
        self.general_langs = list(general or [])  # during fitting: those tracked
        self.last_val: dict[str, float] = {}
        # from config (`_partial_: true`): optimizer(params), scheduler(optimizer, total_steps)
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.scheduler_factory = scheduler
        self.val_ppl = nn.ModuleDict()  # one per validated language (see `_val_order`)
        self._val_order = list(self.val_langs)
        self.val_curve: list[dict] = []  # every validation during fitting: tokens -> ppl
        self.test_ppl = nn.ModuleList(TokenPerplexity(ignore_index=-100) for _ in self.eval_langs)
        self.phase = "before"
        self.results: dict[str, float] = {}
        self.tokens_seen = 0
        self.replicas_identical: bool | None = None  # set after distributed training
        self.strict_loading = False  # checkpoints hold the trainable tensors only
        self._t0 = None
        self._tokens_at_start = 0
        self._decay_hooks: list = []

    # ---------------------------------------------------------------- steps
    def forward(self, batch):
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    def _nll(self, batch):
        """(summed token cross-entropy, targets): chunked over positions, never the whole
        [B, T, V] logits; under FSDP the model's own forward (its root gathers the head)."""
        sharded = self._trainer is not None and is_sharded(self.trainer)
        return token_nll(self.model, batch, None if sharded else self.loss_chunk)

    def training_step(self, batch, batch_idx):
        nll, count = self._nll(batch)
        loss = nll / count.clamp(min=1)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at step {self.global_step}; "
                                   "lower the learning rate (train.lr) or check the data")
        n = int(batch["attention_mask"].sum()) * self.trainer.world_size
        self.tokens_seen += n
        if self._t0 is None:
            self._t0 = time.perf_counter()
        elapsed = time.perf_counter() - self._t0
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        if elapsed > 0:
            self.log("train/tokens_per_s", self.tokens_seen / elapsed, prog_bar=True)
        return loss

    def on_validation_start(self):
        """Which language each validation loader holds (the data module says, by phase)."""
        fitting = self.trainer.state.fn == "fit"
        dm = getattr(self.trainer, "datamodule", None)
        self._val_order = dm.val_order(fitting) if hasattr(dm, "val_order") else \
            (self.val_langs[:1] if fitting else self.val_langs)
        for lang in self._val_order:
            if _key(lang) not in self.val_ppl:
                self.val_ppl[_key(lang)] = TokenPerplexity(ignore_index=-100).to(self.device)

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.val_ppl[_key(self._val_order[dataloader_idx])].add(*self._nll(batch))

    def on_validation_epoch_end(self):
        vals = {k[len("lang_"):]: float(m.compute()) for k, m in self.val_ppl.items()
                if m.update_count}
        for m in self.val_ppl.values():
            m.reset()
        general = [l for l in self.general_langs if l in vals]
        if general and (self.trainer.state.fn == "fit" or len(general) == len(self.general)):
            vals["general"] = geomean(vals[l] for l in general)
        self.last_val = vals
        if self.trainer.state.fn != "fit":  # the before/after measurements: metrics.json
            return
        # the forgetting curve; the sanity check before step 1 is its start (not again when
        # a resumed run checks once more)
        if len(vals) > 1 and not (self.trainer.sanity_checking and self.global_step > 0):
            self.val_curve.append({"step": self.global_step, "tokens": self.tokens_seen, **vals})
        if self.trainer.sanity_checking:
            return
        self.log("val/ppl", vals[self.val_langs[0]], prog_bar=True, sync_dist=False)
        for lang, v in vals.items():
            if len(vals) > 1:
                self.log(f"val/ppl/{lang}", v, sync_dist=False)

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.test_ppl[dataloader_idx].add(*self._nll(batch))

    def on_test_epoch_end(self):
        for lang, metric in zip(self.eval_langs, self.test_ppl):
            if metric.update_count:
                v = float(metric.compute())
                self.results[f"ppl_{self.phase}/{lang}"] = v
                self.log(f"ppl_{self.phase}/{lang}", v)
            metric.reset()

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        """A statistics pass: the decoder's forward (the hooks read the FFNs); for a
        gradient statistic (`stats_backward`) the LM loss and its backward as well."""
        if self.stats_backward:
            with torch.enable_grad():
                nll, _ = token_nll(self.model, batch, self.loss_chunk)
                nll.backward()
            return
        decoder = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model
        decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])

    def on_train_start(self):
        self._tokens_at_start = self.tokens_seen  # after a resume restored it

    def tokens_this_fit(self) -> int:
        """Tokens trained by this process's `fit` (not those before a resume)."""
        return self.tokens_seen - self._tokens_at_start

    def on_train_end(self):
        for h in self._decay_hooks:  # they hold the deltas' modules: let the model go later
            h.remove()
        self._decay_hooks = []
        """Under DDP, check (not assume) that every rank ends with the same trainable weights
        (under FSDP each rank holds different shards: nothing to compare)."""
        if self.trainer.world_size > 1 and not is_sharded(self.trainer):
            digest = torch.stack([t for p in self.model.parameters() if p.requires_grad
                                  for t in (p.detach().double().sum(),
                                            p.detach().double().square().sum())])
            every = self.all_gather(digest)
            self.replicas_identical = bool((every == every[0]).all())

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = self.optimizer_factory(params)
        self._decay_hooks = attach_real_weight_decay(opt, self.model)  # W_S + Δ decays, not Δ
        if self.scheduler_factory is None:
            return opt
        sched = self.scheduler_factory(opt, total_steps=max(1, self.trainer.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None):
        """Under FSDP the norm spans all shards: only the root FSDP module can clip it."""
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        root = self.trainer.strategy.model
        if gradient_clip_val and isinstance(root, FSDP):
            if gradient_clip_algorithm not in (None, "norm"):
                raise ConfigError(f"trainer.gradient_clip_algorithm={gradient_clip_algorithm!r}: "
                                 "allowed under FSDP is 'norm'")
            root.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ---------------------------------------------------------------- checkpoints
    def trainable_keys(self) -> set[str]:
        """State-dict keys of the trainable tensors (FSDP's wrapper prefixes removed)."""
        from torch.distributed.fsdp._common_utils import clean_tensor_name

        return {f"model.{clean_tensor_name(n)}" for n, p in self.model.named_parameters()
                if p.requires_grad}

    def on_save_checkpoint(self, checkpoint):
        keep = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["trainable_keys"] = sorted(keep)
        checkpoint["tokens_seen"] = self.tokens_seen
        checkpoint["val_curve"] = self.val_curve
        checkpoint["neuron_index"] = self.neuron_index()

    def neuron_index(self) -> dict[str, list[int]]:
        """Which rows/columns each sparse delta trains (a resumed run must train the same)."""
        return {n: b.tolist() for n, b in self.model.named_buffers(remove_duplicate=False)
                if n.endswith(("parametrizations.weight.0.index", "neuron_delta.index"))}

    def on_load_checkpoint(self, checkpoint):
        # FSDP loads (and removes) the state dict before this hook: check the saved key list
        keys = set(checkpoint["state_dict"]) if "state_dict" in checkpoint \
            else set(checkpoint.get("trainable_keys", ()))
        check_trainable_keys(keys, self.trainable_keys(), "checkpoint")
        if checkpoint.get("neuron_index", {}) != self.neuron_index():
            raise CheckpointError("checkpoint was trained on other neurons than this run selects "
                             "(changed rho, seed, mask or data?): resume with the same settings")
        self.tokens_seen = checkpoint.get("tokens_seen", 0)
        self.val_curve = list(checkpoint.get("val_curve", []))


def module_from_config(cfg, model: nn.Module, eval_langs: list[str],
                       val_langs: list[str] | None = None) -> CausalLMModule:
    """The LightningModule `cfg` trains with: its optimizer and scheduler (`_partial_`
    factories), its loss chunking, its general languages — for train.py and profile.py alike."""
    import hydra

    return CausalLMModule(model, eval_langs,
                          optimizer=hydra.utils.instantiate(cfg.optimizer, _convert_="all"),
                          scheduler=hydra.utils.instantiate(cfg.scheduler, _convert_="all")
                          if cfg.get("scheduler") else None,
                          val_langs=val_langs, general=list(cfg.general),
                          loss_chunk=cfg.model.get("loss_chunk", "auto"))
