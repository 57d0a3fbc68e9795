"""Train only selected FFN neurons, through `torch.nn.utils.parametrize`.

Each FFN weight gets a `NeuronDelta` parametrization holding a trainable delta for the
selected rows (gate/up) or columns (down). Its forward returns a `SlicedWeight`: a view of
the frozen weight that carries the delta. `F.linear` on it computes the frozen product
plus a small product with the delta (`_SlicedLinear`, with a hand-written backward), so no
full weight is copied and no full weight gradient is formed; every other op sees the
merged weight. The frozen weight is never written to, so it stays bit-for-bit unchanged.

The deltas are float32 whatever the weight's dtype (master values); they are cast to the
activations' dtype where they are used. Merging adds them in float32 and casts once
(`add_slices`, shared with `langsub.export`, so both give the same bits).

A quantized linear (`model.quantize`) cannot be parametrized: its weight is packed bytes.
There a `HookedNeuronDelta` child adds the delta's product to the layer's output (frozen
quantized product + delta product; bitsandbytes keeps only the packed weight for backward
and dequantizes it again there), and the delta is shipped on the full-precision base.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils._pytree import tree_map

from langsub.errors import CheckpointError, MaskError
from langsub.methods.precision import master_dtype
from langsub.model.ffn import COMPONENTS, find_ffns
from langsub.model.quantize import dense_weight, is_quantized

# The delta products are padded to a multiple of ALIGN[device type] neurons: on CUDA, a GEMM
# with a dimension that is not a multiple of 8 misses the tensor-core kernels (an H100 ran
# 717 neurons 4-7x slower than 720). The padding is zeros, sliced off again, so the
# trainable tensors keep their exact shapes and values.
ALIGN = {"cuda": 8}
_METADATA = {torch.Tensor.shape.__get__, torch.Tensor.dtype.__get__, torch.Tensor.device.__get__,
             torch.Tensor.size, torch.Tensor.dim, torch.Tensor.requires_grad.__get__,
             torch.Tensor.is_floating_point, torch.Tensor.ndim.__get__,
             torch.Tensor.layout.__get__, torch.Tensor.numel}


class SlicedWeight(torch.Tensor):
    """A frozen weight plus a delta on `index` along `dim` (0: rows, 1: columns)."""

    @staticmethod
    def __new__(cls, base: torch.Tensor, delta: torch.Tensor, index: torch.Tensor, dim: int):
        t = torch.Tensor._make_subclass(cls, base.detach(), False)
        t._base_w, t._delta, t._index, t._dim = base.detach(), delta, index, dim
        return t

    def materialize(self) -> torch.Tensor:
        """The merged weight as a plain tensor (differentiable w.r.t. the delta)."""
        return add_slices(self._base_w, [(self._dim, self._index, self._delta)])

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        pad = -len(self._index) % ALIGN.get(x.device.type, 1)
        return _SlicedLinear.apply(x, self._delta, self._base_w, self._index, self._dim, bias, pad)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and isinstance(args[1], SlicedWeight):
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            return args[1].linear(args[0], bias)
        if func in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        unwrap = lambda a: a.materialize() if isinstance(a, SlicedWeight) else a  # noqa: E731
        with torch._C.DisableTorchFunctionSubclass():
            return func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))


def add_slices(weight: torch.Tensor, slices) -> torch.Tensor:
    """`weight` plus every `(dim, index, delta)` of `slices`, added in float32 (float64 for a
    float64 weight) and cast once to `weight`'s dtype: a delta below half a unit in the last
    place of a bfloat16 weight still counts where it tips the rounding. Out of place."""
    acc = weight.to(master_dtype(weight.dtype))
    for dim, index, delta in slices:
        acc = acc.index_add(dim, index.to(acc.device), delta.to(acc))
    return acc.to(weight.dtype)


def _pad(t: torch.Tensor, dim: int, pad: int) -> torch.Tensor:
    """Zeros after the selected neurons: rows (dim 0) or columns (dim 1)."""
    return F.pad(t, (0, 0, 0, pad) if dim == 0 else (0, pad)) if pad else t


class _SlicedLinear(torch.autograd.Function):
    """y = x W^T (+ bias) plus the delta's product on the selected rows (dim 0: only those
    output features change) or columns (dim 1: only those inputs contribute more).

    The backward is written out so that x's gradient is accumulated in place into the frozen
    product's (autograd builds the column case's at full width, zero-filled, and adds two
    full-size tensors), and so that only the unpadded delta and the unconverted frozen weight
    are saved (the padding and casts are redone in backward)."""

    @staticmethod
    def forward(ctx, x, delta, base, index, dim, bias, pad):
        out = F.linear(x, base, bias)
        k = len(index)
        d = _pad(delta.to(out.dtype), dim, pad)
        if dim == 0:
            y = F.linear(x, d)
            out.index_add_(-1, index, y[..., :k])  # the padding sliced off
            saved = x
        else:
            saved = _pad(x.index_select(-1, index), 1, pad)
            out.add_(F.linear(saved, d))
        ctx.save_for_backward(saved, delta, base, index)
        ctx.dim, ctx.pad, ctx.has_bias = dim, pad, bias is not None
        return out

    @staticmethod
    def backward(ctx, g):
        saved, delta, base, index = ctx.saved_tensors
        dim, pad, k = ctx.dim, ctx.pad, len(index)
        d = _pad(delta.to(g.dtype), dim, pad)
        flat = lambda t: t.reshape(-1, t.shape[-1]).to(g.dtype)  # noqa: E731
        gs = _pad(g.index_select(-1, index), 1, pad) if dim == 0 else None
        grad_x = grad_delta = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = g.matmul(base.to(g.dtype))
            if dim == 0:
                grad_x += gs.matmul(d)
            else:
                gd = g.matmul(d)
                grad_x.index_add_(-1, index, gd[..., :k])
            grad_x = grad_x.to(saved.dtype)
        if ctx.needs_input_grad[1]:
            if dim == 0:
                grad_delta = flat(gs).t().matmul(flat(saved))[:k]
            else:
                grad_delta = flat(g).t().matmul(flat(saved))[:, :k]
            grad_delta = grad_delta.to(delta.dtype)
        if ctx.has_bias and ctx.needs_input_grad[5]:
            grad_bias = flat(g).sum(0)
        return grad_x, grad_delta, None, None, None, grad_bias, None


class NeuronDelta(nn.Module):
    """Parametrization: weight -> weight + delta on the selected rows (dim 0) or cols (dim 1).

    The delta is a float32 master (see `precision.py`). `offset()` is the frozen slice W_S it
    is added to: the weight the model uses is W_S + delta (weight decay must act on that sum,
    `training/optim.py`)."""

    def __init__(self, weight: torch.Tensor, index: torch.Tensor, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("index", index.to(device=weight.device, dtype=torch.long))
        shape = (len(index), weight.shape[1]) if dim == 0 else (weight.shape[0], len(index))
        self.delta = nn.Parameter(torch.zeros(shape, dtype=master_dtype(weight.dtype),
                                              device=weight.device))
        # the weight this parametrizes (the same Parameter object becomes
        # `parametrizations.weight.original`); kept out of the module's parameters
        object.__setattr__(self, "_frozen", weight)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return SlicedWeight(weight, self.delta, self.index, self.dim)

    def offset(self) -> torch.Tensor:
        """The frozen weight's slice that the delta is added to (a copy, in its own dtype)."""
        w = self._frozen.detach()
        if w.dim() != 2 or w.shape[1 - self.dim] != self.delta.shape[1 - self.dim]:
            raise RuntimeError(f"the frozen weight has shape {tuple(w.shape)}, not whole for its "
                               f"delta {tuple(self.delta.shape)} (sharded by FSDP?)")
        return w.index_select(self.dim, self.index)


class HookedNeuronDelta(nn.Module):
    """For a quantized linear: its output plus the delta's product on the selected rows
    (dim 0: those output features) or columns (dim 1: those inputs), by a forward hook.
    Same attributes as `NeuronDelta` (`dim`, `index`, `delta`, `offset()`)."""

    def __init__(self, linear: nn.Module, index: torch.Tensor, dim: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("index", index.to(device=linear.weight.device, dtype=torch.long))
        shape = (len(index), linear.in_features) if dim == 0 else (linear.out_features, len(index))
        self.delta = nn.Parameter(torch.zeros(shape, dtype=torch.float32,
                                              device=linear.weight.device))
        object.__setattr__(self, "_linear", linear)  # not a child: the hook's owner
        self._slice = None
        self.handle = linear.register_forward_hook(self.add_product)

    def add_product(self, linear: nn.Module, args, out: torch.Tensor) -> torch.Tensor:
        x, d = args[0], self.delta.to(out.dtype)
        if self.dim == 0:
            return out.index_add(-1, self.index, F.linear(x.to(out.dtype), d))
        return out + F.linear(x.index_select(-1, self.index).to(out.dtype), d)

    @torch.no_grad()
    def offset(self) -> torch.Tensor:
        """The dequantized frozen slice W_S (computed once: the packed weight never changes)."""
        if self._slice is None or self._slice.device != self.delta.device:
            self._slice = dense_weight(self._linear).index_select(self.dim, self.index).clone()
        return self._slice


def check_components(components) -> list[str]:
    bad = [c for c in components if c not in COMPONENTS]
    if bad or not components:
        raise ValueError(f"method.components={list(components)}: allowed is a non-empty "
                         f"subset of {list(COMPONENTS)}")
    return list(components)


def add_neuron_deltas(model: nn.Module, neurons: list[torch.Tensor],
                      components=COMPONENTS) -> list[nn.Parameter]:
    """Freeze the model and parametrize the selected neurons; returns the trainable deltas."""
    components = check_components(components)
    ffns = find_ffns(model)
    if len(neurons) != len(ffns):
        raise MaskError(f"neuron mask has {len(neurons)} layers, the model {len(ffns)}")
    for p in model.parameters():
        p.requires_grad_(False)
    deltas = []
    for ffn, idx in zip(ffns, neurons):
        if len(idx) == 0:
            continue
        for lin, index, dim in ffn.slices(torch.as_tensor(idx, dtype=torch.long), components):
            if is_quantized(lin):
                lin.neuron_delta = HookedNeuronDelta(lin, index, dim)
                deltas.append(lin.neuron_delta.delta)
                continue
            parametrize.register_parametrization(lin, "weight", NeuronDelta(lin.weight, index, dim))
            lin.parametrizations.weight.original.requires_grad_(False)
            deltas.append(lin.parametrizations.weight[0].delta)
    return deltas


def neuron_deltas(model: nn.Module) -> list[tuple[str, nn.Module, nn.Module]]:
    """(linear's name, linear, its NeuronDelta or HookedNeuronDelta) for every trained linear."""
    out = []
    for n, m in model.named_modules():
        if isinstance(getattr(m, "neuron_delta", None), HookedNeuronDelta):
            out.append((n, m, m.neuron_delta))
        elif parametrize.is_parametrized(m, "weight") \
                and isinstance(m.parametrizations.weight[0], NeuronDelta):
            out.append((n, m, m.parametrizations.weight[0]))
    return out


def parametrized_linears(model: nn.Module):
    """(name, linear) for every (unquantized) linear that carries a NeuronDelta."""
    return [(n, m) for n, m, d in neuron_deltas(model) if isinstance(d, NeuronDelta)]


@torch.no_grad()
def merge_neuron_deltas(model: nn.Module) -> nn.Module:
    """Write the deltas into the weights and drop the parametrizations (in place): W + delta
    in float32, cast once to W's dtype (`add_slices`). A quantized base cannot take them:
    its deltas are shipped on the full-precision base (`Method.rebase`)."""
    if len(parametrized_linears(model)) != len(neuron_deltas(model)):
        raise RuntimeError("the deltas of a quantized base are merged into the full-precision "
                           "base (Method.rebase), not into packed weights")
    for _, lin in parametrized_linears(model):
        merged = lin.weight.materialize()
        parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)
        lin.weight.copy_(merged)
    return model


def delta_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained slices only: `<linear>.delta`, `<linear>.index`, `<linear>.dim`."""
    out = {}
    for name, _, p in neuron_deltas(model):
        out[f"{name}.delta"] = p.delta.detach().contiguous()
        out[f"{name}.index"] = p.index.detach().clone()
        out[f"{name}.dim"] = torch.tensor(p.dim)
    return out


def original_slices(model: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen weight at the trained indices, `<linear>` -> slice (what a reversal puts back)."""
    out = {}
    for name, lin, p in neuron_deltas(model):
        out[name] = frozen_weight(lin).detach().index_select(p.dim, p.index).clone()
    return out


def frozen_weight(linear: nn.Module) -> torch.Tensor:
    """The base weight of a linear: under a NeuronDelta its original, else its own (a
    quantized one dequantized)."""
    if parametrize.is_parametrized(linear, "weight"):
        return linear.parametrizations.weight.original
    return dense_weight(linear)


def check_delta_state(model: nn.Module, label: str, t: dict) -> list[str]:
    """The linears a delta state touches, after checking that each slice fits `model`
    (CheckpointError naming `label`: another architecture, or a base of other shapes)."""
    modules = dict(model.named_modules())
    names = sorted({k.rsplit(".", 1)[0] for k in t})
    missing = [n for n in names if n not in modules]
    if missing:
        raise CheckpointError(f"{label}: the model has no module {missing[0]} "
                              f"({len(missing)} of {len(names)} missing): another architecture?")
    for name in names:
        w = frozen_weight(modules[name])
        dim, index, delta = int(t[f"{name}.dim"]), t[f"{name}.index"], t[f"{name}.delta"]
        expect = (len(index), w.shape[1]) if dim == 0 else (w.shape[0], len(index))
        if tuple(delta.shape) != expect or int(index.max()) >= w.shape[dim]:
            raise CheckpointError(f"{label}: {name} delta {tuple(delta.shape)} does not fit the "
                                  f"model's weight {tuple(w.shape)}: a base of other shapes")
    return names


@torch.no_grad()
def add_delta_states(model: nn.Module, states: list[tuple[str, dict]]) -> nn.Module:
    """Add every `(label, delta_state)` to `model`'s weights, in place: each weight's deltas
    summed in float32 and cast once (`add_slices`; where two share a neuron they add). Every
    state is checked against the model before a weight changes."""
    modules = dict(model.named_modules())
    slices: dict[str, list] = {}
    for label, t in states:
        for name in check_delta_state(model, label, t):
            slices.setdefault(name, []).append(
                (int(t[f"{name}.dim"]), t[f"{name}.index"], t[f"{name}.delta"]))
    for name, parts in slices.items():
        w = modules[name].weight
        w.copy_(add_slices(w, parts))
    return model
