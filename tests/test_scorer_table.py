"""langsub report scorers (report/scorers.py): the scorers' comparison read from compare sweeps on disk."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT

from langsub.report import scorers as scorer_table


def _sweep(root, scorer, af, en, target_after, deact=None):
    d = root / scorer
    spec = {"methods": ["lape"], "lr_factors": [0.316, 1, 3.16], "seeds": [0, 1],
            "rule": "r", "grid": {"lape": [1e-3]},
            "chosen": {"lape": {"lr": 1e-3, "met_rule": True, "general_rise": 0.0,
                                "valid_target": 1.0}}}
    d.mkdir(parents=True)
    (d / "compare.json").write_text(json.dumps(spec))
    for i, (seed, after) in enumerate(zip((0, 1), target_after)):
        run = d / str(i)
        run.mkdir()
        m = {"method": "lape", "lang": "af", "lr": 1e-3, "seed": seed, "selection": scorer,
             "neurons": len(af), "trainable_fraction": 0.01, "ppl_before/target": 100.0,
             "ppl_after/target": after, "ppl_before/general": 50.0, "ppl_after/general": 51.0,
             "stats_seconds": 12.0 if i == 0 else None}
        (run / "metrics.json").write_text(json.dumps(m))
        (run / "neurons.json").write_text(json.dumps({"langs": {"af": [af, []], "en": [en, []]}}))
    if deact:
        (d / "0" / "analysis").mkdir()
        for name, matrix in deact.items():
            (d / "0" / "analysis" / f"{name}.json").write_text(json.dumps(
                {"langs": ["af", "en"], "eval_langs": ["af", "en"], "matrix": matrix}))


def test_table_overlap_and_deactivation(tmp_path):
    _sweep(tmp_path / "s", "lape", [1, 2, 3, 4], [7, 8], (90.0, 92.0),
           {"deactivation": [[0.10, 0.02], [0.04, 0.30]],
            "deactivation_random": [[0.01, 0.0], [0.0, 0.03]]})
    _sweep(tmp_path / "s", "plnd", [3, 4, 5, 6], [7, 8], (80.0, 80.0))
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"rows": [
        {"pass": "counts", "relative_to_forward": 1.1, "tokens_per_s": 10.0},
        {"pass": "importance", "relative_to_forward": 1.2, "tokens_per_s": 9.0}]}))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "langsub", "report", "scorers",
                        str(tmp_path / "s"), "--bench", str(bench), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "scorers.json").read_text())
    lape, plnd = res["rows"]
    assert (lape["scorer"], plnd["scorer"]) == ("lape", "plnd")
    assert lape["target"][0] == pytest.approx(-9.0) and plnd["target"] == pytest.approx([-20.0, 0])
    assert lape["general"][0] == pytest.approx(2.0)
    de = lape["deactivation"]
    assert de["own"] == pytest.approx(20.0) and de["others"] == pytest.approx(3.0)
    assert de["random"] == pytest.approx(2.0) and de["target_own"] == pytest.approx(10.0)
    assert plnd["deactivation"] is None and plnd["pass_relative"] == 1.2
    assert lape["stats_seconds"] == 12.0
    ov = res["overlap"]  # af: {1..4} vs {3..6}: 2 of 6; en identical
    assert ov["target"][0][1] == pytest.approx(2 / 6)
    assert ov["mean_over_langs"][0][1] == pytest.approx((2 / 6 + 1) / 2)
    assert (out / "scorers.png").stat().st_size > 0 and "| plnd |" in (out / "scorers.md").read_text()


def test_a_root_without_sweeps_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "langsub", "report", "scorers", str(tmp_path),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "no compare sweep" in r.stderr and "nor run" in r.stderr
    assert not scorer_table.sweeps(tmp_path)


def _single(d, scorer, af, after):
    d.mkdir(parents=True)
    m = {"method": "lape", "lang": "af", "lr": 3e-4, "seed": 0, "selection": scorer,
         "neurons": len(af), "trainable_fraction": 0.01, "ppl_before/target": 100.0,
         "ppl_after/target": after, "ppl_before/general": 50.0, "ppl_after/general": 49.0,
         "train_seconds": 60.0}
    (d / "metrics.json").write_text(json.dumps(m))
    (d / "neurons.json").write_text(json.dumps({"langs": {"af": [af, []], "en": [[7], []]}}))


def test_single_runs_are_rows_at_their_given_rate(tmp_path):
    _sweep(tmp_path / "s", "lape", [1, 2, 3, 4], [7, 8], (90.0, 92.0))
    _single(tmp_path / "s" / "runs" / "activation", "activation", [1, 2], 70.0)
    found = scorer_table.sweeps(tmp_path / "s")
    assert set(found) == {"lape", "activation"} and found["activation"][1] is None
    rows = [scorer_table.scorer_row(s, found[s], {}) for s in ("lape", "activation")]
    act = rows[1]
    assert act["tuned"] is False and act["lr"] == 3e-4 and act["seeds"] == 1
    assert act["target"] == pytest.approx([-30.0, 0]) and act["general"][0] == pytest.approx(-2.0)
    md = scorer_table.markdown(rows, scorer_table.overlaps(rows, "af"), "af")
    assert "(given, 1 run)" in md and "-30.00 (one seed)" in md and "-9.00 ± 1.41" in md
    _single(tmp_path / "s" / "again", "activation", [1], 75.0)  # the same scorer twice
    with pytest.raises(SystemExit, match="selection=activation is in both"):
        scorer_table.sweeps(tmp_path / "s")


def test_several_roots_make_one_table_and_a_scorer_counts_once(tmp_path):
    _sweep(tmp_path / "a", "lape", [1, 2, 3, 4], [7, 8], (90.0, 92.0))
    _sweep(tmp_path / "b", "plnd", [3, 4, 5, 6], [7, 8], (80.0, 80.0))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "langsub", "report", "scorers", "--out", str(out),
           str(tmp_path / "a"), str(tmp_path / "b")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "scorers.json").read_text())["rows"]
    assert [x["scorer"] for x in rows] == ["lape", "plnd"]
    assert rows[1]["target"] == pytest.approx([-20.0, 0])
    _sweep(tmp_path / "c", "plnd", [3], [7], (70.0, 70.0))  # plnd again, in a third root
    r = subprocess.run(cmd + [str(tmp_path / "c")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "selection=plnd is in both" in r.stderr
