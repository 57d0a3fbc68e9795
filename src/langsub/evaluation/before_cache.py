"""The "before" measurements, shared between the runs of a sweep.

Every job of `-m method=…` or `experiment=compare` starts from the same base and measures the
same held-out blocks before it trains: the perplexities of the untouched model are one
computation, not one per job. They are cached in `<cache_dir>/before/<fingerprint>.json`,
keyed by what they depend on: the model's identity (files, dtype, tokenizer), the trainer
precision, the evaluation batch size and loss chunk, and a digest of the very token blocks of
every test and validation language (which covers the corpus, the split, the seed, the block
size and the BOS/separator format). A key that differs in any of these misses.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from langsub.io import atomic_write_text, fingerprint
from langsub.neurons.cache import model_identity, trainer_precision


def _blocks_digest(ds) -> str:
    h = hashlib.sha256()
    for col in ("input_ids", "attention_mask", "labels"):
        if col in ds.column_names:
            h.update(np.ascontiguousarray(ds.with_format("numpy")[col]).tobytes())
    return h.hexdigest()[:16]


def meta(cfg, module, dm) -> dict:
    """Everything the before-perplexities depend on (the cache key)."""
    return {"model": model_identity(module.model, dm.tokenizer, cfg.model),
            "precision": trainer_precision(cfg),
            "eval_batch_size": dm.batching.eval_batch_size,
            "loss_chunk": str(cfg.model.get("loss_chunk", "auto")),
            "test": {l: _blocks_digest(dm.blocks(l, "test", dm.eval_max_tokens))
                     for l in dm.eval_langs},
            "valid": {l: _blocks_digest(dm.blocks(l, "valid", dm.eval_max_tokens))
                      for l in dm.val_langs},
            "version": 1}


def path_for(cfg, key: dict) -> Path:
    return Path(cfg.paths.cache_dir) / "before" / f"{fingerprint(key)}.json"


def load(path: Path, key: dict) -> dict | None:
    """{"test": {metric: value}, "valid": {lang: value}} if cached under exactly `key`."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or unreadable: measure again
        return None
    if entry.get("key") != json.loads(json.dumps(key)):
        return None
    return {"test": entry["test"], "valid": entry["valid"]}


def save(path: Path, key: dict, test: dict, valid: dict) -> None:
    atomic_write_text(path, json.dumps({"key": key, "test": test, "valid": valid}, indent=1))


def shared(cfg, key: dict, compute, logger=None) -> dict:
    """The flat {metric: value} of `compute()` for the untouched model, from the cache when
    an earlier run stored it under `key` (then logged to `logger` as if measured)."""
    path = path_for(cfg, key)
    cached = load(path, key)
    if cached is not None:
        if logger is not None:
            logger.log_metrics(cached["test"], step=0)
        return dict(cached["test"])
    out = compute()
    save(path, key, out, {})
    return out
