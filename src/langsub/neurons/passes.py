"""Statistics passes beyond LAPE's counts (`counting.py`): per layer, neuron and language,
sums over the language's tokens of

- `values`: the positive part of act_fn(gate_proj(x))_i (hooked where the counts are);
- `importance`: |h_i|·‖W_down[:, i]‖, the norm of the FFN output's change when neuron i is
  deactivated (h = act_fn(gate)·up, the input of down_proj: all neurons from one forward);
- `gradients`: |h_i · ∂L/∂h_i| for the language's summed LM loss L (the pass runs a backward
  through the model; no weight receives a gradient).

Sums are float64 on the device, weighted by `counted_tokens` (no padding, no BOS), and
summed over processes at the end, as the counts are.
"""
from __future__ import annotations

import lightning as L
import torch

from langsub.model.ffn import find_ffns
from langsub.neurons.counting import counted_tokens


class _SumHooks:
    """Per-layer float64 sums [L, N, K] filled by hooks; `set_batch` names language and tokens."""

    def __init__(self, model, n_langs: int, device=None):
        self.ffns = find_ffns(model)
        dev = device or next(model.parameters()).device
        self.n = self.ffns[0].n_neurons
        self.sums = torch.zeros(len(self.ffns), self.n, n_langs, dtype=torch.float64, device=dev)
        self.n_tokens = torch.zeros(n_langs, dtype=torch.long, device=dev)
        self._lang, self._weights, self._handles = 0, None, []

    def set_batch(self, lang: int, mask: torch.Tensor) -> None:
        self._lang = lang
        self._weights = mask.reshape(1, -1).float()
        self.n_tokens[lang] += mask.bool().sum()

    def _add(self, layer: int, per_token: torch.Tensor) -> None:
        """per_token [tokens, N] (float): its token-weighted sum into the language's column."""
        with torch.autocast(per_token.device.type, enabled=False):
            self.sums[layer, :, self._lang] += (self._weights @ per_token.float()).view(-1).double()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


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


HOOKS = {"values": ValueHooks, "importance": ImportanceHooks, "gradients": GradientHooks}


class ScoreStats(L.Callback):
    """sums[L, N, K] and n_tokens[K] of one statistic during `trainer.predict` over K loaders.
    For `gradients` the module's predict step runs the LM loss and its backward."""

    def __init__(self, n_langs: int, statistic: str):
        self.n_langs, self.statistic = n_langs, statistic
        self.hooks = self.sums = self.n_tokens = None

    def on_predict_start(self, trainer, pl_module):
        self.hooks = HOOKS[self.statistic](pl_module.model, self.n_langs, pl_module.device)
        pl_module.stats_backward = self.statistic == "gradients"

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.hooks.set_batch(dataloader_idx, counted_tokens(batch))

    def on_predict_end(self, trainer, pl_module):
        self.hooks.remove()
        pl_module.stats_backward = False
        self.sums = trainer.strategy.reduce(self.hooks.sums, reduce_op="sum").cpu()
        self.n_tokens = trainer.strategy.reduce(self.hooks.n_tokens, reduce_op="sum").cpu()
