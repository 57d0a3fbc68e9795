"""Perplexity of held-out text of another register, before and after: does the model know
more of the language, or only more of the corpus' register (software UI strings)?

    python train.py lang=af                                   # on by default where text exists
    python train.py lang=af eval.heldout.langs=[af,de,nl]     # other languages
    python train.py lang=af eval.heldout.sets=[]              # off

Sets live in `eval.heldout.dir/<set>/<lang>.jsonl` (rows with `text` and `split`: valid or
test; scripts/build_heldout.py and build_flores.py build them): Tatoeba (conversational
sentences, 16 of the 19 languages), WikiText-103 (English encyclopedic sentences) and FLORES
(SIB-200's FLORES-200 sentences, all 19). Text is packed like the corpus (BOS per block,
sentences joined by the model's separator) and measured with the perplexity of the
Lightning loop; the separators are context, never targets, so the figure counts the language
and not the document format. Metric names (TensorBoard and metrics.json):

    heldout_ppl_<phase>/<set>/<lang>         test half
    heldout_valid_ppl_<phase>/<set>/<lang>   valid half (what a learning-rate rule may read)
    heldout_ppl_<phase>/target|general       the first listed set that has the target: its
    heldout_valid_ppl_<phase>/target|general   target, and the geometric mean over `general`
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from omegaconf import ListConfig

from langsub.evaluation.perplexity import geomean, perplexity

HALVES = {"test": "heldout_ppl", "valid": "heldout_valid_ppl"}


def hcfg(cfg) -> dict:
    return dict((cfg.get("eval") or {}).get("heldout") or {})


def langs_of(cfg) -> list[str]:
    """The languages measured: `eval.heldout.langs`, or the target and `general`."""
    h = hcfg(cfg)
    langs = h.get("langs")
    return list(dict.fromkeys(langs if langs is not None else [cfg.lang.code, *cfg.general]))


def available(directory, name: str) -> list[str]:
    """The languages a set has files for."""
    return sorted(p.stem for p in (Path(directory) / name).glob("*.jsonl"))


def plan(cfg) -> list[tuple[str, str]]:
    """(set, language) pairs to measure: each requested language in each set that has it."""
    h = hcfg(cfg)
    sets, d = list(h.get("sets") or []), h.get("dir")
    have = {s: set(available(d, s)) for s in sets}
    return [(s, l) for s in sets for l in langs_of(cfg) if l in have[s]]


def config_problems(cfg) -> list[str]:
    """Bad `eval.heldout` keys, an unknown set, a missing directory, and (with
    `require_target`, as eval=heldout sets it) a target without held-out text: one line each."""
    h = hcfg(cfg)
    if not h:
        return []
    sets, d, out = h.get("sets"), h.get("dir"), []
    if isinstance(sets, ListConfig):
        sets = list(sets)
    if sets is not None and not isinstance(sets, list):
        return [f"eval.heldout.sets={sets!r}: allowed is a list of set names, e.g. "
                "[tatoeba, wikitext], or []"]
    if not sets:
        return []
    if not d or not Path(d).is_dir():
        return [f"eval.heldout.dir={d}: not a directory (data/heldout, built by "
                "scripts/build_heldout.py)"]
    known = sorted(p.name for p in Path(d).iterdir() if p.is_dir())
    out += [f"eval.heldout.sets: {s!r} is not a held-out set in {d} (allowed: "
            f"{', '.join(known)})" for s in sets if s not in known]
    mt = h.get("max_tokens")
    if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
        out.append(f"eval.heldout.max_tokens={mt!r}: allowed is an integer >= 1 or null")
    langs = h.get("langs")
    if langs is not None and (isinstance(langs, str) or not all(isinstance(x, str) for x in langs)):
        out.append(f"eval.heldout.langs={langs!r}: allowed is a list of language codes or null")
    if out:
        return out
    target = cfg.lang.code
    if h.get("require_target") and not any(target in available(d, s) for s in sets):
        have = sorted({l for s in sets for l in available(d, s)})
        out.append(f"lang={target}: no held-out text in {', '.join(sets)} (languages with it: "
                   f"{', '.join(have)}); choose one of those, or eval=default")
    return out


def blocks(path: Path, split: str, tokenizer, block_size: int, fmt, max_tokens, cache_dir):
    """One half of one set's file, packed like the corpus; the separators are context, never
    targets (a perplexity of the language, not of the document format)."""
    from langsub.data.corpus import load_texts, pack

    return pack(load_texts(path, split, cache_dir), tokenizer, block_size, max_tokens, fmt=fmt,
                score_separator=False)


def measure(model, tokenizer, fmt, cfg, phase: str, logger=None, context=None) -> dict:
    """Both halves of every planned (set, language) and the summaries; {} when off.
    `context`: the evaluator's precision context (autocast under a mixed precision)."""
    pairs = plan(cfg)
    if not pairs:
        return {}
    h, t0 = hcfg(cfg), time.perf_counter()
    bs = cfg.data.get("eval_batch_size", 32)
    chunk = cfg.model.get("loss_chunk", "auto")
    out = {}
    was_training = model.training
    model.eval()
    with context if context is not None else contextlib.nullcontext():
        for name, lang in pairs:
            path = Path(h["dir"]) / name / f"{lang}.jsonl"
            for split, prefix in HALVES.items():
                ds = blocks(path, split, tokenizer, cfg.data.block_size, fmt,
                            h.get("max_tokens"), cfg.paths.cache_dir)
                out[f"{prefix}_{phase}/{name}/{lang}"] = perplexity(model, ds, bs, chunk)
    model.train(was_training)
    out.update(summaries(out, cfg, phase))
    out[f"heldout_seconds/{phase}"] = round(time.perf_counter() - t0, 2)
    if logger is not None:
        logger.log_metrics(out, step=0)
    return out


def summary_set(cfg) -> str | None:
    """The set the target and general summaries read: the first listed set that has the
    target (FLORES for mt and ne, which Tatoeba lacks); None when none has it."""
    h = hcfg(cfg)
    sets, d = list(h.get("sets") or []), h.get("dir")
    return next((s for s in sets if d and cfg.lang.code in available(d, s)), None)


def summaries(values: dict, cfg, phase: str) -> dict:
    """Target and general (geometric mean over `general`) of the summary set."""
    first = summary_set(cfg)
    out = {}
    for prefix in HALVES.values():
        get = {l: values.get(f"{prefix}_{phase}/{first}/{l}") for l in [cfg.lang.code, *cfg.general]}
        if get[cfg.lang.code] is not None:
            out[f"{prefix}_{phase}/target"] = get[cfg.lang.code]
        general = [v for l, v in get.items() if l in cfg.general and v is not None]
        if general:
            out[f"{prefix}_{phase}/general"] = geomean(general)
    return out


def cache_key(cfg, model, tokenizer, fmt) -> dict:
    """What the untouched model's held-out perplexities depend on (before_cache's key)."""
    from langsub.io import file_digest
    from langsub.neurons.cache import model_identity, trainer_precision

    h = hcfg(cfg)
    return {"kind": "heldout", "model": model_identity(model, tokenizer, cfg.model),
            "precision": trainer_precision(cfg), "eval_batch_size": cfg.data.eval_batch_size,
            "loss_chunk": str(cfg.model.get("loss_chunk", "auto")),
            "block_size": cfg.data.block_size, "format": fmt.describe() if fmt else None,
            "max_tokens": h.get("max_tokens"), "sets": list(h.get("sets") or []),
            "target": cfg.lang.code, "general": list(cfg.general),
            "files": {f"{s}/{l}": file_digest(Path(h["dir"]) / s / f"{l}.jsonl")
                      for s, l in plan(cfg)}, "version": 2}


def measure_before(model, tokenizer, fmt, cfg, logger=None, context=None) -> dict:
    """`measure(..., "before")`, shared between the runs of a sweep through the before cache
    (`eval.share_before`)."""
    from langsub.evaluation import before_cache

    if not plan(cfg) or not (cfg.get("eval") or {}).get("share_before", True):
        return measure(model, tokenizer, fmt, cfg, "before", logger, context)
    return before_cache.shared(cfg, cache_key(cfg, model, tokenizer, fmt), lambda: measure(
        model, tokenizer, fmt, cfg, "before", logger, context), logger)
