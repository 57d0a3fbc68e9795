"""Stage 3, training: the LightningModule, trainers and strategies, schedules, checkpoints
and their key checks, and DDP launch inside a Hydra sweep."""
