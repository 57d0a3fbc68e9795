"""Lightning's DDP launch inside a Hydra multirun.

Lightning starts ranks 1..N-1 by re-running `sys.argv` with `hydra.run.dir=<run.dir>`
appended. Inside a `-m` sweep that argv holds the whole sweep, so every child would start
the sweep again, and `run.dir` is not where this job writes. `ddp_safe_job` points the
children at this one job (its overrides, its output dir) and, when the job ends, takes down
the process group and the environment variables the launcher set, so the next job of the
sweep launches its own ranks afresh.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import torch


def _point_children_at_this_job() -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    sys.argv[1:] = _config_flags(sys.argv[1:]) + list(hc.overrides.task)  # no "-m"
    with read_write(hc.run):
        hc.run.dir = hc.runtime.output_dir   # what Lightning passes as hydra.run.dir


_FLAGS = ("-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir")


def _config_flags(argv: list[str]) -> list[str]:
    """The flags that choose the config (`-cn NAME`, `--config-dir=DIR`, …), kept for children."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in _FLAGS and i + 1 < len(argv):
            out += argv[i:i + 2]
            i += 1
        elif a.split("=", 1)[0] in _FLAGS:
            out.append(a)
        i += 1
    return out


@contextmanager
def ddp_safe_job():
    """Run one (possibly distributed) job; leave the process as it was afterwards."""
    argv, env = list(sys.argv), dict(os.environ)
    _point_children_at_this_job()
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        sys.argv[:] = argv
        os.environ.clear()
        os.environ.update(env)
