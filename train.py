"""langsub: fine-tune only the language-specific neurons of a causal LM.

    python train.py method=lape lang=af                         # the main job
    python train.py -m method=lape lang=af rho=0.01,0.02,0.05   # a sweep (statistics computed once)
    python train.py method=lora lang=af trainer=gpu model=llama31_8b
    tensorboard --logdir outputs
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("LANGSUB_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without install too

from langsub.cli import precheck, user_errors  # noqa: E402

precheck(ROOT / "conf")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@user_errors
def main(cfg: DictConfig) -> float:
    from langsub.validate import check_config

    check_config(cfg)  # bad input: one line in seconds, before Lightning and the data stack load
    from langsub.run import run

    m = run(cfg, checked=True)
    if cfg.objective == "target_and_general":  # two objectives for Optuna's NSGA-II
        return m.get("ppl_after/target"), m.get("ppl_after/general")
    return m.get("ppl_after/target")  # what a sweeper minimises


if __name__ == "__main__":
    main()
