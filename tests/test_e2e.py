"""End to end: `python train.py` on the embedded default, as a user runs it (small budget)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, TINY

SMALL = ["train.max_tokens=8192", "train.val_every_n_steps=2", "data.ident_max_tokens=4096",
         "data.eval_max_tokens=1280"]
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
    assert sweep[0][1]["rho"] == 0.05 and sweep[1][1]["rho"] == 0.02
    assert sweep[0][1]["neurons"] > sweep[1][1]["neurons"] > 0


def test_metrics_json_keys(sweep):
    run, m = sweep[0]
    for k in ("method", "lang", "rho", "threshold", "seed", "base_model", "neurons",
              "trainable_params", "total_params", "trainable_fraction", "target_ppl_before",
              "target_ppl_after", "general_ppl_before", "general_ppl_after", "stats_cache_hit",
              "train_seconds", "tokens_seen", "ppl_before/af", "ppl_after/en"):
        assert k in m, k
    assert m["trainable_params"] == m["neurons"] * 3 * 256
    assert m["tokens_seen"] > 0 and m["target_ppl_after"] < m["target_ppl_before"]
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
