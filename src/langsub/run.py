"""The main job: identify (if needed), evaluate, fine-tune, evaluate, export, report."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from langsub.analyses_run import (alignment_curves, deactivation, reversal, wanted,
                                  write_alignment, write_weights)
from langsub.analysis import snapshot_ffn, weight_change
from langsub.benchmarks import run_phase as lm_eval_phase
from langsub.data import LangDataModule
from langsub.identify import neuron_source, neurons_for_run, random_like, write_neurons_json
from langsub.launch import ddp_safe_job
from langsub.methods import build_method, count_params
from langsub.module import CausalLMModule, check_trainable_keys
from langsub.sparse import original_slices
from langsub.stats import atomic_write_text
from langsub.strategies import is_sharded, make_trainer
from langsub.validate import check_config


def load_tokenizer(cfg_model: DictConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg_model.get("tokenizer") or cfg_model.get("path")
                                        or cfg_model.hub_id)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg_model: DictConfig, tok=None):
    """Tokenizer and causal LM from a local directory (or the hub when only hub_id is set)."""
    from transformers import AutoModelForCausalLM

    src = cfg_model.get("path") or cfg_model.hub_id
    tok = tok or load_tokenizer(cfg_model)
    model = AutoModelForCausalLM.from_pretrained(
        src, dtype=getattr(torch, cfg_model.get("dtype", "float32")),
        attn_implementation=cfg_model.get("attn_implementation"))
    if cfg_model.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    return model, tok


def geomean(values) -> float:
    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def build_trainers(cfg: DictConfig, model) -> tuple[L.Trainer, L.Trainer]:
    """(fit trainer, evaluation trainer): the same one unless the strategy shards (FSDP),
    where the statistics pass and the "before" evaluation run under trainer.eval_strategy.

    Lightning's val_check_interval counts batches, not optimizer steps: scaled by the
    accumulation so that validation runs every train.val_every_n_steps optimizer steps.
    """
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if cfg.train.get("early_stopping_patience"):
        callbacks.append(L.pytorch.callbacks.EarlyStopping(
            "val/ppl", patience=cfg.train.early_stopping_patience, mode="min"))
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    accumulate = cfg.trainer.get("accumulate_grad_batches") or 1
    fit = make_trainer(cfg.trainer, model, callbacks=callbacks, logger=loggers or False,
                       max_steps=1, val_check_interval=cfg.train.val_every_n_steps * accumulate,
                       check_val_every_n_epoch=None, max_epochs=-1,
                       default_root_dir=cfg.paths.output_dir)
    if cfg.trainer.get("eval_strategy") is None:
        return fit, fit
    return fit, make_trainer(cfg.trainer, model, evaluation=True, logger=loggers or False,
                             enable_checkpointing=False, default_root_dir=cfg.paths.output_dir)


def rebuild_trained(cfg: DictConfig, method, mask, ckpt_path: str):
    """The trained model whole, from the base weights and a checkpoint's trainable tensors
    (after sharded training each process holds only shards). Keys are checked, not ignored."""
    model, _ = load_model(cfg.model)
    model = method.prepare(model, mask)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    state = {k.removeprefix("model."): v for k, v in state.items()}
    check_trainable_keys(set(state), {n for n, p in model.named_parameters() if p.requires_grad},
                         ckpt_path)
    model.load_state_dict(state, strict=False)
    return model


def tokens_per_step(cfg: DictConfig, world_size: int) -> int:
    """Tokens one optimizer step sees: batch × block × processes × accumulated batches."""
    return cfg.data.batch_size * cfg.data.block_size * world_size * \
        (cfg.trainer.get("accumulate_grad_batches") or 1)


def budget_steps(cfg: DictConfig, world_size: int) -> int:
    """Optimizer steps of the run: train.max_steps, else train.max_tokens / tokens per step."""
    if cfg.train.get("max_steps"):
        return int(cfg.train.max_steps)
    return max(1, math.ceil(cfg.train.max_tokens / tokens_per_step(cfg, world_size)))


def build_datamodule(cfg: DictConfig, tok) -> LangDataModule:
    """The data module of `cfg.data`: a local corpus directory or a streamed hub source."""
    d = cfg.data

    def container(x):
        return OmegaConf.to_container(x, resolve=True) if x is not None else None

    return LangDataModule(corpus_dir=d.corpus_dir, langs=d.langs, target=cfg.lang.code,
                          tokenizer=tok, block_size=d.block_size, batch_size=d.batch_size,
                          eval_batch_size=d.eval_batch_size, eval_langs=d.eval_langs,
                          ident_max_tokens=d.ident_max_tokens, eval_max_tokens=d.eval_max_tokens,
                          cache_dir=cfg.paths.cache_dir, num_workers=d.num_workers, seed=cfg.seed,
                          source=container(d.get("source")), eval_source=container(d.get("eval")),
                          lang_dir=d.get("lang_dir"))


def test_after(cfg, trainer, evaluator, module, dm, method, mask, out_dir: Path) -> L.Trainer:
    """The "after" numbers, from the best checkpoint; returns the trainer that holds the model.

    Sharded (FSDP): each process holds shards only, and Lightning cannot re-enter a model
    FSDP wrapped in place, so the trained model is rebuilt whole and evaluated as "before".
    """
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not is_sharded(trainer):
        trainer.test(module, datamodule=dm, ckpt_path=best or None, verbose=False)
        return trainer
    if not best:
        best = str(out_dir / "checkpoints" / "final.ckpt")
        trainer.save_checkpoint(best)  # collective: every process takes part
    module.model = rebuild_trained(cfg, method, mask, best)
    evaluator.test(module, datamodule=dm, verbose=False)
    return evaluator  # the sharded trainer and its model are dropped


def run(cfg: DictConfig) -> dict:
    """Everything `python train.py` does; returns metrics.json's content."""
    with ddp_safe_job():  # DDP ranks work inside a -m sweep too
        return _run(cfg)


def _run(cfg: DictConfig) -> dict:
    check_config(cfg)
    if cfg.get("dry_run"):
        from langsub.dryrun import dry_run
        return dry_run(cfg, Path(cfg.paths.output_dir))
    out_dir = Path(cfg.paths.output_dir)
    tok = load_tokenizer(cfg.model)
    target = cfg.lang.code
    dm = build_datamodule(cfg, tok)
    if dm.hub is None:  # a local corpus: short data fails here, before the model loads
        dm.check_blocks()  # (a hub stream's budget needs the world size: checked later)
    L.seed_everything(cfg.seed, workers=True)
    model, tok = load_model(cfg.model, tok)
    method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
    _, total = count_params(model)
    trainer, evaluator = build_trainers(cfg, model)
    steps = budget_steps(cfg, trainer.world_size)  # the token budget needs the world size
    trainer.fit_loop.epoch_loop.max_steps = steps
    dm.train_budget_tokens = steps * tokens_per_step(cfg, trainer.world_size)
    module = CausalLMModule(model, dm.eval_langs, lr=cfg.train.lr,
                            weight_decay=cfg.train.weight_decay,
                            warmup_steps=int(cfg.train.warmup_ratio * steps), max_steps=steps)
    if dm.hub is not None:  # the stream's budget is known now: check before any real work
        dm.check_blocks()
    # the "before" numbers (and analyses) come from the untouched model; this also starts
    # the distributed processes, so later decisions (cache hit, resume) can be shared
    evaluator.test(module, datamodule=dm, verbose=False)
    masks, info, trained_mask = None, {"stats_cache_hit": None, "rho_used": None}, None
    if method.needs_neurons:
        masks, info = neurons_for_run(cfg, module, dm)
        trained_mask = masks[neuron_source(cfg)]
        if cfg.method.name == "random":
            n = module.model.config.intermediate_size
            trained_mask = random_like(trained_mask, n, cfg.seed, cfg.method.get("match", "layer"))
    kinds, device = wanted(cfg), evaluator.strategy.root_device
    extra = lm_eval_phase(module.model, tok, cfg, "before", module.logger, device)
    an_dir = out_dir / "analysis"
    if kinds:
        an_dir.mkdir(parents=True, exist_ok=True)
    if "deactivation" in kinds and masks is not None:
        extra.update(deactivation(an_dir, module.model.eval(), dm, masks, cfg.seed,
                                  cfg.analysis_eval_tokens, module.logger))
    align_langs = [target] + [l for l in dm.eval_langs if l != target]
    align_before = alignment_curves(module.model, tok, cfg, align_langs) \
        if "alignment" in kinds else None
    snapshot = snapshot_ffn(module.model) if "weights" in kinds else None
    # training starts from the same random state whatever ran before it (a statistics
    # pass or a cache hit, analyses, benchmarks): LoRA's init, dropout
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module.model = method.prepare(module.model, trained_mask)
    trainable, _ = count_params(module.model)
    print(f"[langsub] method={method.name} trainable {trainable:,} / total {total:,} "
          f"({100 * trainable / total:.3f} %), frozen {total - trainable:,}")
    module.phase = "after"
    module.model.train()  # from_pretrained and trainer.test leave it in eval mode (dropout off)
    ckpt = out_dir / "checkpoints" / "last.ckpt"
    resume_from = str(ckpt) if cfg.resume and ckpt.exists() else None
    resume_from = evaluator.strategy.broadcast(resume_from)  # every rank decides alike
    if cfg.resume and resume_from is None:
        print(f"[langsub] resume=true but there is no {ckpt}: training starts at step 0 "
              "(pass the interrupted run's hydra.run.dir=...)")
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from)
    train_seconds = time.perf_counter() - t0
    extra.update(optimizer_steps=trainer.global_step,
                 tokens_per_step=tokens_per_step(cfg, trainer.world_size))
    trainer = test_after(cfg, trainer, evaluator, module, dm, method, trained_mask, out_dir)
    delta = method.delta(module.model)
    original = original_slices(module.model) if "reversal" in kinds else None
    module.model = method.merge(module.model)  # a plain transformers model from here on
    extra.update(lm_eval_phase(module.model, tok, cfg, "after", module.logger, device))
    if align_before is not None:
        extra.update(write_alignment(an_dir, align_before, alignment_curves(
            module.model, tok, cfg, align_langs), target, module.logger))
    if snapshot is not None:
        extra.update(write_weights(an_dir, weight_change(snapshot, module.model), module.logger))
    if original is not None:
        extra.update(reversal(an_dir, module.model, dm, target, delta, original,
                              cfg.data.eval_max_tokens, module.logger))
    metrics = collect_metrics(cfg, module, masks, trained_mask, info, trainable, total,
                              train_seconds)
    metrics.update(extra)
    if trainer.is_global_zero:
        write_outputs(cfg, out_dir, method, module, tok, masks, trained_mask, info, metrics,
                      delta)
    return metrics


def collect_metrics(cfg, module, masks, trained_mask, info, trainable, total, seconds) -> dict:
    target, r = cfg.lang.code, module.results
    general = [l for l in cfg.general if f"ppl_before/{l}" in r]
    m = {"method": cfg.method.name, "lang": target, "rho": cfg.rho, "rho_used": info["rho_used"],
         "threshold": cfg.threshold, "seed": cfg.seed,
         "base_model": cfg.model.get("path") or cfg.model.hub_id,
         "neurons": int(sum(len(t) for t in trained_mask)) if trained_mask is not None else None,
         "neurons_from": neuron_source(cfg) if trained_mask is not None else None,
         "trainable_params": trainable, "total_params": total,
         "trainable_fraction": trainable / total, **dict(sorted(r.items())),
         "target_ppl_before": r.get(f"ppl_before/{target}"),
         "target_ppl_after": r.get(f"ppl_after/{target}"),
         "general_ppl_before": geomean(r[f"ppl_before/{l}"] for l in general),
         "general_ppl_after": geomean(r[f"ppl_after/{l}"] for l in general),
         "stats_cache_hit": info["stats_cache_hit"], "train_seconds": round(seconds, 2),
         "tokens_seen": module.tokens_seen, "world_size": module.trainer.world_size,
         "replicas_identical": module.replicas_identical}
    return m


def write_outputs(cfg, out_dir, method, module, tok, masks, trained_mask, info, metrics, delta):
    if masks is not None:
        meta = {"rho": cfg.rho, "rho_used": info["rho_used"], "threshold": cfg.threshold,
                "scope": cfg.scope, "method": cfg.method.name, "neurons_from": neuron_source(cfg)}
        write_neurons_json(out_dir / "neurons.json", masks, cfg.lang.code, trained_mask, meta)
        from langsub.plots import log_neuron_figures
        log_neuron_figures(out_dir, module.logger, masks, info)
    if cfg.export:
        from langsub.export import export_model
        export_model(out_dir, module.model, tok, delta, method.name)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=1))
    if module.logger is not None:
        module.logger.log_hyperparams(
            {"method": cfg.method.name, "lang": cfg.lang.code, "rho": str(cfg.rho),
             "lr": cfg.train.lr, "seed": cfg.seed},
            {f"hp/{k}": v for k, v in metrics.items() if k.endswith(("_before", "_after"))
             and isinstance(v, float)})
    print_table(metrics, out_dir)


def print_table(m: dict, out_dir: Path) -> None:
    t = m["lang"]
    rows = [("target ppl", m["target_ppl_before"], m["target_ppl_after"]),
            ("general ppl", m["general_ppl_before"], m["general_ppl_after"])]
    print(f"\n[langsub] {m['method']} on {t}: {m['trainable_params']:,} trainable "
          f"({100 * m['trainable_fraction']:.3f} %), neurons {m['neurons']}")
    print(f"{'':<12}{'before':>10}{'after':>10}{'change':>9}")
    for name, b, a in rows:
        print(f"{name:<12}{b:>10.2f}{a:>10.2f}{100 * (a / b - 1):>8.2f}%")
    for k, b in m.items():  # lm-eval scores, without their standard errors
        a = m.get(k.replace("lm_eval_before/", "lm_eval_after/", 1))
        if k.startswith("lm_eval_before/") and "_stderr" not in k and a is not None:
            print(f"{k[len('lm_eval_before/'):]}  {b:.4f} -> {a:.4f}")
    print(f"run dir: {out_dir}\n")
