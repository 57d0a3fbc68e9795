"""Language fidelity: does the model continue a prompt in the prompt's language?

    python train.py model=gemma3_270m lang=af analysis=[fidelity]

Greedy continuations of the first halves of held-out test sentences, each classified by a
language identifier that ships its model in its package (py3langid: langid.py's 97
languages); the share written in the target language (line-level pass rate, as Marchisio
et al. 2024 measure language confusion) and the most frequent other language, before and
after training. Prompts and continuations go to <run dir>/analysis/fidelity_<phase>.jsonl.
"""
from __future__ import annotations

import functools
import json
from collections import Counter

import torch

from langsub.analysis.registry import Analysis, register
from langsub.io import atomic_write_text

SPACELESS = {"zh", "ja", "th"}  # prompts cut by characters, not words


@functools.lru_cache(maxsize=1)
def identifier():
    """py3langid's classifier over all its languages (its model ships in the package)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def known_langs() -> set[str]:
    return set(identifier().nb_classes)


def config_problems(cfg) -> list[str]:
    """`analysis` with fidelity: the identifier is installed and knows the target language."""
    names = cfg.get("analysis") or []
    names = [names] if isinstance(names, str) else list(names)
    if "fidelity" not in names and "all" not in names:
        return []
    try:
        langs = known_langs()
    except ImportError:
        return ["analysis=fidelity needs py3langid: pip install -e \".[dev]\" (or pip install py3langid)"]
    code = cfg.lang.code
    if code not in langs:
        return [f"analysis=fidelity with lang={code}: the language identifier (py3langid) does "
                f"not know it; it knows {len(langs)} languages, e.g. {', '.join(sorted(langs)[:12])}, …"]
    f = cfg.get("fidelity") or {}
    if not isinstance(f.get("prompts"), int) or f.get("prompts") < 1:
        return [f"fidelity.prompts={f.get('prompts')!r}: allowed is an integer >= 1"]
    if not isinstance(f.get("max_new_tokens"), int) or f.get("max_new_tokens") < 1:
        return [f"fidelity.max_new_tokens={f.get('max_new_tokens')!r}: allowed is an integer >= 1"]
    return []


def prompts(texts: list[str], lang: str, n: int, min_words: int = 6) -> list[str]:
    """The first halves of the first `n` sentences long enough to be cut (6 words; 12
    characters for languages written without spaces)."""
    out = []
    for t in texts:
        t = " ".join(t.split())
        if lang in SPACELESS:
            if len(t) >= 2 * min_words:
                out.append(t[: len(t) // 2])
        else:
            words = t.split()
            if len(words) >= min_words:
                out.append(" ".join(words[: len(words) // 2]))
        if len(out) == n:
            break
    return out


def test_prompts(cfg, dm) -> list[str]:
    """The target's prompts (held-out test sentences, first halves), read before any model
    loads; a language whose test split has no sentence long enough is refused in one line."""
    from langsub.data.corpus import load_texts
    from langsub.errors import CorpusError

    target, n = cfg.lang.code, int((cfg.get("fidelity") or {}).get("prompts", 20))
    rows = load_texts(dm.corpus_path(target), "test", cfg.paths.cache_dir, cfg.seed)
    out = prompts(list(rows["text"]), target, n)
    if not out:
        raise CorpusError(f"analysis=fidelity with lang={target}: its test split has no sentence "
                          f"of 6 words or more to cut into a prompt ({len(rows)} rows)")
    return out


@torch.no_grad()
def continue_greedy(model, tok, texts: list[str], max_new_tokens: int, bos: bool,
                    batch_size: int = 8) -> list[str]:
    """Greedy continuations (prompt removed), BOS first where the model expects one."""
    side, tok.padding_side = tok.padding_side, "left"
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i: i + batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=False)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            if bos:
                ids = torch.cat([torch.full((len(ids), 1), tok.bos_token_id), ids], 1)
                mask = torch.cat([torch.ones(len(ids), 1, dtype=mask.dtype), mask], 1)
            gen = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                                 max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            out += tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return out


def first_line(text: str) -> str:
    """The continuation's first line with a letter in it (what a line-level pass rate judges).
    A line of punctuation alone (the "." that ends the prompt's sentence) carries no language:
    the identifier would still name one (py3langid says "sr" for "."), so it is skipped."""
    return next((l.strip() for l in text.splitlines() if any(c.isalpha() for c in l)), "")


def classify(continuations: list[str]) -> list[str]:
    """The language of each continuation's first line with a letter; "none" where it has none."""
    ident = identifier()
    return [ident.classify(l)[0] if l else "none" for l in map(first_line, continuations)]


def phase_metrics(found: list[str], target: str, phase: str) -> dict:
    """metrics.json's fidelity_<phase>/… keys for the languages `found`."""
    res = fidelity(found, target)
    out = {f"fidelity_{phase}/target_share": res["target_share"],
           f"fidelity_{phase}/top_other": res["top_other"],
           f"fidelity_{phase}/top_other_share": res["top_other_share"],
           f"fidelity_{phase}/n": res["n"]}
    out.update({f"fidelity_{phase}/share/{l}": c / res["n"] for l, c in res["langs"].items()})
    return out


def rescore(run_dir) -> dict:
    """Classify a finished run's stored continuations (analysis/fidelity_<phase>.jsonl) again
    with the current rule, and rewrite those files and metrics.json's fidelity keys: the
    greedy continuations are the measurement; no model is loaded."""
    from pathlib import Path

    from langsub.errors import ConfigError

    run_dir = Path(run_dir)
    m_path = run_dir / "metrics.json"
    files = {ph: run_dir / "analysis" / f"fidelity_{ph}.jsonl" for ph in ("before", "after")}
    if not m_path.is_file() or not any(f.is_file() for f in files.values()):
        raise ConfigError(f"{run_dir}: no metrics.json with analysis/fidelity_<phase>.jsonl "
                          "(a run made with analysis=[fidelity])")
    metrics = json.loads(m_path.read_text())
    target = metrics["lang"]
    new = {}
    for phase, f in files.items():
        if not f.is_file():
            continue
        rows = [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
        found = classify([r["continuation"] for r in rows])
        atomic_write_text(f, "".join(json.dumps({**r, "lang": l}, ensure_ascii=False) + "\n"
                                     for r, l in zip(rows, found)))
        new.update(phase_metrics(found, target, phase))
    kept = {k: v for k, v in metrics.items()
            if not any(k.startswith(f"fidelity_{ph}/") for ph in files)}
    atomic_write_text(m_path, json.dumps({**kept, **new}, indent=1))
    return new


def fidelity(langs: list[str], target: str) -> dict:
    """Share in the target language, the most frequent other language and its share."""
    n = len(langs)
    counts = Counter(langs)
    others = [(l, c) for l, c in counts.most_common() if l != target]
    top, top_n = others[0] if others else (None, 0)
    return {"target_share": counts[target] / n if n else float("nan"), "top_other": top,
            "top_other_share": top_n / n if n else float("nan"), "n": n,
            "langs": dict(counts.most_common())}


@register
class Fidelity(Analysis):
    """Language fidelity of greedy continuations, before and after."""

    name = "fidelity"
    needs_after = True

    def _measure(self, ctx, model, phase: str) -> dict:
        cfg, target = ctx.cfg, ctx.target
        f = cfg.get("fidelity") or {}
        ps = test_prompts(cfg, ctx.dm)
        fmt = ctx.dm.fmt
        was_training = model.training
        model.eval()
        conts = continue_greedy(model, ctx.tokenizer, ps, int(f.get("max_new_tokens", 32)),
                                bos=fmt is not None and fmt.bos is not None)
        model.train(was_training)
        found = classify(conts)
        out = phase_metrics(found, target, phase)
        atomic_write_text(ctx.out_dir / f"fidelity_{phase}.jsonl", "".join(
            json.dumps({"prompt": p, "continuation": c, "lang": l}, ensure_ascii=False) + "\n"
            for p, c, l in zip(ps, conts, found)))
        if ctx.logger is not None:
            ctx.logger.log_metrics({f"fidelity_{phase}/target_share": out[f"fidelity_{phase}/target_share"]})
        return out

    def before(self, ctx, model):
        return self._measure(ctx, model, "before")

    def after(self, ctx, model, delta):
        return self._measure(ctx, model, "after")
