"""Is LAPE identification stable when text is scarce? Masks from subsamples vs all the text.

    langsub stability lang=af stability.fractions=[0.25,1.0] stability.seeds=2
    langsub stability                     # defaults: 0.05 0.1 0.25 0.5 1.0 x 3 seeds

Takes the same overrides as train.py. For each fraction and seed, the statistics are
recomputed over that random share of every language's identification blocks (one pass each,
cached like the main job's), masks are selected as in the main job (`selection`: rho,
threshold, scope; or significance at alpha),
and each language's mask is compared with its mask from all the text (Jaccard of the
(layer, neuron) sets). Writes `<stability.out_dir>/stability.json` —
{"fractions", "seeds", "tokens": {lang: [per fraction]}, "jaccard": {lang: [[per seed] per
fraction]}, "neurons": {lang: [[count per seed] per fraction]}} — and `stability.png`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from langsub.errors import ConfigError
from langsub.paths import project_root


def seeds_of(value) -> list[int]:
    """`stability.seeds`: a count n (seeds 0..n-1) or a list of seeds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return list(range(value))
    return [int(s) for s in value]


def stability_problems(cfg: DictConfig) -> list[str]:
    s, out = cfg.get("stability") or {}, []
    fr = s.get("fractions")
    if not isinstance(fr, (list, ListConfig)) or not fr or any(
            isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in fr):
        out.append(f"stability.fractions={fr}: allowed is a non-empty list of numbers in (0, 1]")
    sd = s.get("seeds")
    count = isinstance(sd, int) and not isinstance(sd, bool) and sd >= 1
    listed = isinstance(sd, (list, ListConfig)) and len(sd) > 0 and all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in sd)
    if not (count or listed):
        out.append(f"stability.seeds={sd}: allowed is a count >= 1 or a non-empty list of "
                   "seeds >= 0")
    return out


def compose_config(overrides: list[str]) -> DictConfig:
    """train.py's config with `overrides` (Hydra's compose API: same groups, same checks)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from langsub.cli import check_group_choices

    root = project_root()
    problems = check_group_choices(overrides, root / "conf")
    if problems:
        raise ConfigError("\n".join(problems))
    with initialize_config_dir(str(root / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.stability.out_dir
    return cfg


def stability(cfg: DictConfig) -> dict:
    """Everything `langsub stability` does; returns stability.json's content."""
    from langsub.io import atomic_write_text
    from langsub.model.load import load_model, load_tokenizer
    from langsub.neurons.identify import gather_stats, select
    from langsub.neurons.scorers import build_scorer, selection_of
    from langsub.neurons.stability import jaccard, size
    from langsub.data.datamodule import LangDataModule
    from langsub.training.module import CausalLMModule
    from langsub.validate import check_config

    problems = stability_problems(cfg)
    check_config(cfg)  # every other key, before anything loads
    if problems:
        raise ConfigError("\n".join(problems))
    fractions, seeds = [float(f) for f in cfg.stability.fractions], seeds_of(cfg.stability.seeds)
    if selection_of(cfg).get("match"):
        raise ConfigError("selection.match: stability compares one scorer's own selections; "
                          "leave it null")
    if cfg.rho == "auto" and build_scorer(cfg).fixed_size:
        raise ConfigError("rho=auto: stability compares fixed-size selections; give a number")
    tok = load_tokenizer(cfg.model)
    dm = LangDataModule.from_config(cfg, tok)
    dm.check_blocks()
    model, tok = load_model(cfg.model, tok)
    module = CausalLMModule(model, dm.eval_langs)
    statistic = build_scorer(cfg).statistic
    over_zero, n_tokens, _ = gather_stats(cfg, module, dm, statistic=statistic)
    masks = lambda oz, n: dict(zip(dm.langs, select(cfg, oz, n, 0, model)[0]))  # noqa: E731
    full = masks(over_zero, n_tokens)
    out = {"fractions": fractions, "seeds": seeds, "langs": list(dm.langs),
           "tokens": {l: [] for l in dm.langs}, "jaccard": {l: [] for l in dm.langs},
           "neurons": {l: [] for l in dm.langs},
           "full": {"tokens": {l: int(n_tokens[k]) for k, l in enumerate(dm.langs)},
                    "neurons": {l: size(full[l]) for l in dm.langs}}}
    for f in fractions:
        runs = []
        for s in seeds:
            oz, n, _ = (over_zero, n_tokens, True) if f >= 1.0 else \
                gather_stats(cfg, module, dm, subsample=(f, s), statistic=statistic)
            runs.append((masks(oz, n), n))
        for k, l in enumerate(dm.langs):
            out["tokens"][l].append(int(runs[0][1][k]))
            out["jaccard"][l].append([jaccard(m[l], full[l]) for m, _ in runs])
            out["neurons"][l].append([size(m[l]) for m, _ in runs])
    out_dir = Path(cfg.stability.out_dir)
    atomic_write_text(out_dir / "stability.json", json.dumps(out, indent=1))
    from langsub.analysis.figures import stability_figure
    stability_figure(out, out_dir / "stability.png")
    print_table(out)
    print(f"written: {out_dir / 'stability.json'}, {out_dir / 'stability.png'}")
    return out


def print_table(o: dict) -> None:
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(f"{'lang':<6}" + "".join(f"{f:>12g}" for f in o["fractions"]) + "   (mean Jaccard "
          "vs all text; tokens at the smallest fraction)")
    for l in o["langs"]:
        print(f"{l:<6}" + "".join(f"{mean(j):>12.3f}" for j in o["jaccard"][l])
              + f"   {o['tokens'][l][0]:,}")


def main(argv=None) -> None:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from langsub.errors import fail, one_line

    from langsub.cli import hydra_message

    argv = sys.argv[1:] if argv is None else argv
    try:  # a malformed or unknown override: Hydra's error in one line
        cfg = one_line(compose_config, argv)
    except (HydraException, OmegaConfBaseException) as e:
        fail(hydra_message(e))
    one_line(stability, cfg)


if __name__ == "__main__":
    main()
