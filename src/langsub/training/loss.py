"""Token cross-entropy of a causal LM without its [batch x sequence x vocabulary] logits.

A real vocabulary makes the logits the largest tensor of a step: Gemma 3 has 262,144 tokens,
so one evaluation batch of 32 x 128 positions holds 4.3 GB of float logits. Here the decoder
runs alone and the output projection, log-softmax and gradient are taken over chunks of
positions (a fused linear cross-entropy, as Liger's and torchtune's chunked loss): the
gradients of the hidden states (and of the head, when it trains) are computed chunk by chunk
in the forward pass, so no chunk's logits outlive it. Sums are float32, as the plain loss.
"""
from __future__ import annotations

import torch
from torch import nn

CHUNK_BUDGET = 1 << 26  # logits elements per chunk: 256 MB of float32


def chunk_rows(vocab: int, chunk: int | str | None) -> int | None:
    """Positions per chunk: `auto` keeps a chunk's float32 logits under 256 MB; an integer
    is taken as given; null: no chunking (the model's own logits)."""
    if chunk is None:
        return None
    if chunk == "auto":
        return max(16, CHUNK_BUDGET // max(1, vocab))
    return int(chunk)


class LinearCrossEntropy(torch.autograd.Function):
    """sum_n CE(softcap(h_n @ W^T), y_n) over chunks of rows; gradients made in the forward."""

    @staticmethod
    def forward(ctx, h, weight, targets, rows, softcap, grad=True):
        dev = h.device.type
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype
        # `grad`: whether the caller's grad mode is on (inside forward it is always off); an
        # evaluation under no_grad computes the loss only, whatever requires_grad says
        need_h, need_w = grad and h.requires_grad, grad and weight.requires_grad
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        gh = torch.empty_like(h) if need_h else None
        gw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        with torch.autocast(dev, enabled=False):
            w = weight.to(cdt)
            for s in range(0, h.shape[0], rows):
                hc, y = h[s: s + rows].to(cdt), targets[s: s + rows]
                z = (hc @ w.T).float()
                t = None
                if softcap:
                    t = torch.tanh(z / softcap)
                    z = t * softcap
                lse = torch.logsumexp(z, -1)
                total += (lse - z.gather(1, y[:, None]).squeeze(1)).sum()
                if not (need_h or need_w):
                    continue
                g = z.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                g[torch.arange(len(y), device=y.device), y] -= 1
                if t is not None:
                    g.mul_(1 - t * t)
                if need_h:
                    gh[s: s + rows] = (g.to(cdt) @ w).to(h.dtype)
                if need_w:
                    gw.addmm_(g.T, hc.float())
        ctx.save_for_backward(*(x for x in (gh, gw) if x is not None))
        ctx.need = (need_h, need_w)
        ctx.w_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad):
        saved = list(ctx.saved_tensors)
        need_h, need_w = ctx.need
        gh = saved.pop(0) if need_h else None
        gh = gh * grad.to(gh.dtype) if gh is not None else None
        gw = (saved.pop(0) * grad).to(ctx.w_dtype) if need_w else None
        return gh, gw, None, None, None, None


def _head_parts(model: nn.Module):
    """(decoder, head, softcap) of a causal LM whose head is a bias-free Linear, else None
    (then the model's own logits are used)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    if type(head) is not nn.Linear or head.bias is not None or decoder is None:
        return None
    return decoder, head, getattr(base.config, "final_logit_softcapping", None)


def token_nll(model: nn.Module, batch: dict, chunk: int | str | None = "auto"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed next-token cross-entropy, number of targets) of a packed batch: logits of
    positions :-1 against labels of 1:, labels -100 (padding, a BOS) not counted. With
    `chunk` null, or a model whose head this cannot take apart, from the model's logits."""
    labels = batch["labels"][:, 1:]
    valid = labels != -100
    count = valid.sum()
    parts = _head_parts(model)
    rows = chunk_rows(parts[1].out_features, chunk) if parts else None
    if rows is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                          labels.reshape(-1), ignore_index=-100, reduction="sum")
        return nll, count
    decoder, head, softcap = parts
    h = decoder(input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"]).last_hidden_state[:, :-1]
    return LinearCrossEntropy.apply(h[valid], head.weight, labels[valid], rows, softcap,
                                    torch.is_grad_enabled()), count
