"""Benchmarks through EleutherAI's lm-evaluation-harness, in process, on the model object.

    python train.py lang=af eval.lm_eval.tasks=[langsub_cloze_af,belebele_afr_Latn]

lm-eval is imported only when `eval.lm_eval.tasks` is set, so the main job does not pay
for it otherwise. Local task directories (`eval.lm_eval.include_path`, by default
data/lm_eval with the `langsub_cloze_<lang>` tasks) are indexed first; lm-eval's built-in
index (~15 k tasks, seconds to build) only when a name is not found there.
"""
from __future__ import annotations

import difflib
import functools
import math
import random
from contextlib import contextmanager
from pathlib import Path

import torch


def _paths(include_path) -> tuple[str, ...]:
    if not include_path:
        return ()
    items = [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
    return tuple(str(p) for p in items)


@functools.lru_cache(maxsize=4)
def _manager(paths: tuple[str, ...], defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths) or None, include_defaults=defaults)


def task_manager(tasks, include_path):
    """The cheapest TaskManager that knows every name in `tasks` (local dirs first)."""
    paths = _paths(include_path)
    if paths:
        local = _manager(paths, False)
        if all(t in local.all_tasks for t in tasks):
            return local
    return _manager(paths, True)


def config_problems(ecfg) -> list[str]:
    """One line per bad `eval.lm_eval` value; task names checked against lm-eval's index."""
    tasks = list(ecfg.get("tasks") or [])
    if not tasks:
        return []
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return ["eval.lm_eval.tasks is set but lm-eval is not installed: "
                "pip install -e '.[eval]'"]
    out = [f"eval.lm_eval.include_path: {p} is not a directory"
           for p in _paths(ecfg.get("include_path")) if not Path(p).is_dir()]
    n, limit, bs = ecfg.get("num_fewshot"), ecfg.get("limit"), ecfg.get("batch_size")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        out.append(f"eval.lm_eval.num_fewshot={n!r}: allowed is an integer >= 0 or null")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                              or limit <= 0 or (isinstance(limit, float) and limit >= 1)):
        # lm-eval reads a value < 1.0 as a share and anything else as a count (1.0: one item)
        out.append(f"eval.lm_eval.limit={limit!r}: allowed is a count >= 1, a share in (0, 1) "
                   "or null (all items)")
    if not (bs == "auto" or (isinstance(bs, int) and not isinstance(bs, bool) and bs > 0)):
        out.append(f"eval.lm_eval.batch_size={bs!r}: allowed is a positive integer or 'auto'")
    if out:
        return out
    known = task_manager(tasks, ecfg.get("include_path")).all_tasks
    for t in tasks:
        if t not in known:
            close = difflib.get_close_matches(t, known, n=3)
            out.append(f"eval.lm_eval.tasks: {t!r} is not an lm-eval task"
                       + (f" (did you mean {', '.join(close)}?)" if close else
                          " (list them with `lm-eval ls tasks`)"))
    return out


def flatten(results: dict) -> dict[str, float]:
    """lm-eval's `results` → {"<task>/<metric>": value}; "acc,none" → "acc", other filters
    → "<metric>_<filter>"; non-numeric and non-finite values are dropped."""
    out = {}
    for task, res in results.items():
        for key, v in res.items():
            if "," not in key or isinstance(v, bool) or not isinstance(v, (int, float)) \
                    or not math.isfinite(v):
                continue
            metric, filt = key.split(",", 1)
            out[f"{task}/{metric if filt == 'none' else f'{metric}_{filt}'}"] = float(v)
    return dict(sorted(out.items()))


@contextmanager
def _preserved_rng():
    """lm-eval seeds python, numpy and torch globally; the fine-tuning must not notice."""
    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        yield
    random.setstate(py)
    np.random.set_state(npy)


def evaluate(model, tokenizer, ecfg, seed: int = 0, device=None) -> dict[str, float]:
    """Run `ecfg.tasks` on the model object (moved to `device` meanwhile); flat results."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    tasks = list(ecfg["tasks"])
    home = next(model.parameters()).device
    if device is not None:
        model.to(device)
    try:
        with _preserved_rng():
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=ecfg["batch_size"])
            res = simple_evaluate(model=lm, tasks=tasks, num_fewshot=ecfg.get("num_fewshot"),
                                  limit=ecfg.get("limit"), log_samples=False,
                                  bootstrap_iters=ecfg.get("bootstrap_iters", 1000),
                                  task_manager=task_manager(tasks, ecfg.get("include_path")),
                                  random_seed=seed, fewshot_random_seed=seed)
    finally:
        model.to(home)
    return flatten(res["results"])


def run_phase(model, tokenizer, cfg, phase: str, logger=None, device=None) -> dict[str, float]:
    """`lm_eval_<phase>/<task>/<metric>` for metrics.json and TensorBoard; {} when off."""
    ecfg = cfg.get("eval", {}).get("lm_eval") or {}
    if not ecfg.get("tasks"):
        return {}
    scores = {f"lm_eval_{phase}/{k}": v for k, v in
              evaluate(model, tokenizer, ecfg, cfg.seed, device).items()}
    if logger is not None:
        logger.log_metrics(scores, step=0)
    return scores
