"""profile.py (bench/): the FLOP model, the memory children, and the real step it times."""
from __future__ import annotations

import json
import multiprocessing as mp

import pytest
import torch

from langsub.bench.children import memory_specs, peak_of
from langsub.bench.step import Floor, flop_model, step_child

LLAMA8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
               num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8)


def test_flop_model_counts_the_delta_products():
    m = dict(vocab_size=100, hidden_size=8, intermediate_size=32, num_hidden_layers=2,
             num_attention_heads=2, num_key_value_heads=2)
    assert flop_model(m, 0.0, 4)["ratio"] == 1.0
    # by hand: per layer attention 2·64 + 2·64 + 2·4·8 = 320, FFN 3·32·8 = 768;
    # floor = 2·(2·1088 + 100·8) = 5952; ρ = 0.25 → 8 neurons a layer → + 2·9·8·8 = 1152
    got = flop_model(m, 0.25, 4)
    assert got["floor"] == 5952 and got["lape"] == 5952 + 1152


def test_flop_model_llama8b_near_five_percent():
    r = flop_model(LLAMA8B, 0.05, 512)["ratio"]
    assert 1.04 < r < 1.07
    r1, r10 = (flop_model(LLAMA8B, rho, 512)["ratio"] for rho in (0.01, 0.1))
    assert r10 > r1  # more neurons, more work, linearly


@pytest.mark.parametrize("device,expected", [("cpu", 2), ("cuda", 0)])
def test_one_memory_child_per_configuration_on_the_cpu(device, expected):
    spec = {"device": device, "cfg": {"model": {"hidden_size": 8}}, "rho": 0.05, "steps": 5}
    specs = [{**spec, "method": m, "round": r} for r in range(3) for m in ("floor", "lape")]
    mem = memory_specs(specs)
    assert len(mem) == expected
    assert all(s["memory"] and s["steps"] == 1 and "round" not in s for s in mem)


def test_each_configuration_reads_its_own_memory_child():
    spec = {"device": "cpu", "cfg": {}, "rho": 0.05, "steps": 5}
    lape, floor = ({**spec, "method": m, "round": 0} for m in ("lape", "floor"))
    mem = [(s, {"peak": peak}) for s, peak in zip(memory_specs([floor, lape]), (10.0, 30.0))]
    timed = [{"peak": 99.0}, {"peak": 101.0}]
    assert peak_of({**lape, "round": 2}, timed, mem) == 30.0
    assert peak_of(floor, timed, mem) == 10.0
    assert peak_of({**lape, "rho": 0.1}, timed, mem) == 100.0  # none measured: the median


def test_the_floor_trains_nothing_but_reaches_the_first_layer(llama):
    model = Floor().apply(llama)
    weights = [p for n, p in model.named_parameters() if not n.endswith("floor_gate")]
    assert not any(p.requires_grad for p in weights)
    ids = torch.randint(0, 100, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
    gate = model.get_input_embeddings().floor_gate
    assert gate.grad is not None and gate.grad.abs() > 0  # the gradient went through every layer
    assert all(p.grad is None for p in weights)


def _child(spec):
    q = mp.get_context("fork").Queue()
    step_child(spec, q)
    return q.get()


def test_the_step_is_train_py_s():
    """The child fits the run config's LightningModule for warm-up + steps batches and times
    the steps after the warm-up; lape trains a share of the weights."""
    from hydra import compose, initialize_config_dir

    from conftest import ROOT
    from langsub.bench.specs import run_config

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("profile", overrides=["data.batch_size=2", "data.block_size=16",
                                            "paths.output_dir=/tmp"])
    spec = {"cfg": run_config(cfg, "lape"), "method": "lape", "rho": 0.05, "device": "cpu",
            "threads": 1, "warmup": 1, "steps": 2}
    out = _child(spec)
    assert len(out["times"]) == 2 and all(t > 0 for t in out["times"])
    assert out["trainable"] > 0 and out["total"] > out["trainable"]
    json.dumps(out)
