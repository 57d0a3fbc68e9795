"""Language fidelity (analysis=fidelity): prompts, classification, shares; in the main job."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("py3langid", reason="pip install -e \".[dev]\" (py3langid)")

from langsub.analysis.fidelity import (config_problems, fidelity, first_line,  # noqa: E402
                                       identifier, prompts)


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
