"""Recompute the analyses of a finished run, without retraining.

    langsub analyze outputs/lape/af/<time>                      # its analyses, or all
    langsub analyze outputs/lape/af/<time> analysis=[reversal]  # only some
    langsub analyze outputs/lape/af/<time> eval.lm_eval.tasks=[langsub_cloze_af]

Reads <run>/.hydra/config.yaml (key=value arguments override it), the base model it names,
neurons.json and delta.safetensors (export/ for methods without a delta, e.g. lora);
writes <run>/analysis/ as the main job does and adds the scalar results to metrics.json.
lm-eval runs only when eval.lm_eval.tasks (or .suite=paper) is given on this command line.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from langsub.errors import ConfigError
from langsub.paths import project_root
from langsub.evaluation.benchmarks import tasks_of

_MISSING = object()


def run_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's config with `overrides`, its output dir set to `run_dir`."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: no .hydra/config.yaml (not a langsub run dir)")
    project_root()  # LANGSUB_ROOT: the config's paths resolve against it
    cfg = OmegaConf.load(path)
    cfg.paths.output_dir = str(run_dir)
    given = OmegaConf.from_dotlist(overrides)
    unknown = [o.split("=", 1)[0] for o in overrides
               if OmegaConf.select(cfg, o.split("=", 1)[0].lstrip("+"), default=_MISSING) is _MISSING]
    if unknown:
        raise ConfigError("; ".join(f"{k}: not a key of the run's config ({path})" for k in unknown))
    if "analysis" not in given and not cfg.get("analysis"):
        cfg.analysis = "all"
    for key, off in (("tasks", []), ("suite", None)):  # benchmarks only when asked here
        if OmegaConf.select(given, f"eval.lm_eval.{key}") is None:
            OmegaConf.update(cfg, f"eval.lm_eval.{key}", off, merge=True)
    return OmegaConf.merge(cfg, given)


def run_problems(run_dir: Path, analyses, benchmarks: bool = False) -> list[str]:
    """What the chosen analyses (and benchmarks) need from the run dir."""
    after = (run_dir / "delta.safetensors").is_file() or (run_dir / "export").is_dir()
    if (any(a.needs_after for a in analyses) or benchmarks) and not after:
        return [f"{run_dir}: neither delta.safetensors nor export/ (run with export=true)"]
    return []


def load_export(run_dir: Path, cfg):
    """The merged model the run exported (methods without a neuron delta, e.g. lora)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        run_dir / "export", dtype=getattr(torch, cfg.model.get("dtype", "float32"))).eval()


def _masks(run_dir: Path, target: str):
    """Every language's mask and the trained one, from the run's neurons.json (or None)."""
    from langsub.neurons.masks import load_neurons

    path = run_dir / "neurons.json"
    if not path.is_file():
        return None, None
    import torch

    masks, data = load_neurons(path), json.loads(path.read_text())
    # the top-level target entry is what trained (random or another language's neurons too)
    trained = [torch.tensor(l, dtype=torch.long) for l in data[target]] if target in data \
        else None
    return masks, trained


def analyze(run_dir: Path, overrides: list[str]) -> dict:
    """Everything `langsub analyze` does; returns the scalars added to metrics.json."""
    import torch
    from safetensors.torch import load_file

    from langsub.analysis import AnalysisContext, wanted
    from langsub.analysis.registry import run_after, run_before
    from langsub.evaluation.benchmarks import run_phase
    from langsub.export import apply_deltas
    from langsub.model.load import load_model
    from langsub.data.datamodule import LangDataModule
    from langsub.validate import check_config

    cfg = run_config(run_dir, overrides)
    check_config(cfg)
    analyses, benchmarks = wanted(cfg.get("analysis")), bool(tasks_of(cfg))
    problems = run_problems(run_dir, analyses, benchmarks)
    if problems:
        raise ConfigError("\n".join(problems))
    model, tok = load_model(cfg.model, quantized=False)  # the base a delta is shipped on
    dm = LangDataModule.from_config(cfg, tok)
    masks, trained = _masks(run_dir, cfg.lang.code)
    delta_file = run_dir / "delta.safetensors"
    delta = load_file(str(delta_file)) if delta_file.is_file() else None
    device = "cuda" if torch.cuda.is_available() else None  # lm-eval only; analyses on CPU
    ctx = AnalysisContext(cfg, run_dir / "analysis", tok, dm, masks, trained)
    res = run_phase(model, tok, cfg, "before", device=device)
    res.update(run_before(analyses, ctx, model))
    if any(a.needs_after for a in analyses) or benchmarks:  # the fine-tuned model now
        if delta is not None:
            apply_deltas(model, [delta_file])
        else:
            model = None  # free the base first
            model = load_export(run_dir, cfg)
        res.update(run_phase(model, tok, cfg, "after", device=device))
        res.update(run_after(analyses, ctx, model, delta))
    add_to_metrics(run_dir / "metrics.json", res)
    return res


def add_to_metrics(path: Path, res: dict) -> None:
    from langsub.io import atomic_write_text

    if path.is_file():
        atomic_write_text(path, json.dumps({**json.loads(path.read_text()), **res}, indent=1))


def main(argv=None) -> None:
    from langsub.errors import fail, one_line

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        fail("usage: langsub analyze RUN_DIR [key=value ...] (RUN_DIR: a finished run's "
             "directory, e.g. outputs/lape/af/<time>)")
    res = one_line(analyze, Path(argv[0]), argv[1:])
    for k, v in res.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    print(f"analyses written to {Path(argv[0]) / 'analysis'}")


if __name__ == "__main__":
    main()
