"""Compare runs: read every metrics.json below a directory, write report.md and a chart.

    python train.py -m method=lape,random,lora,ia3,ffn,full lang=af
    langsub report outputs/multirun/<time>
"""
from __future__ import annotations

import json
from pathlib import Path

from langsub.errors import ArgParser, ConfigError
from langsub.io import atomic_write_text
from langsub.report import capacity, compare, fidelity, forgetting, heldout, paper_table  # noqa: I001
from langsub.report.charts import paired_bars, pct


def load_runs(root: Path) -> list[dict]:
    runs = []
    for p in sorted(root.rglob("metrics.json")):
        m = json.loads(p.read_text())
        m["_dir"] = str(p.parent.relative_to(root))
        m["_overrides"] = overrides(p.parent)
        runs.append(m)
    if not runs:
        raise ConfigError(f"no metrics.json below {root}")
    return runs


def overrides(run_dir: Path) -> list[str] | None:
    """The command-line overrides the run was made with (Hydra's `.hydra/overrides.yaml`)."""
    p = run_dir / ".hydra" / "overrides.yaml"
    if not p.is_file():
        return None
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(p)]


def rerun_command(over: list[str]) -> str:
    """One run again, alone: its overrides as one `python train.py` (a sweep's job included:
    `hydra.mode=RUN` so `experiment=compare` does not start a sweep)."""
    import shlex

    return " ".join(["python", "train.py", *map(shlex.quote, over), "hydra.mode=RUN"])


def rows(runs: list[dict]) -> list[dict]:
    """runs.jsonl: every run's scalar figures, its directory, overrides and rerun command."""
    out = []
    for m in runs:
        row = {k: v for k, v in m.items() if not k.startswith("_")
               and isinstance(v, (int, float, str, bool, type(None)))}
        row["run"], row["overrides"] = m["_dir"], m["_overrides"]
        if m["_overrides"] is not None:
            row["rerun"] = rerun_command(m["_overrides"])
        out.append(row)
    return out


def table(runs: list[dict]) -> str:
    lines = ["| method | lang | trainable % | target ppl before → after | Δ % | "
             "general ppl before → after | Δ % | train s | run |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in runs:
        nf = m.get("neurons_from")
        method = m["method"] + (f" ({nf} neurons)" if nf and nf != m["lang"] else "")
        lines.append(
            f"| {method} | {m['lang']} | {100 * m['trainable_fraction']:.3f} | "
            f"{m['ppl_before/target']:.2f} → {m['ppl_after/target']:.2f} | "
            f"{pct(m['ppl_after/target'], m['ppl_before/target']):+.2f} | "
            f"{m['ppl_before/general']:.2f} → {m['ppl_after/general']:.2f} | "
            f"{pct(m['ppl_after/general'], m['ppl_before/general']):+.2f} | "
            f"{m['train_seconds']:.0f} | {m['_dir']} |")
    return "\n".join(lines)


def chart(runs: list[dict], path: Path) -> None:
    paired_bars([f"{m['method']}\n{m['lang']}" for m in runs],
                [pct(m["ppl_after/target"], m["ppl_before/target"]) for m in runs],
                [pct(m["ppl_after/general"], m["ppl_before/general"]) for m in runs],
                ("target ppl Δ %", "general ppl Δ %"), "perplexity change, % (lower is better)",
                path)


def selection_note(runs: list[dict]) -> str:
    """Which scorer chose the neurons of the runs that have some (a method's name alone does
    not say: `method=lape selection=plnd` trains PLND's neurons)."""
    picked = sorted({(m.get("selection") or "lape", m.get("selection_match")) for m in runs
                     if m.get("neurons")}, key=str)
    if not picked:
        return ""
    return "Neurons chosen by " + "; ".join(
        f"`selection={s}`" + (f" at `{match}`'s count (`selection.match={match}`)" if match else "")
        for s, match in picked) + ".\n\n"


def main(argv=None) -> None:
    ap = ArgParser(description="Compare langsub runs below a directory.")
    ap.add_argument("root", type=Path)
    ap.add_argument("--capacity", action="store_true",
                    help="the capacity x data view (automatic when the runs vary rho and tokens)")
    a = ap.parse_args(argv)
    from langsub.errors import one_line

    one_line(write, a.root, a.capacity)


def write(root: Path, capacity_view: bool = False) -> None:
    """report.md, report.png, runs.jsonl and the views the runs below `root` call for."""
    runs = load_runs(root)
    if capacity_view and capacity.problems(runs):
        raise ConfigError(capacity.problems(runs)[0])
    md = table(runs)
    chart(runs, root / "report.png")
    views = []  # the sections the runs call for, then every run
    spec = compare.read_spec(root)
    if spec is not None:  # experiment=compare: chosen rates, seeds, every grid point
        compare.pareto_figure(runs, spec, root / "pareto.png")
        views.append(f"## Fair comparison\n\n{compare.table(runs, spec)}\n\n"
                     f"![grid](pareto.png)\n\n### Every grid point\n\n"
                     f"{compare.grid_table(runs, spec)}\n\n")
    if heldout.present(runs):  # held-out text (on by default) and eval=heldout's benchmarks
        heldout.figure(runs, spec, root / "heldout.png")
        views.append(heldout.section(runs, spec))
    if fidelity.present(runs):  # analysis=[fidelity]: which language the model writes
        views.append(f"## Language fidelity\n\n{fidelity.table(runs, spec)}\n\n"
                     f"{fidelity.examples(root, fidelity.one_per_method(runs, spec))}\n")
    if capacity.varies_both(runs):  # a rho x train.max_tokens sweep
        capacity.figure(runs, root / "capacity.png")
        views.append(f"## Capacity × data\n\n{capacity.table(runs)}\n\n"
                     f"![capacity](capacity.png)\n\n")
    if forgetting.tracked(runs):  # data.track_blocks: general ppl over training
        forgetting.figure(runs, root / "forgetting.png")
        views.append(f"## Forgetting over training\n\n{forgetting.table(runs)}\n\n"
                     f"![forgetting](forgetting.png)\n\n")
    if paper_table.present(runs):  # eval=paper: the paper's Table 2
        paper_table.figure(runs, root / "paper_table.png")
        views.append(f"## The paper's evaluation suite (Table 2)\n\n{paper_table.table(runs)}"
                     f"\n\n![paper suite](paper_table.png)\n\n")
    body = (f"# langsub report: {root}\n\n{selection_note(runs)}" + "".join(views)
            + ("## Every run\n\n" if views else ""))
    atomic_write_text(root / "report.md", body + f"{md}\n\n![perplexity change](report.png)\n")
    atomic_write_text(root / "runs.jsonl", "".join(json.dumps(r) + "\n" for r in rows(runs)))
    print(body + md)
    print(f"\nwritten: {root / 'report.md'}, {root / 'report.png'}, {root / 'runs.jsonl'}")

