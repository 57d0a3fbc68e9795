"""lm-eval on the embedded model with the shipped local task, offline; result flattening."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import ROOT

TASKS = ROOT / "data" / "lm_eval"


def _ecfg(**kw):
    return {"tasks": ["langsub_cloze_af"], "num_fewshot": 0, "limit": 40, "batch_size": 16,
            "bootstrap_iters": 100, "include_path": [str(TASKS)], **kw}


def test_flatten_names_and_drops_non_numbers():
    from langsub.evaluation.benchmarks import flatten

    res = {"t": {"alias": "t", "sample_len": 10, "acc,none": 0.5, "acc_stderr,none": "N/A",
                 "exact_match,strict-match": 0.25, "f1,none": float("nan")}}
    assert flatten(res) == {"t/acc": 0.5, "t/exact_match_strict-match": 0.25}


@torch.no_grad()
def _own_accuracy(model, tok, items) -> float:
    """acc of the task computed directly: argmax over choices of log p(choice | prefix)."""
    right = 0
    for it in items:
        lls = []
        for choice in it["choices"]:
            ctx = tok.encode(it["prefix"])
            whole = tok.encode(it["prefix"] + choice)
            logp = model(input_ids=torch.tensor([whole])).logits[0, :-1].log_softmax(-1)
            pos = torch.arange(len(ctx) - 1, len(whole) - 1)
            lls.append(float(logp[pos, torch.tensor(whole[len(ctx):])].sum()))
        right += int(max(range(4), key=lls.__getitem__) == it["label"])
    return right / len(items)


def test_local_task_on_embedded_model(embedded):
    """The shipped task runs offline through lm-eval's HF wrapper; acc equals a direct count."""
    from langsub.evaluation.benchmarks import evaluate

    model, tok = embedded
    r = evaluate(model, tok, _ecfg())
    assert set(r) == {"langsub_cloze_af/acc", "langsub_cloze_af/acc_norm",
                      "langsub_cloze_af/acc_stderr", "langsub_cloze_af/acc_norm_stderr"}
    assert all(math.isfinite(v) for v in r.values())
    assert 0 <= r["langsub_cloze_af/acc"] <= 1 and 0 <= r["langsub_cloze_af/acc_norm"] <= 1
    items = [json.loads(l) for l in open(TASKS / "langsub_cloze/af.jsonl", encoding="utf-8")]
    assert r["langsub_cloze_af/acc"] == pytest.approx(_own_accuracy(model, tok, items[:40]))


def test_local_task_files_are_what_the_script_builds(tmp_path):
    """The committed task data is reproducible from the corpus."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "scripts/build_lm_eval_tasks.py", "--out", str(tmp_path)],
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    for p in tmp_path.iterdir():
        assert p.read_bytes() == (TASKS / "langsub_cloze" / p.name).read_bytes(), p.name
    items = [json.loads(l) for l in open(tmp_path / "af.jsonl", encoding="utf-8")]
    assert len(items) == 100 and all(len(set(i["choices"])) == 4 for i in items)
