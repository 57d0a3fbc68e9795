"""The neuron scorers compared at one budget: one table, one figure, one JSON.

    for s in lape activation plnd attribution; do                # one fair comparison each
      m=$([ $s = lape ] || echo selection.match=lape)
      python train.py -m experiment=compare 'hydra.sweeper.methods=[lape]' lang=af selection=$s $m \
        'analysis=[deactivation]' hydra.sweep.dir=outputs/scorers_af/$s
    done
    langsub bench scorers --model tiny --out docs/benchmarks/scorers_tiny.json
    langsub report scorers outputs/scorers_af --bench docs/benchmarks/scorers_tiny.json \
      --out docs/scorers/tiny/af
    # several roots, e.g. lape's row from the method comparison's sweep (its first method):
    langsub report scorers outputs/compare_cy outputs/scorers_cy --out docs/scorers/cy

Reads every compare sweep below each ROOT (a `compare.json` and its jobs' metrics.json), grouped
by the run's `selection`, and every single run outside a sweep (a metrics.json alone: one
seed at the rate it was given, labelled "given, one run" — not tuned); per scorer: the
neurons of the target, the rate the comparison's rule chose (or the run's), target and
general test-perplexity change at it (mean ± std over the seeds),
the deactivation contrast of the run that has one (analysis/deactivation.json: the mean rise
of a language's own perplexity when its neurons are off, of the other languages', and of its
own with random neurons of the same counts), the pass's cost (its tokens/s against the plain
decoder forward, from `bench_scorers.py`), and the Jaccard overlap of the scorers' masks
(neurons.json: every language's neurons, mean over languages, and the target's alone).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from langsub.io import atomic_write_text
from langsub.report import compare
from langsub.report.build import load_runs
from langsub.report.charts import pct
from langsub.errors import ArgParser

PASS_OF = {"lape": "counts", "significance": "counts", "activation": "values",
           "plnd": "importance", "attribution": "gradients"}


def sweeps(*roots: Path) -> dict[str, tuple[Path, dict | None, list[dict]]]:
    """{scorer: (dir, its compare.json or None for a single run, its runs)} for every compare
    sweep below the roots and every run outside one; a scorer found twice is one line."""
    out, where = {}, {}
    specs = sorted(p for root in roots for p in root.rglob("compare.json"))
    for spec_path in specs:
        d, runs = spec_path.parent, load_runs(spec_path.parent)
        _add(out, where, runs[0].get("selection"), (d, json.loads(spec_path.read_text()), runs))
    for m_path in sorted(p for root in roots for p in root.rglob("metrics.json")):
        d = m_path.parent
        if any(s.parent in (d, *d.parents) for s in specs):
            continue  # a job of a sweep above
        m = json.loads(m_path.read_text())
        m["_dir"] = "."
        _add(out, where, m.get("selection"), (d, None, [m]))
    return out


def _add(out: dict, where: dict, scorer: str | None, found: tuple) -> None:
    scorer = scorer or "lape"
    if scorer in out:
        raise SystemExit(f"selection={scorer} is in both {where[scorer]} and {found[0]}: "
                         "keep one of them below the root")
    out[scorer], where[scorer] = found, found[0]


def masks(run_dir: Path) -> dict[str, set[tuple[int, int]]]:
    """Every language's neurons as a set of (layer, neuron)."""
    langs = json.loads((run_dir / "neurons.json").read_text())["langs"]  # {lang: per layer}
    return {l: {(i, int(n)) for i, layer in enumerate(m) for n in layer} for l, m in langs.items()}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def deactivation(run_dir: Path, target: str) -> dict | None:
    """Own, others' and random-neuron perplexity rise (%), mean over languages and the target's."""
    own_p, rand_p = run_dir / "analysis" / "deactivation.json", \
        run_dir / "analysis" / "deactivation_random.json"
    if not own_p.is_file():
        return None
    own, rand = json.loads(own_p.read_text()), json.loads(rand_p.read_text())
    cols = own["eval_langs"]

    def diag(r):
        return {l: r["matrix"][i][cols.index(l)] for i, l in enumerate(r["langs"]) if l in cols}

    d, rd = diag(own), diag(rand)
    off = [own["matrix"][i][j] for i, l in enumerate(own["langs"]) for j, c in enumerate(cols)
           if c != l]
    row = own["matrix"][own["langs"].index(target)]
    return {"own": 100 * sum(d.values()) / len(d), "others": 100 * sum(off) / len(off),
            "random": 100 * sum(rd.values()) / len(rd), "target_own": 100 * d.get(target, math.nan),
            "target_others": 100 * sum(v for c, v in zip(cols, row) if c != target) / (len(cols) - 1),
            "langs": len(d)}


def scorer_row(scorer: str, sweep: tuple, bench: dict) -> dict:
    d, spec, runs = sweep
    if spec is None:  # a single run: its own rate, not tuned
        chosen, at = {"lr": runs[0]["lr"], "met_rule": None}, runs
    else:
        method = spec["methods"][0]
        chosen = spec["chosen"][method]
        at = compare.at_chosen(runs, method, chosen["lr"])
    t = [pct(m["ppl_after/target"], m["ppl_before/target"]) for m in at]
    g = [pct(m["ppl_after/general"], m["ppl_before/general"]) for m in at]
    with_deact = [m for m in runs if (d / m["_dir"] / "analysis" / "deactivation.json").is_file()]
    first = at[0]
    stats = [m for m in runs if m.get("stats_seconds")]
    cost = bench.get(PASS_OF.get(scorer, ""))
    return {"scorer": scorer, "pass": PASS_OF.get(scorer), "neurons": first["neurons"],
            "trainable_fraction": first["trainable_fraction"], "lr": chosen["lr"],
            "met_rule": chosen["met_rule"], "seeds": len(at),
            "target": compare.summary(t), "general": compare.summary(g),
            "deactivation": deactivation(d / with_deact[0]["_dir"], first["lang"])
            if with_deact else None,
            "tuned": spec is not None, "train_seconds": first.get("train_seconds"),
            "pass_relative": cost["relative_to_forward"] if cost else None,
            "pass_tokens_per_s": cost["tokens_per_s"] if cost else None,
            "stats_seconds": stats[0]["stats_seconds"] if stats else None,
            "run_dir": str(d / first["_dir"])}


def overlaps(rows: list[dict], target: str) -> dict:
    """Jaccard of every pair of scorers: the target's mask and the mean over languages."""
    m = {r["scorer"]: masks(Path(r["run_dir"])) for r in rows}
    names = list(m)
    tgt = [[jaccard(m[a][target], m[b][target]) for b in names] for a in names]
    every = [[sum(jaccard(m[a][l], m[b][l]) for l in m[a]) / len(m[a]) for b in names]
             for a in names]
    return {"scorers": names, "target": tgt, "mean_over_langs": every}


def _pm(v: tuple[float, float], n: int = 2) -> str:
    return f"{v[0]:+.2f}" + (f" ± {v[1]:.2f}" if n > 1 else " (one seed)")


def _rate_note(r: dict) -> str:
    if not r.get("tuned", True):
        return f" (given, {r['seeds']} run{'s' * (r['seeds'] > 1)})"
    return "" if r["met_rule"] else " (rule unmet)"


def _f(v, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def markdown(rows: list[dict], ov: dict, target: str) -> str:
    lines = [f"| scorer | pass | {target} neurons | chosen lr | target ppl Δ % | general ppl Δ % "
             "| off: own ppl Δ % | off: others | off: random, own | pass × forward | pass s (run) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        de = r["deactivation"] or {}
        lines.append(f"| {r['scorer']} | {r['pass']} | {r['neurons']} | {r['lr']:g}"
                     f"{_rate_note(r)} | {_pm(r['target'], r['seeds'])} | "
                     f"{_pm(r['general'], r['seeds'])} | {_f(de.get('own'), '+.2f')} | "
                     f"{_f(de.get('others'), '+.2f')} | {_f(de.get('random'), '+.2f')} | "
                     f"{_f(r['pass_relative'], '.2f')} | {_f(r['stats_seconds'], '.0f')} |")
    names = ov["scorers"]
    lines += ["", f"Jaccard overlap of the masks ({target} / mean over every language):", "",
              "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for i, a in enumerate(names):
        lines.append(f"| {a} | " + " | ".join(
            f"{ov['target'][i][j]:.2f} / {ov['mean_over_langs'][i][j]:.2f}"
            for j in range(len(names))) + " |")
    return "\n".join(lines)


def figure(rows: list[dict], ov: dict, path: Path, target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2))
    names = [r["scorer"] for r in rows]
    x = range(len(rows))
    a.bar([i - 0.2 for i in x], [r["target"][0] for r in rows], 0.4,
          yerr=[r["target"][1] for r in rows], label=f"{target} (target)")
    a.bar([i + 0.2 for i in x], [r["general"][0] for r in rows], 0.4,
          yerr=[r["general"][1] for r in rows], label="general")
    a.set_xticks(list(x), names)
    a.set_ylabel("test ppl change % at the chosen lr")
    a.axhline(0, color="k", lw=0.5)
    a.legend()
    a.set_title("fine-tuning, same neuron count")
    de = [r["deactivation"] or {} for r in rows]
    for k, off in (("own", -0.27), ("others", 0), ("random", 0.27)):
        b.bar([i + off for i in x], [d.get(k, 0) for d in de], 0.27, label=k)
    b.set_xticks(list(x), names)
    b.set_ylabel("ppl rise % with the neurons off")
    b.legend()
    b.set_title("deactivation (mean over languages)")
    im = c.imshow(ov["mean_over_langs"], vmin=0, vmax=1, cmap="viridis")
    c.set_xticks(range(len(ov["scorers"])), ov["scorers"], rotation=30)
    c.set_yticks(range(len(ov["scorers"])), ov["scorers"])
    for i in range(len(ov["scorers"])):
        for j in range(len(ov["scorers"])):
            c.text(j, i, f"{ov['mean_over_langs'][i][j]:.2f}", ha="center", va="center",
                   color="w" if ov["mean_over_langs"][i][j] < 0.6 else "k")
    c.set_title("Jaccard overlap (mean over languages)")
    fig.colorbar(im, ax=c)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", type=Path, nargs="+", metavar="ROOT",
                    help="directories holding the sweeps and runs (a scorer once among them)")
    ap.add_argument("--bench", type=Path, help="bench_scorers.py's JSON (pass cost)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    bench = {r["pass"]: r for r in json.loads(a.bench.read_text())["rows"]} if a.bench else {}
    found = sweeps(*a.roots)
    if not found:
        raise SystemExit(f"{' '.join(map(str, a.roots))}: no compare sweep (compare.json) nor "
                         "run (metrics.json) below")
    order = [s for s in PASS_OF if s in found] + [s for s in found if s not in PASS_OF]
    rows = [scorer_row(s, found[s], bench) for s in order]
    target = found[order[0]][2][0]["lang"]
    ov = overlaps(rows, target)
    a.out.mkdir(parents=True, exist_ok=True)
    md = markdown(rows, ov, target)
    atomic_write_text(a.out / "scorers.md", md + "\n")
    atomic_write_text(a.out / "scorers.json", json.dumps({"rows": rows, "overlap": ov}, indent=1))
    figure(rows, ov, a.out / "scorers.png", target)
    print(md)
    print(f"wrote {a.out}/scorers.md, scorers.json, scorers.png")


if __name__ == "__main__":
    main()
