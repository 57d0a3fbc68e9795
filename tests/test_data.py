"""The embedded corpus: languages, sizes, disjoint deterministic splits, lossless tokenizer."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import ROOT
from langsub.data.corpus import corpus_file, pack
from langsub.data.datamodule import LangDataModule, TokenBudgets
from langsub.errors import CorpusError

CORPUS = ROOT / "data" / "corpus"
LANGS = ["mt", "af", "is", "cy", "mk", "lv", "lt", "sl", "sk", "et", "ka", "ne",
         "en", "de", "fr", "es", "ru", "zh", "sw"]


def _rows(lang):
    return [json.loads(l) for l in open(CORPUS / f"{lang}.jsonl", encoding="utf-8")]


def test_languages_and_sizes():
    for lang in LANGS:
        text = "\n".join(r["text"] for r in _rows(lang))
        assert len(text.encode()) >= 50_000, lang
    total = sum(p.stat().st_size for p in (ROOT / "data").rglob("*") if p.is_file())
    assert total <= 40 * 2**20  # UI corpus and stand-ins ~15.7 MB, news 6.5, held-out sets and real items ~13


def test_splits_disjoint_and_parallel_sets():
    for lang in LANGS:
        by = {}
        for r in _rows(lang):
            by.setdefault(r["split"], set()).add(r["text"])
        assert set(by) == {"pretrain", "train", "valid", "test"}
        names = list(by)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                assert not by[a] & by[b], (lang, a, b)
    for name, n in (("udhr", 30), ("mediawiki", 50)):
        rows = [json.loads(l) for l in open(ROOT / "data/parallel" / f"{name}.jsonl")]
        assert len(rows) >= n and all(set(LANGS) <= set(r) for r in rows)


@pytest.mark.parametrize("lang", ["af", "ru", "ka", "ne", "zh", "mk", "mt"])
def test_tokenizer_round_trips_every_script(embedded, lang):
    _, tok = embedded
    for r in _rows(lang)[:200]:
        ids = tok(r["text"], add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == r["text"]


def test_packing_masks_padding(embedded, tmp_path):
    import datasets

    _, tok = embedded
    ds = datasets.Dataset.from_dict({"text": ["a b c d e f g", "h i j"]})
    out = pack(ds, tok, block_size=8)
    last = out[len(out) - 1]
    pad = last["attention_mask"] == 0
    assert pad.any() and (last["labels"][pad] == -100).all()
    full = out[:]
    assert (full["labels"][full["attention_mask"] == 1] != -100).all()


def test_packed_blocks_are_cached_on_disk_across_runs(embedded, tmp_path):
    """A second run (a new process: new Dataset objects) reads the packed blocks from the
    cache that the first wrote; another block size or separator packs anew."""
    from langsub.data.corpus import SequenceFormat, load_texts

    _, tok = embedded
    path = CORPUS / "af.jsonl"
    first = pack(load_texts(path, "test", str(tmp_path)), tok, block_size=64)
    files = {f["filename"] for f in first.cache_files}
    assert files and all(str(tmp_path) in f for f in files)
    stamps = {f: (tmp_path / f).stat().st_mtime_ns for f in files}
    again = pack(load_texts(path, "test", str(tmp_path)), tok, block_size=64)
    assert {f["filename"] for f in again.cache_files} == files
    assert {f: (tmp_path / f).stat().st_mtime_ns for f in files} == stamps  # not rewritten
    assert torch.equal(first[:]["input_ids"], again[:]["input_ids"])
    other = pack(load_texts(path, "test", str(tmp_path)), tok, block_size=32)
    sep = pack(load_texts(path, "test", str(tmp_path)), tok, block_size=64,
               fmt=SequenceFormat(None, (tok.eos_token_id, tok.eos_token_id)))
    for ds in (other, sep):
        assert not {f["filename"] for f in ds.cache_files} & files


def test_datamodule_deterministic_and_errors(embedded, tmp_path):
    _, tok = embedded
    dm = LangDataModule(str(CORPUS), ["af", "en"], "af", tok, block_size=64,
                        cache_dir=str(tmp_path), budgets=TokenBudgets(eval=640))
    a = dm.blocks("af", "test", 640)[:]["input_ids"]
    dm2 = LangDataModule(str(CORPUS), ["af", "en"], "af", tok, block_size=64,
                         cache_dir=str(tmp_path))
    assert torch.equal(a, dm2.blocks("af", "test", 640)[:]["input_ids"]) and len(a) == 10
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(CorpusError, match="empty.jsonl is empty"):
        corpus_file(tmp_path, "empty")
    with pytest.raises(CorpusError, match="xx.jsonl does not exist"):
        corpus_file(tmp_path, "xx")
    (tmp_path / "tiny.txt").write_text("one line only\n")
    with pytest.raises(CorpusError, match="fewer tokens than one block"):
        LangDataModule(str(tmp_path), ["tiny"], "tiny", tok, block_size=64,
                       cache_dir=str(tmp_path)).blocks("tiny", "train")
