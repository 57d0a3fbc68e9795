"""Perplexity of a packed dataset outside the Lightning loop (analyses, reversal)."""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def perplexity(model, ds, batch_size: int = 32) -> float:
    """Token-level perplexity of a packed dataset (pads carry label -100)."""
    nll, n = 0.0, 0
    for i in range(0, len(ds), batch_size):
        b = ds[i: i + batch_size]
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        labels = b["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                                 labels.flatten(), ignore_index=-100,
                                                 reduction="sum")
        nll += float(loss)
        n += int((labels != -100).sum())
    return math.exp(nll / n)
