"""hydra/launcher=slurm: SLURM sweeps through hydra-submitit-launcher (the `sweep` extra)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from conftest import ROOT

pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                    reason="hydra-submitit-launcher is not installed: pip install -e '.[sweep]'")


def test_slurm_launcher_config_composes():
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                          "hydra.launcher.gpus_per_node=8",
                                          "hydra.launcher.tasks_per_node=8", "trainer=ddp"],
                      return_hydra_config=True)
    la = cfg.hydra.launcher
    assert la._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (la.partition, la.gpus_per_node, la.tasks_per_node, la.nodes) == ("gpu", 8, 8, 1)
    assert la.timeout_min == 240 and la.mem_gb == 64 and la.cpus_per_task == 8
    r = subprocess.run([sys.executable, "train.py", "hydra/launcher=slurm", "--cfg", "hydra"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "SlurmLauncher" in r.stdout and "timeout_min: 240" in r.stdout


@pytest.mark.slow
def test_sweep_runs_through_submitit(tmp_path):
    """The same plugin with its local executor: jobs are pickled, run and write their dirs."""
    r = subprocess.run([sys.executable, "train.py", "-m", "hydra/launcher=submitit_local",
                        "hydra.launcher.timeout_min=15", "debug=fast", "train.max_steps=2",
                        "export=false", "rho=0.05", f"hydra.sweep.dir={tmp_path}/sweep",
                        f"paths.cache_dir={tmp_path}/cache"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "sweep/0/metrics.json").read_text())
    assert m["ppl_after/target"] > 0 and m["rho"] == 0.05
    assert list((tmp_path / "sweep/.submitit").glob("*/*_result.pkl"))
