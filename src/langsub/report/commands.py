"""`langsub report`: the run comparison, and the tables read from several sweeps.

    langsub report outputs/multirun/<time>             # report.md of the runs below it
    langsub report scorers outputs/scorers_af --out docs/scorers/tiny
    langsub report NAME --help                         # a table's own options
"""
from __future__ import annotations

import sys

TABLES = {  # name -> (module, what it writes)
    "scorers": ("scorers", "the neuron scorers compared at one budget, from compare sweeps"),
    "selection": ("selection", "the selection rules compared (selection.md/.json)"),
    "rescore-fidelity": ("rescore", "stored continuations classified again with the current rule"),
    "gpu-check": ("gpu_check", "scripts/gpu_check_paper.sh's plan vs measured GPU memory"),
}


def usage() -> str:
    w = max(map(len, TABLES))
    return ("usage: langsub report DIR [--capacity]      compare the runs below DIR\n"
            "       langsub report TABLE [options]\n\ntables:\n" + "\n".join(
                f"  {n:<{w}}  {h}" for n, (_, h) in TABLES.items()))


def main(argv=None) -> None:
    from langsub.cli import named_command

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] not in TABLES and argv[0] not in ("-h", "--help"):
        from langsub.report.build import main as report

        return report(argv)  # langsub report DIR: the runs below DIR
    named_command(argv, TABLES, "langsub.report", usage(), "table")
