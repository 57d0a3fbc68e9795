"""The statistics cache: over_zero and n_tokens on disk, keyed by everything they depend on."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from langsub.io import atomic_write, atomic_write_text, file_digest


# Lightning's short spellings of the same precision
_PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}


def trainer_precision(cfg: DictConfig) -> str:
    """The trainer precision under one spelling ("bf16" and "bf16-mixed" are the same)."""
    precision = str(cfg.trainer.get("precision", "32-true"))
    return _PRECISION_ALIASES.get(precision, precision)


def model_identity(model, tokenizer, cfg_model: DictConfig) -> dict:
    """What makes statistics reusable: weights (files, hub revision, dtype they are loaded in)
    and tokenizer (hashes of small files, else sizes)."""
    ident = {"name_or_path": str(model.config._name_or_path), "files": {},
             "revision": cfg_model.get("revision"), "dtype": cfg_model.get("dtype", "float32")}
    from langsub.model.sources import local_dir

    root = local_dir(cfg_model)  # a dequantized GGUF's langsub_source.json has its sha256
    if root is not None:
        for p in sorted(root.iterdir()):
            if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".model"):
                ident["files"][p.name] = file_digest(p) if p.stat().st_size < 64 << 20 \
                    else p.stat().st_size
    ident["vocab"] = len(tokenizer)
    if cfg_model.get("quantize"):  # statistics of the quantized model that trains, computed
        # by dequantizing into the model's dtype (model/quantize.py: keep_differentiable)
        ident["quantize"] = f"{cfg_model.quantize}/dequantized"
    return ident


def stats_meta(cfg: DictConfig, model, tokenizer, dm) -> dict:
    """The cache key: model identity, the trainer precision the pass runs under (the sign of
    an activation near 0 depends on it), the corpus (a hub source's revision included) and
    the identification budget."""
    corpus = {lang: dm.corpus_identity(lang) for lang in dm.langs}
    meta = {"model": model_identity(model, tokenizer, cfg.model),
            "precision": trainer_precision(cfg), "corpus": corpus,
            "langs": list(dm.langs), "ident_max_tokens": dm.ident_max_tokens,
            "block_size": dm.block_size, "version": 2}
    fmt = getattr(dm, "fmt", None)
    if fmt is not None and (fmt.bos is not None or fmt.separator != (tokenizer.eos_token_id,)):
        meta["sequence"] = fmt.describe()  # a BOS or another separator: other blocks
    return meta


def save_stats(path: Path, over_zero: torch.Tensor, n_tokens: torch.Tensor, meta: dict) -> None:
    """Statistics as safetensors + a JSON sidecar; both atomic, the JSON written last."""
    atomic_write(path.with_suffix(".safetensors"), lambda p: save_file(
        {"over_zero": over_zero.contiguous(), "n_tokens": n_tokens.contiguous()}, p))
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=1))


def load_stats(path: Path, meta: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Cached statistics if both files exist and the metadata matches exactly, else None."""
    j, s = path.with_suffix(".json"), path.with_suffix(".safetensors")
    if not (j.exists() and s.exists()):
        return None
    try:
        if json.loads(j.read_text()) != json.loads(json.dumps(meta)):
            return None
        t = load_file(str(s))
        return t["over_zero"], t["n_tokens"]
    except Exception:  # unreadable or torn: recompute rather than trust it
        return None
