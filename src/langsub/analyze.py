"""Recompute the analyses of a finished run, without retraining.

    python -m langsub.analyze outputs/lape/af/<time>                      # its analyses, or all
    python -m langsub.analyze outputs/lape/af/<time> analysis=[reversal]  # only some
    python -m langsub.analyze outputs/lape/af/<time> eval.lm_eval.tasks=[langsub_cloze_af]

Reads <run>/.hydra/config.yaml (key=value arguments override it), the base model it names,
neurons.json and delta.safetensors (export/ for methods without a delta, e.g. lora);
writes <run>/analysis/ as the main job does and adds the scalar results to metrics.json.
lm-eval runs only when eval.lm_eval.tasks is given on this command line.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from langsub.validate import ConfigError

_ROOT = Path(__file__).resolve().parents[2]  # a checkout: the repo root, where conf/ and data/ are


def run_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's config with `overrides`, its output dir set to `run_dir`."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no .hydra/config.yaml (not a langsub run dir)")
    os.environ.setdefault("LANGSUB_ROOT", str(_ROOT if (_ROOT / "conf").is_dir() else Path.cwd()))
    cfg = OmegaConf.load(path)
    cfg.paths.output_dir = str(run_dir)
    given = OmegaConf.from_dotlist(overrides)
    if "analysis" not in given and not cfg.get("analysis"):
        cfg.analysis = "all"
    if OmegaConf.select(given, "eval.lm_eval.tasks") is None:  # benchmarks only when asked here
        OmegaConf.update(cfg, "eval.lm_eval.tasks", [], merge=True)
    return OmegaConf.merge(cfg, given)


def run_problems(run_dir: Path, kinds: set[str], benchmarks: bool = False) -> list[str]:
    """What the chosen analyses (and benchmarks) need from the run dir."""
    after = (run_dir / "delta.safetensors").is_file() or (run_dir / "export").is_dir()
    if (kinds & {"alignment", "weights", "reversal"} or benchmarks) and not after:
        return [f"{run_dir}: neither delta.safetensors nor export/ (run with export=true)"]
    return []


def load_export(run_dir: Path, cfg):
    """The merged model the run exported (methods without a neuron delta, e.g. lora)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        run_dir / "export", dtype=getattr(torch, cfg.model.get("dtype", "float32"))).eval()


def analyze(run_dir: Path, overrides: list[str]) -> dict:
    """Everything `python -m langsub.analyze` does; returns the scalars added to metrics.json."""
    import torch
    from safetensors.torch import load_file

    from langsub import analyses_run as R
    from langsub.analysis import current_slices, snapshot_ffn, weight_change
    from langsub.benchmarks import run_phase
    from langsub.export import apply_deltas
    from langsub.lape import load_neurons
    from langsub.run import build_datamodule, load_model
    from langsub.validate import check_config

    cfg = run_config(run_dir, overrides)
    check_config(cfg)
    kinds = R.wanted(cfg)
    problems = run_problems(run_dir, kinds, bool(cfg.eval.lm_eval.tasks))
    if problems:
        raise ConfigError("\n".join(problems))
    model, tok = load_model(cfg.model)
    dm, target, out = build_datamodule(cfg, tok), cfg.lang.code, run_dir / "analysis"
    out.mkdir(exist_ok=True)
    masks = load_neurons(run_dir / "neurons.json") if (run_dir / "neurons.json").is_file() else None
    delta = load_file(str(run_dir / "delta.safetensors")) \
        if (run_dir / "delta.safetensors").is_file() else None
    device = "cuda" if torch.cuda.is_available() else None  # lm-eval only; analyses on CPU
    res = run_phase(model, tok, cfg, "before", device=device)
    if "deactivation" in kinds and masks is not None:
        res.update(R.deactivation(out, model.eval(), dm, masks, cfg.seed,
                                  cfg.analysis_eval_tokens, None))
    langs = [target] + [lang for lang in dm.eval_langs if lang != target]
    align = R.alignment_curves(model, tok, cfg, langs) if "alignment" in kinds else None
    snapshot = snapshot_ffn(model) if "weights" in kinds else None
    original = current_slices(model, delta) if "reversal" in kinds and delta else None
    if kinds & {"alignment", "weights", "reversal"} or cfg.eval.lm_eval.tasks:  # fine-tuned now
        if delta is not None:
            apply_deltas(model, [run_dir / "delta.safetensors"])
        else:
            model = None  # free the base first
            model = load_export(run_dir, cfg)
        res.update(run_phase(model, tok, cfg, "after", device=device))
    if align is not None:
        res.update(R.write_alignment(out, align, R.alignment_curves(model, tok, cfg, langs),
                                     target, None))
    if snapshot is not None:
        res.update(R.write_weights(out, weight_change(snapshot, model), None))
    if "reversal" in kinds:
        res.update(R.reversal(out, model, dm, target, delta, original,
                              cfg.data.eval_max_tokens, None))
    add_to_metrics(run_dir / "metrics.json", res)
    return res


def add_to_metrics(path: Path, res: dict) -> None:
    from langsub.stats import atomic_write_text

    if path.is_file():
        atomic_write_text(path, json.dumps({**json.loads(path.read_text()), **res}, indent=1))


def main(argv=None) -> None:
    from langsub.cli import USER_ERRORS, fail

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        fail(__doc__.strip().splitlines()[2].strip() + "  (usage: RUN_DIR [key=value ...])")
    try:
        res = analyze(Path(argv[0]), argv[1:])
    except USER_ERRORS as e:
        if os.environ.get("LANGSUB_DEBUG"):
            raise
        fail(str(e).replace("\n", "\n       "))
    for k, v in res.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    print(f"analyses written to {Path(argv[0]) / 'analysis'}")


if __name__ == "__main__":
    main()
