"""Language fidelity (analysis=fidelity): prompts, classification, shares; in the main job."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("py3langid", reason="pip install -e \".[dev]\" (py3langid)")

from langsub.analysis.fidelity import (classify, config_problems, fidelity,  # noqa: E402
                                       first_line, identifier, prompts, rescore)


def test_prompts_are_first_halves_of_long_enough_sentences():
    texts = ["too short", "Die hoofstad van Suid-Afrika is Pretoria en Kaapstad",
             "een twee drie vier vyf ses"]
    assert prompts(texts, "af", 5) == ["Die hoofstad van Suid-Afrika", "een twee drie"]
    assert prompts(["这是一个很长的中文句子用于测试的例子"], "zh", 1) == ["这是一个很长的中文"]
    assert prompts(texts, "af", 1) == ["Die hoofstad van Suid-Afrika"]


def test_shares_and_the_most_frequent_other_language():
    r = fidelity(["af", "nl", "nl", "af", "en"], "af")
    assert r["target_share"] == 0.4 and r["top_other"] == "nl" and r["top_other_share"] == 0.4
    assert r["langs"] == {"af": 2, "nl": 2, "en": 1}
    assert fidelity(["af"], "af")["top_other"] is None
    assert first_line("\n\n  Dit is goed.\nNext line") == "Dit is goed."


def test_a_line_of_punctuation_alone_is_not_a_language():
    # a continuation that ends the prompt's sentence (".") and goes on below: the identifier
    # names a language even for "." (py3langid: sr), so the judged line is the next one
    assert identifier().classify(".")[0] != "af"
    assert first_line(".\n\nDie regering het vandag aangekondig.") == "Die regering het vandag aangekondig."
    assert first_line(" ...\n 1996 \n") == ""
    assert classify([".\n\nDie regering het vandag aangekondig dat die skole weer sal oopmaak",
                     "\n - \n"]) == ["af", "none"]


def test_rescoring_stored_continuations_rewrites_the_shares(tmp_path):
    (tmp_path / "analysis").mkdir()
    conts = [".\n\nDie regering het vandag aangekondig dat die skole weer sal oopmaak",
             " The government announced today that the schools will open again"]
    (tmp_path / "analysis" / "fidelity_after.jsonl").write_text("".join(
        json.dumps({"prompt": "p", "continuation": c, "lang": "sr"}) + "\n" for c in conts))
    stale = {"lang": "af", "target_ppl_change": -0.5, "fidelity_after/target_share": 0.0,
             "fidelity_after/share/sr": 1.0}
    (tmp_path / "metrics.json").write_text(json.dumps(stale))
    rescore(tmp_path)
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["fidelity_after/target_share"] == 0.5 and m["fidelity_after/top_other"] == "en"
    assert "fidelity_after/share/sr" not in m and m["target_ppl_change"] == -0.5
    rows = [json.loads(l) for l in (tmp_path / "analysis" / "fidelity_after.jsonl").open()]
    assert [r["lang"] for r in rows] == ["af", "en"] and rows[0]["continuation"] == conts[0]
    r = subprocess.run([sys.executable, "-m", "langsub", "report", "rescore-fidelity", str(tmp_path / "analysis")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no metrics.json with analysis/fidelity_<phase>.jsonl" in r.stderr


def test_the_identifier_ships_with_its_model_and_tells_af_from_en():
    ident = identifier()
    assert ident.classify("Die regering het vandag aangekondig dat die skole weer sal oopmaak")[0] == "af"
    assert ident.classify("The government announced today that the schools will open again")[0] == "en"


def test_unknown_language_is_refused_before_loading():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"analysis": ["fidelity"], "lang": {"code": "tlh"},
                            "fidelity": {"prompts": 5, "max_new_tokens": 8}})
    (line,) = config_problems(cfg)
    assert line.startswith("analysis=fidelity with lang=tlh: the language identifier")
    cfg.lang.code, cfg.fidelity.prompts = "af", 0
    assert config_problems(cfg) == ["fidelity.prompts=0: allowed is an integer >= 1"]
    cfg.analysis = []
    assert config_problems(cfg) == []


def test_a_language_without_prompts_is_refused_before_loading(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang in ("af", "en"):  # every test sentence shorter than a prompt needs
        rows = [{"text": f"kort {i}", "split": s} for i in range(40) for s in ("train", "valid", "test")]
        (corpus / f"{lang}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = subprocess.run([sys.executable, "train.py", "debug=fast", "analysis=[fidelity]",
                        f"data.corpus_dir={corpus}", "data.langs=[af,en]", "general=[en]",
                        "data.block_size=8", "data.eval_langs=[af,en]",
                        f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/run"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "analysis=fidelity with lang=af: its test split has no sentence of 6 words" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "run/metrics.json").exists()


def test_the_report_tabulates_fidelity_per_method(tmp_path):
    from langsub.report import fidelity as view

    def run(method, seed, before, after, nl_after):
        return {"method": method, "lang": "af", "lr": 1e-4, "seed": seed,
                "fidelity_before/target_share": before, "fidelity_after/target_share": after,
                "fidelity_before/top_other": "nl", "fidelity_after/top_other": "nl",
                "fidelity_before/share/nl": 1 - before, "fidelity_after/share/nl": nl_after}

    runs = [run("lape", 0, 0.2, 0.6, 0.4), run("lape", 1, 0.2, 0.8, 0.2), run("lora", 0, 0.2, 0.3, 0.7)]
    spec = {"chosen": {"lape": {"lr": 1e-4}, "lora": {"lr": 1e-4}}}
    md = view.table(runs, spec)
    assert "| method | runs | af before | af after | nl before | nl after |" in md
    assert "| lape | 2 | 20 | 70 ± 14 | 80 | 30 ± 14 |" in md
    assert "| lora | 1 | 20 | 30 | 80 | 70 |" in md
    assert [m["seed"] for m in view.one_per_method(runs, spec)] == [0, 0]


def test_fidelity_in_the_main_job(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "train.py", "debug=fast", "analysis=[fidelity]",
                        "fidelity.prompts=4", "fidelity.max_new_tokens=8", "export=false",
                        f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={run}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    for phase in ("before", "after"):
        assert m[f"fidelity_{phase}/n"] == 4
        assert 0 <= m[f"fidelity_{phase}/target_share"] <= 1
        rows = [json.loads(l) for l in (run / "analysis" / f"fidelity_{phase}.jsonl").open()]
        assert len(rows) == 4 and all(set(r) == {"prompt", "continuation", "lang"} for r in rows)
