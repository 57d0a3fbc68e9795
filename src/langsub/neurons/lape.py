"""LAPE language-specific neuron identification (Tang et al., ACL 2024): the pure maths.

Vectorised transcription of RUCAIBox/Language-Specific-Neurons identify.py: statistics in,
neuron indices out; no model, no files (those are `counting`, `cache` and `masks`).
"""

from __future__ import annotations

import math

import torch

Mask = list[torch.Tensor]  # one sorted int64 tensor of neuron indices per layer
SCOPES = ("global", "layer")


# --------------------------------------------------------------------------- validation


def _check_fraction(key: str, value, *, upper_closed: bool) -> float:
    """Reject values outside (0, 1] (upper_closed) or (0, 1) with a message naming the key."""
    allowed = "(0, 1]" if upper_closed else "(0, 1)"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and 0 < value and (value <= 1 if upper_closed else value < 1)
    if not ok:
        raise ValueError(f"{key}={value!r} is not allowed: must be a number in {allowed}")
    return float(value)


def _check_stats(over_zero: torch.Tensor, n_tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes ([L,N,K] counts, [K] token totals) and that every language has tokens."""
    if not isinstance(over_zero, torch.Tensor) or over_zero.dim() != 3:
        shape = tuple(over_zero.shape) if isinstance(over_zero, torch.Tensor) else type(over_zero)
        raise ValueError(f"over_zero must be a 3-D tensor [layers, neurons, languages], got {shape}")
    if over_zero.numel() == 0:
        raise ValueError(f"over_zero is empty: shape {tuple(over_zero.shape)}")
    n_tokens = torch.as_tensor(n_tokens)
    n_langs = over_zero.shape[-1]
    if tuple(n_tokens.shape) != (n_langs,):
        raise ValueError(
            f"n_tokens must have shape [{n_langs}] (one count per language of over_zero), "
            f"got {tuple(n_tokens.shape)}"
        )
    for k in range(n_langs):
        if n_tokens[k] <= 0:
            raise ValueError(f"n_tokens: language {k} has no tokens (n_tokens[{k}]={n_tokens[k].item()})")
    return over_zero, n_tokens


# --------------------------------------------------------------------------- maths


def lape_entropy(over_zero: torch.Tensor, n_tokens) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation probabilities [L,N,K] and their entropy over languages [L,N].

    Low entropy = the neuron fires mostly for few languages (LAPE's specificity score).
    Float arithmetic matches the original (`over_zero / n`, then normalise over languages).
    """
    over_zero, n_tokens = _check_stats(over_zero, n_tokens)
    probs = over_zero / n_tokens
    q = probs / probs.sum(dim=-1, keepdim=True)
    q[torch.isnan(q)] = 0
    log_q = torch.where(q > 0, q.log(), 0)
    return probs, -torch.sum(q * log_q, dim=-1)


def _kth_threshold(probs: torch.Tensor, threshold: float) -> float:
    """The threshold-quantile activation probability τ, as the original's kthvalue."""
    flat = probs.flatten()
    k = max(1, round(len(flat) * threshold))
    return flat.kthvalue(k).values.item()


def _prepare(over_zero, n_tokens, threshold: float):
    """probs, filtered entropy (inf where no language exceeds τ) and τ."""
    probs, entropy = lape_entropy(over_zero, n_tokens)
    tau = _kth_threshold(probs, threshold)
    entropy[(probs > tau).sum(dim=-1) == 0] = torch.inf
    return probs, entropy, tau


def _take_lowest(entropy: torch.Tensor, rho: float, scope: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, neuron) indices of the lowest-entropy neurons, globally or per layer."""
    n_layers, n_neurons = entropy.shape
    if scope == "global":
        _, index = entropy.flatten().topk(round(len(entropy.flatten()) * rho), largest=False)
        return index // n_neurons, index % n_neurons
    per_layer = round(n_neurons * rho)
    cols = [entropy[l].topk(per_layer, largest=False).indices for l in range(n_layers)]
    rows = torch.arange(n_layers).repeat_interleave(per_layer)
    return rows, torch.cat(cols)


def _assign(probs, entropy, tau: float, rho: float, scope: str) -> torch.Tensor:
    """Bool [K,L,N]: taken neurons assigned to every language whose probability exceeds τ."""
    rows, cols = _take_lowest(entropy, rho, scope)
    n_layers, n_neurons, n_langs = probs.shape
    assigned = torch.zeros(n_langs, n_layers, n_neurons, dtype=torch.bool)
    assigned[:, rows, cols] = (probs[rows, cols] > tau).T
    return assigned


def _check_scope(scope) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope={scope!r} is not allowed: must be one of {list(SCOPES)}")
    return scope


def select_neurons(
    over_zero: torch.Tensor,
    n_tokens,
    rho: float = 0.05,
    threshold: float = 0.95,
    scope: str = "global",
) -> list[Mask]:
    """LAPE neurons: for each language (K order) and layer, sorted int64 neuron indices.

    Takes the round(rho*L*N) lowest-entropy neurons (scope="global"; per layer round(rho*N)
    with scope="layer") among those with some probability above the threshold-quantile τ,
    and gives each to every language whose probability exceeds τ. Unlike the original,
    every language gets an entry, even one with no neuron.
    """
    rho = _check_fraction("rho", rho, upper_closed=True)
    threshold = _check_fraction("threshold", threshold, upper_closed=False)
    _check_scope(scope)
    probs, entropy, tau = _prepare(over_zero, n_tokens, threshold)
    assigned = _assign(probs, entropy, tau, rho, scope)
    return [[lang[l].nonzero().view(-1) for l in range(lang.shape[0])] for lang in assigned]


# --------------------------------------------------------------------------- random baseline


def select_random(counts_per_layer, n_neurons: int, seed: int) -> Mask:
    """Per layer, counts_per_layer[l] distinct uniform neuron indices (sorted), seeded.

    Random-subnetwork baseline matching a LAPE mask's per-layer sizes.
    """
    counts = [int(c) for c in torch.as_tensor(counts_per_layer).view(-1).tolist()]
    for l, c in enumerate(counts):
        if not 0 <= c <= n_neurons:
            raise ValueError(f"counts_per_layer[{l}]={c} is not allowed: must be in [0, {n_neurons}]")
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n_neurons, generator=gen)[:c].sort().values for c in counts]


def select_random_global(total: int, n_layers: int, n_neurons: int, seed: int) -> Mask:
    """`total` distinct uniform (layer, neuron) pairs over all layers, as a per-layer mask.

    Random-subnetwork baseline matching a LAPE mask's total size only.
    """
    if not 0 <= total <= n_layers * n_neurons:
        raise ValueError(
            f"total={total} is not allowed: must be in [0, {n_layers * n_neurons}] "
            f"({n_layers} layers x {n_neurons} neurons)"
        )
    gen = torch.Generator().manual_seed(seed)
    flat = torch.randperm(n_layers * n_neurons, generator=gen)[:total]
    taken = torch.zeros(n_layers * n_neurons, dtype=torch.bool)
    taken[flat] = True
    taken = taken.view(n_layers, n_neurons)
    return [taken[l].nonzero().view(-1) for l in range(n_layers)]


# --------------------------------------------------------------------------- rho search


def _target_neurons(min_fraction_params, min_neurons, params_per_neuron, total_params) -> int:
    """Neuron budget from min_neurons and/or a parameter fraction (both given: the larger)."""
    if min_fraction_params is None and min_neurons is None:
        raise ValueError("auto_rho needs min_neurons or min_fraction_params (neither given)")
    target = 0
    if min_neurons is not None:
        if isinstance(min_neurons, bool) or not isinstance(min_neurons, int) or min_neurons < 1:
            raise ValueError(f"min_neurons={min_neurons!r} is not allowed: must be an int >= 1")
        target = min_neurons
    if min_fraction_params is not None:
        _check_fraction("min_fraction_params", min_fraction_params, upper_closed=True)
        if not params_per_neuron or not total_params or params_per_neuron <= 0 or total_params <= 0:
            raise ValueError(
                "min_fraction_params needs positive params_per_neuron and total_params, "
                f"got params_per_neuron={params_per_neuron!r}, total_params={total_params!r}"
            )
        target = max(target, math.ceil(min_fraction_params * total_params / params_per_neuron))
    return target


def auto_rho(
    over_zero: torch.Tensor,
    n_tokens,
    lang_index: int,
    min_fraction_params: float | None = None,
    min_neurons: int | None = None,
    threshold: float = 0.95,
    *,
    params_per_neuron: int | None = None,
    total_params: int | None = None,
    scope: str = "global",
    max_rho: float = 1.0,
) -> float:
    """Smallest rho giving language `lang_index` at least the requested neuron budget.

    Bisection on the integer number of taken neurons m (rho = m / candidates, candidates =
    L*N globally or N per layer), so the answer is exact: rho - 1/candidates falls short.
    """
    threshold = _check_fraction("threshold", threshold, upper_closed=False)
    max_rho = _check_fraction("max_rho", max_rho, upper_closed=True)
    _check_scope(scope)
    target = _target_neurons(min_fraction_params, min_neurons, params_per_neuron, total_params)
    probs, entropy, tau = _prepare(over_zero, n_tokens, threshold)
    n_layers, n_neurons, n_langs = probs.shape
    if not 0 <= lang_index < n_langs:
        raise ValueError(f"lang_index={lang_index} is not allowed: must be in [0, {n_langs})")
    size = n_layers * n_neurons if scope == "global" else n_neurons

    def count(m: int) -> int:
        return int(_assign(probs, entropy, tau, m / size, scope)[lang_index].sum())

    hi = math.floor(max_rho * size + 1e-9)
    best = count(hi) if hi >= 1 else 0
    if best < target:
        raise ValueError(
            f"language {lang_index} gets at most {best} neurons at max_rho={max_rho} "
            f"(scope={scope}, threshold={threshold}); {target} requested"
        )
    lo = 0  # count(lo) < target (m=0 takes nothing), count(hi) >= target
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if count(mid) >= target else (mid, hi)
    return hi / size
