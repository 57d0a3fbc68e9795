"""Hub corpora (GlotCC-V1, CulturaX, Wikipedia; FLORES+ for evaluation) as local corpus files.

A language is streamed with `datasets.load_dataset(path, name, split=..., streaming=True)`
until its token budgets are met, then written once as `<lang>.jsonl` with a `split` column,
the embedded corpus's format: packing, caching and statistics then take the same path.
`path` is a hub id or a local directory laid out like the hub repository (its README.md
`configs:` and data files), so an offline copy or a test stand-in is read the same way.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

from omegaconf import OmegaConf

from langsub.data.corpus import SPLITS, split_of_index, tokenizer_digest
from langsub.errors import CorpusError
from langsub.io import atomic_write_text, fingerprint

KNOWN_HUB_IDS = ("cis-lmu/GlotCC-V1", "uonlp/CulturaX", "wikimedia/wikipedia",
                 "openlanguagedata/flores_plus")


def lang_fields(code: str, lang_dir: str | Path) -> dict:
    """The fields of conf/lang/<code>.yaml (code, name, flores, glotcc, wiki, …)."""
    p = Path(lang_dir) / f"{code}.yaml"
    if not p.is_file():
        have = sorted(q.stem for q in Path(lang_dir).glob("*.yaml"))
        raise CorpusError(f"language {code} (data.langs, data.eval_langs or lang): no {p}, "
                          f"so no hub config name; available: {', '.join(have)}")
    return OmegaConf.to_container(OmegaConf.load(p), resolve=True)


def config_name(template: str, code: str, lang_dir: str | Path, key: str = "data.source") -> str:
    """The dataset config of language `code`: `template` filled from its lang YAML."""
    fields = lang_fields(code, lang_dir)
    try:
        return template.format(**fields)
    except KeyError as e:
        raise CorpusError(f"{key}.name={template!r}: conf/lang/{code}.yaml has no field "
                          f"{e.args[0]!r} (it has: {', '.join(fields)})") from None


def round_up(n: int, block: int) -> int:
    return -(-int(n) // block) * block


def take_budget(texts: Iterable[str], n_tokens: Callable[[list[str]], list[int]],
                budgets: dict[str, int], assign: Callable[[int], str],
                batch: int = 64) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Route documents to splits (`assign(index)`) until each split holds its token budget.

    Reads `texts` only as far as needed; a split whose budget is met takes no more documents
    (they are skipped, not moved). Empty documents are skipped. Returns the documents and
    the tokens of each split. `n_tokens` counts a batch of documents (EOS included).
    """
    out = {s: [] for s in budgets}
    got = {s: 0 for s in budgets}
    full = lambda: all(got[s] >= budgets[s] for s in budgets)  # noqa: E731
    if full():
        return out, got
    buf: list[tuple[int, str]] = []

    def flush() -> bool:
        counts = n_tokens([t for _, t in buf])
        for (i, text), n in zip(buf, counts):
            s = assign(i)
            if s in got and got[s] < budgets[s]:
                out[s].append(text)
                got[s] += n
                if full():
                    return True
        buf.clear()
        return False

    for i, text in enumerate(texts):
        if text and text.strip():
            buf.append((i, text))
        if len(buf) >= batch and flush():
            return out, got
    if buf:
        flush()
    return out, got


def stream_texts(spec: dict, name: str, split: str) -> Iterator[str]:
    """The text column of one dataset config, streamed (hub id or local directory)."""
    import datasets

    kw = {"revision": spec["revision"]} if spec.get("revision") else {}
    try:
        ds = datasets.load_dataset(spec["path"], name=name, split=split, streaming=True, **kw)
    except ValueError as e:  # an unknown config or split: say which
        raise CorpusError(f"{spec['path']} config {name!r} split {split!r}: "
                          f"{str(e).splitlines()[0]}") from None
    col = spec.get("text_column", "text")
    for row in ds:
        if col not in row:
            raise CorpusError(f"text_column={col!r}: {spec['path']} {name} has columns "
                              f"{sorted(row)}")
        yield row[col]


def local_listing(path: str | Path) -> str | None:
    """A digest of a local directory's files (path, size, mtime): a stand-in that changes
    invalidates what was materialised from it. None for a hub id."""
    p = Path(path)
    if not p.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file() and ".cache" not in q.parts):
        st = f.stat()
        h.update(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def tokenizer_id(tokenizer) -> str:
    """What decides token counts: the tokenizer's full pipeline where it has one."""
    return tokenizer_digest(tokenizer) or fingerprint(tokenizer.name_or_path, len(tokenizer))


class HubCorpus:
    """Per-language corpus files materialised from a streamed source (+ an optional eval source).

    source / eval_source: {path, name (template over conf/lang fields), split, text_column,
    revision}; eval_source also has valid_split and test_split (FLORES+: dev, devtest).
    Without an eval source, valid/test are held-out documents of the source (hash split).
    """

    def __init__(self, source: dict, eval_source: dict | None, lang_dir: str, cache_dir: str,
                 seed: int = 0):
        self.source, self.eval_source = dict(source), dict(eval_source) if eval_source else None
        self.lang_dir, self.cache_dir, self.seed = lang_dir, cache_dir, seed

    def identity(self, lang: str, train_tokens: int) -> dict:
        """What the first `train_tokens` train tokens of `lang` depend on (stats cache key).

        Streaming order is fixed and each split takes documents in that order, so a larger
        train budget only appends: the same prefix, whatever the target language is.
        """
        return {"source": self.source, "name": config_name(self.source["name"], lang, self.lang_dir),
                "local": local_listing(self.source["path"]), "heldout": self.eval_source is None,
                "seed": self.seed, "train_tokens": train_tokens}

    def file(self, lang: str, tokenizer, budgets: dict[str, int]) -> Path:
        """`<cache>/corpora/<key>/<lang>.jsonl`, streamed and written once (locked, atomic)."""
        from filelock import FileLock

        ev = self.eval_source
        key = fingerprint(self.identity(lang, budgets["train"]), budgets, tokenizer_id(tokenizer),
                          ev, ev and config_name(ev["name"], lang, self.lang_dir, "data.eval"),
                          ev and local_listing(ev["path"]))
        path = Path(self.cache_dir) / "corpora" / key / f"{lang}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):  # one process streams, the others wait and read
            if not path.exists():
                self._materialise(path, lang, tokenizer, budgets)
        return path

    def _materialise(self, path: Path, lang: str, tokenizer, budgets: dict[str, int]) -> None:
        def n_tokens(texts):
            return [len(x) + 1 for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]

        src, ev = self.source, self.eval_source
        stream_budgets = budgets if ev is None else {"train": budgets["train"]}
        assign = (lambda i: split_of_index(i, self.seed)) if ev is None else (lambda i: "train")
        docs, got = {s: [] for s in SPLITS}, {}
        if any(stream_budgets.values()):
            name = config_name(src["name"], lang, self.lang_dir)
            taken, got = take_budget(stream_texts(src, name, src.get("split", "train")),
                                     n_tokens, stream_budgets, assign)
            docs.update(taken)
            short = {s: f"{got[s]:,}/{b:,}" for s, b in stream_budgets.items() if got[s] < b}
            print(f"[langsub] data {lang}: {src['path']} {name}: "
                  + ", ".join(f"{s} {got[s]:,} tokens" for s in stream_budgets)
                  + (f" (the stream ended below the budget: {short})" if short else ""))
        if ev is not None:
            name = config_name(ev["name"], lang, self.lang_dir, "data.eval")
            for split, key in (("valid", "valid_split"), ("test", "test_split")):
                docs[split] = [t for t in stream_texts(ev, name, ev[key]) if t and t.strip()]
            print(f"[langsub] data {lang}: {ev['path']} {name}: valid {len(docs['valid'])}, "
                  f"test {len(docs['test'])} documents")
        rows = [json.dumps({"text": t, "split": s}, ensure_ascii=False)
                for s in SPLITS for t in docs[s]]
        atomic_write_text(path, "\n".join(rows) + "\n")
