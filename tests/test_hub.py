"""Hub corpora through `datasets` streaming, read from local stand-ins laid out like the hubs."""
from __future__ import annotations

import json

import pytest
import torch

import standin
from langsub.data.corpus import split_of_index
from langsub.data.datamodule import LangDataModule, Stream, TokenBudgets
from langsub.errors import CorpusError
from langsub.data.hub import HubCorpus, config_name, take_budget
from conftest import TINY

GLOTCC = {"path": None, "name": "{glotcc}", "split": "train", "text_column": "content"}
FLORES = {"path": None, "name": "{flores}", "valid_split": "dev", "test_split": "devtest",
          "text_column": "text"}


def _words(texts):
    return [len(t.split()) for t in texts]


def test_take_budget_stops_at_the_budget_and_reads_no_further():
    read = []

    def stream():
        for i in range(1000):
            read.append(i)
            yield f"doc{i} " + "w " * 9  # 10 words each

    out, got = take_budget(stream(), _words, {"train": 55, "valid": 0}, lambda i: "train", batch=4)
    assert got == {"train": 60, "valid": 0} and len(out["train"]) == 6  # 6th doc crosses 55
    assert out["train"][0].startswith("doc0 ") and out["valid"] == []
    assert len(read) <= 8  # two batches of 4: the stream is not drained


def test_take_budget_routes_and_skips_full_splits():
    texts = [f"d{i} x" for i in range(200)] + ["", "  "]  # empty documents are skipped
    assign = lambda i: split_of_index(i, 0)  # noqa: E731
    out, got = take_budget(iter(texts), _words, {"train": 20, "valid": 6, "test": 6}, assign)
    assert got == {"train": 20, "valid": 6, "test": 6}
    for s, docs in out.items():
        assert all(assign(int(d.split()[0][1:])) == s for d in docs)
    # a larger train budget appends: the prefix (what identification reads) stays the same
    more, _ = take_budget(iter(texts), _words, {"train": 60, "valid": 6, "test": 6}, assign)
    assert more["train"][:len(out["train"])] == out["train"] and more["valid"] == out["valid"]


def test_config_names_of_every_language():
    langs = sorted(p.stem for p in standin.LANG_DIR.glob("*.yaml"))
    names = {l: config_name("{glotcc}", l, standin.LANG_DIR) for l in langs}
    assert names["af"] == "afr-Latn" and names["zh"] == "cmn-Hani" and names["et"] == "ekk-Latn"
    assert config_name("{flores}", "zh", standin.LANG_DIR) == "cmn_Hans"
    assert config_name("20231101.{wiki}", "ne", standin.LANG_DIR) == "20231101.ne"
    assert len(set(names.values())) == len(langs)
    with pytest.raises(CorpusError, match=r"data.source.name='\{iso\}'.*no field 'iso'"):
        config_name("{iso}", "af", standin.LANG_DIR)
    with pytest.raises(CorpusError, match="language qq .*: no .*qq.yaml"):
        config_name("{glotcc}", "qq", standin.LANG_DIR)


def _dm(tok, tmp_path, source, eval_source=None, langs=("af", "en"), target="af",
        budgets=TokenBudgets(ident=640, eval=320), **kw):
    return LangDataModule(None, list(langs), target, tok, block_size=64, budgets=budgets,
                          stream=Stream(source, eval_source, str(standin.LANG_DIR)),
                          cache_dir=str(tmp_path / "cache"), **kw)


def test_streaming_budget_from_a_glotcc_standin(embedded, tmp_path):
    _, tok = embedded
    src = dict(GLOTCC, path=str(standin.glotcc(tmp_path / "glotcc", ["af", "en"])))
    dm = _dm(tok, tmp_path, src, budgets=TokenBudgets(640, 320, train=1000))
    path = dm.corpus_path("af")
    rows = [json.loads(l) for l in open(path, encoding="utf-8")]
    per = {s: sum(len(tok(r["text"], add_special_tokens=False)["input_ids"]) + 1
                  for r in rows if r["split"] == s) for s in ("train", "valid", "test")}
    # the target streams its fine-tuning budget (1000 → 1024, whole blocks), the others 640
    longest = max(len(tok(t)["input_ids"]) + 1 for t in standin.rows("af", ("pretrain", "train")))
    assert 1024 <= per["train"] < 1024 + longest
    assert 320 <= per["valid"] < 320 + longest and 320 <= per["test"] < 320 + longest
    assert {r["text"] for r in rows} <= set(standin.rows("af", ("pretrain", "train")))
    assert len(rows) < len(standin.rows("af", ("pretrain", "train"))) / 2  # not the whole file
    assert path == dm.corpus_path("af")  # materialised once, then read from the cache
    en = [json.loads(l) for l in open(dm.corpus_path("en"), encoding="utf-8")]
    assert 640 <= sum(len(tok(r["text"], add_special_tokens=False)["input_ids"]) + 1
                      for r in en if r["split"] == "train") < 640 + 4096
    # identification reads the same blocks whether the language is the target or not
    other = _dm(tok, tmp_path, src, target="en", budgets=TokenBudgets(640, 320, train=1000))
    assert other.corpus_path("af") != path
    assert other.corpus_identity("af") == dm.corpus_identity("af")
    a, b = dm.blocks("af", "train", 640)[:]["input_ids"], other.blocks("af", "train", 640)[:]["input_ids"]
    assert len(a) == 10 and torch.equal(a, b)


def test_the_corpus_key_ignores_the_tokenizer_s_last_truncation():
    """transformers sets truncation and padding on the shared backend per call: a caller's
    truncation=True must not move a materialised corpus to another cache key."""
    from transformers import AutoTokenizer

    from langsub.data.hub import tokenizer_id

    plain, called = AutoTokenizer.from_pretrained(TINY), AutoTokenizer.from_pretrained(TINY)
    called(["a b c"] * 2, truncation=True, max_length=4, padding="max_length")
    assert called.backend_tokenizer.truncation is not None  # the backend did change
    assert tokenizer_id(called) == tokenizer_id(plain)


def test_flores_standin_is_valid_and_test(embedded, tmp_path):
    _, tok = embedded
    src = dict(GLOTCC, path=str(standin.glotcc(tmp_path / "glotcc", ["af"])))
    ev = dict(FLORES, path=str(standin.flores(tmp_path / "flores", ["af", "ka"])))
    dm = _dm(tok, tmp_path, src, ev, langs=["af"], eval_langs=["af", "ka"],
             budgets=TokenBudgets(ident=640))
    rows = [json.loads(l) for l in open(dm.corpus_path("af"), encoding="utf-8")]
    by = {s: [r["text"] for r in rows if r["split"] == s] for s in ("train", "valid", "test")}
    assert by["valid"] == standin.rows("af", ("valid",))   # FLORES+ dev, all of it, in order
    assert by["test"] == standin.rows("af", ("test",))     # FLORES+ devtest
    assert by["train"] and not set(by["train"]) & (set(by["valid"]) | set(by["test"]))
    # ka is evaluated only: nothing streamed from the corpus (it is not in the stand-in at all)
    ka = [json.loads(l) for l in open(dm.corpus_path("ka"), encoding="utf-8")]
    assert {r["split"] for r in ka} == {"valid", "test"}
    assert len(dm.test_dataloader()) == 2 and len(dm.val_dataloader()) > 0


def test_missing_config_and_column_are_clear(embedded, tmp_path):
    _, tok = embedded
    root = standin.glotcc(tmp_path / "glotcc", ["af"])
    with pytest.raises(CorpusError, match="config 'eng-Latn'"):
        _dm(tok, tmp_path, dict(GLOTCC, path=str(root))).corpus_path("en")
    with pytest.raises(CorpusError, match="text_column='text'.*content"):
        _dm(tok, tmp_path, dict(GLOTCC, path=str(root), text_column="text")).corpus_path("af")
    hub = HubCorpus(dict(GLOTCC, path=str(root)), None, str(standin.LANG_DIR), str(tmp_path))
    before = hub.identity("af", 640)
    (root / "v1.0" / "afr-Latn" / "afr-Latn_1.parquet").write_bytes(
        (root / "v1.0" / "afr-Latn" / "afr-Latn_0.parquet").read_bytes())
    assert hub.identity("af", 640) != before  # a changed stand-in is not mistaken for the old


@pytest.mark.slow
def test_main_job_on_a_glotcc_standin(tmp_path):
    """`data=glotcc` with local stand-ins for GlotCC-V1 and FLORES+: the same main job."""
    import math
    import subprocess
    import sys

    from conftest import ROOT

    langs = ["af", "en", "de", "ka"]  # debug=fast's languages
    g = standin.glotcc(tmp_path / "GlotCC-V1", langs)
    f = standin.flores(tmp_path / "flores_plus", langs)
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "train.py", "data=glotcc", f"data.source.path={g}",
                        f"data.eval.path={f}", "debug=fast", "train.max_steps=3",
                        "data.block_size=128", "data.batch_size=16", "data.eval_batch_size=32",
                        f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={run}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["lang"] == "af" and m["neurons"] > 0 and m["stats_cache_hit"] is False
    for k in ("ppl_before/target", "ppl_after/target", "ppl_before/ka", "ppl_after/en"):
        assert math.isfinite(m[k]) and m[k] > 1, k
    files = sorted((tmp_path / "cache" / "corpora").glob("*/*.jsonl"))
    assert sorted(p.stem for p in files) == sorted(langs)
    assert "afr-Latn: train" in r.stdout and "afr_Latn: valid" in r.stdout
    assert (run / "export" / "config.json").exists() and (run / "neurons.json").exists()
