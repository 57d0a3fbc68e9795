"""Checkpoints hold the trainable tensors only; their keys are checked, never ignored."""
from __future__ import annotations

import torch

from langsub.errors import CheckpointError


def check_trainable_keys(have: set[str], want: set[str], where: str) -> None:
    """A checkpoint's trainable tensors must be exactly the run's: none missing, none extra."""
    missing, unexpected = want - have, have - want
    if missing or unexpected:
        raise CheckpointError(f"{where} does not match this run's trainable tensors: "
                              f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")


def load_trainable(model: torch.nn.Module, ckpt_path: str) -> torch.nn.Module:
    """Put a checkpoint's trainable tensors into `model` (prepared by the same method)."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    state = {k.removeprefix("model."): v for k, v in state.items()}
    check_trainable_keys(set(state), {n for n, p in model.named_parameters() if p.requires_grad},
                         ckpt_path)
    model.load_state_dict(state, strict=False)
    return model
