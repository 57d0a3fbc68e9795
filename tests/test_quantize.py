"""A quantized base (model.quantize) and deltas as portable artifacts (langsub.export)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import ROOT, TINY, tiny_llama
from langsub.errors import CheckpointError, ConfigError
from langsub.export import export_model, fingerprint, main, read_delta, delta_metadata
from langsub.methods import build_method, count_params
from langsub.methods.sparse import neuron_deltas
from langsub.model.load import load_model
from langsub.model.quantize import backend_problems, dense_weight, packed_weights

pytest.importorskip("bitsandbytes", reason="model.quantize needs bitsandbytes (langsub[quant])")

CFG = OmegaConf.create({"path": str(TINY), "dtype": "float32", "quantize": "nf4"})
BLOCK = 128


def blocks(lang: str, split: str, n: int, tok) -> torch.Tensor:
    """n blocks of BLOCK tokens of the embedded corpus' `lang` text of `split`."""
    lines = [json.loads(l) for l in (ROOT / "data/corpus" / f"{lang}.jsonl").open()]
    text = "\n".join(l["text"] for l in lines if l.get("split", "train") == split)
    ids = tok(text[: 40 * BLOCK * n], return_tensors="pt").input_ids[0]
    return ids[: n * BLOCK].view(n, BLOCK)


def neurons(seed: int, n: int = 40) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(1536, generator=g)[:n].sort().values for _ in range(4)]


def train(model, x, steps=12, lr=3e-3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                            weight_decay=0.0)
    model.train()
    for _ in range(steps):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@torch.no_grad()
def ppl(model, x) -> float:
    return math.exp(float(model(input_ids=x, labels=x).loss))


@pytest.fixture(scope="module")
def nf4_run(embedded):
    """lape on af's text with an nf4 base: the packed bytes before and after, the losses."""
    _, tok = embedded
    model, _ = load_model(CFG, tok)
    x, test = blocks("af", "train", 8, tok), blocks("af", "test", 4, tok)
    method = build_method({"name": "lape"})
    method.apply(model, neurons(0))
    before = ppl(model, test)
    packed = packed_weights(model)
    train(model, x)
    return model, method, packed, before, ppl(model, test), test


def test_nf4_base_trains_the_deltas_and_never_writes_the_packed_weights(nf4_run):
    model, _, packed, before, after, _ = nf4_run
    after_bytes = packed_weights(model)
    assert len(packed) == 28  # every linear of the 4 decoder layers (the LM head stays float)
    assert all(torch.equal(packed[k], after_bytes[k]) for k in packed)
    assert after < 0.97 * before, (before, after)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith("neuron_delta.delta") and p.dtype == torch.float32
                             for n, p in trainable.items())
    trained, total = count_params(model)
    assert total - trained == 7_817_472  # the base's weights, not its packed bytes


def test_gradients_match_a_float_model_holding_the_dequantized_weights(embedded):
    """The hooked deltas get the gradients of the same model in float (its linears holding
    the dequantized nf4 weights), also after an eval pass (bitsandbytes' CPU inference
    layout would cut the gradient through every quantized layer: `keep_differentiable`)."""
    from transformers import AutoModelForCausalLM

    _, tok = embedded
    q, _ = load_model(CFG, tok)
    ref = AutoModelForCausalLM.from_pretrained(TINY)
    with torch.no_grad():
        mods = dict(ref.named_modules())
        for name, m in q.named_modules():
            if name in mods and hasattr(m, "quant_state") or getattr(m.weight if hasattr(
                    m, "weight") else None, "quant_state", None) is not None:
                mods[name].weight.copy_(dense_weight(m))
    x = blocks("af", "train", 2, tok)
    grads = []
    for model in (q, ref):
        build_method({"name": "lape"}).apply(model, neurons(0))
        model.eval()
        with torch.no_grad():
            model(input_ids=x)
        for p in model.parameters():
            if p.requires_grad:
                p.data.normal_(0, 1e-3, generator=torch.Generator().manual_seed(1))
        model(input_ids=x, labels=x).loss.backward()
        grads.append([p.grad for p in model.parameters() if p.requires_grad])
    assert len(grads[0]) == len(grads[1]) == 12
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6 * b.abs().max())


def test_shipped_on_the_full_precision_base(nf4_run, embedded, tmp_path):
    """rebase = fp32 base + the deltas (added in fp32); export/ loads in plain transformers
    and gives those logits; the delta keeps its gain on the full-precision base."""
    from transformers import AutoModelForCausalLM

    model, method, _, before_q, after_q, test = nf4_run
    _, tok = embedded
    delta = method.delta(model)
    base, _ = load_model(CFG, tok, quantized=False)
    meta = delta_metadata(base, delta, base_model=str(TINY), lang="af", method="lape")
    shipped = method.rebase(base, method.trained_state(model))
    expect = AutoModelForCausalLM.from_pretrained(TINY).eval()
    with torch.no_grad():
        for name, lin, d in neuron_deltas(model):
            w = dict(expect.named_modules())[name].weight
            w.copy_(w.index_add(d.dim, d.index, d.delta))
    export_model(tmp_path, shipped, tok, delta, meta)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        assert torch.equal(plain(input_ids=test).logits, expect(input_ids=test).logits)
    fp_before, fp_after = ppl(AutoModelForCausalLM.from_pretrained(TINY).eval(), test), ppl(plain, test)
    assert fp_after < 0.97 * fp_before, (fp_before, fp_after, before_q, after_q)
    head = read_delta(tmp_path / "delta.safetensors")[1]
    assert {"base_model", "base_fingerprint", "lang", "method", "langsub_version",
            "format_version", "dtype"} <= set(head)
    assert head["base_fingerprint"] == fingerprint(AutoModelForCausalLM.from_pretrained(TINY), delta)


def test_quantize_refusals_are_one_line(monkeypatch):
    from langsub.methods.checks import quantize_problems

    cfg = OmegaConf.create({"model": {"quantize": "nf4"}, "trainer": {"accelerator": "cpu"}})
    assert "method=full with model.quantize=nf4" in quantize_problems(
        cfg, build_method({"name": "full"}))[0]
    assert quantize_problems(cfg, build_method({"name": "lora"})) == []
    assert "bitsandbytes runs on cpu, cuda" in backend_problems("nf4", "mps")[0]
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    (line,) = backend_problems("nf4", "cpu")
    assert "needs bitsandbytes" in line and "pip install" in line


def test_train_refuses_a_quantized_full_finetune_before_loading(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "method=full", "model.quantize=nf4",
                        f"hydra.run.dir={tmp_path}/run"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "method=full with model.quantize=nf4" in r.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


# ---------------------------------------------------------------- deltas as artifacts
@pytest.fixture(scope="module")
def deltas(embedded, tmp_path_factory):
    """lape-style deltas trained on af's and mt's text (disjoint random neurons), written by
    `export_model`, and the bases to apply them to."""
    from transformers import AutoModelForCausalLM

    _, tok = embedded
    tmp = tmp_path_factory.mktemp("deltas")
    out = {}
    for seed, lang in enumerate(("af", "mt")):
        model = AutoModelForCausalLM.from_pretrained(TINY).eval()
        method = build_method({"name": "lape"})
        method.apply(model, neurons(seed + 1))
        train(model, blocks(lang, "train", 8, tok))
        delta = method.delta(model)
        meta = delta_metadata(model, delta, base_model=str(TINY), lang=lang, method="lape")
        export_model(tmp / lang, method.merge(model), tok, delta, meta)
        out[lang] = tmp / lang / "delta.safetensors"
    sibling = AutoModelForCausalLM.from_pretrained(TINY)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the same model, slightly fine-tuned elsewhere (the "instruct" one)
        for p in sibling.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1 * p.std())
    sibling.save_pretrained(tmp / "sibling")
    tok.save_pretrained(tmp / "sibling")
    other = tiny_llama(layers=4, vocab=len(tok))  # same module names, other shapes
    other.save_pretrained(tmp / "other")
    tok.save_pretrained(tmp / "other")
    return tmp, out


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "langsub.export", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def _test_ppl(path, lang, tok) -> float:
    from transformers import AutoModelForCausalLM

    return ppl(AutoModelForCausalLM.from_pretrained(path).eval(), blocks(lang, "test", 4, tok))


def test_deltas_compose_and_each_language_gains(deltas, embedded, capsys):
    tmp, d = deltas
    _, tok = embedded
    main(["--base", str(TINY), "--out", str(tmp / "both"), "--delta", str(d["af"]),
          "--delta", str(d["mt"])])
    assert "notice" not in capsys.readouterr().out  # trained on this very base
    for lang in ("af", "mt"):
        base, alone = _test_ppl(TINY, lang, tok), _test_ppl(tmp / lang / "export", lang, tok)
        both = _test_ppl(tmp / "both", lang, tok)
        assert both < base and alone < base, (lang, base, alone, both)


def test_a_sibling_base_gets_the_delta_with_a_notice(deltas, embedded):
    tmp, d = deltas
    _, tok = embedded
    r = _cli("--base", tmp / "sibling", "--out", tmp / "on_sibling", "--delta", d["af"])
    assert r.returncode == 0, r.stderr[-2000:]
    notice = [l for l in r.stdout.splitlines() if l.startswith("notice:")]
    assert len(notice) == 1 and "fingerprint" in notice[0]
    base, on_base = _test_ppl(TINY, "af", tok), _test_ppl(tmp / "af" / "export", "af", tok)
    sib, on_sib = _test_ppl(tmp / "sibling", "af", tok), _test_ppl(tmp / "on_sibling", "af", tok)
    # most of the gain survives on the sibling (README: how much)
    assert (sib - on_sib) > 0.5 * (base - on_base), (base, on_base, sib, on_sib)


@pytest.mark.parametrize("case", ["shapes", "corrupt", "no_header", "version", "no_dim",
                                  "twice", "out_taken"])
def test_bad_deltas_get_one_line_and_nothing_is_written(case, deltas, tmp_path):
    tmp, d = deltas
    base, delta, extra, out = TINY, d["af"], [], tmp_path / "out"
    if case == "twice":  # the same language from the same base would add twice
        extra = ["--delta", tmp_path / "copy.safetensors"]
        (tmp_path / "copy.safetensors").write_bytes(d["af"].read_bytes())
    elif case == "out_taken":  # never delete a folder that is not an earlier export
        out = tmp_path / "mine"
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
    elif case == "no_dim":
        t, meta = read_delta(d["af"])
        t = {k: v for k, v in t.items() if not k.endswith("down_proj.dim")}
        delta = tmp_path / "delta.safetensors"
        save_file(t, delta, metadata=meta)
    elif case == "shapes":
        base = tmp / "other"
    elif case == "corrupt":
        delta = tmp_path / "delta.safetensors"
        delta.write_bytes(d["af"].read_bytes()[:300])
    else:
        t = read_delta(d["af"])[0]
        delta = tmp_path / "delta.safetensors"
        meta = None if case == "no_header" else {"format": "langsub-neuron-delta",
                                                 "format_version": "2", "langsub_version": "9.0"}
        save_file(t, delta, metadata=meta)
    r = _cli("--base", base, "--out", out, "--delta", delta, *extra)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len([l for l in r.stderr.splitlines() if l.startswith("error:")]) == 1
    expect = {"shapes": "a base of other shapes", "corrupt": "not a readable safetensors",
              "no_header": "no langsub delta header", "version": "format version 2",
              "no_dim": "down_proj.dim unexpected or missing", "twice": "would add twice",
              "out_taken": "is not an earlier export"}[case]
    assert expect in r.stderr
    if case == "out_taken":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]
    else:
        assert not out.exists()


def test_a_hub_delta_offline_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "langsub.export", "--base", str(TINY), "--out",
                        str(tmp_path / "out"), "--delta", "someone/af-delta"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "someone/af-delta: not a local file and not downloadable" in r.stderr
    assert not (tmp_path / "out").exists()


def test_read_delta_header_of_a_run(deltas):
    tmp, d = deltas
    with safe_open(str(d["mt"]), "pt") as f:
        head = f.metadata()
    assert head["lang"] == "mt" and head["format"] == "langsub-neuron-delta"
    with pytest.raises(CheckpointError):
        read_delta(tmp / "mt" / "export" / "config.json")
    with pytest.raises(ConfigError):
        from langsub.model.quantize import quantization_config
        quantization_config(OmegaConf.create({"quantize": "fp8"}))


@pytest.mark.slow
def test_main_job_with_an_nf4_base_ships_on_the_full_precision_base(tmp_path):
    """`python train.py method=lape lang=af model.quantize=nf4` (debug=fast): statistics of
    the quantized model, both models' perplexities, export/ = the float base + the delta."""
    from transformers import AutoModelForCausalLM

    from langsub.export import apply_deltas

    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "train.py", "debug=fast", "method=lape", "lang=af",
                        "model.quantize=nf4", f"paths.cache_dir={tmp_path}/cache",
                        f"hydra.run.dir={run}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["quantize"] == "nf4"
    for k in ("ppl_before/target", "ppl_after/target", "ppl_before_quantized/target",
              "ppl_after_quantized/target", "ppl_after_quantized/general"):
        assert math.isfinite(m[k]), k
    assert m["ppl_after/target"] < m["ppl_before/target"]
    assert m["peak_rss_gb"] > 0.1 and m["train_tokens_per_s"] > 0 and m["stats_tokens_per_s"] > 0
    keys = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json")]
    keys = [k for k in keys if isinstance(k, dict) and "model" in k]  # statistics sidecars
    assert keys and all(k["model"]["quantize"] == "nf4/dequantized" for k in keys)
    plain = AutoModelForCausalLM.from_pretrained(run / "export").eval()
    expect = apply_deltas(AutoModelForCausalLM.from_pretrained(TINY).eval(),
                          [run / "delta.safetensors"])
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(),
                                                  expect.state_dict().values()))
    assert read_delta(run / "delta.safetensors")[1]["quantize"] == "nf4"


@pytest.mark.parametrize("name", ["lora", "ia3"])
def test_qlora_and_ia3_train_on_nf4_and_merge_into_the_float_base(name, embedded):
    """peft wraps the 4-bit layers (QLoRA); `rebase` merges the adapters into the float
    base: W + (alpha/r)·B·A for LoRA, and only the adapted layers change."""
    from transformers import AutoModelForCausalLM

    _, tok = embedded
    model, _ = load_model(CFG, tok)
    method = build_method({"name": name})
    model = method.apply(model)
    x = blocks("af", "train", 4, tok)
    before = float(model(input_ids=x, labels=x).loss)
    train(model, x, steps=4)
    assert float(model(input_ids=x, labels=x).loss) < before
    state = method.trained_state(model)
    shipped = method.rebase(AutoModelForCausalLM.from_pretrained(TINY), state)
    assert not any("lora_" in n or "ia3_" in n for n, _ in shipped.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(TINY).state_dict()
    changed = {k for k, v in shipped.state_dict().items() if not torch.equal(v, base[k])}
    assert changed and all(".mlp." in k or ".self_attn." in k for k in changed)
    if name == "lora":
        a = state["base_model.model.model.layers.0.mlp.gate_proj.lora_A.default.weight"]
        b = state["base_model.model.model.layers.0.mlp.gate_proj.lora_B.default.weight"]
        k = "model.layers.0.mlp.gate_proj.weight"
        assert torch.allclose(shipped.state_dict()[k], base[k] + 2.0 * b @ a, atol=1e-6)


def test_int8_base_trains_the_deltas(embedded):
    _, tok = embedded
    model, _ = load_model(OmegaConf.merge(CFG, {"quantize": "int8"}), tok)
    build_method({"name": "lape"}).apply(model, neurons(0))
    x = blocks("af", "train", 4, tok)
    packed = packed_weights(model)
    before = float(model(input_ids=x, labels=x).loss)
    train(model, x, steps=4)
    assert float(model(input_ids=x, labels=x).loss) < before
    after = packed_weights(model)
    assert len(packed) == 28 and all(torch.equal(packed[k], after[k]) for k in packed)


def test_dry_run_plans_an_nf4_base_beside_bf16_and_qlora(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "model=llama31_8b", "trainer=gpu", "lang=af",
                        "method=lape", "rho=0.005", "model.quantize=nf4", "dry_run=true",
                        f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    bf16, qlora = plan["compare"]["lape (bfloat16)"], plan["compare"]["lora (nf4)"]
    assert plan["quantize"] == "nf4" and qlora["quantize"] == "nf4" and bf16["quantize"] is None
    assert plan["trainable_params"] == bf16["trainable_params"]
    # 8.0 B weights: 7.5 B in linears at ~0.516 bytes, embeddings and head in bf16, deltas fp32
    assert 5.0 < plan["weights_gb"] < 6.5 < 15.0 < bf16["weights_gb"]
    assert plan["compare"]["full"]["quantize"] is None  # full cannot train a packed base


def test_push_to_hub_uploads_the_merged_model(deltas, tmp_path):
    """Needs a hub: a write token (HF_TOKEN) and LANGSUB_TEST_HUB_REPO=<user>/<scratch repo>."""
    import os

    repo = os.environ.get("LANGSUB_TEST_HUB_REPO")
    if not (repo and os.environ.get("HF_TOKEN")) or os.environ.get("HF_HUB_OFFLINE") == "1":
        pytest.skip("no hub here: set HF_TOKEN and LANGSUB_TEST_HUB_REPO to test the upload")
    from huggingface_hub import HfApi

    _, d = deltas
    main(["--base", str(TINY), "--out", str(tmp_path / "m"), "--delta", str(d["af"]),
          "--push-to-hub", repo])
    assert "model.safetensors" in HfApi().list_repo_files(repo)
