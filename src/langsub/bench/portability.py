"""How portable a language's delta is: on its own base, on a sibling, composed with others.

    python train.py method=lape lang=af hydra.run.dir=runs/af
    python train.py method=lape lang=mt hydra.run.dir=runs/mt
    langsub bench portability runs/af runs/mt [--noise 0.02 0.1] [--out FILE]

For each run's language (test split, the run's block size): perplexity of the base, of the
base + its delta, of a sibling (the base with seeded Gaussian noise of `noise` × each
tensor's standard deviation added to every weight: a stand-in for "the same model,
fine-tuned elsewhere", e.g. its instruct version) with and without the delta, and of the
base + every run's delta (composition). The deltas are applied by `langsub.export`, the
code the command line uses. Prints a table, writes JSON (default
docs/benchmarks/delta_portability.json).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from langsub.data.corpus import corpus_file, load_texts, pack
from langsub.evaluation.perplexity import perplexity
from langsub.export import apply_deltas, read_delta
from langsub.paths import project_root
from langsub.errors import ArgParser

ROOT = project_root()


def sibling_of(base, noise: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise * p.float().std())
    return base


def main(argv=None) -> dict:
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run dirs with delta.safetensors")
    ap.add_argument("--noise", nargs="+", type=float, default=[0.02, 0.1])
    ap.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/delta_portability.json")
    a = ap.parse_args(argv)
    deltas = [r / "delta.safetensors" for r in a.runs]
    heads = [read_delta(d)[1] for d in deltas]
    cfg = OmegaConf.load(a.runs[0] / ".hydra" / "config.yaml")
    base_path, _, revision = heads[0]["base_model"].partition("@")
    revision, dtype = revision or None, getattr(torch, heads[0]["dtype"])
    tok = AutoTokenizer.from_pretrained(base_path, revision=revision)
    langs = [h["lang"] for h in heads]
    data = {l: pack(load_texts(corpus_file(ROOT / "data" / "corpus", l), "test",
                               str(ROOT / ".cache")), tok, cfg.data.block_size,
                    cfg.data.eval_max_tokens) for l in langs}

    def model(noise=None, use=()):
        m = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, revision=revision).eval()
        if noise:
            sibling_of(m, noise)
        return apply_deltas(m, list(use), notify=lambda _: None) if use else m

    def ppls(m) -> dict:
        with torch.no_grad():
            return {l: perplexity(m, data[l]) for l in langs}

    out = {"base_model": base_path, "langs": langs, "base": ppls(model()),
           "composed": ppls(model(use=deltas)), "alone": {}, "sibling": {}}
    for l, d in zip(langs, deltas):
        out["alone"][l] = ppls(model(use=[d]))[l]
    for noise in a.noise:
        s, sd = ppls(model(noise)), {l: ppls(model(noise, [d]))[l] for l, d in zip(langs, deltas)}
        out["sibling"][str(noise)] = {"before": s, "after": sd}
    print_table(out)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    return out


def print_table(o: dict) -> None:
    change = lambda b, x: f"{100 * (x / b - 1):+.2f} %"  # noqa: E731
    print(f"{'lang':<6}{'base':>9}{'+ own delta':>22}{'+ all deltas':>22}"
          + "".join(f"{'sibling ' + n:>16}{'+ own delta':>22}{'kept':>7}" for n in o["sibling"]))
    for l in o["langs"]:
        b = o["base"][l]
        row = (f"{l:<6}{b:>9.2f}{o['alone'][l]:>10.2f} ({change(b, o['alone'][l])})"
               f"{o['composed'][l]:>10.2f} ({change(b, o['composed'][l])})")
        for s in o["sibling"].values():
            sb, sa = s["before"][l], s["after"][l]
            kept = (sb - sa) / (b - o["alone"][l])
            row += f"{sb:>16.2f}{sa:>10.2f} ({change(sb, sa)}){100 * kept:>6.0f}%"
        print(row)


if __name__ == "__main__":
    main()
