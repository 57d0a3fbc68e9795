"""Running `python train.py debug=fast` from the tests: the seconds-long default run."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

FAST = ["debug=fast"]


TIMING = ("train_seconds", "stats_cache_hit", "before_cache_hit", "train_tokens_per_s", "stats_seconds",
          "stats_tokens_per_s", "peak_rss_gb", "peak_gpu_memory_gb", "lm_eval_seconds/before",
          "lm_eval_seconds/after", "heldout_seconds/before", "heldout_seconds/after")


def drop_timing(m: dict) -> dict:
    """metrics.json without what the clock and the cache decide."""
    for k in TIMING:
        m.pop(k, None)
    return m


def fast(args, tmp_path, run="run"):
    r = subprocess.run([sys.executable, "train.py", *FAST, f"paths.cache_dir={tmp_path}/cache",
                        f"hydra.run.dir={tmp_path}/{run}", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp_path / run
