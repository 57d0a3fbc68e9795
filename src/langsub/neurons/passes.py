"""Statistics passes beyond LAPE's counts (`counting.py`): per layer, neuron and language,
sums over the language's tokens of

- `values`: the positive part of act_fn(gate_proj(x))_i (hooked where the counts are);
- `importance`: |h_i|·‖W_down[:, i]‖, the norm of the FFN output's change when neuron i is
  deactivated (h = act_fn(gate)·up, the input of down_proj: all neurons from one forward);
- `gradients`: |h_i · ∂L/∂h_i| for the language's summed LM loss L (the pass runs a backward
  through the model; no weight receives a gradient).

Sums are float64 on the device, weighted by `counted_tokens` (no padding, no BOS), and
summed over processes at the end by the same callback as the counts (`ActivationStats`).
"""
from __future__ import annotations

import torch

from langsub.neurons.counting import ActivationCounter, TokenHooks


class _SumHooks(TokenHooks):
    """Float64 sums of a per-token quantity, token-weighted, into the language's column."""

    dtype = torch.float64

    def _add(self, layer: int, per_token: torch.Tensor) -> None:
        """per_token [tokens, N] (float): its token-weighted sum into the language's column."""
        with torch.autocast(per_token.device.type, enabled=False):
            self.sums[layer, :, self._lang] += (self._weights @ per_token.float()).view(-1).double()


class ValueHooks(_SumHooks):
    def __init__(self, model, n_langs, device=None):
        super().__init__(model, n_langs, device)
        for i, f in enumerate(self.ffns):
            self._handles.append(f.act.register_forward_hook(self._hook(i)))

    def _hook(self, layer):
        def hook(_m, _inp, out):
            act = out if out.shape[-1] == self.n else out[..., :self.n]  # fused: gate first
            self._add(layer, act.detach().reshape(-1, self.n).clamp(min=0))
        return hook


class ImportanceHooks(_SumHooks):
    def __init__(self, model, n_langs, device=None):
        super().__init__(model, n_langs, device)
        # ‖W_down[:, i]‖: the output change per unit of h_i
        self.norms = [f.down.weight.detach().float().norm(dim=0) for f in self.ffns]
        for i, f in enumerate(self.ffns):
            self._handles.append(f.down.register_forward_pre_hook(self._hook(i)))

    def _hook(self, layer):
        def hook(_m, args):
            h = args[0].detach().reshape(-1, self.n)
            self._add(layer, h.float().abs() * self.norms[layer].to(h.device))
        return hook


class GradientHooks(_SumHooks):
    backward = True

    def __init__(self, model, n_langs, device=None):
        super().__init__(model, n_langs, device)
        for i, f in enumerate(self.ffns):
            self._handles.append(f.down.register_forward_pre_hook(self._hook(i)))
        # frozen weights: the graph starts at the embeddings, so h gets a gradient
        self._handles.append(model.get_input_embeddings().register_forward_hook(
            lambda _m, _i, out: out.requires_grad_(True) if torch.is_grad_enabled() else out))

    def _hook(self, layer):
        def hook(_m, args):
            h = args[0]
            if h.requires_grad:
                value = h.detach()
                h.register_hook(lambda g: self._add(layer, (value * g).reshape(-1, self.n).abs()))
        return hook


# The hooks of each statistic a scorer can ask for (`Scorer.statistic`).
HOOKS = {"counts": ActivationCounter, "values": ValueHooks, "importance": ImportanceHooks,
         "gradients": GradientHooks}
