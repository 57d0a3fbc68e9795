"""profile.py's pure parts: the FLOP model of lape's cost and the memory children."""
from __future__ import annotations

import pytest

from langsub.tools.profiling import flop_model, memory_specs

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
    spec = {"device": device, "model": {"hidden_size": 8}, "rho": 0.05, "steps": 5}
    specs = [{**spec, "method": m, "round": r} for r in range(3) for m in ("floor", "lape")]
    mem = memory_specs(specs)
    assert len(mem) == expected
    assert all(s["memory"] and s["steps"] == 1 and "round" not in s for s in mem)
