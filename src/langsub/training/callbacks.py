"""Callbacks the main job always has (the configurable ones are in conf/callbacks/)."""
from __future__ import annotations

import lightning as L


class ValidateAtEnd(L.Callback):
    """Validate (and so consider for the best checkpoint) after the last optimizer step too.

    Lightning validates every `val_check_interval` batches only; a run whose step budget is
    not a multiple of it would report a model that stopped learning steps before the end.
    Asking the loop to stop at the last step makes Lightning run validation right there.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        last_step = 0 < trainer.max_steps <= trainer.global_step
        loop = trainer.fit_loop.epoch_loop
        last_epoch = trainer.max_epochs not in (None, -1) and loop.batch_progress.is_last_batch \
            and trainer.current_epoch + 1 >= trainer.max_epochs
        if last_step or last_epoch:
            trainer.should_stop = True
