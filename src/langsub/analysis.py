"""Analyses of the paper: deactivation test, cross-lingual alignment, weight-change anatomy."""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from langsub.ffn import find_ffns


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


@contextmanager
def deactivated(model, mask: list[torch.Tensor]):
    """Zero the activation output (act_fn(gate)) of the given neurons of each layer."""
    handles = []
    for ffn, idx in zip(find_ffns(model), mask):
        if len(idx):
            keep = torch.ones(ffn.n_neurons)
            keep[idx] = 0

            def hook(_m, _i, out, keep=keep):
                n = keep.numel()
                if out.shape[-1] == n:
                    return out * keep.to(out)
                return torch.cat([out[..., :n] * keep.to(out), out[..., n:]], -1)
            handles.append(ffn.act.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def deactivation_matrix(model, test: dict, masks: dict, batch_size: int = 32) -> dict:
    """matrix[k][j] = ppl of language j with language k's neurons off / ppl − 1."""
    langs = list(masks)
    base = {j: perplexity(model, test[j], batch_size) for j in test}
    matrix = []
    for k in langs:
        with deactivated(model, masks[k]):
            matrix.append([perplexity(model, test[j], batch_size) / base[j] - 1 for j in test])
    return {"langs": langs, "eval_langs": list(test), "base_ppl": base, "matrix": matrix}


def diagonal_contrast(result: dict) -> tuple[float, float]:
    """(mean diagonal, mean off-diagonal) of a deactivation matrix."""
    langs, cols, m = result["langs"], result["eval_langs"], result["matrix"]
    diag = [m[i][cols.index(l)] for i, l in enumerate(langs) if l in cols]
    off = [m[i][j] for i, l in enumerate(langs) for j, c in enumerate(cols) if c != l]
    return sum(diag) / len(diag), sum(off) / len(off)
