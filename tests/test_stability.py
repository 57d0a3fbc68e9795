"""`python -m langsub.stability`: identification on subsamples against all the text."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from langsub.data.datamodule import subsample_indices
from langsub.neurons.stability import jaccard


def test_jaccard_by_hand():
    a = [torch.tensor([1, 2]), torch.tensor([5])]
    b = [torch.tensor([2]), torch.tensor([5, 7])]
    assert jaccard(a, b) == 2 / 4  # {(0,2),(1,5)} of {(0,1),(0,2),(1,5),(1,7)}
    assert jaccard(a, a) == 1.0 and jaccard([torch.tensor([])], [torch.tensor([])]) == 1.0
    assert jaccard([torch.tensor([1])], [torch.tensor([]), torch.tensor([1])]) == 0.0


def test_subsamples_are_seeded_shares_without_replacement():
    s = subsample_indices(40, 0.25, seed=1, lang_index=3)
    assert len(s) == 10 == len(set(s)) and s == sorted(s) and max(s) < 40
    assert s == subsample_indices(40, 0.25, seed=1, lang_index=3)
    assert s != subsample_indices(40, 0.25, seed=2, lang_index=3)
    assert s != subsample_indices(40, 0.25, seed=1, lang_index=4)
    assert subsample_indices(40, 1.0, seed=5, lang_index=0) == list(range(40))
    assert subsample_indices(3, 0.01, seed=0, lang_index=0) != []  # at least one block


def _stability(*args, tmp):
    return subprocess.run([sys.executable, "-m", "langsub.stability", "debug=fast",
                           f"paths.cache_dir={tmp}/cache", f"stability.out_dir={tmp}/out",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_stability_writes_the_json_and_the_figure(tmp_path):
    r = _stability("lang=af", "stability.fractions=[0.25,1.0]", "stability.seeds=2",
                   tmp=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    o = json.loads((tmp_path / "out" / "stability.json").read_text())
    assert o["fractions"] == [0.25, 1.0] and o["seeds"] == [0, 1]
    assert set(o["jaccard"]) == {"af", "en", "de", "ka"}  # debug=fast's data.langs
    for lang, per_fraction in o["jaccard"].items():
        assert len(per_fraction) == 2 and all(len(x) == 2 for x in per_fraction)
        assert per_fraction[1] == [1.0, 1.0]  # all the text: the full-data mask itself
        assert all(0.0 <= j <= 1.0 for j in per_fraction[0])
        assert o["tokens"][lang][0] < o["tokens"][lang][1]
        assert o["neurons"][lang][1] == [o["full"]["neurons"][lang]] * 2
    assert (tmp_path / "out" / "stability.png").stat().st_size > 10_000
    # one statistics pass per (fraction < 1, seed), plus the full one: cached for a rerun
    assert len(list((tmp_path / "cache" / "stats").glob("*.safetensors"))) == 3


@pytest.mark.parametrize("arg,expect", [
    ("stability.fractions=[0,1.0]", "stability.fractions=[0, 1.0]: allowed is"),
    ("stability.fractions=[1.5]", "stability.fractions=[1.5]: allowed is"),
    ("stability.seeds=[]", "stability.seeds=[]: allowed is"),
    ("stability.seeds=0", "stability.seeds=0: allowed is"),
    ("model=nonexistent", "model=nonexistent is unknown"),
])
def test_bad_stability_input_is_one_line(arg, expect, tmp_path):
    r = _stability(arg, tmp=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert expect in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- selection=significance
def test_significance_by_hand():
    """1 layer, 4 neurons, 3 languages, 10,000 tokens each: neuron 0 fires for language 0
    only, neuron 1 for languages 0 and 1 alike, neuron 2 for nobody, neuron 3 a little more
    for language 2 (0.51 vs 0.50: not significant at these counts)."""
    from langsub.neurons.significance import p_values, select_significant

    n = torch.tensor([10_000.0, 10_000.0, 10_000.0])
    p = torch.tensor([[[0.30, 0.01, 0.01], [0.30, 0.30, 0.01], [0.0, 0.0, 0.0],
                       [0.50, 0.50, 0.51]]])
    masks = select_significant(p * n, n, alpha=0.01)
    assert [m[0].tolist() for m in masks] == [[0], [], []]
    pv = p_values(p * n, n)
    assert pv[0, 0, 0] < 1e-100 and pv[0, 0, 1] == pytest.approx(0.5)  # equal: z = 0
    assert pv[2, 0, 3] > 0.05 and pv[:, 0, 2].tolist() == [1.0, 1.0, 1.0]
    # with 100x the text the 1-point difference of neuron 3 becomes significant
    assert [m[0].tolist() for m in select_significant(p * n * 100, n * 100, 0.01)][2] == [3]
    with pytest.raises(ValueError, match="alpha"):
        select_significant(p * n, n, alpha=1.0)


def test_main_job_config_refuses_alpha_outside_the_unit_interval(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "selection=significance", "alpha=0",
                        f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "alpha=0" in r.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()
