"""data=news (NTREX-128, split by document) and the FLORES / SIB-200 items: the documented
split, no held-out sentence or benchmark item in any text that identification or training
reads (both corpora), FLORES as the summary for targets Tatoeba lacks, the real items of
eval=paper_offline, and bad input as one line."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import ROOT

NEWS, HELDOUT = ROOT / "data" / "news", ROOT / "data" / "heldout"
OFFLINE = ROOT / "data" / "lm_eval" / "paper_offline"
LANGS = ["mt", "af", "is", "cy", "mk", "lv", "lt", "sl", "sk", "et", "ka", "ne", "en", "de",
         "fr", "es", "ru", "zh", "sw"]
# the splits identification and fine-tuning read, per corpus
TRAINING = {"corpus": ("pretrain", "train"), "news": ("train",)}


def _rows(path):
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def _normal(t):
    return " ".join(t.lower().split())


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        return compose("train", overrides=overrides)


def test_news_is_split_by_document_the_same_way_in_every_language():
    stats = json.loads((NEWS / "stats.json").read_text())
    assert "8561f6a622db9edad1217683e5c83daefd8bb2bf" in stats["source"]
    first = None
    for lang in LANGS:
        rows = _rows(NEWS / f"{lang}.jsonl")
        split = {r["doc"]: r["split"] for r in rows}
        assert len(split) == len(rows) == 123, lang  # one row per document
        assert all(r["text"].strip() for r in rows), lang
        counts = {s: sum(v == s for v in split.values()) for s in ("train", "valid", "test")}
        assert counts == {"train": 98, "valid": 12, "test": 13}, (lang, counts)
        assert stats["languages"][lang]["documents"] == 123
        first = first or split
        assert split == first, f"{lang}: a document falls in another split than in {LANGS[0]}"


def test_flores_has_every_language_aligned_by_id():
    ids = None
    for lang in LANGS:
        rows = _rows(HELDOUT / "flores" / f"{lang}.jsonl")
        assert len(rows) == 1004, lang
        assert sum(r["split"] == "test" for r in rows) == 204, lang
        ids = ids or [r["id"] for r in rows]
        assert [r["id"] for r in rows] == ids, lang
        sib = _rows(next((OFFLINE / "Davlan" / "sib200").glob(f"*/test.jsonl")))
        assert len(sib) == 204 and len({r["category"] for r in sib}) == 7


@pytest.mark.parametrize("corpus", sorted(TRAINING))
def test_no_held_out_sentence_or_benchmark_item_is_in_training_text(corpus):
    """Every held-out set (Tatoeba, WikiText, FLORES) and every benchmark item with text of a
    language (SIB-200, FLORES translation, the stand-ins' passages) against the splits that
    identification and fine-tuning read: equal to a training row, or (news rows are whole
    documents) inside one."""
    for lang in LANGS:
        path = ROOT / "data" / corpus / f"{lang}.jsonl"
        train = [_normal(r["text"]) for r in _rows(path) if r["split"] in TRAINING[corpus]]
        rows, joined = set(train), "\n".join(train)
        items = [r["text"] for s in ("tatoeba", "wikitext", "flores")
                 if (HELDOUT / s / f"{lang}.jsonl").is_file()
                 for r in _rows(HELDOUT / s / f"{lang}.jsonl")]
        items += [r["text"] for p in OFFLINE.glob("*/*/*/*.jsonl")
                  if p.parent.name.startswith(_flores_iso(lang)) for r in _rows(p)
                  if isinstance(r.get("text"), str)]
        clash = [t for t in items if _normal(t) in rows
                 or (corpus == "news" and len(t) >= 30 and _normal(t) in joined)]
        assert not clash, f"{corpus}/{lang}: {clash[:3]}"


def _flores_iso(lang):
    from omegaconf import OmegaConf

    return OmegaConf.load(ROOT / "conf" / "lang" / f"{lang}.yaml").flores.split("_")[0]


def test_data_readme_lists_the_sources_with_commit_and_licence():
    text = (ROOT / "data" / "README.md").read_text()
    for needle in ("MicrosoftTranslator/NTREX", "8561f6a6", "CC BY-SA 4.0", "dadelani/sib-200",
                   "593cea88", "Apache-2.0", "scripts/build_news.py", "scripts/build_flores.py"):
        assert needle in text, needle


def test_flores_is_the_summary_where_tatoeba_lacks_the_target():
    from langsub.evaluation import heldout
    from langsub.validate import check_config

    mt = _compose(["lang=mt", "eval=heldout"])
    check_config(mt)  # no refusal: mt has FLORES
    assert heldout.summary_set(mt) == "flores" and ("flores", "mt") in heldout.plan(mt)
    assert heldout.summary_set(_compose(["lang=af"])) == "tatoeba"
    news = _compose(["data=news", "lang=af"])
    assert heldout.summary_set(news) == "flores" and news.train.epochs == 1
    values = {f"heldout_ppl_before/flores/{l}": float(i + 2) for i, l in enumerate(
        ["mt", *mt.general])}
    s = heldout.summaries(values, mt, "before")
    assert s["heldout_ppl_before/target"] == 2.0


def test_paper_offline_marks_its_stand_ins_and_reads_real_items():
    from langsub.evaluation import benchmarks, paper

    cfg = _compose(["lang=mt", "eval=paper_offline"])
    tasks, marked = benchmarks.tasks_of(cfg), set(benchmarks.standins(cfg))
    real = {t for t in tasks if t.startswith(("langsub_sib200_", "langsub_flores_"))}
    assert real and not real & marked
    assert {"langsub_belebele_mt", "langsub_opus_en_mt", "langsub_mmlu"} <= marked
    assert marked == set(tasks) - real
    data_dir = cfg.eval.lm_eval.data_dir
    sib = paper.load("sib200", config="mlt_Latn", langsub_data_dir=data_dir)["test"]
    assert len(sib) == 204 and paper.sib200_answer(sib[0]) in paper.LETTERS
    rows = paper.translation_rows("flores", "mlt_Latn", "eng_Latn", "English", data_dir,
                                  "devtest")
    english = {r["id"]: r["text"] for r in _rows(HELDOUT / "flores" / "en.jsonl")}
    assert len(rows) == 204 and all(r["reference"] == english[r["id"]] for r in rows)


def test_a_language_the_corpus_lacks_is_one_line(tmp_path):
    from langsub.errors import ConfigError
    from langsub.validate import check_config

    d = tmp_path / "news"
    shutil.copytree(NEWS, d)
    (d / "mt.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"mt.jsonl does not exist .*languages there: af, cy"):
        check_config(_compose(["data=news", "lang=mt", f"data.corpus_dir={d}"]))


def test_the_console_names_the_corpus_the_summary_set_and_the_stand_ins(capsys, tmp_path):
    from langsub.report.console import print_table

    m = {"method": "lape", "lang": "mt", "trainable_params": 10, "trainable_fraction": 0.01,
         "neurons": 3, "data": "news", "heldout_set": "flores",
         "standin_tasks": ["langsub_belebele_mt"]}
    for phase, v in (("before", 2.0), ("after", 1.0)):
        m.update({f"ppl_{phase}/target": v, f"ppl_{phase}/general": v,
                  f"heldout_ppl_{phase}/target": v, f"heldout_ppl_{phase}/general": v,
                  f"heldout_ppl_{phase}/tatoeba/en": v, f"heldout_ppl_{phase}/flores/mt": v,
                  f"lm_eval_{phase}/langsub_belebele_mt/acc": 0.5,
                  f"lm_eval_{phase}/langsub_sib200_mt/acc": 0.5,
                  f"lm_eval_{phase}/langsub_flores_mt_en/bleu": 12.5})
    print_table(m, tmp_path)
    out = capsys.readouterr().out
    assert "(news, test split)" in out and "(flores, test half)" in out
    lines = {l.split()[0]: l for l in out.splitlines() if l.startswith("langsub_")}
    assert lines["langsub_belebele_mt/acc"].endswith("stand-in")
    assert not lines["langsub_sib200_mt/acc"].endswith("stand-in")
    assert "12.5" in lines["langsub_flores_mt_en/bleu"]  # BLEU in points, as chrF
