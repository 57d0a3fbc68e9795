"""Progress of long work in the terminal and in the run's log file.

Lightning's progress bar draws in a terminal only; a run on a real model spends minutes in
each phase, so every trainer also carries `PhaseProgress`: a line through `logging` (Hydra
sends it to the console and to `<run dir>/train.log`) when a phase starts, every `every_s`
seconds while it runs (done share, tokens, tokens/s, elapsed, time left) and when it ends.
"""
from __future__ import annotations

import logging
import time

import lightning as L

from langsub.clock import clock, since

log = logging.getLogger("langsub")


class PhaseProgress(L.Callback):
    """One line per phase at least: what, tokens, tokens/s, elapsed (and time left)."""

    def __init__(self, every_s: float = 30.0):
        self.every_s = every_s
        self._reset("", 0)

    def _reset(self, what: str, total: int) -> None:
        self.what, self.total, self.tokens = what, total, 0
        self.t0 = self.last = time.perf_counter()

    @staticmethod
    def _total(loaders) -> int:
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        try:
            return sum(int(dl.dataset[:]["attention_mask"].sum()) for dl in loaders)
        except Exception:  # noqa: BLE001 - a loader without a sized packed dataset
            return 0

    def _start(self, what: str, loaders) -> None:
        self._reset(what, self._total(loaders))
        of = f", {self.total:,} tokens" if self.total else ""
        log.info(f"{what}: started{of}")

    def _step(self, batch, extra: str = "") -> None:
        if isinstance(batch, dict) and "attention_mask" in batch:
            self.tokens += int(batch["attention_mask"].sum())
        now = time.perf_counter()
        if now - self.last < self.every_s:
            return
        self.last = now
        el = now - self.t0
        rate = self.tokens / el if el > 0 else 0.0
        share = f"{100 * self.tokens / self.total:.0f} % " if self.total else ""
        left = f", about {clock((self.total - self.tokens) / rate)} left" \
            if self.total and rate > 0 else ""
        log.info(f"{self.what}: {share}{self.tokens:,} tokens, {rate:,.0f} tok/s, "
                 f"elapsed {clock(el)}{left}{extra}")

    def _end(self) -> None:
        el = time.perf_counter() - self.t0
        rate = self.tokens / el if el > 0 else 0.0
        log.info(f"{self.what}: done, {self.tokens:,} tokens in {clock(el)} ({rate:,.0f} tok/s)")

    @staticmethod
    def _phase(pl_module) -> str:
        return getattr(pl_module, "phase", "")

    # ---------------------------------------------------------------- statistics pass
    def on_predict_start(self, trainer, pl_module):
        self._start("statistics pass", trainer.predict_dataloaders)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._step(batch)

    def on_predict_end(self, trainer, pl_module):
        self._end()

    # ---------------------------------------------------------------- evaluations
    def on_test_start(self, trainer, pl_module):
        self._start(f"perplexity {self._phase(pl_module)} (test split)", trainer.test_dataloaders)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._step(batch)

    def on_test_end(self, trainer, pl_module):
        self._end()

    def on_validation_start(self, trainer, pl_module):
        if trainer.state.fn == "fit":  # inside training: one line at its end is enough
            self._val_t0 = time.perf_counter()
            return
        self._start(f"perplexity {self._phase(pl_module)} (valid split)", trainer.val_dataloaders)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0):
        if trainer.state.fn != "fit":
            self._step(batch)

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn != "fit":
            self._end()
        elif not trainer.sanity_checking:
            ppl = trainer.callback_metrics.get("val/ppl")
            ppl = f", val/ppl {float(ppl):.2f}" if ppl is not None else ""
            log.info(f"training: validation at step {trainer.global_step} in "
                     f"{since(self._val_t0)}{ppl}")

    # ---------------------------------------------------------------- training
    def on_train_start(self, trainer, pl_module):
        self._reset("training", 0)
        self.max_steps = trainer.max_steps
        log.info(f"training: started, {trainer.max_steps} optimizer steps")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = trainer.callback_metrics.get("train/loss")
        extra = f", step {trainer.global_step}/{self.max_steps}" + \
            (f", loss {float(loss):.4f}" if loss is not None else "")
        self._step(batch, extra)

    def on_train_end(self, trainer, pl_module):
        self._end()
