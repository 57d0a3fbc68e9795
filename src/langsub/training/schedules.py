"""Learning-rate schedules, built from config (`conf/scheduler/*.yaml`, `_partial_: true`):
each takes the optimizer and the run's optimizer steps."""
from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(optimizer, total_steps: int, warmup_ratio: float = 0.1,
                  min_lr_ratio: float = 0.1) -> LambdaLR:
    """Linear warmup over warmup_ratio of the steps, then cosine down to min_lr_ratio × lr."""
    warm, total = max(1, int(warmup_ratio * total_steps)), max(1, total_steps)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return LambdaLR(optimizer, factor)


def constant(optimizer, total_steps: int) -> LambdaLR:
    """The optimizer's lr at every step (the paper's recipe: no warmup, no decay)."""
    return LambdaLR(optimizer, lambda step: 1.0)
