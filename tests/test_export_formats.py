"""GGUF and LoRA exports of the embedded model: exact LoRA factors, peft's merge equal to
export/, the GGUF's untouched tensors byte for byte, its changed ones equal to the trained
weights, one-line refusals, and (with llama-cpp-python) the GGUF run by llama.cpp."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY
from gguf_writer import write_llama_gguf

pytest.importorskip("gguf", reason="pip install -e \".[gemma]\" (the gguf package)")


def _train(tmp, *extra):
    r = subprocess.run([sys.executable, "train.py", "debug=fast", "eval.heldout.sets=[]",
                        f"paths.cache_dir={tmp}/cache", f"hydra.run.dir={tmp}/run", *extra],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "run"


@pytest.fixture(scope="module")
def gguf_run(tmp_path_factory):
    """The embedded model read from a GGUF (F32, laid out as llama.cpp's converter does),
    trained with export.gguf=true (Q8_0) and export.lora=true."""
    tmp = tmp_path_factory.mktemp("gguf")
    base = write_llama_gguf(TINY, tmp / "tiny.gguf")
    run = _train(tmp, "model.path=null", f"model.gguf={base}", "export.gguf=true",
                 "export.lora=true", "train.max_steps=16", "train.lr=3e-3")
    return base, run


def test_lora_factors_are_the_delta_exactly():
    from langsub.export.lora import factors

    rows = {"m.gate_proj.delta": torch.randn(2, 5), "m.gate_proj.index": torch.tensor([1, 3]),
            "m.gate_proj.dim": torch.tensor(0), "m.down_proj.delta": torch.randn(4, 2),
            "m.down_proj.index": torch.tensor([0, 2]), "m.down_proj.dim": torch.tensor(1)}
    f = factors(rows, {"m.gate_proj": (4, 5), "m.down_proj": (4, 6)})
    a, b = f["m.gate_proj"]
    want = torch.zeros(4, 5)
    want[[1, 3]] = rows["m.gate_proj.delta"]
    assert torch.equal(b @ a, want)
    a, b = f["m.down_proj"]
    want = torch.zeros(4, 6)
    want[:, [0, 2]] = rows["m.down_proj.delta"]
    assert torch.equal(b @ a, want)


def test_peft_loads_the_adapter_and_merges_to_export(gguf_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, run = gguf_run
    cfg = json.loads((run / "export" / "lora" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["rank_pattern"] == cfg["alpha_pattern"]
    m = json.loads((run / "metrics.json").read_text())
    assert m["export/lora_max_rank"] == max(cfg["rank_pattern"].values())
    base = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32).eval()
    merged = PeftModel.from_pretrained(base, run / "export" / "lora").merge_and_unload()
    shipped = AutoModelForCausalLM.from_pretrained(run / "export", dtype=torch.float32).eval()
    ours, theirs = merged.state_dict(), shipped.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.allclose(ours[k], theirs[k], rtol=0, atol=1e-6), k
    ids = torch.randint(3, 1000, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = merged(ids).logits, shipped(ids).logits
    assert float((a - b).abs().max() / b.abs().max()) < 1e-4


def test_gguf_keeps_untouched_tensors_byte_for_byte(gguf_run):
    import gguf

    base, run = gguf_run
    before, after = gguf.GGUFReader(str(base)), gguf.GGUFReader(str(run / "export" / "model.gguf"))
    assert [t.name for t in before.tensors] == [t.name for t in after.tensors]
    changed = {t.name for t, u in zip(before.tensors, after.tensors)
               if t.tensor_type != u.tensor_type or not np.array_equal(t.data, u.data)}
    delta = json.loads(json.dumps(list(__import__("safetensors.torch", fromlist=["x"])
                                       .load_file(str(run / "delta.safetensors")))))
    trained = {k.rsplit(".", 1)[0] for k in delta if k.endswith(".delta")}
    assert len(changed) == len(trained) and changed
    assert all(".ffn_" in n for n in changed)
    for t, u in zip(before.tensors, after.tensors):
        if t.name in changed:
            assert u.tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert str(after.fields["langsub.lang"].contents()) == "af"
    assert str(after.fields["langsub.method"].contents()) == "lape"
    for f in before.fields.values():  # tokenizer and hyper-parameters carried over
        if not f.name.startswith("GGUF."):
            assert after.fields[f.name].contents() == f.contents(), f.name


def test_gguf_changed_tensors_are_the_trained_weights(gguf_run):
    """Dequantized and laid out as transformers reads it, each changed tensor equals the
    shipped weight within Q8_0's rounding: half a step of its block's scale, plus the
    scale's own float16 rounding (2^-11 relative, times up to 127 steps)."""
    import gguf
    from transformers import AutoModelForCausalLM

    from langsub.export.gguf import _name_map, from_gguf

    _, run = gguf_run
    reader = gguf.GGUFReader(str(run / "export" / "model.gguf"))
    shipped = AutoModelForCausalLM.from_pretrained(run / "export", dtype=torch.float32).state_dict()
    names = {g: hf for hf, g in _name_map(reader, shipped).items()}
    n = 0
    for t in reader.tensors:
        if t.tensor_type != gguf.GGMLQuantizationType.Q8_0:
            continue
        w = shipped[names[t.name]].numpy()
        got = from_gguf(reader, t).reshape(w.shape)
        step = np.abs(w).reshape(-1, 32).max(1, keepdims=True) / 127  # Q8_0: 32 per block
        assert np.all(np.abs(got - w).reshape(-1, 32) <= step * (0.5 + 128 * 2 ** -11)
                      + 1e-7), t.name
        n += 1
    assert n > 0


@pytest.mark.parametrize("overrides, says", [
    (["export.gguf=true"], "is not read from a GGUF"),
    (["export.gguf=true", "model.path=null", "model.gguf=x.gguf", "export.gguf_type=Q4_K"],
     "the K-quants cannot be written"),
    (["export.gguf=true", "model.path=null", "model.gguf=x.gguf", "export.gguf_type=Q9"],
     "allowed is one of Q8_0"),
    (["export.lora=true", "method=full"], "export.lora=true with method=full"),
    (["export.lora=true", "method=lora"], "it is a peft LoRA already"),
    (["export.lorra=true"], "export.lorra: unknown key"),
])
def test_bad_export_input_is_one_line(overrides, says):
    from hydra import compose, initialize_config_dir

    from langsub.export.checks import config_problems

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=[o.replace("export.lorra", "+export.lorra")
                                          for o in overrides])
    assert any(says in p for p in config_problems(cfg)), config_problems(cfg)


def test_export_false_skips_every_export(tmp_path):
    run = _train(tmp_path, "export=false")
    assert not (run / "export").exists() and not (run / "delta.safetensors").exists()


def test_export_command_writes_gguf_and_lora_from_a_delta(gguf_run, tmp_path):
    import gguf

    base, run = gguf_run
    r = subprocess.run([sys.executable, "-m", "langsub.export", "--base", str(base), "--delta",
                        str(run / "delta.safetensors"), "--gguf", str(tmp_path / "af.gguf"),
                        "--lora", str(tmp_path / "lora")], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ours = gguf.GGUFReader(str(tmp_path / "af.gguf"))
    train = gguf.GGUFReader(str(run / "export" / "model.gguf"))
    for t, u in zip(ours.tensors, train.tensors):  # the run's own export, reproduced
        assert np.array_equal(t.data, u.data), t.name
    a = (tmp_path / "lora" / "adapter_model.safetensors").read_bytes()
    assert a == (run / "export" / "lora" / "adapter_model.safetensors").read_bytes()
    bad = subprocess.run([sys.executable, "-m", "langsub.export", "--base", str(TINY), "--delta",
                          str(run / "delta.safetensors"), "--gguf", str(tmp_path / "x.gguf")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--gguf needs a .gguf --base" in bad.stderr
    assert not (tmp_path / "x.gguf").exists() and not list(tmp_path.glob(".x.gguf*"))


def _af_blocks(tok, n=8, size=64):
    """Blocks of the af test split (the embedded model has no BOS: the first token of a
    block is context only)."""
    rows = [r["text"] for r in map(json.loads, open(ROOT / "data" / "corpus" / "af.jsonl",
                                                    encoding="utf-8")) if r["split"] == "test"]
    ids = [t for r in rows if r for t in tok(r + "\n")["input_ids"]][: n * size]
    return [ids[i: i + size] for i in range(0, len(ids), size)]


@torch.no_grad()
def _torch_ppl(model, blocks):
    nll, n = 0.0, 0
    for b in blocks:
        logp = model(torch.tensor([b])).logits[0, :-1].float().log_softmax(-1)
        nll -= float(logp[torch.arange(len(b) - 1), torch.tensor(b[1:])].sum())
        n += len(b) - 1
    return float(np.exp(nll / n))


def test_llama_cpp_runs_the_exported_gguf(gguf_run):
    """llama.cpp on the GGUF vs PyTorch on export/, the same token ids: perplexity within
    1 % (the changed FFN tensors are Q8_0, whose rounding the PyTorch model does not have,
    and llama.cpp multiplies them with Q8_0-quantized activations; measured 0.1-0.3 %), the
    same greedy continuations for most prompts, and the fine-tuning's gain kept."""
    llamacpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed: "
                                   "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install -e '.[llamacpp]'")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langsub.export import llamacpp as L

    assert llamacpp is not None
    base, run = gguf_run
    tok = AutoTokenizer.from_pretrained(run / "export")
    blocks = _af_blocks(tok)
    shipped = AutoModelForCausalLM.from_pretrained(run / "export", dtype=torch.float32).eval()
    before_t = _torch_ppl(AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32).eval(),
                          blocks)
    after_t = _torch_ppl(shipped, blocks)
    after = L.load(run / "export" / "model.gguf", n_ctx=128, threads=2)
    before = L.load(base, n_ctx=128, threads=2)
    after_c, before_c = L.perplexity(after, blocks), L.perplexity(before, blocks)
    assert abs(after_c / after_t - 1) < 0.01, (after_c, after_t)
    assert abs(before_c / before_t - 1) < 0.01, (before_c, before_t)
    assert after_c < before_c  # the gain survives the trip to llama.cpp
    same = 0
    for b in blocks:
        prompt = b[:24]
        with torch.no_grad():
            want = shipped.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)
        same += L.greedy(after, prompt, 8, tok.eos_token_id) == want[0, len(prompt):].tolist()
    assert same >= len(blocks) * 3 // 4, f"{same} of {len(blocks)} greedy continuations equal"


def test_a_crash_while_writing_leaves_no_gguf(gguf_run, tmp_path, monkeypatch):
    import gguf
    from transformers import AutoModelForCausalLM

    from langsub.export import gguf as G

    base, run = gguf_run
    model = AutoModelForCausalLM.from_pretrained(run / "export", dtype=torch.float32)

    def broken(self, *a, **kw):
        raise OSError("disk full")
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", broken)
    with pytest.raises(OSError, match="disk full"):
        G.write(base, model, tmp_path / "m.gguf", "Q8_0")
    assert list(tmp_path.iterdir()) == []


def test_several_deltas_make_one_adapter_equal_to_their_merge(gguf_run, tmp_path):
    """af's and ka's deltas: one LoRA adapter (ranks add where both train a module) that
    peft merges to what `--out` merges (the deltas summed)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, af = gguf_run
    is_run = _train(tmp_path, "lang=ka")
    deltas = [str(af / "delta.safetensors"), str(is_run / "delta.safetensors")]
    r = subprocess.run([sys.executable, "-m", "langsub.export", "--base", str(TINY), "--delta",
                        *deltas, "--lora", str(tmp_path / "lora"), "--out", str(tmp_path / "m")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    base = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, tmp_path / "lora").merge_and_unload().state_dict()
    want = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).state_dict()
    for k in want:
        assert torch.allclose(merged[k], want[k], rtol=0, atol=1e-6), k
