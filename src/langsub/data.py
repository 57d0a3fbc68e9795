"""Per-language corpora as a LightningDataModule: load, tokenize, pack, cache, serve.

Everything goes through `datasets` (the json/text builders for local files, the hub
builders for GlotCC/CulturaX/Wikipedia), so the embedded corpus and a hub corpus take the
same path; only the config differs. Tokenized, packed blocks are cached on disk by
`datasets` under `cache_dir`, keyed by the tokenizer and the source files.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader, RandomSampler
from torchdata.stateful_dataloader import StatefulDataLoader

SPLITS = ("train", "valid", "test")
warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata on torch>=2.9


class CorpusError(ValueError):
    """A corpus file is missing, empty or too small for one block."""


def corpus_file(corpus_dir: str | Path, lang: str) -> Path:
    """The file of one language (`<lang>.jsonl` or `<lang>.txt`), checked to exist and be non-empty."""
    d = Path(corpus_dir)
    for ext in (".jsonl", ".txt"):
        p = d / f"{lang}{ext}"
        if p.exists():
            if p.stat().st_size == 0:
                raise CorpusError(f"corpus file {p} is empty")
            return p
    raise CorpusError(f"corpus file {d / (lang + '.jsonl')} does not exist "
                      f"(data.corpus_dir={d}, lang={lang})")


def split_of_index(i: int, seed: int, fractions=(0.7, 0.15, 0.15)) -> str:
    """Seeded hash split for files without a `split` column (plain text, hub corpora)."""
    h = int(hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:8], 16) / 2**32
    return SPLITS[0] if h < fractions[0] else SPLITS[1] if h < fractions[0] + fractions[1] \
        else SPLITS[2]


def load_texts(path: Path, split: str, cache_dir: str, seed: int = 0) -> datasets.Dataset:
    """Rows of one split of a local corpus file, as a `datasets.Dataset` with a `text` column."""
    builder = "json" if path.suffix == ".jsonl" else "text"
    ds = datasets.load_dataset(builder, data_files=str(path), split="train",
                               cache_dir=str(Path(cache_dir) / "datasets"))
    if "split" in ds.column_names:
        return ds.filter(lambda r: r["split"] == split)
    return ds.filter(lambda r, i: split_of_index(i, seed) == split, with_indices=True)


def pack(ds: datasets.Dataset, tokenizer, block_size: int, max_tokens: int | None = None,
         num_proc: int | None = None) -> datasets.Dataset:
    """Tokenize, join documents with EOS and cut into blocks; the last block is padded.

    Pads carry attention_mask 0 and label -100, so they count in neither loss nor statistics.
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = eos if pad is None else pad

    def tok(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"ids": [x + [eos] for x in ids]}

    def group(batch):
        flat = [t for x in batch["ids"] for t in x]
        blocks = [flat[i: i + block_size] for i in range(0, len(flat), block_size)]
        mask = [[1] * len(b) + [0] * (block_size - len(b)) for b in blocks]
        inp = [b + [pad] * (block_size - len(b)) for b in blocks]
        labels = [b + [-100] * (block_size - len(b)) for b in blocks]
        return {"input_ids": inp, "attention_mask": mask, "labels": labels}

    ds = ds.map(tok, batched=True, remove_columns=ds.column_names, num_proc=num_proc,
                desc="tokenize")
    # one group over the whole split: a single trailing partial block per language
    ds = ds.map(group, batched=True, batch_size=None, remove_columns=["ids"], desc="pack")
    if max_tokens is not None:
        ds = ds.select(range(min(len(ds), -(-int(max_tokens) // block_size))))
    return ds.with_format("torch")


class EpochRandomSampler(RandomSampler):
    """A RandomSampler whose order in epoch e is a function of (seed, e) alone.

    It draws what a bare `RandomSampler(generator=Generator().manual_seed(seed))` draws
    when iterated e times in a row, but `set_epoch(e)` (Lightning calls it before every
    epoch) rebuilds that state from scratch, so a run resumed in epoch e sees the same order
    as the run that was interrupted. Under DDP, Lightning swaps it for a DistributedSampler
    (also seeded by epoch).
    """

    def __init__(self, data_source, seed: int = 0):
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed)
        for _ in range(epoch):  # replay the earlier epochs' draws
            for _ in super().__iter__():
                pass


class LangDataModule(L.LightningDataModule):
    """Serves, per language, packed blocks of the train/valid/test splits.

    `langs` are the identification languages in K order; the target language's train
    split is the fine-tuning data, its valid split the validation data. The text comes from
    `corpus_dir` (`<lang>.jsonl|txt`) or, with `source`, from a streamed hub corpus that is
    materialised into files of the same format first (see langsub.hub).
    `train_budget_tokens`: what fine-tuning consumes; how far the target's stream is read.
    """

    def __init__(self, corpus_dir: str | None, langs: list[str], target: str, tokenizer=None,
                 block_size: int = 128, batch_size: int = 16, eval_batch_size: int = 32,
                 eval_langs: list[str] | None = None, ident_max_tokens: int | None = None,
                 train_max_tokens: int | None = None, eval_max_tokens: int | None = None,
                 cache_dir: str = ".cache", num_workers: int = 0, seed: int = 0,
                 source: dict | None = None, eval_source: dict | None = None,
                 lang_dir: str | None = None, train_budget_tokens: int | None = None):
        super().__init__()
        self.corpus_dir, self.langs, self.target = corpus_dir, list(langs), target
        self.eval_langs = list(eval_langs or langs)
        self.tokenizer, self.block_size = tokenizer, block_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.ident_max_tokens, self.train_max_tokens = ident_max_tokens, train_max_tokens
        self.eval_max_tokens, self.train_budget_tokens = eval_max_tokens, train_budget_tokens
        self.cache_dir, self.num_workers, self.seed = cache_dir, num_workers, seed
        self.hub = None
        if source is not None:
            from langsub.hub import HubCorpus

            self.hub = HubCorpus(source, eval_source, lang_dir, cache_dir, seed)
        self._cache: dict[tuple, datasets.Dataset] = {}

    def stream_budgets(self, lang: str) -> dict[str, int]:
        """Tokens to stream per split, whole blocks: identification (every language of
        `langs`), fine-tuning (the target), held-out valid/test (without an eval source)."""
        from langsub.hub import round_up

        train = max((self.ident_max_tokens or 0) if lang in self.langs else 0,
                    (self.train_budget_tokens or 0) if lang == self.target else 0)
        held = 0 if self.hub.eval_source else round_up(self.eval_max_tokens, self.block_size)
        return {"train": round_up(train, self.block_size), "valid": held, "test": held}

    def corpus_path(self, lang: str) -> Path:
        """The `<lang>.jsonl|txt` file of a language (materialised first for a hub source)."""
        if self.hub is None:
            return corpus_file(self.corpus_dir, lang)
        return self.hub.file(lang, self.tokenizer, self.stream_budgets(lang))

    def corpus_identity(self, lang: str):
        """What the identification data of `lang` depends on (keys the statistics cache)."""
        if self.hub is None:
            from langsub.stats import file_digest

            return file_digest(corpus_file(self.corpus_dir, lang))
        from langsub.hub import round_up

        return self.hub.identity(lang, round_up(self.ident_max_tokens, self.block_size))

    def check_blocks(self) -> None:
        """Every split the run uses holds at least one full block (before any model loads)."""
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # a failing check prints its one line only
        try:
            for lang in self.langs:
                self.blocks(lang, "train", self.ident_max_tokens)
            self.blocks(self.target, "train", self.train_max_tokens)
            self.blocks(self.target, "valid", self.eval_max_tokens)
            for lang in self.eval_langs:
                self.blocks(lang, "test", self.eval_max_tokens)
        finally:
            if bars:
                datasets.enable_progress_bars()

    def blocks(self, lang: str, split: str, max_tokens: int | None = None) -> datasets.Dataset:
        key = (lang, split, max_tokens)
        if key not in self._cache:
            texts = load_texts(self.corpus_path(lang), split, self.cache_dir, self.seed)
            ds = pack(texts, self.tokenizer, self.block_size, max_tokens)
            if len(ds) == 0 or int(ds[0]["attention_mask"].sum()) < self.block_size:
                raise CorpusError(f"language {lang}: the {split} split has fewer tokens than "
                                  f"one block (data.block_size={self.block_size})")
            self._cache[key] = ds
        return self._cache[key]

    def _loader(self, ds) -> DataLoader:
        return DataLoader(ds, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def identification_dataloaders(self) -> list[DataLoader]:
        """One loader per identification language, in K order (the statistics pass)."""
        return [self._loader(self.blocks(l, "train", self.ident_max_tokens)) for l in self.langs]

    def train_dataloader(self) -> StatefulDataLoader:
        """Shuffled target blocks; stateful, so a checkpoint records the position in the epoch
        and a resumed run continues with the next unseen batch (Lightning saves the state)."""
        ds = self.blocks(self.target, "train", self.train_max_tokens)
        return StatefulDataLoader(ds, batch_size=self.batch_size,
                                  sampler=EpochRandomSampler(ds, self.seed),
                                  num_workers=self.num_workers,  # workers' seeds: not global RNG
                                  generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.blocks(self.target, "valid", self.eval_max_tokens))

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.blocks(l, "test", self.eval_max_tokens))
                for l in self.eval_langs]

    def n_tokens(self, lang: str, split: str = "train") -> int:
        return int(self.blocks(lang, split)[:]["attention_mask"].sum())
