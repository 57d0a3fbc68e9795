"""The layout's promises: a method is one file plus one YAML; the FFN family table answers
"where is neuron i" for every family; the structure stays acyclic and small."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import ROOT, tiny_llama, tiny_phi3
from langsub.errors import ConfigError
from langsub.methods import METHODS, Method, MethodConfig, build_method, register
from langsub.model.ffn import COMPONENTS, find_ffns

STRUCTURE = ROOT.parent / "shared" / "tools" / "structure.py"


@dataclass
class NormsConfig(MethodConfig):
    include_final: bool = True

    def problems(self):
        out = super().problems()
        if not isinstance(self.include_final, bool):
            out.append(f"method.include_final={self.include_final!r}: allowed is true or false")
        return out


class Norms(Method):
    """A throw-away method: train only the RMSNorm weights."""

    name = "norms_only"
    Config = NormsConfig

    def prepare(self, model, neurons=None):
        for n, p in model.named_parameters():
            last = n == "model.norm.weight"
            p.requires_grad_("norm" in n and (self.config.include_final or not last))
        return model


@pytest.fixture(scope="module")
def norms_method():
    register(Norms)
    yield Norms
    METHODS.pop(Norms.name)


def test_registering_twice_is_refused(norms_method):
    with pytest.raises(ValueError, match="registered twice"):
        register(Norms)


def test_a_method_is_one_file_and_one_yaml(norms_method, tmp_path):
    """The throw-away method above plus one YAML run the real main job, untouched."""
    from langsub.run import run

    conf = tmp_path / "conf" / "method"
    conf.mkdir(parents=True)
    (conf / "norms_only.yaml").write_text("name: norms_only\nlr: 1e-3\ninclude_final: false\n")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "method=norms_only", "debug=fast",
            f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
            "export=false"])
    m = run(cfg)
    layers = 4  # the embedded model: two RMSNorms per layer, the final one left out
    assert m["method"] == "norms_only" and m["neurons"] is None
    assert m["trainable_params"] == 2 * layers * 256
    assert m["ppl_after/target"] != m["ppl_before/target"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["method"] == "norms_only"


def test_unknown_method_key_is_refused(norms_method):
    with pytest.raises(ConfigError, match="method.use_dora: not a key of method=norms_only"):
        build_method({"name": "norms_only", "use_dora": True})
    with pytest.raises(ConfigError, match="method.include_final=1"):
        build_method({"name": "norms_only", "include_final": 1})


@pytest.mark.parametrize("make", [tiny_llama, tiny_phi3], ids=["separate", "fused"])
def test_ffn_table_locates_every_component(make):
    """slices, parts and weights agree on where neuron i lives, for every family."""
    model = make()
    ffn = find_ffns(model)[0]
    idx = torch.tensor([1, 5, 63])
    w = ffn.weights()
    assert w["gate"].shape == w["up"].shape == (64, 32) and w["down"].shape == (32, 64)
    for comps in (list(COMPONENTS), ["up"], ["gate", "down"]):
        found = {}
        for lin, index, dim in ffn.slices(idx, comps):
            for comp, pos in ffn.parts(lin, index).items():
                sl = lin.weight.index_select(dim, index[pos])
                found[comp] = sl
        assert sorted(found) == sorted(comps)
        for comp, sl in found.items():
            want = w[comp][idx] if comp != "down" else w[comp][:, idx]
            assert torch.equal(sl, want), comp


def test_ffn_table_activation_of_each_family(llama, phi3):
    for model in (llama, phi3):
        ffn = find_ffns(model)[0]
        out = torch.randn(2, 3, ffn.n_neurons)
        assert torch.equal(ffn.activation(out), out)
        keep = torch.ones(ffn.n_neurons)
        keep[4] = 0
        assert ffn.scale_activation(out, keep)[..., 4].abs().sum() == 0


def test_structure_is_acyclic_and_small():
    if not STRUCTURE.is_file():
        pytest.skip(f"{STRUCTURE} is not there (it ships beside the project, not in a clone)")
    r = subprocess.run([sys.executable, str(STRUCTURE), "src", "langsub"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
