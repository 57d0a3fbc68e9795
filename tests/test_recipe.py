"""The recipe is configuration: experiment=paper, the schedules, and the fair comparison's
rule (experiment=compare) on hand-made runs and through the real sweeper."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import ROOT
from langsub.errors import ConfigError
from langsub.report import compare
from langsub.training.recipe import recipe
from langsub.training.schedules import constant, warmup_cosine
from langsub.validate import check_config

TARGETS = ["mt", "af", "is", "cy", "mk", "lv", "lt", "sl", "sk", "et", "ka", "ne"]


def _compose(overrides=()):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("method,lr,clip", [("lape", 1e-4, 1.0), ("random", 1e-4, 1.0),
                                            ("lora", 1e-4, 1.0), ("full", 1e-5, 0.5),
                                            ("ffn", 1e-5, 1.0)])
def test_paper_recipe_per_method(method, lr, clip):
    cfg = _compose(["experiment=paper", f"method={method}", "model=llama31_8b", "data=glotcc",
                    "trainer=gpu"])
    r = recipe(cfg)
    assert (r["lr"], r["grad_clip"], r["weight_decay"], r["schedule"]) == (lr, clip, 0.01,
                                                                          "constant")
    assert (r["batch_size"], r["block_size"], r["max_tokens"], r["epochs"]) == (2, 512, 10**8, 1)
    assert r["ident_langs"] == TARGETS and r["ident_max_tokens"] == 12_800_000
    assert r["val_every_n_steps"] == 500 and r["warmup_ratio"] == 0.0
    if method == "random":
        assert cfg.method.match == "global" and r["random_match"] == "global"
    check_config(cfg)


def test_paper_dry_run_writes_the_recipe(tmp_path):
    """The command of the README: nothing downloaded, plan.json holds the recipe."""
    r = subprocess.run([sys.executable, "train.py", "model=llama31_8b", "data=glotcc",
                        "trainer=gpu", "lang=af", "method=random", "experiment=paper",
                        "dry_run=true", f"hydra.run.dir={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    rec = plan["recipe"]
    assert rec["random_match"] == "global" and rec["ident_langs"] == TARGETS
    assert (rec["lr"], rec["schedule"], rec["grad_clip"], rec["epochs"]) == (1e-4, "constant",
                                                                            1.0, 1)


def test_paper_refuses_a_missing_language():
    with pytest.raises(ConfigError) as e:
        check_config(_compose(["experiment=paper", "data.langs=[af,mt,is]"]))
    assert "the recipe identifies over" in str(e.value) and "missing ['cy'" in str(e.value)


def test_embedded_default_keeps_its_measured_recipe():
    r = recipe(_compose())
    assert (r["lr"], r["schedule"], r["warmup_ratio"], r["weight_decay"]) == (1e-3, "cosine",
                                                                            0.1, 0.0)


def test_schedules():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    s = warmup_cosine(opt, total_steps=20, warmup_ratio=0.1, min_lr_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.step()
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[-1] == pytest.approx(0.1, abs=0.01)
    opt = torch.optim.AdamW([p], lr=0.3)
    s = constant(opt, total_steps=5)
    for _ in range(5):
        assert opt.param_groups[0]["lr"] == 0.3
        opt.step()
        s.step()


def _run(method, lr, t_before, t_after, g_before, g_after, seed=0):
    return {"method": method, "lr": lr, "seed": seed,
            "valid_ppl_before/target": t_before, "valid_ppl_after/target": t_after,
            "valid_ppl_before/general": g_before, "valid_ppl_after/general": g_after}


def test_rule_prefers_target_within_the_general_tolerance():
    runs = [_run("m", 1e-4, 100, 95, 40, 40.1), _run("m", 1e-3, 100, 90, 40, 40.3),
            _run("m", 1e-2, 100, 80, 40, 44)]  # the lowest target forgets 10 %
    c = compare.choose(runs, 0.01)
    assert c["lr"] == 1e-3 and c["met_rule"]
    none_ok = [_run("m", 1e-3, 100, 90, 40, 41), _run("m", 1e-2, 100, 80, 40, 44)]
    c = compare.choose(none_ok, 0.01)
    assert c["lr"] == 1e-3 and not c["met_rule"]  # the least forgetting, flagged


def test_the_chosen_rate_is_read_from_the_runs_that_measured_everything():
    """A sweep whose grid points left the benchmarks out re-runs the chosen rate's first seed:
    the seeds' runs stand for the chosen rate, the grid runs for the grid."""
    grid = [dict(_run("m", lr, 100, 90, 40, 40), compare_phase="grid") for lr in (1e-4, 1e-3)]
    again = [dict(_run("m", 1e-3, 100, 90, 40, 40, seed=s), compare_phase="seeds",
                  **{"lm_eval_after/x/acc": 0.5}) for s in (1, 0)]
    runs = grid + again
    spec = {"seeds": [0, 1], "methods": ["m"], "grid": {"m": [1e-4, 1e-3]},
            "chosen": {"m": {"lr": 1e-3}}}
    assert compare.at_chosen(runs, "m", 1e-3) == [again[1], again[0]]  # by seed, no grid run
    assert compare.grid_points(runs, spec, "m") == grid
    assert compare.grid_table(runs, spec).count("| m |") == 2
    old = [_run("m", 1e-3, 100, 90, 40, 40, seed=s) for s in (0, 1)]  # a sweep of before
    assert compare.at_chosen(old, "m", 1e-3) == old
    assert compare.grid_points(old, spec, "m") == old[:1]


def test_outside_a_comparison_runs_group_by_method_and_rate():
    runs = [_run("full", 1e-5, 1, 1, 1, 1, seed=1), _run("lape", 3e-4, 1, 1, 1, 1),
            _run("full", 3e-6, 1, 1, 1, 1), _run("full", 1e-5, 1, 1, 1, 1)]
    groups = compare.by_method_and_rate(runs)
    assert [(label, [m["seed"] for m in rs]) for label, rs in groups] == \
        [("full 1e-05", [0, 1]), ("full 3e-06", [0]), ("lape", [0])]


@pytest.mark.parametrize("kw,line", [
    (dict(lr_factors=[]), "hydra.sweeper.lr_factors=[]: allowed is a non-empty list"),
    (dict(seeds=[]), "hydra.sweeper.seeds=[]: allowed is a non-empty list"),
    (dict(methods=[]), "hydra.sweeper.methods=[]: allowed is a non-empty list"),
    (dict(lr_factors=[0.5, 2]), "a fair grid spans at least a decade around each default"),
    (dict(lr_factors=[0.316, 1, 10]), None),  # the three-point grid of a slow model is allowed
    (dict(lr_factors=[0.316, 1, 3.16]), None),
    (dict(lr_factors=[0.1, -1, 10]), "allowed are numbers > 0"),
    (dict(max_general_rise=-0.1), "hydra.sweeper.max_general_rise=-0.1"),
])
def test_compare_refuses_empty_grids(kw, line):
    args = dict(methods=["lape"], lr_factors=[0.1, 1, 10], seeds=[0, 1, 2],
                max_general_rise=0.01) | kw
    if line is None:
        compare.check(**args)
        return
    with pytest.raises(ConfigError, match=line.replace("[", r"\[").replace("]", r"\]")):
        compare.check(**args)


def test_the_table_states_spread_wall_time_and_peak_memory():
    def run(seed, target, general, seconds, rss):
        return {"method": "lape", "lr": 1e-4, "seed": seed, "ppl_before/target": 100.0,
                "ppl_after/target": target, "ppl_before/general": 50.0, "ppl_after/general": general,
                "train_seconds": seconds, "peak_rss_gb": rss}

    runs = [run(0, 90.0, 50.0, 100, 3.1), run(1, 80.0, 50.5, 120, 3.3)]
    spec = {"rule": "r", "lr_factors": [0.316, 1, 3.16], "seeds": [0, 1],
            "chosen": {"lape": {"lr": 1e-4, "met_rule": True}}}
    md = compare.table(runs, spec)
    assert "| train s | peak GB |" in md
    assert "| lape | 0.0001 | yes | 2 | -15.00 ± 7.07 | -10.00, -20.00 | +0.50 ± 0.71 | " \
           "+0.00, +1.00 | 110 | 3.30 |" in md
    # chosen on held-out text: the general column is the held-out test halves', not the corpus'
    held = {"heldout_valid_ppl_before/general": 30.0, "heldout_valid_ppl_after/general": 30.0,
            "heldout_ppl_before/general": 20.0}
    runs = [run(0, 90.0, 50.0, 100, 3.1) | held | {"heldout_ppl_after/general": 19.0},
            run(1, 80.0, 50.5, 120, 3.3) | held | {"heldout_ppl_after/general": 21.0}]
    md = compare.table(runs, spec)
    assert "| held-out general ppl Δ % (mean ± std) |" in md
    assert "| -15.00 ± 7.07 | -10.00, -20.00 | +0.00 ± 7.07 | -5.00, +5.00 | 110 |" in md


def test_a_folder_of_one_method_sweeps_reports_as_one_comparison(tmp_path):
    """Sweeps run one method at a time (root/<sweep>/compare.json) merge into one spec when
    they were tuned alike; a different grid or a method tuned twice is refused in one line."""
    def sweep(name, method, lr, **kw):
        spec = {"rule": "r", "lr_factors": [0.316, 1, 3.16], "seeds": [0, 1, 2],
                "max_general_rise": 0.01, "methods": [method], "grid": {method: [lr, 10 * lr]},
                "chosen": {method: {"lr": lr, "met_rule": True}}} | kw
        (tmp_path / name).mkdir()
        (tmp_path / name / "compare.json").write_text(json.dumps(spec))

    assert compare.read_spec(tmp_path) is None
    sweep("a_full", "full", 1e-5)
    sweep("b_ia3", "ia3", 1e-3)
    spec = compare.read_spec(tmp_path)
    assert spec["methods"] == ["full", "ia3"] and spec["seeds"] == [0, 1, 2]
    assert spec["grid"] == {"full": [1e-5, 1e-4], "ia3": [1e-3, 1e-2]}
    assert {m: c["lr"] for m, c in spec["chosen"].items()} == {"full": 1e-5, "ia3": 1e-3}
    sweep("c_ffn", "ffn", 1e-5, lr_factors=[0.1, 1, 10])
    with pytest.raises(ConfigError, match="sweeps a_full and c_ffn differ in lr_factors"):
        compare.read_spec(tmp_path)
    (tmp_path / "c_ffn" / "compare.json").unlink()
    sweep("d_full", "full", 3.16e-5)
    with pytest.raises(ConfigError, match=r"method full was tuned in two sweeps \(a_full, d_full\)"):
        compare.read_spec(tmp_path)
    (tmp_path / "compare.json").write_text(json.dumps({"methods": ["x"]}))  # a sweep's own wins
    assert compare.read_spec(tmp_path) == {"methods": ["x"]}


def test_grid_spans_the_default():
    assert compare.grid(1e-3, [0.1, 0.316, 1, 3.16, 10]) == [1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]


def test_summary():
    assert compare.summary([1.0]) == (1.0, 0.0)
    mean, std = compare.summary([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)


def _sweep(tmp_path, *overrides):
    """The real sweeper on lape, a 2-point grid: (sweep dir, compare.json, every metrics.json)."""
    sweep = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "train.py", "-m", "experiment=compare", "debug=fast",
                        "train.max_steps=2", "hydra.sweeper.methods=[lape]",
                        "hydra.sweeper.lr_factors=[0.1,10]", *overrides,
                        f"hydra.sweep.dir={sweep}", f"paths.cache_dir={tmp_path}/cache"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]
    return sweep, json.loads((sweep / "compare.json").read_text()), runs


@pytest.mark.slow
def test_compare_sweep_end_to_end(tmp_path):
    """The real sweeper: a 2-point grid on one method, then the chosen lr on a second seed;
    the report renders the comparison."""
    sweep, spec, runs = _sweep(tmp_path, "hydra.sweeper.seeds=[0,1]")
    chosen = spec["chosen"]["lape"]["lr"]
    assert spec["grid"]["lape"] == [1e-4, 1e-2] and chosen in spec["grid"]["lape"]
    assert [(m["lr"], m["seed"]) for m in runs] == [(1e-4, 0), (1e-2, 0), (chosen, 1)]
    assert all("valid_ppl_after/general" in m for m in runs)
    r = subprocess.run([sys.executable, "-m", "langsub.report", str(sweep)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (sweep / "report.md").read_text()
    assert "## Fair comparison" in md and "| lape |" in md and (sweep / "pareto.png").is_file()
    assert "Neurons chosen by `selection=lape`." in md
    # runs.jsonl: every row carries its overrides; the command it records reruns it exactly
    rows = [json.loads(line) for line in (sweep / "runs.jsonl").read_text().splitlines()]
    assert [(r["lr"], r["seed"]) for r in rows] == [(1e-4, 0), (1e-2, 0), (chosen, 1)]
    assert all({f"train.lr={r['lr']}", f"seed={r['seed']}", "experiment=compare"}
               <= set(r["overrides"]) for r in rows)
    row = rows[-1]
    again = subprocess.run([sys.executable, *shlex.split(row["rerun"])[1:],
                            f"hydra.run.dir={tmp_path}/rerun"], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    m = json.loads((tmp_path / "rerun/metrics.json").read_text())
    assert (m["ppl_before/target"], m["ppl_after/target"]) == \
        (row["ppl_before/target"], row["ppl_after/target"])
    bad = subprocess.run([sys.executable, "train.py", "-m", "experiment=compare",
                          "hydra.sweeper.seeds=[]", f"hydra.sweep.dir={tmp_path}/bad"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "hydra.sweeper.seeds=[]: allowed is a non-empty list" \
        in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_a_sweep_with_benchmarks_runs_them_on_the_chosen_rate_only(tmp_path):
    """With benchmarks configured, the grid points skip them (compare_phase=grid) and the
    chosen rate's first seed is run again with everything measured: the same training (the
    same validation figures), the benchmark scores besides."""
    _, spec, runs = _sweep(tmp_path, "hydra.sweeper.seeds=[0]",
                           "eval.lm_eval.tasks=[langsub_cloze_af]", "eval.lm_eval.limit=4")
    chosen = spec["chosen"]["lape"]["lr"]
    assert [(m["lr"], m["seed"], m["compare_phase"]) for m in runs] == \
        [(1e-4, 0, "grid"), (1e-2, 0, "grid"), (chosen, 0, "seeds")]
    assert not any(k.startswith("lm_eval_") for m in runs[:2] for k in m)
    assert 0 <= runs[2]["lm_eval_after/langsub_cloze_af/acc"] <= 1
    same = next(m for m in runs[:2] if m["lr"] == chosen)
    assert runs[2]["valid_ppl_after/target"] == same["valid_ppl_after/target"]
    assert compare.at_chosen(runs, "lape", chosen) == [runs[2]]


def test_last_step_is_validated_and_shipped(tmp_path):
    """A budget that is not a multiple of the validation interval: the last step is
    validated too, kept when it is the best, and metrics.json says which step shipped."""
    from langsub.run import run

    cfg = _compose(["debug=fast", "train.max_steps=3", "train.val_every_n_steps=2",
                    "scheduler=constant", "train.lr=3e-3", "export=false",
                    f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'c'}"])
    m = run(cfg)
    assert m["optimizer_steps"] == 3 and m["best_step"] == 3  # not step 2, the last validated
    assert m["tokens_seen"] == 3 * 16 * 128  # what was trained, not restored from a checkpoint
    assert m["valid_ppl_after/target"] < m["valid_ppl_before/target"]


def test_the_report_says_which_scorer_chose_the_neurons():
    from langsub.report.build import selection_note

    lape = {"method": "lape", "neurons": 40, "selection": "lape", "selection_match": None}
    assert selection_note([{"method": "lora", "neurons": None}]) == ""
    assert selection_note([lape]) == "Neurons chosen by `selection=lape`.\n\n"
    plnd = lape | {"selection": "plnd", "selection_match": "lape"}
    note = selection_note([lape, plnd])
    assert "`selection=plnd` at `lape`'s count (`selection.match=lape`)" in note
    assert "`selection=lape`" in note
