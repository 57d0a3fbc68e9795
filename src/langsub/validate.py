"""Check a whole run config before any model is loaded; report every problem, one line each.

Scalar keys are checked by a table of (key, rule) rows; the method's keys by its config
dataclass; the data, trainer and model by the functions below. The last check builds the
model on the meta device (no weights) and only runs when everything else passed.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from langsub.data.corpus import corpus_file
from langsub.errors import ConfigError, CorpusError, MaskError, UnsupportedModelError
from langsub.model.quantize import QUANTIZATIONS
from langsub.model.ffn import find_ffns

from langsub.methods.precision import DTYPES
PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")


def _int(lo=None, hi=None, null=False):
    """Rule: an integer in [lo, hi] (or null)."""
    def rule(v):
        if v is None:
            return null
        return isinstance(v, int) and not isinstance(v, bool) and (lo is None or v >= lo) \
            and (hi is None or v <= hi)
    bounds = f" >= {lo}" if hi is None and lo is not None else f" in [{lo}, {hi}]" if lo is not None else ""
    return rule, f"an integer{bounds}" + (" or null" if null else "")


def _num(lo=None, hi=None, lo_open=False, hi_open=False, null=False):
    """Rule: a number in the given (open or closed) interval (or null)."""
    def rule(v):
        if v is None:
            return null
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            return False
        return (lo is None or (v > lo if lo_open else v >= lo)) and \
            (hi is None or (v < hi if hi_open else v <= hi))
    left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
    where = f" in {left}{lo}, {'inf' if hi is None else hi}{right}" if lo is not None else ""
    return rule, f"a number{where}" + (" or null" if null else "")


def _choice(*allowed):
    return (lambda v: v in allowed), "one of " + ", ".join(repr(a) for a in allowed)


def _bool():
    return (lambda v: isinstance(v, bool)), "true or false"


def _langs(min_len=1):
    def rule(v):
        return isinstance(v, (list, tuple, ListConfig)) and len(v) >= min_len and \
            all(isinstance(x, str) and x for x in v) and len(set(v)) == len(v)
    return rule, f"a list of at least {min_len} distinct language codes"


RULES = {
    "seed": _int(0), "threshold": _num(0, 1, True, True), "scope": _choice("global", "layer"),
    "alpha": _num(0, 1, True, True),
    "objective": _choice("target", "target_and_general"),
    "general": _langs(1), "analysis_eval_tokens": _int(1), "resume": _bool(),
    "dry_run": _bool(), "export": _bool(), "debug_errors": _bool(),
    "model.dtype": _choice(*DTYPES), "model.quantize": _choice(None, *QUANTIZATIONS),
    "model.revision": ((lambda v: v is None or isinstance(v, str) and v != ""),
                       "a hub commit, branch or tag, or null"), "model.gradient_checkpointing": _bool(),
    "model.attn_implementation": _choice(None, "eager", "sdpa", "flash_attention_2",
                                         "flash_attention_3", "flex_attention"),
    # LAPE's entropy is over languages: it needs at least two to tell them apart
    "data.langs": _langs(2), "data.eval_langs": _langs(1), "data.block_size": _int(2),
    "data.batch_size": _int(1), "data.eval_batch_size": _int(1), "data.num_workers": _int(0),
    "data.track_blocks": _int(0, null=True),
    "data.ident_max_tokens": _int(1, null=True), "data.eval_max_tokens": _int(1, null=True),
    "train.lr": _num(0, lo_open=True), "train.weight_decay": _num(0),
    "train.warmup_ratio": _num(0, 1, hi_open=True), "train.max_tokens": _int(1, null=True),
    "train.max_steps": _int(1, null=True), "train.epochs": _int(1, null=True),
    "train.val_every_n_steps": _int(1),
    "train.checkpoint_every_n_steps": _int(1),
    "train.early_stopping_patience": _int(1, null=True),
    "trainer.precision": _choice(*PRECISIONS),
    "trainer.gradient_clip_val": _num(0, lo_open=True, null=True),
    "trainer.accumulate_grad_batches": _int(1, null=True),
    "auto_budget.min_neurons": _int(1, null=True),
    "auto_budget.min_fraction_params": _num(0, 1, lo_open=True, null=True),
}


def _rule_problems(cfg: DictConfig) -> list[str]:
    out = []
    for key, (ok, allowed) in RULES.items():
        v = OmegaConf.select(cfg, key, default=None)
        if isinstance(v, ListConfig):
            v = list(v)
        if not ok(v):
            out.append(f"{key}={v!r}: allowed is {allowed}")
    return out


def _rho_problems(cfg: DictConfig) -> list[str]:
    rho = cfg.rho
    if rho == "auto":
        b = cfg.get("auto_budget") or {}
        if b.get("min_neurons") is None and b.get("min_fraction_params") is None:
            return ["rho=auto needs a budget: set auto_budget.min_neurons or "
                    "auto_budget.min_fraction_params"]
        return []
    if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0 < rho <= 1:
        return [f"rho={rho!r}: allowed is a number in (0, 1] or 'auto'"]
    return []


def _method_problems(cfg: DictConfig):
    """(problems, the method or None): its config dataclass checks every key; then what its
    trainable fp32 masters need from the model dtype, the precision and the strategy."""
    from langsub.methods import build_method
    from langsub.methods.precision import precision_problems

    try:
        method = build_method(OmegaConf.to_container(cfg.method, resolve=True))
    except ConfigError as e:
        return str(e).splitlines(), None
    if cfg.model.get("dtype") not in DTYPES or cfg.trainer.get("precision") not in PRECISIONS:
        return [], method  # the rules table names those
    return precision_problems(method, cfg.model.dtype, cfg.trainer.precision,
                              sharded="fsdp" in _strategy(cfg).lower()) \
        + _quantize_problems(cfg, method), method


def _quantize_problems(cfg: DictConfig, method) -> list[str]:
    """A quantized base: a method that keeps it frozen, no sharding, a backend that runs here."""
    from langsub.model.quantize import backend_problems

    q = cfg.model.get("quantize")
    if q not in QUANTIZATIONS:
        return []  # null, or a bad value the rules table names
    out = []
    if not method.supports_quantized:
        out.append(f"method={method.name} with model.quantize={q}: it trains the base's own "
                   "weights, which a quantized base stores packed and frozen; allowed is "
                   "method=lape, random, lora or ia3, or model.quantize=null")
    if "fsdp" in _strategy(cfg).lower():
        out.append(f"model.quantize={q} under FSDP: FSDP cannot shard packed weights here; "
                   "use a strategy without sharding, or model.quantize=null")
    if cfg.get("dry_run"):  # the plan runs on the meta device: nothing is quantized
        return out
    return out + backend_problems(q, cfg.trainer.get("accelerator", "auto"))


def _data_problems(cfg: DictConfig, method) -> list[str]:
    out, d = [], cfg.data
    target = cfg.lang.code
    langs, eval_langs = list(d.get("langs") or []), list(d.get("eval_langs") or [])
    if method is not None and method.needs_neurons and cfg.method.get("neurons") is None \
            and method.source(target) not in langs:
        source = cfg.method.get("neurons_from")
        key = f"method.neurons_from={source}" if source else f"lang={target}"
        out.append(f"{key}: not among the identification languages data.langs={langs}")
    if target not in eval_langs:
        out.append(f"lang={target}: not among data.eval_langs={eval_langs} "
                   "(its perplexity before and after is the result)")
    val = list(d.get("val_langs") or [])
    if any(l not in eval_langs for l in val):
        out.append(f"data.val_langs={val}: {[l for l in val if l not in eval_langs]} not among "
                   f"data.eval_langs={eval_langs}")
    missing = [l for l in cfg.get("general") or [] if l not in eval_langs]
    if missing:
        out.append(f"general={list(cfg.general)}: {missing} not among data.eval_langs="
                   f"{eval_langs} (general perplexity is measured on them)")
    if d.get("corpus_dir") is not None:
        for lang in dict.fromkeys(langs + eval_langs + [target]):
            try:
                corpus_file(d.corpus_dir, lang)
            except CorpusError as e:
                out.append(str(e))
    elif d.get("source") is None:
        out.append("data.corpus_dir and data.source are both null: set one")
    else:
        out += _source_problems(cfg)
    return out


def _source_problems(cfg: DictConfig) -> list[str]:
    """A streamed corpus: known hub id or local directory, a config name for every language,
    finite budgets."""
    from langsub.data.hub import KNOWN_HUB_IDS, config_name

    d, target, out = cfg.data, cfg.lang.code, []
    ident = list(dict.fromkeys(list(d.langs) + [target]))
    specs = [("data.source", d.source, ident if d.get("eval") else
              list(dict.fromkeys(ident + list(d.eval_langs))))]
    if d.get("eval") is not None:
        specs.append(("data.eval", d.eval, list(dict.fromkeys(list(d.eval_langs) + [target]))))
        for k in ("valid_split", "test_split"):
            if not d.eval.get(k):
                out.append(f"data.eval.{k}={d.eval.get(k)!r}: allowed is a split name (FLORES+: "
                           "dev, devtest)")
    for key, spec, langs in specs:
        path = str(spec.path)
        local = Path(path).is_dir()
        if not local and path not in KNOWN_HUB_IDS:
            out.append(f"{key}.path={path}: neither a known hub id ({', '.join(KNOWN_HUB_IDS)}) "
                       "nor an existing local directory")
            continue
        have = _local_configs(path) if local else None
        for lang in langs:
            try:
                name = config_name(spec.name, lang, d.lang_dir, key)
            except CorpusError as e:
                out.append(str(e))
                continue
            if have is not None and name not in have:
                out.append(f"{key}.path={path}: no config {name!r} for language {lang} (has: "
                           f"{', '.join(have) or 'none: add a README.md with configs, as on the hub'})")
    if d.get("ident_max_tokens") is None:
        out.append("data.ident_max_tokens=None: a streamed corpus needs a budget (a positive integer)")
    if d.get("eval") is None and d.get("eval_max_tokens") is None:
        out.append("data.eval_max_tokens=None: held-out valid/test of a streamed corpus need a "
                   "budget (a positive integer), or set data.eval (FLORES+)")
    return out


def _local_configs(path: str) -> list[str]:
    """The config names a local directory declares (README.md `configs:`, as on the hub)."""
    import datasets

    try:
        return list(datasets.get_dataset_config_names(path))
    except Exception:  # no usable README: nothing is declared
        return []


def _strategy(cfg: DictConfig) -> str:
    """The trainer's strategy as a name: its `_target_` or the string (`ddp`, ``)."""
    s = cfg.trainer.get("strategy")
    return str(s.get("_target_", "") if isinstance(s, DictConfig) else s or "")


def _devices_ok(v) -> bool:
    """Lightning's `devices`: n >= 1, -1 (all), 'auto', a list of indices or "0,1"."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return v >= 1 or v == -1
    if isinstance(v, (list, ListConfig)):
        return len(v) > 0 and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                  for i in v)
    if isinstance(v, str):
        parts = [x.strip() for x in v.split(",") if x.strip()]
        return v == "auto" or v == "-1" or (bool(parts) and all(x.isdigit() for x in parts)
                                            and (len(parts) > 1 or int(parts[0]) >= 1
                                                 or v.endswith(",")))
    return False


def _trainer_problems(cfg: DictConfig) -> list[str]:
    """Accumulation; FSDP: GPUs only (Lightning's rule), and an unsharded strategy for the
    passes that run before the method is applied."""
    t, out = cfg.trainer, []
    devices = t.get("devices")
    if devices is not None and not _devices_ok(devices):
        out.append(f"trainer.devices={devices!r}: allowed is a positive integer, a list of "
                   "device indices, 'auto' or -1 (all)")
    target = _strategy(cfg)
    if "fsdp" not in target.lower():
        return out
    if t.get("accelerator") not in ("gpu", "cuda") and not target.endswith("CPUFSDPStrategy"):
        out.append(f"trainer.accelerator={t.get('accelerator')}: trainer.strategy={target} runs on "
                   "GPUs only (allowed: gpu, cuda); on CPU, trainer=fsdp_cpu exercises the same path")
    if t.get("eval_strategy") is None:
        out.append(f"trainer.eval_strategy=None: with {target} the statistics pass and the "
                   "'before' evaluation need an unsharded strategy (allowed: ddp or a DDPStrategy)")
    return out


def _shape_problems(cfg: DictConfig) -> list[str]:
    """Build the model on the meta device (no weights): gated FFN? does the mask fit?"""
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


def _recipe_langs_problems(cfg: DictConfig) -> list[str]:
    """A recipe (experiment=paper) identifies over a fixed language set: all must be there."""
    want = list(OmegaConf.select(cfg, "recipe.ident_langs", default=None) or [])
    missing = [l for l in want if l not in list(cfg.data.get("langs") or [])]
    if missing:
        return [f"data.langs={list(cfg.data.langs)}: the recipe identifies over {want}; "
                f"missing {missing}"]
    return []


def _budget_problems(cfg: DictConfig) -> list[str]:
    t = cfg.train
    if t.get("max_tokens") is None and t.get("max_steps") is None:
        return ["train.max_tokens and train.max_steps are both null: set a budget"]
    return []


def _recipe_problems(cfg: DictConfig) -> list[str]:
    """The optimizer and schedule are objects built from config: each needs a `_target_`."""
    out = []
    for key, required in (("optimizer", True), ("scheduler", False)):
        node = cfg.get(key)
        if node is None and not required:
            continue
        if not isinstance(node, DictConfig) or not node.get("_target_"):
            out.append(f"{key}={OmegaConf.to_container(node) if isinstance(node, DictConfig) else node!r}: "
                       f"allowed is a config with a _target_ (conf/{key}/*.yaml)"
                       + ("" if required else " or null"))
    return out


# Stages that check their own keys: each module's `config_problems(cfg) -> list[str]`
# (a new stage with keys of its own adds its module here, not its rules to this file).
STAGE_CHECKS = ("langsub.evaluation.benchmarks", "langsub.neurons.scorers",
                "langsub.analysis.fidelity", "langsub.model.sources")


def _stage_problems(cfg: DictConfig) -> list[str]:
    import importlib

    return [p for name in STAGE_CHECKS for p in importlib.import_module(name).config_problems(cfg)]


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of `cfg`; cheap, loads no weights."""
    from langsub.analysis import wanted

    problems = _rule_problems(cfg) + _rho_problems(cfg)
    try:
        wanted(cfg.get("analysis"))
    except ConfigError as e:
        problems.append(str(e))
    method_problems, method = _method_problems(cfg)
    problems += method_problems + _data_problems(cfg, method) + _budget_problems(cfg)
    problems += _trainer_problems(cfg) + _recipe_problems(cfg) + _recipe_langs_problems(cfg)
    problems += _stage_problems(cfg)
    if not problems:  # only when the cheap checks pass: this one reads the model config
        problems += _shape_problems(cfg)
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))  # each problem once
