"""lm-eval's HFLM, scoring log-likelihoods without the logits of every position.

lm-eval's HFLM takes `model(inps).logits` ([batch, positions, vocabulary]) and a
log-softmax over all of it, then keeps the continuation's positions. With Gemma 3's 262,144
tokens, one batch of 16 MMLU prompts of 300 tokens is 5 GB of float32 logits, nearly all of
them thrown away. Here the decoder runs alone and the output head (with its soft-capping)
is applied, in chunks, to the continuation positions only: the same numbers, a few rows of
logits instead of all of them (docs/BENCHMARKS.md measures both paths).
"""
from __future__ import annotations

import torch
from lm_eval.models.huggingface import HFLM

from langsub.training.loss import _head_parts, chunk_rows


class ContinuationLM(HFLM):
    """HFLM whose `_loglikelihood_tokens` computes the head at continuation positions only
    (models whose head `training/loss.py` can take apart; others: lm-eval's own path)."""

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        parts = _head_parts(self.model)
        if parts is None or self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        bs = override_bs or (self.batch_size if isinstance(self.batch_size, int) else 16)
        # longest first, as lm-eval does: a batch is padded to its first item
        order = sorted(range(len(requests)),
                       key=lambda i: -(len(requests[i][1]) + len(requests[i][2])))
        out: list = [None] * len(requests)
        for s in range(0, len(order), bs):
            idx = order[s: s + bs]
            for i, answer in zip(idx, self._score([requests[i] for i in idx], parts)):
                out[i] = answer
                self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)
        return out

    @torch.no_grad()
    def _score(self, batch, parts) -> list[tuple[float, bool]]:
        """(summed log-probability of the continuation, whether it is the greedy one)."""
        decoder, head, softcap = parts
        inps, conts = [], []
        for _, ctx, cont in batch:
            full = (ctx + cont)[-(self.max_length + 1):]  # truncated from the left, as lm-eval
            inps.append(full[:-1])
            conts.append(cont)
        width = max(len(x) for x in inps)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(inps), width), pad, dtype=torch.long)
        for r, x in enumerate(inps):  # right padding: causal, so pads never reach a position
            ids[r, : len(x)] = torch.tensor(x)
        h = decoder(input_ids=ids.to(self.device)).last_hidden_state
        # the positions whose next token is a continuation token, row by row
        rows = torch.cat([torch.arange(len(x) - len(c), len(x)) + r * width
                          for r, (x, c) in enumerate(zip(inps, conts))]).to(h.device)
        hs = h.reshape(-1, h.shape[-1])[rows]
        targets = torch.tensor([t for c in conts for t in c], device=h.device)
        logp, greedy = [], []
        w = head.weight
        for k in range(0, len(rows), chunk_rows(w.shape[0], "auto")):
            z = (hs[k: k + chunk_rows(w.shape[0], "auto")].to(w.dtype) @ w.T).float()
            if softcap:
                z = torch.tanh(z / softcap) * softcap
            z = torch.log_softmax(z, -1)
            y = targets[k: k + len(z)]
            logp.append(z.gather(1, y[:, None])[:, 0])
            greedy.append(z.argmax(-1) == y)
        logp, greedy = torch.cat(logp).cpu(), torch.cat(greedy).cpu()
        out, k = [], 0
        for c in conts:
            out.append((float(logp[k: k + len(c)].sum()), bool(greedy[k: k + len(c)].all())))
            k += len(c)
        return out
