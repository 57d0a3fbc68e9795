"""The method's keys, checked before any weights load: its config dataclass; what its
trainable fp32 masters need from the model dtype, the precision and the strategy; whether
a quantized base suits it; and (on the meta device) whether the model and its mask fit."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from langsub.errors import ConfigError, MaskError, UnsupportedModelError
from langsub.methods import Method, build_method
from langsub.methods.precision import DTYPES, precision_problems
from langsub.model.quantize import QUANTIZATIONS, backend_problems
from langsub.training.checks import PRECISIONS, is_sharded_config


def built(cfg: DictConfig) -> tuple[list[str], Method | None]:
    """(the problems of `cfg.method`'s keys, the method or None where there are some)."""
    try:
        return [], build_method(OmegaConf.to_container(cfg.method, resolve=True))
    except ConfigError as e:
        return str(e).splitlines(), None


def config_problems(cfg: DictConfig) -> list[str]:
    """Its config dataclass checks every key; then its precision and a quantized base."""
    problems, method = built(cfg)
    if method is None:
        return problems
    if cfg.model.get("dtype") not in DTYPES or cfg.trainer.get("precision") not in PRECISIONS:
        return []  # the rules table names those
    return precision_problems(method, cfg.model.dtype, cfg.trainer.precision,
                              sharded=is_sharded_config(cfg)) + quantize_problems(cfg, method)


def quantize_problems(cfg: DictConfig, method: Method) -> list[str]:
    """A quantized base: a method that keeps it frozen, no sharding, a backend that runs here."""
    q = cfg.model.get("quantize")
    if q not in QUANTIZATIONS:
        return []  # null, or a bad value the rules table names
    out = []
    if not method.supports_quantized:
        out.append(f"method={method.name} with model.quantize={q}: it trains the base's own "
                   "weights, which a quantized base stores packed and frozen; allowed is "
                   "method=lape, random, lora or ia3, or model.quantize=null")
    if is_sharded_config(cfg):
        out.append(f"model.quantize={q} under FSDP: FSDP cannot shard packed weights here; "
                   "use a strategy without sharding, or model.quantize=null")
    if cfg.get("dry_run"):  # the plan runs on the meta device: nothing is quantized
        return out
    return out + backend_problems(q, cfg.trainer.get("accelerator", "auto"))


def shape_problems(cfg: DictConfig) -> list[str]:
    """Build the model on the meta device (no weights): gated FFN? does the mask fit?"""
    from langsub.model.ffn import find_ffns
    from langsub.model.load import meta_model
    from langsub.neurons.masks import load_neurons

    try:
        ffns = find_ffns(meta_model(cfg.model))
    except UnsupportedModelError as e:
        return [str(e)]
    except (OSError, ValueError) as e:  # transformers cannot read or resolve the config
        return [f"model: cannot read its config: {str(e).splitlines()[0]}"]
    m = cfg.method
    if m.get("neurons") is None:
        return []
    try:
        masks = load_neurons(m.neurons, m.get("neurons_langs"), n_layers=len(ffns),
                             n_neurons=ffns[0].n_neurons)
    except MaskError as e:
        return [f"method.neurons: {e}"]
    source = m.get("neurons_from")
    if (source or cfg.lang.code) not in masks:
        key = f"method.neurons_from={source}" if source else f"lang={cfg.lang.code}"
        return [f"{key}: method.neurons={m.neurons} has no mask for it (has: "
                f"{sorted(masks)}; method.neurons_langs gives the file's language order)"]
    return []
