"""Classify the stored greedy continuations of finished runs again, with the current rule.

    langsub report rescore-fidelity outputs/multirun/<time>     # every run below it

Each run made with analysis=[fidelity] keeps its continuations in
analysis/fidelity_<phase>.jsonl: they are the measurement. This rewrites their language labels
and metrics.json's fidelity_<phase>/… keys (atomically) without loading a model, e.g. after the
first-line rule changed; `langsub report` then shows the new shares.
"""
from __future__ import annotations

from pathlib import Path

from langsub.analysis.fidelity import rescore
from langsub.errors import ArgParser, one_line


def main(argv: list[str] | None = None) -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="a run dir, or a directory of them")
    root = ap.parse_args(argv).root
    runs = sorted({p.parent.parent for p in root.rglob("analysis/fidelity_*.jsonl")})
    if not runs:
        one_line(rescore, root)  # says in one line what is missing
    for run in runs:
        new = one_line(rescore, run)
        print(f"{run}: {new.get('fidelity_before/target_share')} -> "
              f"{new.get('fidelity_after/target_share')} (target share before -> after)")


if __name__ == "__main__":
    main()
