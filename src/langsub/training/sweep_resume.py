"""Sweeps that survive a stop: a rerun of a `-m` sweep into the same sweep dir skips the jobs
that finished and resumes the interrupted one from its last.ckpt.

Each job records the fingerprint of its resolved config in `<job dir>/langsub_job.json`
when it starts; `metrics.json` is written atomically at its end, so its presence means the
job is complete. A job dir whose record names another config is refused in one line (the
rerun would mix two experiments in one sweep).
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from langsub.errors import ConfigError
from langsub.io import atomic_write_text, fingerprint

RECORD = "langsub_job.json"
VOLATILE = ("resume",)  # keys a rerun may change without changing the experiment


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_config(cfg: DictConfig) -> dict:
    c = OmegaConf.to_container(cfg, resolve=True)
    for k in VOLATILE:
        c.pop(k, None)
    return c


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out


def resume_or_skip(cfg: DictConfig) -> dict | None:
    """In a -m sweep: the metrics of a job that already finished (skip it), else None after
    turning `resume` on where the job left a last.ckpt. Outside a sweep: None, untouched."""
    if not in_multirun():
        return None
    out = Path(cfg.paths.output_dir)
    mine = job_config(cfg)
    record = out / RECORD
    if record.is_file():
        theirs = json.loads(record.read_text())
        if theirs.get("fingerprint") != fingerprint(mine):
            diff = _differences(theirs.get("config", {}), mine)
            raise ConfigError(f"hydra.sweep.dir: {out} holds a job of another config (differs in "
                              f"{', '.join(diff[:4]) or 'its keys'}); rerun with the same "
                              "overrides or choose a new hydra.sweep.dir")
        if (out / "metrics.json").is_file():
            print(f"[langsub] {out}: finished earlier (metrics.json), skipped")
            return json.loads((out / "metrics.json").read_text())
        if (out / "checkpoints" / "last.ckpt").is_file():
            print(f"[langsub] {out}: interrupted earlier, resuming from checkpoints/last.ckpt")
            cfg.resume = True
        return None
    atomic_write_text(record, json.dumps({"fingerprint": fingerprint(mine), "config": mine},
                                         indent=1, default=str))
    return None
