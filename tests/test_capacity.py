"""The report's capacity × data view (rho × training tokens)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from langsub.report import capacity


def _runs(tmp_path, rhos, tokens, seeds=(0,)):
    i = 0
    for r in rhos:
        for t in tokens:
            for s in seeds:
                d = tmp_path / str(i)
                d.mkdir()
                # more neurons and more tokens: lower target ppl; general rises with both
                m = {"method": "lape", "lang": "af", "rho": r, "seed": s, "tokens_seen": t,
                     "neurons": int(r * 1000), "trainable_fraction": r / 10,
                     "train_seconds": 1.0, "ppl_before/target": 100.0,
                     "ppl_after/target": 100.0 - 100 * r - t / 1000 - s,
                     "ppl_before/general": 40.0, "ppl_after/general": 40.0 + r + t / 1e5}
                (d / "metrics.json").write_text(json.dumps(m))
                i += 1


def test_cells_average_seeds_and_the_table_has_every_cell(tmp_path):
    _runs(tmp_path, [0.01, 0.05], [1000, 4000], seeds=(0, 1))
    from langsub.report import load_runs

    runs = load_runs(tmp_path)
    c = capacity.cells(runs)
    assert len(c) == 4 and all(v["runs"] == 2 for v in c.values())
    # rho 0.05, 4000 tokens: after = 100 - 5 - 4 - seed (0, 1) -> mean -9.5 %
    assert c[(0.05, 4000)]["target"] == pytest.approx(-9.5)
    assert c[(0.05, 4000)]["general"] == pytest.approx(100 * (40.09 / 40 - 1))
    t = capacity.table(runs)
    assert "| 0.05 (50) | -6.50 / +0.15 | -9.50 / +0.22 |" in t


def test_report_draws_the_heatmap_for_a_two_axis_sweep(tmp_path):
    _runs(tmp_path, [0.01, 0.02, 0.05], [1000, 2000])
    r = subprocess.run([sys.executable, "-m", "langsub.report", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "capacity.png").stat().st_size > 5_000
    assert "## Capacity × data" in (tmp_path / "report.md").read_text()


def test_a_one_axis_sweep_given_to_the_capacity_view_is_one_line(tmp_path):
    _runs(tmp_path, [0.01, 0.02, 0.05], [1000])
    r = subprocess.run([sys.executable, "-m", "langsub.report", str(tmp_path), "--capacity"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "vary both rho and the training tokens" in r.stderr
    assert not (tmp_path / "report.md").exists()
    plain = subprocess.run([sys.executable, "-m", "langsub.report", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and not (tmp_path / "capacity.png").exists()


def test_forgetting_marks_the_first_rise_of_general_perplexity():
    from langsub.report import forgetting

    curve = [{"step": 0, "tokens": 0, "af": 100, "general": 40.0},
             {"step": 2, "tokens": 100, "af": 90, "general": 40.3},
             {"step": 4, "tokens": 200, "af": 80, "general": 40.5},   # +1.25 %
             {"step": 6, "tokens": 300, "af": 75, "general": 40.2}]
    assert forgetting.first_rise(curve) == 200
    assert forgetting.first_rise(curve, rise=0.02) is None
    runs = [{"method": "full", "lang": "af", "lr": 1e-5, "seed": 0, "val_curve": curve},
            {"method": "lape", "lang": "af", "lr": 1e-3, "seed": 0, "val_curve": curve[:1]}]
    assert forgetting.tracked(runs) == runs[:1]  # a start alone is no curve
    assert "| full lr 1e-05 seed 0 | 300 | +0.50 | -25.00 | 200 tokens |" in forgetting.table(runs)
