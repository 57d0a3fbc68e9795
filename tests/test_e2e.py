"""End to end: `python train.py` on the embedded default, as a user runs it (small budget)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, TINY
from runs import FAST, drop_timing as _drop_timing, fast as _fast

SMALL = ["train.max_tokens=8192", "train.val_every_n_steps=2", "data.ident_max_tokens=4096",
         "data.eval_max_tokens=1280", "eval.heldout.max_tokens=1280"]
pytestmark = pytest.mark.slow


def _train(args, tmp_path, timeout=600):
    flags = [a for a in args if a.startswith("-")]
    args = [a for a in args if not a.startswith("-")]
    r = subprocess.run([sys.executable, "train.py", *flags, *SMALL,
                        f"paths.cache_dir={tmp_path}/cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2-job rho sweep: statistics are computed by the first job only."""
    tmp = tmp_path_factory.mktemp("sweep")
    _train(["-m", "method=lape", "lang=af", "rho=0.05,0.02", f"hydra.sweep.dir={tmp}/sweep"], tmp)
    runs = sorted(p for p in (tmp / "sweep").iterdir() if p.is_dir())
    return [(r, json.loads((r / "metrics.json").read_text())) for r in runs]


def test_sweep_computes_statistics_once(sweep):
    hits = [m["stats_cache_hit"] for _, m in sweep]
    assert hits == [False, True]
    # the untouched model's perplexities too: measured by the first job, read by the second
    assert [m["before_cache_hit"] for _, m in sweep] == [False, True]
    before = [{k: v for k, v in m.items() if k.startswith(("ppl_before/", "valid_ppl_before/"))}
              for _, m in sweep]
    assert len(before[0]) > 10 and before[0] == before[1]
    held = [{k: v for k, v in m.items() if k.startswith("heldout_ppl_before/")} for _, m in sweep]
    assert len(held[0]) >= 8 and held[0] == held[1]  # held-out text: the same cache
    assert sweep[0][1]["rho"] == 0.05 and sweep[1][1]["rho"] == 0.02
    assert sweep[0][1]["neurons"] > sweep[1][1]["neurons"] > 0


def test_metrics_json_keys(sweep):
    run, m = sweep[0]
    for k in ("method", "lang", "rho", "threshold", "seed", "base_model", "neurons",
              "trainable_params", "total_params", "trainable_fraction", "ppl_before/target",
              "ppl_after/target", "ppl_before/general", "ppl_after/general", "stats_cache_hit",
              "train_seconds", "tokens_seen", "ppl_before/af", "ppl_after/en"):
        assert k in m, k
    assert m["trainable_params"] == m["neurons"] * 3 * 256
    assert m["dtype"] == "float32"  # the embedded model's, recorded as resolved
    assert m["tokens_seen"] > 0 and m["ppl_after/target"] < m["ppl_before/target"]
    assert (run / "tensorboard").is_dir() and list((run / "figures").glob("*.png"))


def test_export_differs_from_base_only_in_selected_slices(sweep):
    from transformers import AutoModelForCausalLM

    run, m = sweep[0]
    neurons = json.loads((run / "neurons.json").read_text())
    mask = neurons["af"]
    assert sum(map(len, mask)) == m["neurons"] == neurons["counts"]["af"]
    base = AutoModelForCausalLM.from_pretrained(TINY).state_dict()
    new = AutoModelForCausalLM.from_pretrained(run / "export").state_dict()
    assert set(base) == set(new)
    moved = 0
    for k, v in base.items():
        diff = v != new[k]
        if ".mlp." not in k:
            assert not diff.any(), k
            continue
        layer = int(k.split(".")[2])
        sel = torch.zeros(v.shape[0] if "down" not in k else v.shape[1], dtype=torch.bool)
        sel[mask[layer]] = True
        if "down_proj" in k:
            assert not diff[:, ~sel].any(), k
        else:
            assert not diff[~sel].any(), k
        moved += int(diff.any())
    assert moved > 0
    d = load_file(str(run / "delta.safetensors"))
    assert sum(t.numel() for n, t in d.items() if n.endswith(".delta")) == m["trainable_params"]


@pytest.mark.parametrize("method", ["random", "lora"])
def test_other_methods_write_metrics(method, tmp_path):
    _train([f"method={method}", "lang=af", f"hydra.run.dir={tmp_path}/run"], tmp_path)
    m = json.loads((tmp_path / "run/metrics.json").read_text())
    assert m["method"] == method and m["trainable_params"] > 0
    assert (tmp_path / "run/export/config.json").exists()


def test_analysis_outputs(tmp_path):
    """analysis=all, and the forgetting curve (data.track_blocks) with its report section."""
    run = _fast(["analysis=all", "data.track_blocks=2"], tmp_path)
    m = json.loads((run / "metrics.json").read_text())
    curve = m["val_curve"]  # before step 1 (the sanity check), steps 2 and 4
    assert [(p["step"], p["tokens"]) for p in curve] == [(0, 0), (2, 4096), (4, 8192)]
    assert all({"af", "en", "de", "general"} <= set(p) for p in curve)
    assert curve[-1]["af"] < curve[0]["af"]
    r = subprocess.run([sys.executable, "-m", "langsub.report", str(run)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and (run / "forgetting.png").exists()
    assert "## Forgetting over training" in (run / "report.md").read_text()
    for f in ("deactivation.json", "deactivation_random.json", "alignment.json",
              "weight_change.json", "reversal.json", "deactivation.png", "alignment.png"):
        assert (run / "analysis" / f).exists(), f
    d = json.loads((run / "analysis/deactivation.json").read_text())
    assert len(d["matrix"]) == len(d["langs"]) == 4
    assert m["deactivation/diag"] > 2 * m["deactivation/offdiag"]
    assert -1 <= m["alignment_before/en"] <= 1 and -1 <= m["alignment_after/en"] <= 1
    w = json.loads((run / "analysis/weight_change.json").read_text())
    assert set(w) == {"gate", "up", "down"} and all(len(v) == 4 for v in w.values())


def test_same_seed_same_results(tmp_path):
    a = _fast([], tmp_path, "a")
    b = _fast([], tmp_path, "b")
    assert (a / "neurons.json").read_text() == (b / "neurons.json").read_text()
    ma, mb = (json.loads((x / "metrics.json").read_text()) for x in (a, b))
    for m in (ma, mb):
        _drop_timing(m)
    assert ma == mb


def test_report_renders_every_method(tmp_path):
    """Two methods with the paper's suite on the stand-ins (eval=paper_offline): every
    task scored before and after, and the report's Table 2."""
    for meth in ("lape", "full"):
        _fast([f"method={meth}", "eval=paper_offline", "eval.lm_eval.limit=2"], tmp_path,
              f"sweep/{meth}")
    m = json.loads((tmp_path / "sweep/lape/metrics.json").read_text())
    for phase in ("before", "after"):
        for key in ("flores_af_en/chrf", "flores_en_af/chrf", "opus_af_en/bleu", "sib200_af/acc",
                    "belebele_af/acc", "belebele_af_ll/acc", "mmlu/acc", "hellaswag/acc",
                    "arc_easy/acc", "arc_challenge_ll/acc", "piqa/acc", "winogrande_ll/acc"):
            assert 0 <= m[f"lm_eval_{phase}/langsub_{key}"] <= 100, (phase, key)
    r = subprocess.run([sys.executable, "-m", "langsub.report", str(tmp_path / "sweep")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "sweep/report.md").read_text()
    assert "| lape | af |" in md and "| full | af |" in md
    assert (tmp_path / "sweep/report.png").stat().st_size > 1000
    assert "The paper's evaluation suite (Table 2)" in md
    for row in ("| af | base | 2 |", "| af | lape | 1 |", "| af | full | 1 |"):
        assert md.count(row) == 2, row  # generation and log-likelihood tables
    assert (tmp_path / "sweep/paper_table.png").stat().st_size > 1000


def test_ddp_cpu_statistics_equal_one_process(tmp_path):
    """trainer=ddp_cpu (2 processes, gloo): identical counts, identical selection."""
    one = _fast([f"paths.cache_dir={tmp_path}/c1"], tmp_path, "one")
    two = _fast(["trainer=ddp_cpu", f"paths.cache_dir={tmp_path}/c2"], tmp_path, "two")
    s1, = (tmp_path / "c1/stats").glob("*.safetensors")
    s2, = (tmp_path / "c2/stats").glob("*.safetensors")
    a, b = load_file(str(s1)), load_file(str(s2))
    assert torch.equal(a["over_zero"], b["over_zero"]) and torch.equal(a["n_tokens"], b["n_tokens"])
    n1, n2 = (json.loads((r / "neurons.json").read_text()) for r in (one, two))
    assert n1["langs"] == n2["langs"]
    assert (two / "train_ddp_process_1.log").exists()  # really two processes
    m = json.loads((two / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["replicas_identical"] is True


def test_ddp_cpu_inside_a_multirun_sweep(tmp_path):
    """Each job of a -m sweep launches its own two ranks (not the whole sweep again)."""
    r = subprocess.run([sys.executable, "train.py", "-m", *FAST, "trainer=ddp_cpu",
                        "rho=0.05,0.02", "export=false", f"paths.cache_dir={tmp_path}/cache",
                        f"hydra.sweep.dir={tmp_path}/sweep"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job, rho in zip(jobs, (0.05, 0.02)):
        d = tmp_path / "sweep" / job
        m = json.loads((d / "metrics.json").read_text())
        assert m["rho"] == rho and m["world_size"] == 2 and m["replicas_identical"] is True
        assert (d / "train_ddp_process_1.log").exists()


def test_selection_from_original_activation_files(tmp_path):
    """Raw per-language files of the original code select without a statistics pass."""
    from safetensors.torch import load_file as lf

    first = _fast([], tmp_path, "first")
    stats, = (tmp_path / "cache/stats").glob("*.safetensors")
    t = lf(str(stats))
    files = []
    for k in range(t["n_tokens"].numel()):
        f = tmp_path / f"activation.{k}.pt"
        torch.save({"n": int(t["n_tokens"][k]), "over_zero": t["over_zero"][..., k]}, f)
        files.append(str(f))
    second = _fast([f"method.activation_files=[{','.join(files)}]",
                    f"paths.cache_dir={tmp_path}/empty"], tmp_path, "second")
    a, b = (json.loads((r / "neurons.json").read_text()) for r in (first, second))
    assert a["langs"] == b["langs"]
    assert not (tmp_path / "empty/stats").exists()  # no statistics pass ran


@pytest.fixture(scope="module")
def transfer(tmp_path_factory):
    """af's data on de's neurons (debug=fast identifies af en de ka), with the reversal
    analysis and an lm-eval task: one run serves three tests on 2 cores."""
    tmp = tmp_path_factory.mktemp("transfer")
    run = _fast(["method.neurons_from=de", "analysis=[reversal]",
                 "eval.lm_eval.tasks=[langsub_cloze_af]", "eval.lm_eval.limit=8"], tmp)
    return run, json.loads((run / "metrics.json").read_text())


def test_transfer_trains_the_other_language_s_neurons(transfer):
    run, m = transfer
    neurons = json.loads((run / "neurons.json").read_text())
    assert m["lang"] == "af" and m["neurons_from"] == "de"
    assert neurons["meta"]["neurons_from"] == "de"
    assert neurons["af"] == neurons["langs"]["de"] != neurons["langs"]["af"]
    assert m["neurons"] == neurons["counts"]["de"]
    d = load_file(str(run / "delta.safetensors"))
    for layer, idx in enumerate(neurons["langs"]["de"]):
        key = f"model.layers.{layer}.mlp.down_proj.index"
        assert d[key].tolist() == idx if idx else key not in d
    assert m["ppl_after/target"] != m["ppl_before/target"]


def test_reversal_in_the_main_job(transfer):
    run, m = transfer
    r = json.loads((run / "analysis/reversal.json").read_text())
    assert list(r) == ["full", "revert_gate", "revert_up", "revert_down", "before"]
    assert r["full"] == pytest.approx(m["ppl_after/target"], rel=1e-5)  # same test blocks
    assert r["before"] == pytest.approx(m["ppl_before/target"], rel=1e-5)
    for c in ("gate", "up", "down"):
        assert m[f"reversal/{c}"] == r[f"revert_{c}"] != r["full"]
    assert (run / "analysis/reversal.png").exists()


def test_lm_eval_in_the_main_job(transfer):
    _, m = transfer
    for phase in ("before", "after"):
        for metric in ("acc", "acc_norm"):
            v = m[f"lm_eval_{phase}/langsub_cloze_af/{metric}"]
            assert 0 <= v <= 1 and v * 8 == round(v * 8)  # limit=8 items


def test_analyze_a_finished_run(transfer, tmp_path):
    """`python -m langsub.analyze RUN` recomputes from base + delta what the main job wrote."""
    import shutil

    src, m = transfer
    run = tmp_path / "run"
    shutil.copytree(src, run)
    shutil.rmtree(run / "analysis")
    r = subprocess.run([sys.executable, "-m", "langsub.analyze", str(run),
                        "analysis=[reversal,weights]"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "analysis/reversal.json").read_text() == \
        (src / "analysis/reversal.json").read_text()
    w = json.loads((run / "analysis/weight_change.json").read_text())
    assert set(w) == {"gate", "up", "down"} and max(w["down"]) > 0
    m2 = json.loads((run / "metrics.json").read_text())
    assert m2["weight_change/down"] > 0 and m2["reversal/up"] == m["reversal/up"]
    r = subprocess.run([sys.executable, "-m", "langsub.analyze", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


