"""The state one run of the main job holds between its stages (run.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from langsub.analysis import AnalysisContext
from langsub.data.datamodule import LangDataModule
from langsub.methods import Method
from langsub.neurons.identify import Identification
from langsub.training.module import CausalLMModule


@dataclass
class Job:
    """Everything one run holds between its stages."""

    cfg: DictConfig
    out_dir: Path
    tok: object
    dm: LangDataModule
    method: Method
    module: CausalLMModule
    trainer: L.Trainer
    evaluator: L.Trainer
    total_params: int
    ident: Identification | None = None
    trained_mask: list | None = None
    analyses: list = field(default_factory=list)
    actx: AnalysisContext | None = None
    delta: dict | None = None
    delta_meta: dict | None = None
    metrics: dict = field(default_factory=dict)
    base: object = None  # run_base.Base: where the shipped model's base comes from
