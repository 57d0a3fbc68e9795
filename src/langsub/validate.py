"""Check a whole run config before any model is loaded; report every problem, one line each."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from langsub.data import CorpusError, corpus_file
from langsub.sparse import COMPONENTS


class ConfigError(ValueError):
    """One or more user errors; each line names the key, the value and what is allowed."""


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


def _method_problems(cfg: DictConfig) -> list[str]:
    from langsub.methods import METHODS

    m, out = cfg.method, []
    if m.name not in METHODS:
        return [f"method={m.name!r} is unknown; available: {sorted(METHODS)}"]
    comps = m.get("components")
    if comps is not None and (not comps or any(c not in COMPONENTS for c in comps)):
        out.append(f"method.components={list(comps)}: allowed is a non-empty subset of "
                   f"{list(COMPONENTS)}")
    if m.get("neurons") is not None and not Path(m.neurons).is_file():
        out.append(f"method.neurons={m.neurons}: file does not exist")
    for f in m.get("activation_files") or []:
        if not Path(f).is_file():
            out.append(f"method.activation_files: {f} does not exist")
    if m.get("match", "layer") not in ("layer", "global"):
        out.append(f"method.match={m.match!r}: allowed are 'layer', 'global'")
    if not isinstance(m.get("lr"), (int, float)) or m.lr <= 0:
        out.append(f"method.lr={m.get('lr')!r}: allowed is a number > 0")
    return out


def _data_problems(cfg: DictConfig) -> list[str]:
    out, d = [], cfg.data
    target, source = cfg.lang.code, cfg.method.get("neurons_from")
    if cfg.method.get("neurons") is None and cfg.method.name in ("lape", "random") \
            and (source or target) not in d.langs:
        key = f"method.neurons_from={source}" if source else f"lang={target}"
        out.append(f"{key}: not among the identification languages data.langs="
                   f"{list(d.langs)}")
    if target not in d.eval_langs:
        out.append(f"lang={target}: not among data.eval_langs={list(d.eval_langs)} "
                   "(its perplexity before and after is the result)")
    for key in ("ident_max_tokens", "eval_max_tokens"):
        v = d.get(key)
        if v is not None and (not isinstance(v, int) or v <= 0):
            out.append(f"data.{key}={v!r}: allowed is a positive integer or null")
    if d.get("corpus_dir") is not None:
        for lang in dict.fromkeys(list(d.langs) + list(d.eval_langs) + [target]):
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
    from langsub.hub import KNOWN_HUB_IDS, config_name

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


def _train_problems(cfg: DictConfig) -> list[str]:
    out, t = [], cfg.train
    for key in ("max_tokens", "max_steps", "val_every_n_steps", "checkpoint_every_n_steps"):
        v = t.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            out.append(f"train.{key}={v!r}: allowed is a positive integer"
                       + (" or null" if key in ("max_tokens", "max_steps") else ""))
    if t.get("max_tokens") is None and t.get("max_steps") is None:
        out.append("train.max_tokens and train.max_steps are both null: set a budget")
    return out


def _trainer_problems(cfg: DictConfig) -> list[str]:
    """Accumulation; FSDP: GPUs only (Lightning's rule), and an unsharded strategy for the
    passes that run before the method is applied."""
    t, out = cfg.trainer, []
    acc = t.get("accumulate_grad_batches") or 1
    if isinstance(acc, bool) or not isinstance(acc, int) or acc < 1:
        out.append(f"trainer.accumulate_grad_batches={acc!r}: allowed is a positive integer")
    s = t.get("strategy")
    target = str(s.get("_target_", "") if isinstance(s, DictConfig) else s or "")
    if "fsdp" not in target.lower():
        return out
    if t.get("accelerator") not in ("gpu", "cuda") and not target.endswith("CPUFSDPStrategy"):
        out.append(f"trainer.accelerator={t.get('accelerator')}: trainer.strategy={target} runs on "
                   "GPUs only (allowed: gpu, cuda); on CPU, trainer=fsdp_cpu exercises the same path")
    if t.get("eval_strategy") is None:
        out.append(f"trainer.eval_strategy=None: with {target} the statistics pass and the "
                   "'before' evaluation need an unsharded strategy (allowed: ddp or a DDPStrategy)")
    return out


def _model_problems(cfg: DictConfig) -> list[str]:
    m = cfg.model
    if m.get("path") is not None:
        if not Path(m.path).is_dir():
            return [f"model.path={m.path}: directory does not exist"]
        if not (Path(m.path) / "config.json").is_file():
            return [f"model.path={m.path}: no config.json (not a transformers model directory)"]
    elif m.get("hub_id") is None and m.get("arch") is None:
        return ["model.path and model.hub_id are both null: set one"]
    return []


def _shape_problems(cfg: DictConfig) -> list[str]:
    """Build the model on the meta device (no weights): gated FFN? does the mask fit?"""
    from langsub.dryrun import meta_model
    from langsub.ffn import UnsupportedModelError, find_ffns
    from langsub.lape import load_neurons

    try:
        ffns = find_ffns(meta_model(cfg.model))
    except (OSError, ValueError) as e:
        if isinstance(e, UnsupportedModelError):
            return [str(e)]
        return [f"model: cannot read its config: {str(e).splitlines()[0]}"]
    except UnsupportedModelError as e:
        return [str(e)]
    m = cfg.method
    if m.get("neurons") is None:
        return []
    try:
        masks = load_neurons(m.neurons, m.get("neurons_langs"), n_layers=len(ffns),
                             n_neurons=ffns[0].n_neurons)
    except ValueError as e:
        return [f"method.neurons: {e}"]
    source = m.get("neurons_from")
    if (source or cfg.lang.code) not in masks:
        key = f"method.neurons_from={source}" if source else f"lang={cfg.lang.code}"
        return [f"{key}: method.neurons={m.neurons} has no mask for it (has: "
                f"{sorted(masks)}; method.neurons_langs gives the file's language order)"]
    return []


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError listing every problem of `cfg`; cheap, loads no weights."""
    problems = _rho_problems(cfg)
    if not isinstance(cfg.threshold, (int, float)) or not 0 < cfg.threshold < 1:
        problems.append(f"threshold={cfg.threshold!r}: allowed is a number in (0, 1)")
    if cfg.scope not in ("global", "layer"):
        problems.append(f"scope={cfg.scope!r}: allowed are 'global', 'layer'")
    from langsub.analyses_run import wanted

    try:
        wanted(cfg)
    except ValueError as e:
        problems.append(str(e))
    problems += _method_problems(cfg) + _data_problems(cfg) + _train_problems(cfg)
    problems += _trainer_problems(cfg)
    from langsub.benchmarks import config_problems

    problems += config_problems((cfg.get("eval") or {}).get("lm_eval") or {})
    model_problems = _model_problems(cfg)
    problems += model_problems
    if not problems:  # only when the cheap checks pass: this one reads the model config
        problems += _shape_problems(cfg)
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))  # each problem once
