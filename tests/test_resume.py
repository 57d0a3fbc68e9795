"""Crashes lose nothing: a run resumes from its last checkpoint to the same metrics, a NaN
stops with the last good one kept, a killed sweep reruns only what is left."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from runs import FAST, drop_timing as _drop_timing, fast as _fast

pytestmark = pytest.mark.slow


def test_resume_continues_from_last_checkpoint(tmp_path):
    run = _fast(["train.max_steps=4"], tmp_path)
    assert (run / "checkpoints/last.ckpt").exists()
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    assert all(k.endswith(".delta") for k in ckpt["state_dict"])  # trainable tensors only
    _fast(["train.max_steps=6", "resume=true"], tmp_path)
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 6
    r = subprocess.run([sys.executable, "train.py", *FAST, f"paths.cache_dir={tmp_path}/cache",
                        f"hydra.run.dir={run}", "train.max_steps=8", "resume=true", "rho=0.02"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "trained on other neurons" in r.stderr  # not silently wrong


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    """SIGKILL mid-epoch, rerun with resume=true: the same metrics as an uninterrupted run.

    23 batches per epoch: the kill lands in epoch 0, the resumed run crosses into epoch 1,
    so both the position inside an epoch and the next epoch's order must be restored.
    """
    args = ["train.max_steps=28", "train.checkpoint_every_n_steps=4", "train.val_every_n_steps=5",
            "export=false"]
    ref = json.loads((_fast(args, tmp_path, "ref") / "metrics.json").read_text())
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "train.py", *FAST, f"paths.cache_dir={tmp_path}/cache",
                             f"hydra.run.dir={run}", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run / "checkpoints/last.ckpt"
    deadline = time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()
    step = torch.load(ckpt, weights_only=False)["global_step"]
    assert 0 < step < 23, step  # killed in the first epoch
    got = json.loads((_fast(args + ["resume=true"], tmp_path, "killed") / "metrics.json").read_text())
    for m in (ref, got):
        _drop_timing(m)
    assert got == ref


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "train.py", *FAST, "train.lr=1e30", "train.max_steps=8",
                        "train.checkpoint_every_n_steps=1", f"paths.cache_dir={tmp_path}/cache",
                        f"hydra.run.dir={run}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2
    assert "error: loss is nan" in r.stderr and "Traceback" not in r.stderr
    assert not (run / "metrics.json").exists() and not (run / "export").exists()
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert 0 < ckpt["global_step"] < 8
    assert all(v.isfinite().all() for v in ckpt["state_dict"].values())


def test_killed_sweep_rerun_finishes_only_the_rest(tmp_path):
    """A two-job sweep killed after its first job; the rerun into the same sweep dir skips
    job 0 (its metrics.json untouched) and runs job 1; another config there is refused."""
    sweep = tmp_path / "sweep"
    argv = [sys.executable, "train.py", "-m", *FAST, f"paths.cache_dir={tmp_path}/cache",
            "rho=0.05,0.02", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first = sweep / "0" / "metrics.json"
    deadline = time.time() + 600
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (sweep / "1" / "metrics.json").exists()
    stamp = first.stat().st_mtime_ns
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "finished earlier (metrics.json), skipped" in r.stdout
    assert first.stat().st_mtime_ns == stamp  # job 0 was not run again
    m1 = json.loads((sweep / "1" / "metrics.json").read_text())
    assert m1["rho"] == 0.02
    r = subprocess.run([*argv[:-2], "rho=0.05,0.01", f"hydra.sweep.dir={sweep}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "holds a job of another config (differs in rho" in r.stderr, \
        r.stderr[-2000:]
