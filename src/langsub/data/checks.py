"""The data stage's keys, checked before anything loads: the languages agree with each other
and with the method, and the text exists (a corpus directory's files, or a streamed source's
hub id or directory, a config name for every language, finite budgets)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from langsub.data.corpus import corpus_file
from langsub.errors import CorpusError
from langsub.methods.checks import built


def config_problems(cfg: DictConfig) -> list[str]:
    """`data.*` against `lang`, `general` and the method; then where the text comes from."""
    out, d = [], cfg.data
    target = cfg.lang.code
    langs, eval_langs = list(d.get("langs") or []), list(d.get("eval_langs") or [])
    method = built(cfg)[1]  # None: its own problems are named by langsub.methods.checks
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
