"""Dry run: what a run will train and hold in memory, from the config alone (meta device).

    python train.py model=llama31_8b method=lape lang=af dry_run=true
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from langsub.io import atomic_write_text
from langsub.training.recipe import recipe
from langsub.methods import METHODS, build_method, count_params
from langsub.model.ffn import find_ffns
from langsub.model.load import meta_model, model_config
from langsub.neurons.lape import select_random_global
from langsub.neurons.masks import load_neurons


def activation_bytes(config, tokens: int, act_bytes: int, checkpointing: bool,
                     loss_rows: int | None = None) -> dict:
    """Activations kept for the backward pass of a gated-FFN decoder (an estimate).

    Per token and layer: the two norms' inputs and outputs (4h), q and the attention output
    (2·q_dim), k and v (2·kv_dim; SDPA keeps no score matrix), gate, up, act(gate) and their
    product (4f). With gradient checkpointing only each layer's input (h) is kept, plus one
    layer recomputed. Logits: model dtype, a float32 copy in the loss and its gradient — of
    every position, or with the chunked loss (`loss_rows` positions a chunk, training/loss.py)
    of one chunk (model dtype + float32, the gradient in place) plus the hidden states'
    gradient; `logits_unchunked_gb` is what the plain loss would hold.
    """
    h, f, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    q_dim, kv_dim = heads * head_dim, (getattr(config, "num_key_value_heads", None) or heads) * head_dim
    layer = (4 * h + 2 * q_dim + 2 * kv_dim + 4 * f) * act_bytes * tokens
    layers = (L * h * act_bytes * tokens + layer) if checkpointing else L * layer
    plain = tokens * config.vocab_size * (act_bytes + 4 + 4)
    logits = plain if loss_rows is None else \
        min(tokens, loss_rows) * config.vocab_size * (act_bytes + 4) + tokens * h * act_bytes
    return {"activations_gb": layers / 1e9, "logits_gb": logits / 1e9,
            "logits_unchunked_gb": plain / 1e9}


MASTER_BYTES = 4  # trainable tensors keep float32 master values (methods/precision.py)
# bytes per weight of a quantized linear (model/quantize.py): nf4 packs two weights a byte,
# plus one absmax per 64 weights, itself 8-bit with one float32 per 256 blocks (double
# quantization); int8 one byte plus one float32 absmax per output row (~0 per weight)
QUANT_BYTES = {"nf4": 0.5 + 1 / 64 + 4 / (64 * 256), "int8": 1.0}


def weight_bytes(model, quantized_ids: set[int], quantize: str | None) -> float:
    """Every parameter as the method left it: frozen linear weights packed when quantized,
    the rest in their dtype (trainable ones float32)."""
    per = QUANT_BYTES.get(quantize)
    return sum(p.numel() * (per if per and id(p) in quantized_ids and not p.requires_grad
                            else p.element_size()) for p in model.parameters())


def quantized_ids(model) -> set[int]:
    """The weights bitsandbytes quantizes: every linear of the decoder (not the LM head)."""
    head = model.get_output_embeddings()
    return {id(m.weight) for m in model.modules()
            if isinstance(m, torch.nn.Linear) and m is not head}


def memory_plan(weights_bytes: int, trainable: int, act: dict, autocast_copies: int = 0) -> dict:
    """GB per process without sharding (FSDP divides weights, gradients and optimizer
    state by the number of GPUs). `weights_bytes`: every parameter as the method left it,
    frozen weights in the model's dtype, trainable ones float32; their gradients and AdamW's
    two states are float32 too, whatever the model's dtype. `autocast_copies`: bytes of the
    half-precision copies autocast keeps of float32 weights during a forward (its weight cache
    lives until the autocast region ends: full/FFN-only under bf16-mixed, 2 bytes a weight)."""
    m = {"weights_gb": weights_bytes / 1e9,
         "gradients_gb": trainable * MASTER_BYTES / 1e9,
         "optimizer_gb": 2 * trainable * MASTER_BYTES / 1e9,
         "autocast_gb": autocast_copies / 1e9, **act}
    m["peak_gb"] = sum(v for k, v in m.items() if k != "logits_unchunked_gb")
    return m


def _plan(cfg: DictConfig, method_cfg: dict, mask, config, quantize=None) -> dict:
    dtype = getattr(torch, cfg.model.dtype)
    model = meta_model(cfg.model).to(dtype)
    _, total = count_params(model)
    packed = quantized_ids(model)
    method = build_method(method_cfg)
    model = method.apply(model, mask)
    trainable, _ = count_params(model)
    weights_bytes = weight_bytes(model, packed, quantize)
    precision = str(cfg.trainer.get("precision", ""))
    half = torch.finfo(dtype).bits == 16 or "16" in precision
    copies = 2 * trainable if method.needs_autocast and precision.endswith("-mixed") else 0
    tokens = cfg.data.batch_size * cfg.data.block_size
    from langsub.training.loss import chunk_rows

    act = activation_bytes(config, tokens, 2 if half else 4,
                           bool(cfg.model.get("gradient_checkpointing")),
                           chunk_rows(config.vocab_size, cfg.model.get("loss_chunk", "auto")))
    return {"method": method_cfg["name"], "quantize": quantize,
            "trainable_params": trainable, "total_params": total,
            "trainable_fraction": trainable / total,
            **memory_plan(weights_bytes, trainable, act, copies)}


def method_config(cfg: DictConfig, path: Path) -> dict:
    """Another method's YAML resolved inside this run's config (its keys may refer to it,
    e.g. `model.measured_lr.${method.name}`)."""
    whole = OmegaConf.merge(cfg, {})
    with open_dict(whole):
        whole.method = OmegaConf.load(path)
    return OmegaConf.to_container(whole.method, resolve=True)


def dry_run(cfg: DictConfig, out_dir: Path | None = None) -> dict:
    """Trainable/total parameters and memory of the run, beside LoRA and full fine-tuning of
    the same model, from the config alone (meta device, no weights); `<out_dir>/plan.json`."""
    config = model_config(cfg.model)
    meta = meta_model(cfg.model)
    ffns = find_ffns(meta)
    L, N = len(ffns), ffns[0].n_neurons
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    method, mask, source = build_method(method_cfg), None, None
    if method.needs_neurons:
        if cfg.method.get("neurons"):
            masks = load_neurons(cfg.method.neurons, cfg.method.get("neurons_langs"), L, N)
            mask = method.neurons(masks, cfg.lang.code, meta, cfg.seed)
            source = str(cfg.method.neurons)
        else:  # identification not run: assume ρ·L·N neurons (an upper estimate per language)
            rho = cfg.rho if cfg.rho != "auto" else 0.05
            mask = select_random_global(round(rho * L * N), L, N, cfg.seed)
            source = f"estimate: rho={rho} of {L}x{N} neurons"
    quantize = cfg.model.get("quantize")
    run = _plan(cfg, method_cfg, mask, config, quantize)
    compare = {}
    if quantize:  # the same run on the unquantized base
        compare[f"{method_cfg['name']} ({cfg.model.dtype})"] = _plan(cfg, method_cfg, mask, config)
    method_dir = Path(cfg.paths.root_dir) / "conf" / "method"
    for name in ("lora", "full"):
        if name != method_cfg["name"] and (method_dir / f"{name}.yaml").is_file():
            # QLoRA; full fine-tuning cannot train packed weights, so it plans the plain base
            q = quantize if METHODS[name].supports_quantized else None
            compare[name if q is None else f"lora ({q})"] = _plan(
                cfg, method_config(cfg, method_dir / f"{name}.yaml"), None, config, q)
    out = {"model": cfg.model.name, "method": cfg.method.name, "layers": L, "ffn_width": N,
           "neurons": int(sum(len(t) for t in mask)) if mask is not None else None,
           "neuron_source": source, "batch_size": cfg.data.batch_size,
           "block_size": cfg.data.block_size, "precision": cfg.trainer.get("precision"),
           "gradient_checkpointing": bool(cfg.model.get("gradient_checkpointing")),
           "dtype": cfg.model.dtype, **{k: v for k, v in run.items() if k != "method"}, "compare": compare,
           "recipe": recipe(cfg)}
    print_plan(out, [run, *compare.values()])
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "plan.json", json.dumps(out, indent=1))
    return out


def print_plan(out: dict, rows: list[dict]) -> None:
    print(f"[langsub] dry run: {out['model']}, {out['layers']} layers x {out['ffn_width']} FFN "
          f"neurons; neurons: {out['neurons']} ({out['neuron_source']}); batch "
          f"{out['batch_size']} x {out['block_size']} tokens, {out['precision']}, gradient "
          f"checkpointing {'on' if out['gradient_checkpointing'] else 'off'}")
    cols = ["weights_gb", "gradients_gb", "optimizer_gb", "autocast_gb", "activations_gb",
            "logits_gb", "peak_gb"]
    print(f"{'method':<8}{'base':>10}{'trainable':>15}{'%':>8}"
          + "".join(f"{c[:-3]:>13}" for c in cols))
    for r in rows:
        base = r["quantize"] or out["dtype"]
        print(f"{r['method']:<8}{base:>10}{r['trainable_params']:>15,}"
              f"{100 * r['trainable_fraction']:>8.3f}"
              + "".join(f"{r[c]:>10.1f} GB" for c in cols))
