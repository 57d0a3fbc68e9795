"""Measurements of the model as it stands, for the main job's stages: perplexity of every
language (test and valid splits; the untouched model's from the sweep's shared cache),
held-out text, and the benchmarks and analyses of the base a delta is shipped on."""
from __future__ import annotations

from langsub.analysis import AnalysisContext, wanted
from langsub.analysis.registry import run_before
from langsub.evaluation import before_cache, heldout
from langsub.evaluation.benchmarks import run_phase as lm_eval_phase
from langsub.job import Job


def measure_base(job: Job) -> None:
    """Benchmarks and analyses of the base the trained tensors are shipped on."""
    cfg, module = job.cfg, job.module
    device = job.evaluator.strategy.root_device
    job.metrics.update(lm_eval_phase(module.model, job.tok, cfg, "before", module.logger, device))
    job.analyses = wanted(cfg.get("analysis"))
    job.actx = AnalysisContext(cfg, job.out_dir / "analysis", job.tok, job.dm,
                               job.ident.masks if job.ident else None, job.trained_mask,
                               module.logger)
    job.metrics.update(run_before(job.analyses, job.actx, module.model))


def evaluate(job: Job, phase: str) -> None:
    """Perplexity of every evaluation language (test split) and of the validation languages
    (valid split: `valid_ppl_<phase>/<lang>`, the criterion a learning-rate search uses).
    The untouched model's ("before") come from the sweep's shared cache when it has them."""
    module = job.module
    module.phase = phase
    share = (phase == "before" and job.cfg.eval.get("share_before", True)
             and job.evaluator.world_size == 1 and job.base.shares_before)
    if share:
        key = before_cache.meta(job.cfg, module, job.dm)
        path = before_cache.path_for(job.cfg, key)
        cached = before_cache.load(path, key)
        job.metrics["before_cache_hit"] = cached is not None
    if share and cached is not None:
        module.results.update(cached["test"])
        module.last_val = dict(cached["valid"])
        if module.logger is not None:
            module.logger.log_metrics(cached["test"], step=0)
    else:
        job.evaluator.test(module, datamodule=job.dm, verbose=False)
        job.evaluator.validate(module, datamodule=job.dm, verbose=False)
        if share:
            before_cache.save(path, key, {k: v for k, v in module.results.items()
                                          if k.startswith(f"ppl_{phase}/")}, module.last_val)
    for lang, v in module.last_val.items():
        name = "target" if lang == job.cfg.lang.code else lang
        job.metrics[f"valid_ppl_{phase}/{name}"] = v
    job.metrics.update(measure_heldout(job, phase, share))


def measure_heldout(job: Job, phase: str, share: bool) -> dict:
    """Held-out perplexity (evaluation/heldout.py) of the model as it stands, on the
    evaluation device and in the evaluator's precision; the untouched model's from the
    sweep's cache when `share`."""
    if not heldout.plan(job.cfg):
        return {}
    model, device = job.module.model, job.evaluator.strategy.root_device
    home = next(model.parameters()).device
    model.to(device)
    args = (model, job.tok, job.dm.fmt, job.cfg)
    kw = {"logger": job.module.logger,
          "context": job.evaluator.precision_plugin.forward_context()}
    try:
        return heldout.measure_before(*args, **kw) if share else \
            heldout.measure(*args, phase, **kw)
    finally:
        model.to(home)
