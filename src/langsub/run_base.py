"""Where the shipped model's base comes from: a strategy per kind of base.

`Base`: the model that trains is the base — measured before, merged with the trained
tensors after. `QuantizedBase` (`model.quantize`): the model trains on a 4-bit or 8-bit
base, and its trained tensors are shipped on the full-precision base (as QLoRA merges into
bf16): the quantized model is measured before and after under `*_quantized` phases, then
freed; the full-precision base is loaded, measured before (perplexity, benchmarks, analyses)
and merged. The stages of run.py ask the strategy and never branch on the config.
"""
from __future__ import annotations

import gc
import torch
from omegaconf import DictConfig

from langsub.evaluation.perplexity import geomean
from langsub.job import Job
from langsub.model.load import load_model
from langsub.model.sources import describe as describe_source
from langsub.neurons.scorers import selection_of


class Base:
    """The model that trains is the base it ships on."""

    before_phase = "before"    # the phase of the first measurement
    shares_before = True       # its "before" figures may come from the sweep's cache
    measures_base_first = True  # benchmarks and analyses before training, on this model

    def ship(self, job: Job) -> None:
        """The trained model as shipped: fingerprint the base, merge the trained tensors."""
        job.delta_meta = delta_header(job)  # fingerprints the frozen base: before the merge
        job.module.model = job.method.merge(job.module.model)  # a plain transformers model

    def metrics(self, cfg: DictConfig, results: dict, general: list[str]) -> dict:
        return {}


class QuantizedBase(Base):
    """Trains on a quantized base, ships on the full-precision one (module docstring)."""

    before_phase = "before_quantized"
    shares_before = False
    measures_base_first = False

    def ship(self, job: Job) -> None:
        from langsub.measure import evaluate

        evaluate(job, "after_quantized")
        ship_on_full_precision(job)

    def metrics(self, cfg: DictConfig, results: dict, general: list[str]) -> dict:
        """The model that trained, beside the shipped one."""
        target, m = cfg.lang.code, {"quantize": cfg.model.quantize}
        for phase in ("before_quantized", "after_quantized"):
            m[f"ppl_{phase}/target"] = results.get(f"ppl_{phase}/{target}")
            m[f"ppl_{phase}/general"] = geomean(results[f"ppl_{phase}/{l}"] for l in general)
        return m


def base_of(cfg: DictConfig) -> Base:
    return QuantizedBase() if cfg.model.get("quantize") is not None else Base()


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
    from langsub.measure import evaluate, measure_base

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
