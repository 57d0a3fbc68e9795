"""The main job, stage by stage: set up, measure before, identify, train, measure after, write.

State travels in one `Job`; each stage is a function of it. The analyses and benchmarks
run through their registries, so `python -m langsub.analyze` runs the same code.
"""
from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from langsub.analysis import AnalysisContext, figures, wanted
from langsub.analysis.registry import run_after, run_before
from langsub.data.corpus import sequence_format
from langsub.data.datamodule import LangDataModule
from langsub.evaluation import before_cache, heldout
from langsub.evaluation.benchmarks import run_phase as lm_eval_phase
from langsub.evaluation.perplexity import geomean
from langsub.io import atomic_write_text
from langsub.methods import Method, build_method, count_params
from langsub.model.load import load_model, load_tokenizer
from langsub.model.sources import describe as describe_source
from langsub.neurons.identify import Identification, identify
from langsub.neurons.masks import write_neurons_json
from langsub.neurons.scorers import selection_of
from langsub.training.checkpoints import load_trainable
from langsub.training.launch import ddp_safe_job
from langsub.training.module import CausalLMModule, module_from_config
from langsub.training.sweep_resume import resume_or_skip
from langsub.training.trainers import budget_steps, build_trainers, is_sharded, tokens_per_step
from langsub.validate import check_config
from langsub.export.checks import options as export_options
from langsub.report.console import print_table


@dataclass
class Job:
    """Everything one run holds between its stages."""

    cfg: DictConfig
    out_dir: Path
    tok: object
    dm: LangDataModule
    method: Method
    module: CausalLMModule
    trainer: L.Trainer
    evaluator: L.Trainer
    total_params: int
    ident: Identification | None = None
    trained_mask: list | None = None
    analyses: list = field(default_factory=list)
    actx: AnalysisContext | None = None
    delta: dict | None = None
    delta_meta: dict | None = None
    metrics: dict = field(default_factory=dict)


def build_datamodule(cfg: DictConfig, tok) -> LangDataModule:
    """The data module of `cfg.data`, its blocks laid out as the model was trained."""
    return LangDataModule.from_config(cfg, tok, sequence_format(
        tok, cfg.model.get("add_bos", "auto"), cfg.model.get("doc_separator")))


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
    dm = build_datamodule(cfg, tok)
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
    return Job(cfg, Path(cfg.paths.output_dir), tok, dm, method, module, trainer, evaluator,
               total)


def measure_before(job: Job) -> None:
    """Perplexities of the untouched model and the neurons; then (unless the base is
    quantized: `ship_on_full_precision`) benchmarks and analyses before."""
    cfg, module = job.cfg, job.module
    # this also starts the distributed processes, so that later decisions (cache hit,
    # resume) can be shared between them
    evaluate(job, "before_quantized" if quantized(cfg) else "before")
    if job.method.needs_neurons:  # from the model that trains (a quantized one: its own)
        t0 = time.perf_counter()
        job.ident = identify(cfg, module, job.dm, job.method.source(cfg.lang.code))
        if job.ident.stats_cache_hit is False:  # a statistics pass ran: its speed
            seconds = time.perf_counter() - t0
            job.metrics.update(stats_seconds=round(seconds, 2), stats_tokens_per_s=round(
                float(job.ident.n_tokens.sum()) / seconds, 1))
        job.trained_mask = job.method.neurons(job.ident.masks, cfg.lang.code, module.model,
                                              cfg.seed)
    if not quantized(cfg):
        measure_base(job)


def quantized(cfg: DictConfig) -> bool:
    return cfg.model.get("quantize") is not None


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


def evaluate(job: Job, phase: str) -> None:
    """Perplexity of every evaluation language (test split) and of the validation languages
    (valid split: `valid_ppl_<phase>/<lang>`, the criterion a learning-rate search uses).
    The untouched model's ("before") come from the sweep's shared cache when it has them."""
    module = job.module
    module.phase = phase
    share = (phase == "before" and job.cfg.eval.get("share_before", True)
             and job.evaluator.world_size == 1 and not quantized(job.cfg))
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
    if quantized(job.cfg):
        evaluate(job, "after_quantized")
        ship_on_full_precision(job)
    else:
        job.delta_meta = delta_header(job)  # fingerprints the frozen base: before the merge
        module.model = job.method.merge(module.model)  # a plain transformers model from here
    evaluate(job, "after")
    device = job.evaluator.strategy.root_device
    job.metrics.update(lm_eval_phase(module.model, job.tok, job.cfg, "after", module.logger,
                                     device))
    job.metrics.update(run_after(job.analyses, job.actx, module.model, job.delta))


def ship_on_full_precision(job: Job) -> None:
    """A quantized run ships its trained tensors on the full-precision base (as QLoRA merges
    into bf16): the quantized model is freed, the base loaded in `model.dtype`, measured
    before (perplexity, benchmarks, analyses) and merged with the trained tensors."""
    state = job.method.trained_state(job.module.model)
    job.delta = {k: v.cpu() for k, v in job.delta.items()} if job.delta else None
    job.module.model = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    base, _ = load_model(job.cfg.model, job.tok, quantized=False)
    job.module.model = base
    evaluate(job, "before")
    measure_base(job)
    job.delta_meta = delta_header(job)
    job.module.model = job.method.rebase(job.module.model, state)


def delta_header(job: Job) -> dict | None:
    """`delta.safetensors`' header: what the delta is and which base it was trained on
    (`job.module.model` still holds that base's weights at the delta's slices)."""
    if not job.delta:
        return None
    from langsub.export import delta_metadata

    cfg, m = job.cfg, job.cfg.model
    base = describe_source(m)
    return delta_metadata(job.module.model, job.delta, base_model=base, lang=cfg.lang.code,
                          method=job.method.name, rho=job.ident.rho_used if job.ident else None,
                          selection=selection_of(cfg)["name"], alpha=cfg.get("alpha"),
                          neurons=int(sum(len(t) for t in job.trained_mask)),
                          components=list(cfg.method.get("components") or []),
                          quantize=m.get("quantize"))


def collect_metrics(job: Job) -> dict:
    """metrics.json: the run's facts, then every measured number (slash-named)."""
    cfg, r, target, ident = job.cfg, job.module.results, job.cfg.lang.code, job.ident
    general = [l for l in cfg.general if f"ppl_before/{l}" in r]
    trained = job.trained_mask
    m = {"method": job.method.name, "lang": target, "lr": cfg.train.lr, "rho": cfg.rho,
         "rho_used": ident.rho_used if ident else None, "threshold": cfg.threshold,
         "selection": selection_of(cfg)["name"], "selection_match": selection_of(cfg).get("match"),
         "alpha": cfg.get("alpha"), "seed": cfg.seed, "base_model": describe_source(cfg.model),
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
    if quantized(cfg):  # the model that trained, beside the shipped one
        m["quantize"] = cfg.model.quantize
        for phase in ("before_quantized", "after_quantized"):
            m[f"ppl_{phase}/target"] = r.get(f"ppl_{phase}/{target}")
            m[f"ppl_{phase}/general"] = geomean(r[f"ppl_{phase}/{l}"] for l in general)
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
