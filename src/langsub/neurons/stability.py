"""How stable LAPE identification is on less text: pure helpers (subsamples, Jaccard)."""
from __future__ import annotations

import torch


def jaccard(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """|A ∩ B| / |A ∪ B| of two masks as sets of (layer, neuron); 1.0 when both are empty."""
    sa = {(i, int(x)) for i, t in enumerate(a) for x in t}
    sb = {(i, int(x)) for i, t in enumerate(b) for x in t}
    union = len(sa | sb)
    return len(sa & sb) / union if union else 1.0


def size(mask: list[torch.Tensor]) -> int:
    return int(sum(len(t) for t in mask))
