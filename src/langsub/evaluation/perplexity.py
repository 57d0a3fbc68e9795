"""Token perplexity: one torchmetrics metric for the Lightning loop and the analyses.

exp(summed token cross-entropy / token count), with the cross-entropy taken from the logits
(log-softmax inside `cross_entropy`): finite wherever the loss is. torchmetrics' Perplexity
takes softmax first and then the log, so a target 110 nats below the top logit underflows to
probability 0 and its perplexity to inf.
"""
from __future__ import annotations

import math

import torch
from torchmetrics import Metric


class TokenPerplexity(Metric):
    """Token-weighted perplexity of logits [B, T, V] against targets [B, T].

    States are the summed cross-entropy (float64) and the token count, both reduced by sum,
    so batches of any size and processes weigh by their tokens. Targets equal to
    `ignore_index` (padding) count neither way.
    """

    is_differentiable = True
    higher_is_better = False
    full_state_update = False

    def __init__(self, ignore_index: int = -100, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ignore_index = int(ignore_index)
        self.add_state("nll_sum", default=torch.tensor(0.0, dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add one batch: logits [B, T, V] (any float dtype, read in float32) and targets
        [B, T]; or, from the chunked loss (training/loss.py, no [B, T, V] logits), its summed
        cross-entropy and number of targets, two 0-d tensors (see `add`)."""
        if logits.dim() == 0 and targets.dim() == 0:
            self.nll_sum += logits.detach().to(torch.float64)
            self.count += targets.to(self.count.device)
            return
        if logits.dim() != 3 or logits.shape[:2] != targets.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)}: "
                             "expected [B, T, V] and [B, T]")
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
            ignore_index=self.ignore_index, reduction="sum")
        self.nll_sum += nll.detach().to(torch.float64)
        self.count += (targets != self.ignore_index).sum()

    def add(self, nll_sum: torch.Tensor, count: torch.Tensor) -> None:
        """Add a batch's summed cross-entropy and its number of targets."""
        self.update(nll_sum.reshape(()), count.reshape(()))

    def compute(self) -> torch.Tensor:
        return torch.exp(self.nll_sum / self.count)

    def _apply(self, fn, exclude_state=""):
        """Keep the states' dtypes when the module is cast (`precision=16-true` casts the whole
        LightningModule: a float16 sum would overflow past 65504 nats)."""
        this = super()._apply(fn, exclude_state)
        for name, dtype in (("nll_sum", torch.float64), ("count", torch.long)):
            this._defaults[name] = this._defaults[name].to(dtype)
            setattr(this, name, getattr(this, name).to(dtype))
        return this


@torch.no_grad()
def perplexity(model, ds, batch_size: int = 32, chunk: int | str | None = "auto") -> float:
    """Token perplexity of a packed dataset (pads and BOS carry label -100), computed as the
    LightningModule computes it (training/loss.py: positions :-1 against labels of 1:).

    The whole dataset is measured here, so nothing is synchronised across processes.
    """
    from langsub.training.loss import token_nll

    device = model.device
    metric = TokenPerplexity(ignore_index=-100, sync_on_compute=False).to(device)
    for i in range(0, len(ds), batch_size):
        b = {k: v.to(device) for k, v in ds[i: i + batch_size].items()
             if k in ("input_ids", "attention_mask", "labels")}
        metric.add(*token_nll(model, b, chunk))
    return float(metric.compute())


def geomean(values) -> float:
    """Geometric mean (the "general" perplexity over several languages); nan for none."""
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")
