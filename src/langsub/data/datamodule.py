"""Per-language corpora as a LightningDataModule: load, tokenize, pack, cache, serve.

Everything goes through `datasets` (the json/text builders for local files, the hub
builders for GlotCC/CulturaX/Wikipedia), so the embedded corpus and a hub corpus take the
same path; only the config differs. Tokenized, packed blocks are cached on disk by
`datasets` under `cache_dir`, keyed by the tokenizer and the source files.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import datasets
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, RandomSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from langsub.clock import since
from langsub.data.corpus import SequenceFormat, corpus_file, load_texts, pack, sequence_format
from langsub.errors import CorpusError

warnings.filterwarnings("ignore", message="'set_vital' is deprecated")  # torchdata on torch>=2.9


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


def subsample_indices(n: int, fraction: float, seed: int, lang_index: int) -> list[int]:
    """A sorted random subset of round(fraction·n) of n blocks (at least one), drawn without
    replacement, seeded per (seed, language); all n at fraction 1."""
    if fraction >= 1.0:
        return list(range(n))
    k = max(1, round(fraction * n))
    g = torch.Generator().manual_seed(1_000_003 * seed + lang_index)
    return sorted(torch.randperm(n, generator=g)[:k].tolist())


@dataclass(frozen=True)
class TokenBudgets:
    """Tokens read per language (whole blocks; None: the whole split). `ident`: the
    identification pass, each of `langs`; `eval`: held-out valid and test; `train`: how far
    the target's stream is read for fine-tuning (run.py sets it once the world size is known)."""

    ident: int | None = None
    eval: int | None = None
    train: int | None = None


@dataclass(frozen=True)
class Batching:
    """How the loaders serve the blocks: fine-tuning and evaluation batch sizes, workers."""

    batch_size: int = 16
    eval_batch_size: int = 32
    num_workers: int = 0


@dataclass(frozen=True)
class Stream:
    """A streamed hub corpus (langsub.data.hub): `source` and an optional `eval` source
    ({path, name, split, text_column, revision}), names resolved over `lang_dir`'s files."""

    source: dict
    eval: dict | None = None
    lang_dir: str | None = None


class LangDataModule(L.LightningDataModule):
    """Serves, per language, packed blocks of the train/valid/test splits.

    `langs` are the identification languages in K order; the target language's train
    split is the fine-tuning data, its valid split the validation data. The text comes from
    `corpus_dir` (`<lang>.jsonl|txt`) or, with `stream`, from a streamed hub corpus that is
    materialised into files of the same format first (see langsub.data.hub).
    """

    def __init__(self, corpus_dir: str | None, langs: list[str], target: str, tokenizer=None,
                 *, block_size: int = 128, budgets: TokenBudgets = TokenBudgets(),
                 batching: Batching = Batching(), eval_langs: list[str] | None = None,
                 val_langs: list[str] | None = None, track_langs: list[str] | None = None,
                 track_blocks: int = 0, stream: Stream | None = None, cache_dir: str = ".cache",
                 seed: int = 0, fmt: SequenceFormat | None = None):
        super().__init__()
        self.corpus_dir, self.langs, self.target = corpus_dir, list(langs), target
        self.eval_langs = list(eval_langs or langs)
        # validation: the target first (the best checkpoint's criterion), then val_langs
        self.val_langs = list(dict.fromkeys([target, *(val_langs or [])]))
        # forgetting over training: `track_blocks` valid blocks of each of `track_langs` are
        # measured at every validation during fitting too (0: the target alone)
        self.track_langs = [l for l in track_langs or [] if l != target] if track_blocks else []
        self.track_blocks = track_blocks
        self.fmt = fmt  # BOS and document separator as the model was trained (corpus.py)
        self.tokenizer, self.block_size = tokenizer, block_size
        self.budgets, self.batching = budgets, batching
        self.cache_dir, self.seed = cache_dir, seed
        self.hub = None
        if stream is not None:
            from langsub.data.hub import HubCorpus

            self.hub = HubCorpus(stream.source, stream.eval, stream.lang_dir, cache_dir, seed)
        self._cache: dict[tuple, datasets.Dataset] = {}

    @classmethod
    def from_config(cls, cfg: DictConfig, tokenizer, fmt: SequenceFormat | None = None
                    ) -> LangDataModule:
        """The data module of a run: `cfg.data`, the target `cfg.lang.code`, the tracked
        `cfg.general`, `cfg.paths.cache_dir` and `cfg.seed`; its blocks laid out as the model
        was trained (`cfg.model.add_bos`, `doc_separator`) unless `fmt` is given."""
        d = cfg.data
        if fmt is None:
            fmt = sequence_format(tokenizer, cfg.model.get("add_bos", "auto"),
                                  cfg.model.get("doc_separator"))

        def container(x):
            return OmegaConf.to_container(x, resolve=True) if x is not None else None

        stream = None if d.get("source") is None else \
            Stream(container(d.source), container(d.get("eval")), d.get("lang_dir"))
        return cls(d.corpus_dir, d.langs, cfg.lang.code, tokenizer, block_size=d.block_size,
                   budgets=TokenBudgets(d.ident_max_tokens, d.eval_max_tokens),
                   batching=Batching(d.batch_size, d.eval_batch_size, d.num_workers),
                   eval_langs=d.eval_langs, val_langs=list(d.get("val_langs") or []),
                   track_langs=list(cfg.general), track_blocks=d.get("track_blocks") or 0,
                   stream=stream, cache_dir=cfg.paths.cache_dir, seed=cfg.seed, fmt=fmt)

    # the config's names of the budgets: the statistics and "before" caches key on them
    @property
    def ident_max_tokens(self) -> int | None:
        return self.budgets.ident

    @property
    def eval_max_tokens(self) -> int | None:
        return self.budgets.eval

    def stream_budgets(self, lang: str) -> dict[str, int]:
        """Tokens to stream per split, whole blocks: identification (every language of
        `langs`), fine-tuning (the target), held-out valid/test (without an eval source)."""
        from langsub.data.hub import round_up

        train = max((self.budgets.ident or 0) if lang in self.langs else 0,
                    (self.budgets.train or 0) if lang == self.target else 0)
        held = 0 if self.hub.eval_source else round_up(self.budgets.eval, self.block_size)
        return {"train": round_up(train, self.block_size), "valid": held, "test": held}

    def corpus_path(self, lang: str) -> Path:
        """The `<lang>.jsonl|txt` file of a language (materialised first for a hub source)."""
        if self.hub is None:
            return corpus_file(self.corpus_dir, lang)
        return self.hub.file(lang, self.tokenizer, self.stream_budgets(lang))

    def corpus_identity(self, lang: str):
        """What the identification data of `lang` depends on (keys the statistics cache)."""
        if self.hub is None:
            from langsub.io import file_digest

            return file_digest(corpus_file(self.corpus_dir, lang))
        from langsub.data.hub import round_up

        return self.hub.identity(lang, round_up(self.budgets.ident, self.block_size))

    def check_blocks(self) -> None:
        """Every split the run uses holds at least one full block (before any model loads)."""
        import logging
        import time

        log, t0 = logging.getLogger("langsub"), time.perf_counter()
        log.info(f"data: tokenizing and packing {len(self.langs)} languages (cached after "
                 "the first run)")
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # a failing check prints its one line only
        try:
            for lang in self.langs:
                self.blocks(lang, "train", self.budgets.ident)
            self.blocks(self.target, "train")  # the whole split: the step budget stops training
            for lang in dict.fromkeys(self.val_langs + self.track_langs):
                self.blocks(lang, "valid", self.budgets.eval)
            for lang in self.eval_langs:
                self.blocks(lang, "test", self.budgets.eval)
        finally:
            if bars:
                datasets.enable_progress_bars()
        log.info(f"data: ready in {since(t0)}")

    def train_tokens(self) -> int:
        """Tokens of the target's train split (blocks' attended positions, BOS included)."""
        ds = self.blocks(self.target, "train").with_format("numpy")
        return int(ds[:]["attention_mask"].sum())

    def shortfall(self, epochs: int | None) -> str | None:
        """A line when the target's train split holds fewer tokens than the run's budget
        (`budgets.train`): what it holds, and whether training stops after `epochs` passes or
        repeats the split."""
        have, want = self.train_tokens(), self.budgets.train
        if want is None or have >= want:
            return None
        then = f"training stops after {epochs} epoch(s) of what exists" if epochs else \
            f"the split is repeated (~{want / have:.1f} epochs); train.epochs=1 stops after one"
        return (f"data: {self.target}'s train split holds {have:,} tokens, fewer than the "
                f"budget of {want:,} (train.max_tokens): {then}")

    def blocks(self, lang: str, split: str, max_tokens: int | None = None) -> datasets.Dataset:
        key = (lang, split, max_tokens)
        if key not in self._cache:
            texts = load_texts(self.corpus_path(lang), split, self.cache_dir, self.seed)
            # valid and test are measured: their separators are attended to, never scored
            ds = pack(texts, self.tokenizer, self.block_size, max_tokens, fmt=self.fmt,
                      score_separator=split == "train")
            if len(ds) == 0 or int(ds[0]["attention_mask"].sum()) < self.block_size:
                raise CorpusError(f"language {lang}: the {split} split has fewer tokens than "
                                  f"one block (data.block_size={self.block_size})")
            self._cache[key] = ds
        return self._cache[key]

    def _loader(self, ds) -> DataLoader:
        return DataLoader(ds, batch_size=self.batching.eval_batch_size,
                          num_workers=self.batching.num_workers)

    def identification_dataloaders(self, subsample: tuple[float, int] | None = None
                                   ) -> list[DataLoader]:
        """One loader per identification language, in K order (the statistics pass); with
        `subsample` (fraction, seed) over a random share of each language's blocks."""
        out = []
        for k, lang in enumerate(self.langs):
            ds = self.blocks(lang, "train", self.budgets.ident)
            if subsample is not None:
                ds = ds.select(subsample_indices(len(ds), subsample[0], subsample[1], k))
            out.append(self._loader(ds))
        return out

    def train_dataloader(self) -> StatefulDataLoader:
        """Shuffled target blocks; stateful, so a checkpoint records the position in the epoch
        and a resumed run continues with the next unseen batch (Lightning saves the state)."""
        ds = self.blocks(self.target, "train")
        b = self.batching
        return StatefulDataLoader(ds, batch_size=b.batch_size,
                                  sampler=EpochRandomSampler(ds, self.seed),
                                  num_workers=b.num_workers,  # workers' seeds: not global RNG
                                  generator=torch.Generator().manual_seed(self.seed))

    def val_order(self, fitting: bool) -> list[str]:
        """The languages of `val_dataloader`'s loaders, in order."""
        return [self.target, *self.track_langs] if fitting else self.val_langs

    def val_dataloader(self) -> list[DataLoader]:
        """The target's valid split; outside fitting (the before/after measurements) also
        every language of `val_langs`: validation during training picks the best step by
        the target alone. During fitting, `track_blocks` blocks of each tracked language
        (the forgetting curve), when asked for."""
        fitting = self.trainer is not None and self.trainer.state.fn == "fit"
        out = []
        for lang in self.val_order(fitting):
            ds = self.blocks(lang, "valid", self.budgets.eval)
            if fitting and lang != self.target:
                ds = ds.select(range(min(self.track_blocks, len(ds))))
            out.append(self._loader(ds))
        return out

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.blocks(l, "test", self.budgets.eval))
                for l in self.eval_langs]
