"""The training step train.py runs, timed: one method in one forked child.

The child loads the model as train.py does (`model/load.py`: the embedded model, a GGUF, a
hub id or random weights of a real architecture), applies the method to a mask of ρ of the
neurons (a seeded random one: a method's cost depends on the mask's size, not on which
neurons), builds the LightningModule of the run config (`module_from_config`: chunked loss,
configured optimizer and scheduler) and fits it with the trainer the config describes
(precision, accelerator, accumulation, clipping) for `warmup + steps` batches of random
tokens of the run's batch shape. A callback times each batch from its start to its end
(forward, backward, optimizer step; synchronised on CUDA).

The floor: the same model and step with nothing trainable but the path of the gradient to the
first layer — one scalar (1.0) multiplies the input embeddings' output, so the backward runs
through every layer and no weight gradient is made; what any method that trains something in
every layer must pay.
"""
from __future__ import annotations

import tempfile
import time

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import nn

from langsub.bench.children import exact_rss, reset_peak, rss_mb


class Floor:
    """Nothing trains; the gradient reaches the first layer (see the module docstring)."""

    name = "floor"
    needs_neurons = False

    def apply(self, model: nn.Module, neurons=None) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        emb = model.get_input_embeddings()
        emb.floor_gate = nn.Parameter(torch.ones((), device=emb.weight.device))
        emb.register_forward_hook(lambda m, _i, out: out * m.floor_gate.to(out.dtype))
        return model


class StepClock(L.Callback):
    """Seconds of every batch after `warmup`; memory at the start of training and its peak."""

    def __init__(self, warmup: int, cuda: bool):
        self.warmup, self.cuda = warmup, cuda
        self.times: list[float] = []
        self.base = 0.0
        self._t0 = 0.0

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def on_train_start(self, trainer, pl_module):
        self._sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            reset_peak()
            self.base = rss_mb("VmRSS")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync()
        if batch_idx >= self.warmup:
            self.times.append(time.perf_counter() - self._t0)

    def peak(self) -> float:
        """MB above the memory at the start of training (optimizer state included)."""
        top = torch.cuda.max_memory_allocated() / 2**20 if self.cuda else rss_mb("VmHWM")
        return top - self.base


def random_batches(n: int, batch_size: int, block: int, vocab: int, seed: int) -> list[dict]:
    """`n` batches of random token ids in the shape the data module makes (every position a
    target, as in a packed block)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch_size, block), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                    "labels": ids.clone()})
    return out


def neuron_mask(model: nn.Module, rho: float, seed: int):
    """A seeded random mask of ρ of all FFN neurons (global over layers, as LAPE's)."""
    from langsub.model.ffn import find_ffns
    from langsub.neurons.lape import select_random_global

    ffns = find_ffns(model)
    layers, width = len(ffns), ffns[0].down.in_features
    return select_random_global(round(rho * layers * width), layers, width, seed)


def method_of(name: str, cfg):
    from langsub.methods import build_method

    return Floor() if name == "floor" else \
        build_method(OmegaConf.to_container(cfg.method, resolve=True))


def step_child(spec: dict, queue) -> None:
    """Build, apply, fit `warmup + steps` batches; report per-batch seconds and the peak."""
    from langsub.methods import count_params
    from langsub.model.load import load_model
    from langsub.training.module import module_from_config
    from langsub.training.trainers import make_trainer

    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-child banners
    warnings.filterwarnings("ignore", module="lightning")
    hf_logging.disable_progress_bar()  # "Loading weights" once per child otherwise
    cfg = OmegaConf.create(spec["cfg"])
    cpu = spec["device"] == "cpu"
    torch.set_num_threads(spec["threads"])
    if spec.get("memory") and cpu:
        exact_rss()
    L.seed_everything(cfg.seed, verbose=False)
    model, tok = load_model(cfg.model, on_cpu=cpu)
    method = method_of(spec["method"], cfg)
    mask = neuron_mask(model, spec["rho"], cfg.seed) if method.needs_neurons else None
    model = method.apply(model, mask)
    trainable, total = count_params(model)
    if spec["method"] == "floor":
        trainable = 0  # its one scalar is the gradient path, not a trained weight
    module = module_from_config(cfg, model, [cfg.lang.code])
    model.train()  # as train.py: from_pretrained leaves it in eval mode (dropout off)
    clock = StepClock(spec["warmup"], not cpu)
    n = spec["warmup"] + spec["steps"]
    vocab = model.get_input_embeddings().num_embeddings
    batches = random_batches(n, cfg.data.batch_size, cfg.data.block_size, min(vocab, len(tok)),
                             cfg.seed)
    accumulate = cfg.trainer.get("accumulate_grad_batches") or 1
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(cfg.trainer, model, callbacks=[clock], logger=False,
                               enable_checkpointing=False, enable_progress_bar=False,
                               enable_model_summary=False, limit_val_batches=0,
                               max_steps=-(-n // accumulate),  # optimizer steps: n batches
                               num_sanity_val_steps=0, default_root_dir=tmp)
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches,
                                                                           batch_size=None))
    queue.put({"times": clock.times, "peak": clock.peak(), "trainable": trainable,
               "total": total})


def forward_overhead(spec: dict, queue) -> None:
    """Median seconds of the decoder's forward without and with the statistics hooks (what
    the identification pass adds), same batch, pairs interleaved."""
    from langsub.model.load import load_model
    from langsub.neurons.counting import ActivationCounter

    cfg = OmegaConf.create(spec["cfg"])
    torch.set_num_threads(spec["threads"])
    dev = torch.device("cpu" if spec["device"] == "cpu" else "cuda")
    model, tok = load_model(cfg.model, on_cpu=dev.type == "cpu")
    model = model.to(dev).eval()
    (batch,) = random_batches(1, cfg.data.batch_size, cfg.data.block_size, len(tok), cfg.seed)
    x, mask = batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
    dec = model.get_decoder()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def timed():
        sync()
        t0 = time.perf_counter()
        dec(input_ids=x, attention_mask=mask)
        sync()
        return time.perf_counter() - t0

    plain, stats = [], []
    with torch.no_grad():
        timed()
        for i in range(spec["repeats"] + 1):
            plain.append(timed())
            c = ActivationCounter(model, 1)
            c.set_batch(0, mask)
            stats.append(timed())
            c.remove()
    import statistics

    queue.put({"forward_s/plain": statistics.median(plain[1:]),
               "forward_s/stats": statistics.median(stats[1:])})


def flop_model(model: dict, rho: float, seq_len: int) -> dict:
    """Matmul multiply-adds per token, by the shapes alone: what lape must add to the floor.

    The floor does each matmul forward and again backward for its input gradient. Sparse
    training of k = ρ·N neurons adds, per FFN matrix, the delta's product forward, its
    weight gradient and its input gradient: 3·k·D each, 9·k·D per layer. Returns the
    floor's and lape's counts and their ratio (the step-time ratio if time were FLOPs)."""
    d, n, layers = model["hidden_size"], model["intermediate_size"], model["num_hidden_layers"]
    heads = model["num_attention_heads"]
    kv = model.get("num_key_value_heads") or heads
    attn = 2 * d * d + 2 * d * (d * kv // heads) + 2 * seq_len * d  # q,o + k,v + scores/values
    per_layer = attn + 3 * n * d
    floor = 2 * (layers * per_layer + model["vocab_size"] * d)
    k = round(rho * layers * n) / layers
    lape = floor + layers * 9 * k * d
    return {"floor": floor, "lape": lape, "ratio": lape / floor}
