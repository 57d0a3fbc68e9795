"""The report: every metrics.json below a directory as report.md, a chart and runs.jsonl,
with the views the runs call for — the fair comparison (`compare`), capacity × data,
forgetting over training, language fidelity, the paper's Table 2.

    langsub report outputs/multirun/<time>
"""
from langsub.report.build import load_runs, main, rows, write  # noqa: F401
