"""langsub: fine-tune only the language-specific neurons of a causal LM.

    python train.py method=lape lang=af                         # the main job
    python train.py -m method=lape lang=af rho=0.01,0.02,0.05   # a sweep (statistics computed once)
    python train.py method=lora lang=af trainer=gpu model=llama31_8b
    tensorboard --logdir outputs

The same code as `langsub train ...` (src/langsub/cli.py), runnable from a checkout
without installing.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("LANGSUB_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))  # runs from a checkout without install too

if __name__ == "__main__":
    from langsub.cli import main

    main(["train", *sys.argv[1:]])
