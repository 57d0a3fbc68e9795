"""The main job, stage by stage: set up, measure before, identify, train, measure after, write.

State travels in one `Job` (job.py); each stage is a function of it. Measurements live in
measure.py; where the shipped base comes from (the model that trains, or the full-precision
base of a quantized run) is the `Base` strategy of run_base.py. The analyses and benchmarks
run through their registries, so `langsub analyze` runs the same code.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from langsub.analysis import figures, wanted
from langsub.analysis.registry import run_after
from langsub.data.datamodule import LangDataModule
from langsub.evaluation.benchmarks import run_phase as lm_eval_phase
from langsub.evaluation.benchmarks import standins
from langsub.evaluation.heldout import summary_set
from langsub.evaluation.perplexity import geomean
from langsub.io import atomic_write_text
from langsub.job import Job
from langsub.measure import evaluate, measure_base
from langsub.methods import build_method, count_params
from langsub.model.load import load_model, load_tokenizer
from langsub.model.sources import describe as describe_source
from langsub.run_base import base_of
from langsub.neurons.identify import identify
from langsub.neurons.masks import write_neurons_json
from langsub.neurons.scorers import selection_of
from langsub.training.checkpoints import load_trainable
from langsub.training.launch import ddp_safe_job
from langsub.training.module import module_from_config
from langsub.training.sweep_resume import resume_or_skip
from langsub.training.trainers import budget_steps, build_trainers, is_sharded, tokens_per_step
from langsub.validate import check_config
from langsub.export.checks import options as export_options
from langsub.report.console import print_table

def run(cfg: DictConfig, checked: bool = False) -> dict:
    """Everything `python train.py` does; returns metrics.json's content. `checked`: the
    caller has already passed `cfg` through check_config."""
    with ddp_safe_job():  # DDP ranks work inside a -m sweep too
        if not checked:
            check_config(cfg)
        if cfg.get("dry_run"):
            from langsub.training.dryrun import dry_run
            return dry_run(cfg, Path(cfg.paths.output_dir))
        done = resume_or_skip(cfg)  # a rerun sweep: finished jobs skipped, a stopped one resumed
        if done is not None:
            return done
        job = setup(cfg)
        measure_before(job)
        train(job)
        measure_after(job)
        return write_outputs(job)


def setup(cfg: DictConfig) -> Job:
    """Data (checked before the model loads), model, method, trainers, LightningModule."""
    tok = load_tokenizer(cfg.model)
    dm = LangDataModule.from_config(cfg, tok)
    if dm.hub is None:  # a local corpus: short data fails here, before the model loads
        dm.check_blocks()  # (a hub stream's budget needs the world size: checked below)
        if "fidelity" in {a.name for a in wanted(cfg.get("analysis"))}:
            from langsub.analysis.fidelity import test_prompts

            test_prompts(cfg, dm)  # a target without prompts: one line, before loading
    L.seed_everything(cfg.seed, workers=True)
    model, tok = load_model(cfg.model, tok, on_cpu=cfg.trainer.get("accelerator") == "cpu")
    method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
    _, total = count_params(model)
    trainer, evaluator = build_trainers(cfg, model)
    steps = budget_steps(cfg, trainer.world_size)  # the token budget needs the world size
    trainer.fit_loop.epoch_loop.max_steps = steps
    dm.budgets = replace(dm.budgets, train=steps * tokens_per_step(cfg, trainer.world_size))
    module = module_from_config(cfg, model, dm.eval_langs, dm.val_langs)
    if dm.hub is not None:  # the stream's budget is known now: check before any real work
        dm.check_blocks()
    short = dm.shortfall(cfg.train.get("epochs"))
    if short is not None:
        print(f"[langsub] {short}")
    return Job(cfg, Path(cfg.paths.output_dir), tok, dm, method, module, trainer, evaluator,
               total, base=base_of(cfg))


def measure_before(job: Job) -> None:
    """Perplexities of the untouched model and the neurons; then (unless the base is
    quantized: `ship_on_full_precision`) benchmarks and analyses before."""
    cfg, module = job.cfg, job.module
    # this also starts the distributed processes, so that later decisions (cache hit,
    # resume) can be shared between them
    evaluate(job, job.base.before_phase)
    if job.method.needs_neurons:  # from the model that trains (a quantized one: its own)
        t0 = time.perf_counter()
        job.ident = identify(cfg, module, job.dm, job.method.source(cfg.lang.code))
        if job.ident.stats_cache_hit is False:  # a statistics pass ran: its speed
            seconds = time.perf_counter() - t0
            job.metrics.update(stats_seconds=round(seconds, 2), stats_tokens_per_s=round(
                float(job.ident.n_tokens.sum()) / seconds, 1))
        job.trained_mask = job.method.neurons(job.ident.masks, cfg.lang.code, module.model,
                                              cfg.seed)
    if job.base.measures_base_first:
        measure_base(job)


def train(job: Job) -> None:
    """Apply the method and fit (from last.ckpt with resume=true)."""
    cfg, module = job.cfg, job.module
    # training starts from the same random state whatever ran before it (a statistics
    # pass or a cache hit, analyses, benchmarks): LoRA's init, dropout
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module.model = job.method.apply(module.model, job.trained_mask)
    trainable, total = count_params(module.model)[0], job.total_params
    job.metrics.update(trainable_params=trainable, total_params=total)
    print(f"[langsub] method={job.method.name} trainable {trainable:,} / total {total:,} "
          f"({100 * trainable / total:.3f} %), frozen {total - trainable:,}")
    module.model.train()  # from_pretrained and trainer.test leave it in eval mode (dropout off)
    ckpt = job.out_dir / "checkpoints" / "last.ckpt"
    resume_from = str(ckpt) if cfg.resume and ckpt.exists() else None
    resume_from = job.evaluator.strategy.broadcast(resume_from)  # every rank decides alike
    if cfg.resume and resume_from is None:
        print(f"[langsub] resume=true but there is no {ckpt}: training starts at step 0 "
              "(pass the interrupted run's hydra.run.dir=...)")
    device = job.evaluator.strategy.root_device
    if device.type == "cuda":  # the peak of training, not of the statistics or evaluations
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    job.trainer.fit(module, datamodule=job.dm, ckpt_path=resume_from)
    seconds = time.perf_counter() - t0
    job.metrics.update(train_seconds=round(seconds, 2),
                       optimizer_steps=job.trainer.global_step,
                       tokens_per_step=tokens_per_step(cfg, job.trainer.world_size),
                       train_tokens_per_s=round(module.tokens_this_fit() / seconds, 1),
                       **peak_memory(device))


def peak_memory(device: torch.device) -> dict:
    """Peak memory: on a GPU the allocated peak of training (reset before `fit`); on CPU the
    process's peak resident set up to the end of training (VmHWM: the model, the data, the
    statistics pass and evaluations before it, everything)."""
    if device.type == "cuda":
        return {"peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated(device) / 1e9, 3)}
    try:
        kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
    except (OSError, StopIteration):
        return {}
    return {"peak_rss_gb": round(kb * 1024 / 1e9, 3)}


def restore_best(job: Job) -> None:
    """The model that is shipped: the best of every validated step and the last step.

    Lightning validates every `train.val_every_n_steps` steps; when the budget is not a
    multiple of it, the last step is validated here too and kept if it is the best. Sharded
    (FSDP): Lightning cannot re-enter a model FSDP wrapped in place, so the trained model is
    first rebuilt whole from the base weights and the final trainable tensors.
    """
    trainer, module, cfg = job.trainer, job.module, job.cfg
    cb, last = trainer.checkpoint_callback, trainer.global_step
    best = cb.best_model_path if cb else ""
    best_score = float(cb.best_model_score) if best and cb.best_model_score is not None \
        else math.inf
    if is_sharded(trainer):
        final = str(job.out_dir / "checkpoints" / "final.ckpt")
        trainer.save_checkpoint(final)  # collective: every process takes part
        model, _ = load_model(cfg.model)
        module.model = load_trainable(job.method.apply(model, job.trained_mask), final)
        job.trainer = job.evaluator  # the sharded trainer and its model are dropped
    best_step = torch.load(best, map_location="cpu", weights_only=False)["global_step"] \
        if best else None
    if best_step != last and last % cfg.train.val_every_n_steps:  # not validated yet
        job.evaluator.validate(module, datamodule=job.dm, verbose=False)
        if module.last_val[cfg.lang.code] <= best_score:
            best, best_step = "", last
    if best and best_step != last:
        load_trainable(module.model, best)
    job.metrics["best_step"] = best_step if best_step is not None else last


def measure_after(job: Job) -> None:
    """The shipped model (best checkpoint, merged in its dtype): perplexities, benchmarks,
    analyses."""
    restore_best(job)
    module = job.module
    job.delta = job.method.delta(module.model)
    job.base.ship(job)
    evaluate(job, "after")
    device = job.evaluator.strategy.root_device
    job.metrics.update(lm_eval_phase(module.model, job.tok, job.cfg, "after", module.logger,
                                     device))
    job.metrics.update(run_after(job.analyses, job.actx, module.model, job.delta))


def collect_metrics(job: Job) -> dict:
    """metrics.json: the run's facts, then every measured number (slash-named)."""
    cfg, r, target, ident = job.cfg, job.module.results, job.cfg.lang.code, job.ident
    general = [l for l in cfg.general if f"ppl_before/{l}" in r]
    trained = job.trained_mask
    m = {"method": job.method.name, "lang": target, "lr": cfg.train.lr, "rho": cfg.rho,
         "rho_used": ident.rho_used if ident else None, "threshold": cfg.threshold,
         "selection": selection_of(cfg)["name"], "selection_match": selection_of(cfg).get("match"),
         "alpha": cfg.get("alpha"), "seed": cfg.seed, "compare_phase": cfg.get("compare_phase"),
         "base_model": describe_source(cfg.model), "data": cfg.data.get("name"),
         "heldout_set": summary_set(cfg), "standin_tasks": standins(cfg),
         "dtype": cfg.model.get("dtype", "float32"),  # as resolved (${fast_dtype:...})
         "neurons": int(sum(len(t) for t in trained)) if trained is not None else None,
         "neurons_from": job.method.source(target) if trained is not None else None,
         "trainable_fraction": job.metrics["trainable_params"] / job.total_params,
         "stats_cache_hit": ident.stats_cache_hit if ident else None,
         "tokens_seen": job.module.tokens_seen, "world_size": job.trainer.world_size,
         "val_curve": job.module.val_curve,
         "replicas_identical": job.module.replicas_identical, **job.metrics,
         **dict(sorted(r.items())),
         "ppl_before/target": r.get(f"ppl_before/{target}"),
         "ppl_after/target": r.get(f"ppl_after/{target}"),
         "ppl_before/general": geomean(r[f"ppl_before/{l}"] for l in general),
         "ppl_after/general": geomean(r[f"ppl_after/{l}"] for l in general)}
    m.update(job.base.metrics(cfg, r, general))
    return m


def write_outputs(job: Job) -> dict:
    """neurons.json, figures, export/, delta.safetensors, metrics.json (rank 0 only)."""
    cfg, out_dir, module = job.cfg, job.out_dir, job.module
    metrics = collect_metrics(job)
    if not job.trainer.is_global_zero:
        return metrics
    if job.ident is not None:
        meta = {"rho": cfg.rho, "rho_used": job.ident.rho_used, "threshold": cfg.threshold,
                "selection": selection_of(cfg)["name"], "alpha": cfg.get("alpha"),
                "selection_match": selection_of(cfg).get("match"), "scope": cfg.scope,
                "method": job.method.name,
                "neurons_from": metrics["neurons_from"]}
        write_neurons_json(out_dir / "neurons.json", job.ident.masks, cfg.lang.code,
                           job.trained_mask, meta)
        figures.neuron_figures(out_dir, module.logger, job.ident.masks, job.ident.over_zero,
                               job.ident.n_tokens)
    opts = export_options(cfg)
    if opts is not None:
        from langsub.export import export_model
        export_model(out_dir, module.model, job.tok, job.delta, job.delta_meta)
        from langsub.export.formats import write_formats
        metrics.update(write_formats(cfg, opts, out_dir / "export", module.model, job.delta,
                                     job.delta_meta, job.method.name))
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=1))
    if module.logger is not None:
        module.logger.log_hyperparams(
            {"method": job.method.name, "lang": cfg.lang.code, "rho": str(cfg.rho),
             "lr": cfg.train.lr, "seed": cfg.seed},
            {f"hp/{k}": v for k, v in metrics.items()
             if k.startswith(("ppl_before/", "ppl_after/")) and isinstance(v, float)})
    print_table(metrics, out_dir)
    return metrics
