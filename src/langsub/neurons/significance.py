"""A data-driven subnetwork size: neurons whose activation probability for a language is
significantly above every other language's (`selection=significance`, level `alpha`).

LAPE keeps a fixed share ρ of the neurons whatever the language and its text. Here the size
follows the statistics: for language k and neuron i, a one-sided two-proportion z-test of
p_k > p_j against every other language j, from the counts (over_zero) and token counts; the
neuron is k's when every test rejects at alpha / (L·N) (Bonferroni over the neurons tested
for k). More text makes smaller differences significant; a neuron two languages share above
the rest belongs to neither (LAPE would give it to both).
"""
from __future__ import annotations

import math

import torch

Mask = list[torch.Tensor]


def p_values(over_zero: torch.Tensor, n_tokens) -> torch.Tensor:
    """[K, L, N]: for each language k, the largest over j != k of the one-sided p-value of
    p_k > p_j (1.0 where no other language exists to compare with)."""
    oz = over_zero.double()
    n = torch.as_tensor(n_tokens, dtype=torch.float64)
    L, N, K = oz.shape
    p = oz / n
    worst = torch.zeros(K, L, N, dtype=torch.float64) if K > 1 else torch.ones(1, L, N)
    for k in range(K):
        for j in range(K):
            if j == k:
                continue
            pooled = (oz[..., k] + oz[..., j]) / (n[k] + n[j])
            se = (pooled * (1 - pooled) * (1 / n[k] + 1 / n[j])).sqrt()
            diff = p[..., k] - p[..., j]
            # se = 0: both never or both always active, no evidence either way
            z = torch.where(se > 0, diff / se.clamp_min(1e-300), torch.full_like(diff, -math.inf))
            pv = 0.5 * torch.erfc(z / math.sqrt(2))
            worst[k] = torch.maximum(worst[k], pv)
    return worst


def select_significant(over_zero: torch.Tensor, n_tokens, alpha: float = 0.01) -> list[Mask]:
    """Per language (K order), per layer, sorted indices of the neurons significantly more
    active for it than for every other language (Bonferroni over the L·N neurons)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} is not allowed: must be in (0, 1)")
    L, N, K = over_zero.shape
    keep = p_values(over_zero, n_tokens) < alpha / (L * N)
    return [[keep[k, l].nonzero().view(-1) for l in range(L)] for k in range(K)]
