"""Two-phase sweep: every method over its learning-rate grid (first seed), the rate chosen by
one rule on the validation split, then the chosen rate over the other seeds.

The grid points measure what the rule reads. When the jobs run benchmarks (`eval.lm_eval`, e.g.
eval=heldout), the grid jobs leave them out (`eval.lm_eval.suite=null eval.lm_eval.tasks=[]
compare_phase=grid`) and the chosen rate runs over every seed, the first included, with
everything measured; `hydra.sweeper.benchmark_grid=true` runs them on every grid point instead
(and the first seed's grid run is reused)."""

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
    benchmark_grid: bool = False    # true: the benchmarks run on every grid point too
    params: Optional[Any] = None


ConfigStore.instance().store(group="hydra/sweeper", name="langsub_compare",
                             node=CompareSweeperConf, provider="langsub")


class CompareSweeper(Sweeper):
    def __init__(self, methods, lr_factors, seeds, max_general_rise, benchmark_grid=False,
                 params=None):
        self.methods, self.lr_factors = list(methods), [float(f) for f in lr_factors]
        self.seeds, self.max_general_rise = [int(s) for s in seeds], max_general_rise
        self.benchmark_grid = bool(benchmark_grid)
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _job_config(self, arguments: List[str], method: str):
        return self.hydra_context.config_loader.load_sweep_config(
            self.config, [*arguments, f"method={method}"])

    def _grid_only(self, job_cfg) -> List[str]:
        """Overrides that leave the benchmarks to the chosen rate's runs ([] when the jobs
        run none, or when every grid point is to run them)."""
        from langsub.evaluation.benchmarks import tasks_of

        if self.benchmark_grid or not tasks_of(job_cfg):
            return []
        return ["eval.lm_eval.suite=null", "eval.lm_eval.tasks=[]", "compare_phase=grid"]

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
        cfgs = {m: self._job_config(args, m) for m in self.methods}
        grids = {m: compare.grid(float(cfgs[m].method.lr), self.lr_factors) for m in self.methods}
        grid_only = self._grid_only(cfgs[self.methods[0]])
        jobs = [[*args, f"method={m}", f"train.lr={lr}", f"seed={self.seeds[0]}", *grid_only]
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
        again = self.seeds if grid_only else self.seeds[1:]  # the first seed re-measured in full
        jobs = [[*args, f"method={m}", f"train.lr={chosen[m]['lr']}", f"seed={s}"]
                for m in self.methods for s in again]
        return [first, self._launch(jobs, len(first)) if jobs else []]
