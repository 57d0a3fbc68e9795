"""Per-language corpus files: find, split, tokenize and pack into blocks (through `datasets`)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from langsub.errors import CorpusError
from langsub.io import fingerprint

if TYPE_CHECKING:
    import datasets

SPLITS = ("train", "valid", "test")


def corpus_file(corpus_dir: str | Path, lang: str) -> Path:
    """The file of one language (`<lang>.jsonl` or `<lang>.txt`), checked to exist and be non-empty."""
    d = Path(corpus_dir)
    for ext in (".jsonl", ".txt"):
        p = d / f"{lang}{ext}"
        if p.exists():
            if p.stat().st_size == 0:
                raise CorpusError(f"corpus file {p} is empty")
            return p
    have = sorted(p.stem for p in d.glob("*.jsonl")) + sorted(p.stem for p in d.glob("*.txt"))
    raise CorpusError(f"corpus file {d / (lang + '.jsonl')} does not exist (data.corpus_dir={d}, "
                      f"lang={lang}; languages there: {', '.join(have) or 'none'})")


def split_of_index(i: int, seed: int, fractions=(0.7, 0.15, 0.15)) -> str:
    """Seeded hash split for files without a `split` column (plain text, hub corpora)."""
    h = int(hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:8], 16) / 2**32
    return SPLITS[0] if h < fractions[0] else SPLITS[1] if h < fractions[0] + fractions[1] \
        else SPLITS[2]


def load_texts(path: Path, split: str, cache_dir: str, seed: int = 0) -> datasets.Dataset:
    """Rows of one split of a local corpus file, as a `datasets.Dataset` with a `text` column."""
    import datasets  # the data stack loads when data is read, not when a config is checked

    builder = "json" if path.suffix == ".jsonl" else "text"
    ds = datasets.load_dataset(builder, data_files=str(path), split="train",
                               cache_dir=str(Path(cache_dir) / "datasets"))
    if "split" in ds.column_names:
        return ds.filter(lambda r: r["split"] == split)
    return ds.filter(lambda r, i: split_of_index(i, seed) == split, with_indices=True)


@dataclass(frozen=True)
class SequenceFormat:
    """How blocks are laid out for a model: `bos` starts every block where the model expects
    one (never a target, not counted by the statistics); documents are joined by
    `separator` (token ids: EOS, or a string the model saw between documents)."""

    bos: int | None
    separator: tuple[int, ...]

    def describe(self) -> dict:
        return {"bos": self.bos, "separator": list(self.separator)}


def expects_bos(tokenizer) -> bool:
    """Whether the tokenizer puts a BOS first (Gemma, Llama-3, Mistral: yes; the embedded
    model: no) — what the model was trained on."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def sequence_format(tokenizer, add_bos="auto", separator=None) -> SequenceFormat:
    """`add_bos`: auto (as the tokenizer does) | true | false; `separator`: null (EOS) or a
    string put between documents."""
    bos = expects_bos(tokenizer) if add_bos == "auto" else bool(add_bos)
    if bos and tokenizer.bos_token_id is None:
        raise CorpusError("model.add_bos=true: the tokenizer has no BOS token")
    sep = [tokenizer.eos_token_id] if separator is None else \
        tokenizer(str(separator), add_special_tokens=False)["input_ids"]
    return SequenceFormat(tokenizer.bos_token_id if bos else None, tuple(sep))


_TOKENIZER_DIGESTS: dict[int, str | None] = {}


def tokenizer_digest(tokenizer) -> str | None:
    """A digest of everything a fast tokenizer does (its serialized pipeline: vocabulary,
    merges, normalizer, added tokens), computed once per tokenizer object; None for a slow
    tokenizer (nothing cheap identifies it)."""
    key = id(tokenizer)
    if key not in _TOKENIZER_DIGESTS:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        _TOKENIZER_DIGESTS[key] = None if backend is None else fingerprint(_pipeline(backend))
    return _TOKENIZER_DIGESTS[key]


def _pipeline(backend) -> dict:
    """The serialized pipeline without its truncation and padding: transformers sets those on
    the shared backend per call, so the last caller's `truncation=True` must not change the
    digest (and move a cached corpus or packed split to another key)."""
    spec = json.loads(backend.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return spec


def _fingerprints(ds, tokenizer, fmt, pad, block_size, score_separator=True
                  ) -> tuple[str | None, str | None]:
    """The cache fingerprints of the tokenize and pack steps, given explicitly: `datasets`
    would otherwise hash the closures, tokenizer included (seconds for a 262K vocabulary, or
    a random hash and no cache at all)."""
    digest, parent = tokenizer_digest(tokenizer), getattr(ds, "_fingerprint", None)
    if digest is None or parent is None:
        return None, None
    tok = fingerprint("tokenize/1", parent, digest, list(fmt.separator)) if score_separator \
        else fingerprint("tokenize/2", parent, digest, list(fmt.separator), "separator unscored")
    return tok, fingerprint("pack/1", tok, fmt.bos, pad, block_size)


def pack(ds: datasets.Dataset, tokenizer, block_size: int, max_tokens: int | None = None,
         num_proc: int | None = None, fmt: SequenceFormat | None = None,
         score_separator: bool = True) -> datasets.Dataset:
    """Tokenize, join documents with the separator (EOS by default) and cut into blocks of
    `block_size` tokens; with a BOS, each block is BOS + block_size - 1 tokens. The last
    block is padded.

    Pads carry attention_mask 0 and label -100, so they count in neither loss nor statistics;
    the BOS has attention_mask 1 and label -100: attended to, never a target, not counted.
    `score_separator=False` (every measured perplexity): the separator's tokens get label
    -100 too — attended to, never a target — so a perplexity counts the language's tokens and
    not how well the model predicts the document format (Tatoeba's ~10-token sentences make
    one target in ten a separator). Training and identification keep them (True).
    """
    fmt = fmt or SequenceFormat(None, (tokenizer.eos_token_id,))
    pad = tokenizer.pad_token_id
    pad = tokenizer.eos_token_id if pad is None else pad
    sep, bos = list(fmt.separator), fmt.bos
    body = block_size - (bos is not None)
    tail = sep if score_separator else [-t - 1 for t in sep]  # appended to every document

    def tok(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        # numpy rows: datasets writes them to Arrow directly (python lists are walked item
        # by item, minutes for a real tokenizer's corpus); the separator's tokens are
        # negated (ids are >= 0) so `group` knows them without a second column
        return {"ids": [np.asarray(x + tail, dtype=np.int64) for x in ids]}

    def group(batch):
        rows = [np.asarray(x, dtype=np.int64) for x in batch["ids"]]
        flat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        scored = flat >= 0
        flat = np.where(scored, flat, -flat - 1)
        n = -(-len(flat) // body)
        padded = np.full(n * body, pad, dtype=np.int64)
        padded[: len(flat)] = flat
        tokens = padded.reshape(n, body)
        real = (np.arange(n * body) < len(flat)).reshape(n, body)
        target = np.zeros(n * body, dtype=bool)
        target[: len(flat)] = scored
        target = target.reshape(n, body)
        k = 0 if bos is None else 1  # the BOS column
        inp = np.concatenate([np.full((n, k), bos or 0, dtype=np.int64), tokens], 1)
        mask = np.concatenate([np.ones((n, k), dtype=np.int64), real.astype(np.int64)], 1)
        labels = np.concatenate([np.full((n, k), -100, dtype=np.int64),
                                 np.where(target, tokens, -100)], 1)
        return {"input_ids": inp, "attention_mask": mask, "labels": labels}

    fp_tok, fp_pack = _fingerprints(ds, tokenizer, fmt, pad, block_size, score_separator)
    ds = ds.map(tok, batched=True, remove_columns=ds.column_names, num_proc=num_proc,
                desc="tokenize", new_fingerprint=fp_tok)
    # one group over the whole split: a single trailing partial block per language
    ds = ds.map(group, batched=True, batch_size=None, remove_columns=["ids"], desc="pack",
                new_fingerprint=fp_pack)
    if max_tokens is not None:
        ds = ds.select(range(min(len(ds), -(-int(max_tokens) // block_size))))
    return ds.with_format("torch")
