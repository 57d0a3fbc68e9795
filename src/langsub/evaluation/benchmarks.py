"""Benchmarks through EleutherAI's lm-evaluation-harness, in process, on the model object.

    python train.py lang=af eval.lm_eval.tasks=[langsub_cloze_af,belebele_afr_Latn]
    python train.py lang=af eval=paper           # the paper's suite (langsub.evaluation.paper)
    python train.py lang=af eval=paper_offline   # the same on local stand-ins (no hub)

lm-eval is imported only when `eval.lm_eval.tasks` is set, so the main job does not pay
for it otherwise. Local task directories (`eval.lm_eval.include_path`, by default
data/lm_eval with the `langsub_cloze_<lang>` tasks) are indexed first; lm-eval's built-in
index (~15 k tasks, seconds to build) only when a name is not found there. The package's
own tasks (`paper_tasks/`, the paper's suite) are always on the path.
"""
from __future__ import annotations

import difflib
import functools
import math
import random
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from langsub.evaluation import paper

PACKAGE_TASKS = Path(__file__).resolve().parent / "paper_tasks"
SUITES = ("paper", "paper_ll", "heldout")   # paper_ll: its log-likelihood twins only;
# heldout: real benchmarks and held-out text on local files (data/lm_eval/langsub_heldout)
HELDOUT_GENERAL = ("piqa", "boolq", "mmlu", "csqa", "obqa", "siqa", "blimp")


def _paths(include_path) -> tuple[str, ...]:
    if not include_path:
        return ()
    items = [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
    return tuple(str(p) for p in items)


@functools.lru_cache(maxsize=4)
def _manager(paths: tuple[str, ...], defaults: bool, data_dir: str | None):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[*paths, str(PACKAGE_TASKS)], include_defaults=defaults,
                       metadata={"langsub_data_dir": data_dir})


def task_manager(tasks, include_path, data_dir: str | None = None):
    """The cheapest TaskManager that knows every name in `tasks` (local dirs first); the
    paper's tasks read their datasets from `data_dir` (stand-ins) when it is set."""
    paths, data_dir = _paths(include_path), str(data_dir) if data_dir else None
    local = _manager(paths, False, data_dir)
    if all(t in local.all_tasks for t in tasks):
        return local
    return _manager(paths, True, data_dir)


def tasks_of(cfg) -> list[str]:
    """`eval.lm_eval.tasks`, after the suite's tasks for the run's language (eval=paper)."""
    ecfg = (cfg.get("eval") or {}).get("lm_eval") or {}
    extra = list(ecfg.get("tasks") or [])
    if ecfg.get("suite") not in SUITES:
        return extra
    if ecfg.get("suite") == "heldout":
        suite = heldout_tasks(cfg.lang.code, _paths(ecfg.get("include_path")))
        return suite + [t for t in extra if t not in suite]
    suite = paper.task_names(cfg.lang.code, dict(cfg.lang))
    if ecfg.get("suite") == "paper_ll":
        suite = [t for t in suite if t.endswith("_ll")]
    return suite + [t for t in extra if t not in suite]


def standins(cfg) -> list[str]:
    """The run's benchmark tasks whose items are stand-ins (eval=paper_offline: Belebele,
    OPUS-100 and the English suite; SIB-200 and FLORES are real): metrics.json, the console
    and the report mark their scores."""
    ecfg = (cfg.get("eval") or {}).get("lm_eval") or {}
    return paper.standin_tasks(tasks_of(cfg), ecfg.get("data_dir"))


def heldout_tasks(code: str, include_path) -> list[str]:
    """eval=heldout: the English benchmarks and BLiMP, then the target's tasks that have
    items (XCOPA; Tatoeba translation both ways) in a `langsub_heldout` task directory."""
    have = {p.stem for d in include_path for p in Path(d).glob("**/heldout_*.yaml")}
    target = [f"heldout_xcopa_{code}", f"heldout_tatoeba_en_{code}", f"heldout_tatoeba_{code}_en"]
    return [f"heldout_{t}" for t in HELDOUT_GENERAL] + [t for t in target if t in have]


def _heldout_file_problems(tasks, include_path) -> list[str]:
    """A benchmark of eval=heldout whose items file is missing: one line before any model
    loads (`scripts/build_heldout.py` writes them)."""
    dirs = [Path(d) / "langsub_heldout" for d in include_path]
    out = []
    for t in tasks:
        name = t[len("heldout_"):] if t.startswith("heldout_") else ""
        if name not in HELDOUT_GENERAL and not name.startswith("xcopa_"):
            continue  # Tatoeba's files: eval.heldout's check; other names: lm-eval's index
        if not any((d / f"{name}.jsonl").is_file() for d in dirs):
            out.append(f"eval=heldout: {t}'s items ({name}.jsonl) are missing from "
                       f"{', '.join(map(str, dirs))} (python scripts/build_heldout.py)")
    return out


def _suite_problems(cfg, ecfg, tasks: list[str]) -> list[str]:
    """The suite's language names and datasets (`tasks`: tasks_of(cfg)): offline without
    stand-ins, one line."""
    suite, lang = ecfg.get("suite"), cfg.get("lang") or {}
    if suite is None:
        return []
    if suite not in SUITES:
        return [f"eval.lm_eval.suite={suite!r}: allowed is {', '.join(SUITES)} or null"]
    if suite == "heldout":  # local files: each task's items must be there
        return _heldout_file_problems(tasks, _paths(ecfg.get("include_path")))
    if lang.get("code") == "en":
        return ["eval=paper with lang=en: the suite translates to and from English and "
                "measures the target against it; choose a non-English lang"]
    missing = [k for k in ("flores", "sib200") if not lang.get(k)] if suite == "paper" else []
    if missing:
        return [f"lang={lang.get('code')}: conf/lang/{lang.get('code')}.yaml has no "
                f"{' or '.join(missing)} name, which eval=paper needs (the FLORES+ and "
                "SIB-200/Belebele config, e.g. flores: afr_Latn, sib200: afr_Latn)"]
    data_dir = ecfg.get("data_dir")
    needed = paper.hub_datasets(tasks, dict(lang))
    if data_dir:
        absent = [h for h, _ in needed if not (Path(data_dir) / h / "README.md").is_file()]
        return [f"eval.lm_eval.data_dir={data_dir}: no stand-in of {', '.join(absent)} "
                "(a directory laid out like the hub repository, see data/README.md)"] if absent else []
    return _hub_problems(needed)


def _hub_problems(needed) -> list[str]:
    """One line when the hub cannot serve the suite's first dataset (offline, unreachable)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError

    if not needed:
        return []
    hub_id = needed[0][0]
    why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None
    if why is None:
        try:
            HfApi().auth_check(hub_id, repo_type="dataset")  # gated: are its terms accepted?
        except GatedRepoError:
            return [f"eval=paper reads {hub_id}, which is gated: accept its terms on the hub "
                    "and log in (huggingface-cli login), or use eval=paper_offline"]
        except Exception as e:  # no network, DNS, proxy: the hub's many error types
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
    return [] if why is None else [
        f"eval=paper reads {hub_id} (and {len(needed) - 1} more datasets) from the hub, which "
        f"is not reachable ({why}): use eval=paper_offline for the local stand-ins"]


def config_problems(cfg) -> list[str]:
    """One line per bad `eval.lm_eval` value; task names checked against lm-eval's index."""
    ecfg, tasks = (cfg.get("eval") or {}).get("lm_eval") or {}, tasks_of(cfg)
    share = (cfg.get("eval") or {}).get("share_before", True)
    if not isinstance(share, bool):
        return [f"eval.share_before={share!r}: allowed is true or false"]
    if not tasks and not ecfg.get("suite"):
        return []
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        return [f"eval.lm_eval.{'suite' if ecfg.get('suite') else 'tasks'} is set but lm-eval "
                "is not installed: pip install -e '.[eval]'"]
    out = [f"eval.lm_eval.include_path: {p} is not a directory"
           for p in _paths(ecfg.get("include_path")) if not Path(p).is_dir()]
    out += _suite_problems(cfg, ecfg, tasks)
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
    known = task_manager(tasks, ecfg.get("include_path"), ecfg.get("data_dir")).all_tasks
    for t in tasks:
        if t not in known:
            close = difflib.get_close_matches(t, known, n=3)
            hint = (" (the paper's tasks of a new conf/lang file: python "
                    "scripts/build_paper_tasks.py)"
                    if t.startswith(tuple(f"langsub_{k}_" for k in paper.HUB)) else
                    f" (did you mean {', '.join(close)}?)" if close else
                    " (list them with `lm-eval ls tasks`)")
            out.append(f"eval.lm_eval.tasks: {t!r} is not an lm-eval task{hint}")
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


def evaluate(model, tokenizer, ecfg, seed: int = 0, device=None,
             tasks=None) -> dict[str, float]:
    """Run `tasks` (default `ecfg.tasks`) on the model object (moved to `device` meanwhile);
    flat results. Generation is batched by lm-eval (`ecfg.batch_size`)."""
    from lm_eval import simple_evaluate

    from langsub.evaluation.continuation import ContinuationLM

    tasks = list(ecfg["tasks"] if tasks is None else tasks)
    home = next(model.parameters()).device
    if device is not None:
        model.to(device)
    try:
        with _preserved_rng():
            lm = ContinuationLM(pretrained=model, tokenizer=tokenizer, batch_size=ecfg["batch_size"])
            res = simple_evaluate(model=lm, tasks=tasks, num_fewshot=ecfg.get("num_fewshot"),
                                  limit=ecfg.get("limit"), log_samples=False,
                                  bootstrap_iters=ecfg.get("bootstrap_iters", 1000),
                                  task_manager=task_manager(tasks, ecfg.get("include_path"),
                                                            ecfg.get("data_dir")),
                                  random_seed=seed, fewshot_random_seed=seed)
    finally:
        model.to(home)
    return flatten(res["results"])


def _before_key(model, tokenizer, cfg, tasks) -> dict:
    """What the untouched model's scores depend on: the model, the tasks and their files,
    the item limit, shots and batch size, lm-eval's version."""
    import lm_eval

    from langsub.io import file_digest
    from langsub.neurons.cache import model_identity, trainer_precision

    ecfg = cfg.eval.lm_eval
    files = {str(p.relative_to(d)): file_digest(p) for d in _paths(ecfg.get("include_path"))
             for p in sorted(Path(d).glob("langsub_heldout/*")) if p.is_file()}
    return {"kind": "lm_eval", "model": model_identity(model, tokenizer, cfg.model),
            "precision": trainer_precision(cfg), "tasks": list(tasks), "files": files,
            "limit": ecfg.get("limit"), "num_fewshot": ecfg.get("num_fewshot"),
            "batch_size": ecfg.get("batch_size"), "bootstrap_iters": ecfg.get("bootstrap_iters"),
            "data_dir": ecfg.get("data_dir"),  # no seed: the suite is deterministic
            # (zero-shot choices, first-n few-shot examples, greedy generation)
            "lm_eval": getattr(lm_eval, "__version__", None), "version": 1}


def run_phase(model, tokenizer, cfg, phase: str, logger=None, device=None) -> dict[str, float]:
    """`lm_eval_<phase>/<task>/<metric>` for metrics.json and TensorBoard, and the phase's
    wall time `lm_eval_seconds/<phase>`; {} when off. The untouched model's scores ("before")
    of the local suite (eval=heldout) are shared between the runs of a sweep through the
    before cache (`eval.share_before`): the same base and items give the same scores."""
    ecfg, tasks = cfg.get("eval", {}).get("lm_eval") or {}, tasks_of(cfg)
    if not tasks:
        return {}
    share = phase == "before" and ecfg.get("suite") == "heldout" \
        and cfg.eval.get("share_before", True)
    if share:
        from langsub.evaluation import before_cache
        return before_cache.shared(cfg, _before_key(model, tokenizer, cfg, tasks),
                                   lambda: run_phase_now(model, tokenizer, cfg, phase, logger,
                                                         device, tasks), logger)
    return run_phase_now(model, tokenizer, cfg, phase, logger, device, tasks)


def run_phase_now(model, tokenizer, cfg, phase, logger, device, tasks) -> dict[str, float]:
    ecfg = cfg.get("eval", {}).get("lm_eval") or {}
    start = time.perf_counter()
    scores = {f"lm_eval_{phase}/{k}": v for k, v in
              evaluate(model, tokenizer, ecfg, cfg.seed, device, tasks).items()}
    scores[f"lm_eval_seconds/{phase}"] = round(time.perf_counter() - start, 2)
    if logger is not None:
        logger.log_metrics(scores, step=0)
    return scores
