"""Two-phase sweep: every method over its learning-rate grid (first seed), the rate chosen by
one rule on the validation split, then the chosen rate over the other seeds."""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class CompareSweeperConf:
    _target_: str = "hydra_plugins.langsub_compare.compare_sweeper.CompareSweeper"
    methods: List[str] = field(default_factory=lambda: ["lape", "random", "lora", "ia3",
                                                        "ffn", "full"])
    lr_factors: List[float] = field(default_factory=lambda: [0.1, 0.316, 1.0, 3.16, 10.0])
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    max_general_rise: float = 0.01
    params: Optional[Any] = None


ConfigStore.instance().store(group="hydra/sweeper", name="langsub_compare",
                             node=CompareSweeperConf, provider="langsub")


class CompareSweeper(Sweeper):
    def __init__(self, methods, lr_factors, seeds, max_general_rise, params=None):
        self.methods, self.lr_factors = list(methods), [float(f) for f in lr_factors]
        self.seeds, self.max_general_rise = [int(s) for s in seeds], max_general_rise
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _default_lr(self, arguments: List[str], method: str) -> float:
        cfg = self.hydra_context.config_loader.load_sweep_config(
            self.config, [*arguments, f"method={method}"])
        return float(cfg.method.lr)

    def _launch(self, jobs: List[List[str]], first: int) -> List[dict]:
        out = []
        for r in self.launcher.launch(jobs, initial_job_idx=first):
            _ = r.return_value  # a failed job raises here
            run_dir = Path(r.hydra_cfg.hydra.runtime.output_dir)
            out.append(json.loads((run_dir / "metrics.json").read_text()))
        return out

    def sweep(self, arguments: List[str]) -> Any:
        from langsub.errors import fail
        from langsub.errors import ConfigError
        from langsub.report import compare

        try:
            compare.check(self.methods, self.lr_factors, self.seeds, self.max_general_rise)
        except ConfigError as e:
            fail(str(e).replace("\n", "\n       "))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        args = [a for a in arguments if not a.startswith(("method=", "seed=", "train.lr="))]
        grids = {m: compare.grid(self._default_lr(args, m), self.lr_factors) for m in self.methods}
        jobs = [[*args, f"method={m}", f"train.lr={lr}", f"seed={self.seeds[0]}"]
                for m in self.methods for lr in grids[m]]
        first = self._launch(jobs, 0)
        chosen = {m: compare.choose([r for r in first if r["method"] == m],
                                    self.max_general_rise) for m in self.methods}
        spec = {"rule": compare.rule_text(compare.general_source(first), self.max_general_rise),
                "lr_factors": self.lr_factors,
                "grid": grids, "seeds": self.seeds, "methods": self.methods,
                "max_general_rise": self.max_general_rise}
        compare.write_choice(sweep_dir, chosen, spec)
        log.info(f"chosen learning rates: { {m: c['lr'] for m, c in chosen.items()} }")
        jobs = [[*args, f"method={m}", f"train.lr={chosen[m]['lr']}", f"seed={s}"]
                for m in self.methods for s in self.seeds[1:]]
        return [first, self._launch(jobs, len(first)) if jobs else []]
