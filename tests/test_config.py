"""Every config group composes; entry points run from the repo root; bad choices get one line."""
from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from conftest import ROOT
from langsub.validate import ConfigError, check_config

CONF = ROOT / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir()
                if p.is_dir() and p.name not in ("hydra", "profile_model"))


def _compose(overrides=(), name="train"):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=False)


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS
                                          for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_option_composes(group, option):
    cfg = _compose([f"{group}={option}"])
    assert cfg.method.name and cfg.lang.code and cfg.model.name


def test_defaults_are_the_paper_s():
    cfg = _compose()
    assert (cfg.rho, cfg.threshold, cfg.scope, cfg.method.name, cfg.lang.code) == \
        (0.05, 0.95, "global", "lape", "af")
    assert list(cfg.method.components) == ["gate", "up", "down"]
    check_config(cfg)  # the defaults are valid


def test_profile_config_composes():
    cfg = _compose(name="profile")
    assert "floor" in cfg.profile.methods and "lape" in cfg.profile.methods
    assert cfg.model.name == "tiny" and cfg.method.name == "lape"  # train.yaml, included


@pytest.mark.parametrize("override,key", [
    ("rho=0", "rho=0"), ("rho=1.5", "rho=1.5"), ("rho=auto", "rho=auto needs a budget"),
    ("threshold=1.0", "threshold=1.0"), ("threshold=0", "threshold=0"),
    ("method.components=[gate,attn]", "method.components"),
    ("model.path=/nonexistent", "model.path=/nonexistent"),
    ("train.max_tokens=0", "train.max_tokens=0"), ("train.max_tokens=-5", "train.max_tokens"),
    ("data.corpus_dir=/nonexistent", "does not exist"),
    ("method.neurons=/nonexistent.pth", "method.neurons=/nonexistent.pth"),
    ("scope=both", "scope='both'"),
    ("method.neurons_from=xx", "method.neurons_from=xx: not among the identification languages"),
    ("data.eval_langs=[en,de]", "lang=af: not among data.eval_langs"),
])
def test_check_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("(", r"\(")):
        check_config(_compose([override]))


@pytest.mark.parametrize("overrides,needle", [
    (["data.source.path=/nonexistent"], "data.source.path=/nonexistent: neither a known hub id "
     "(cis-lmu/GlotCC-V1"),
    (["data.eval.path=nope/flores"], "data.eval.path=nope/flores: neither a known hub id"),
    (["data.langs=[af,qq]"], "language qq (data.langs, data.eval_langs or lang): no "),
    (["data.source.name='{iso}'"], "data.source.name='{iso}': conf/lang/af.yaml has no field 'iso'"),
    (["data.eval=null", "data.eval_max_tokens=null"], "data.eval_max_tokens=None"),
    (["data.ident_max_tokens=null"], "data.ident_max_tokens=None"),
    (["data.source.path=STANDIN"], "no config 'mlt-Latn' for language mt (has: afr-Latn)"),
])
def test_hub_source_problems(overrides, needle, tmp_path):
    import standin

    root = str(standin.glotcc(tmp_path, ["af"]))
    cfg = _compose(["data=glotcc", *[o.replace("STANDIN", root) for o in overrides]])
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert needle in str(e.value), str(e.value)


def test_hub_sources_compose_and_pass():
    for data in ("glotcc", "culturax", "wikipedia"):
        cfg = _compose([f"data={data}", "lang=zh"])
        check_config(cfg)  # a known hub id is accepted offline
        assert cfg.data.eval.path == "openlanguagedata/flores_plus" and cfg.data.corpus_dir is None


def _run(args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("arg,allowed", [("lang=xx", "af"), ("method=foo", "lape"),
                                         ("model=nope", "tiny"), ("trainer=tpu", "cpu")])
def test_unknown_choice_is_one_line(arg, allowed, tmp_path):
    r = _run(["train.py", arg, f"hydra.run.dir={tmp_path}/run"])
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and arg in err[0] and allowed in err[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_profile_py_does_not_shadow_stdlib_profile():
    """cProfile imports `profile`; with the repo root on sys.path ours must hand it over."""
    r = subprocess.run([sys.executable, "-c", "import cProfile, profile; print(profile.run)"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = _run(["-c", "import lightning.pytorch"])
    assert r.returncode == 0, r.stderr


def test_both_entry_points_start(tmp_path):
    r = _run(["train.py", "--cfg", "job"])
    assert r.returncode == 0 and "method:" in r.stdout, r.stderr
    r = _run(["profile.py", "profile.methods=[floor,lape]", "profile.rounds=1", "profile.steps=1",
              "profile.forward_repeats=1", "data.batch_size=1", "data.block_size=16",
              "model=llama_d512", "model.arch.hidden_size=64", "model.arch.intermediate_size=128",
              "model.arch.num_hidden_layers=2", "model.arch.num_attention_heads=2",
              "model.arch.num_key_value_heads=2", f"hydra.run.dir={tmp_path}"])
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    res = json.loads((tmp_path / "profile.json").read_text())
    for k in ("forward_s/plain", "forward_s/stats", "step_s/floor", "peak_mem_mb/floor",
              "step_s/lape", "peak_mem_mb/lape", "tokens_per_s/lape", "trainable_params/lape"):
        assert k in res
    assert res["trainable_params/floor"] == 0 and res["trainable_params/lape"] > 0
    assert res["facts"]["model"] == "llama_d512" and res["facts"]["block_size"] == 16
    assert (tmp_path / "profile.md").exists()


@pytest.mark.parametrize("args,says", [
    (["profile.methods=[floor,nope]"], "profile.methods=['floor', 'nope']: allowed are floor"),
    (["profile.steps=0"], "profile.steps=0: allowed is an integer >= 1"),
    (["profile.scaling.enabled=true"], "allowed only for random weights"),
    (["foo=1"], "Could not override 'foo': no such key"),
    (["model=nope"], "model=nope is unknown; available:"),
])
def test_profile_bad_input_is_one_line(tmp_path, args, says):
    r = _run(["profile.py", *args, f"hydra.run.dir={tmp_path}/p"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    err = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(err) == 1 and says in err[0], r.stderr
    assert not (tmp_path / "p" / "profile.json").exists()


def test_mask_file_problems_before_loading(tmp_path):
    import torch

    wrong = tmp_path / "wrong.pth"
    torch.save([[torch.tensor([1, 2])] * 32], wrong)  # 32 layers: another model's shape
    with pytest.raises(ConfigError, match="does not fit the model"):
        check_config(_compose([f"method.neurons={wrong}", "method.neurons_langs=[af]"]))
    good = tmp_path / "good.pth"
    torch.save([[torch.tensor([1, 2])] * 4, [torch.tensor([3])] * 4], good)
    with pytest.raises(ConfigError, match="lang=af: .* has no mask"):
        check_config(_compose([f"method.neurons={good}", "method.neurons_langs=[is,mt]"]))
    with pytest.raises(ConfigError, match="2 languages but method.neurons_langs lists 1"):
        check_config(_compose([f"method.neurons={good}", "method.neurons_langs=[af]"]))
    check_config(_compose([f"method.neurons={good}", "method.neurons_langs=[af,is]"]))
    # transfer: af's data on is's neurons needs only is in the file
    check_config(_compose([f"method.neurons={good}", "method.neurons_langs=[is,mt]",
                           "method.neurons_from=is"]))
    with pytest.raises(ConfigError, match="method.neurons_from=lv: .* has no mask"):
        check_config(_compose([f"method.neurons={good}", "method.neurons_langs=[is,mt]",
                               "method.neurons_from=lv"]))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="cannot read"):
        check_config(_compose([f"method.neurons={corrupt}"]))


def test_unsupported_model_before_loading(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="supported FFNs"):
        check_config(_compose([f"model.path={tmp_path}"]))


# The class "a config value of the wrong type or out of range": every key is checked before
# any model loads, one line naming the key, the value and what is allowed.
@pytest.mark.parametrize("override,line", [
    ("data.block_size=0", "data.block_size=0: allowed is an integer >= 2"),
    ("data.batch_size=-1", "data.batch_size=-1: allowed is an integer >= 1"),
    ("data.eval_batch_size=many", "data.eval_batch_size='many': allowed is an integer >= 1"),
    ("data.num_workers=-2", "data.num_workers=-2: allowed is an integer >= 0"),
    ("model.dtype=float8", "model.dtype='float8': allowed is one of 'float32', 'bfloat16'"),
    ("model.attn_implementation=fast", "model.attn_implementation='fast': allowed is one of"),
    ("data.langs=[af]", "data.langs=['af']: allowed is a list of at least 2 distinct"),
    ("data.langs=[]", "data.langs=[]: allowed is a list of at least 2 distinct"),
    ("data.langs=[af,af,en]", "data.langs=['af', 'af', 'en']: allowed is a list of at least 2 "
     "distinct"),
    ("data.eval_langs=[]", "data.eval_langs=[]: allowed is a list of at least 1"),
    ("general=[]", "general=[]: allowed is a list of at least 1"),
    ("general=[en,xx]", "general=['en', 'xx']: ['xx'] not among data.eval_langs"),
    ("seed=-1", "seed=-1: allowed is an integer >= 0"),
    ("seed=1.5", "seed=1.5: allowed is an integer >= 0"),
    ("train.lr=0", "train.lr=0: allowed is a number in (0, inf]"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1: allowed is a number in [0, inf]"),
    ("train.warmup_ratio=1.5", "train.warmup_ratio=1.5: allowed is a number in [0, 1)"),
    ("train.val_every_n_steps=0", "train.val_every_n_steps=0: allowed is an integer >= 1"),
    ("train.early_stopping_patience=0", "train.early_stopping_patience=0: allowed is an integer"),
    ("trainer.precision=8", "trainer.precision=8: allowed is one of '32-true'"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val=-1: allowed is a number in (0"),
    ("+trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0: allowed is an "
     "integer >= 1"),
    ("resume=maybe", "resume='maybe': allowed is true or false"),
    ("analysis_eval_tokens=0", "analysis_eval_tokens=0: allowed is an integer >= 1"),
    ("analysis=[deactivation,heatmap]", "'heatmap' is unknown; allowed is a list of "
     "deactivation, alignment, weights, reversal, fidelity, or 'all'"),
    ("objective=loss", "objective='loss': allowed is one of 'target', 'target_and_general'"),
    ("auto_budget.min_neurons=0", "auto_budget.min_neurons=0: allowed is an integer >= 1"),
    ("~optimizer", "optimizer=None: allowed is a config with a _target_"),
    ("+method.use_dora=true", "method.use_dora: not a key of method=lape (its keys:"),
    ("method.lr=-1", "method.lr=-1: allowed is a number > 0"),
    ("method.neurons_langs=[mt,mt]", "method.neurons_langs=['mt', 'mt']: allowed is a non-empty "
     "list of distinct"),
    ("method.activation_files=[]", "method.activation_files=[]: allowed is a non-empty list"),
])
def test_every_value_is_checked(override, line):
    with pytest.raises(ConfigError) as e:
        check_config(_compose([override]))
    assert line in str(e.value), str(e.value)


@pytest.mark.parametrize("method,override,line", [
    ("lora", "method.r=0", "method.r=0: allowed is an integer >= 1"),
    ("lora", "method.dropout=1.5", "method.dropout=1.5: allowed is a number in [0, 1)"),
    ("lora", "method.alpha=-2", "method.alpha=-2: allowed is a number > 0"),
    ("lora", "method.targets=[]", "method.targets=[]: allowed is a non-empty list"),
    ("lora", "method.use_dora=maybe", "method.use_dora='maybe': allowed is true or false"),
    ("ia3", "method.feedforward=[o_proj]", "method.feedforward=['o_proj']: allowed is a subset"),
    ("random", "method.match=both", "method.match='both': allowed is 'layer' or 'global'"),
    ("full", "+method.components=[down]", "method.components: not a key of method=full"),
])
def test_method_configs_refuse_bad_values(method, override, line):
    overrides = [f"method={method}", override]
    if method == "ia3":
        overrides.append("method.targets=[k_proj,v_proj,down_proj]")
    with pytest.raises(ConfigError) as e:
        check_config(_compose(overrides))
    assert line in str(e.value), str(e.value)


@pytest.mark.parametrize("args,needle", [
    (["method=nope"], "method=nope is unknown"), (["lang=xx"], "lang=xx is unknown"),
    (["model=nope"], "model=nope is unknown"), (["trainer=tpu"], "trainer=tpu is unknown"),
    (["rho=0"], "rho=0"), (["rho=1.5"], "rho=1.5"), (["rho=auto"], "auto_budget"),
    (["threshold=1.0"], "threshold=1.0"), (["threshold=0"], "threshold=0"),
    (["method.components=[gate,x]"], "method.components"),
    (["model.path=/nonexistent"], "model.path=/nonexistent"),
    (["model.path=GPT2"], "supported FFNs"),
    (["train.max_tokens=0"], "train.max_tokens=0"), (["train.max_tokens=-5"], "max_tokens=-5"),
    (["method.neurons=CORRUPT"], "cannot read"),
    (["method.neurons=SHAPE32"], "does not fit the model"),
    (["method.neurons=TWOLANG", "method.neurons_langs=[is,mt]"], "has no mask"),
    (["data.corpus_dir=EMPTY"], "is empty"),
    (["data.corpus_dir=MISSING"], "does not exist"),
    (["data.corpus_dir=SHORT", "data.langs=[af,mt]", "data.eval_langs=[af,mt]", "general=[mt]"],
     "fewer tokens than one block"),
    (["data.block_size=0"], "data.block_size=0: allowed is an integer >= 2"),
    (["data.batch_size=-1"], "data.batch_size=-1: allowed is an integer >= 1"),
    (["model.dtype=float8"], "model.dtype='float8': allowed is one of 'float32'"),
    (["+method.use_dora=true"], "method.use_dora: not a key of method=lape"),
    (["data=glotcc", "data.source.path=/nonexistent"], "data.source.path=/nonexistent: neither"),
    (["data=glotcc", "data.langs=[af,qq]"], "language qq (data.langs"),
])
def test_bad_input_one_line_nothing_written(args, needle, tmp_path):
    import torch
    from transformers import GPT2Config

    (tmp_path / "bad.pth").write_bytes(b"not a mask")
    torch.save([[torch.tensor([1, 2])] * 32], tmp_path / "shape32.pth")
    torch.save([[torch.tensor([1, 2])] * 4, [torch.tensor([3])] * 4], tmp_path / "two.pth")
    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path / "gpt2")
    for name, text in (("corpus", ""), ("short", '{"text": "Goeie more.", "split": "%s"}')):
        (tmp_path / name).mkdir()
        for lang in ("mt", "af", "is"):
            (tmp_path / name / f"{lang}.jsonl").write_text(
                "\n".join(text % s for s in ("train", "valid", "test")) if text else "")
    (tmp_path / "missing").mkdir()
    subst = {"CORRUPT": "bad.pth", "SHAPE32": "shape32.pth", "TWOLANG": "two.pth",
             "GPT2": "gpt2", "EMPTY": "corpus", "MISSING": "missing", "SHORT": "short"}
    for key, name in subst.items():
        args = [a.replace(f"={key}", f"={tmp_path / name}") for a in args]
    run = tmp_path / "run"
    r = _run(["train.py", *args, f"hydra.run.dir={run}", f"paths.cache_dir={tmp_path}/cache"])
    assert r.returncode == 2, r.stderr[-2000:]
    assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.startswith("error: "), r.stderr[-2000:]
    assert "Loading weights" not in r.stderr + r.stdout  # no model was loaded
    for p in ("metrics.json", "export", "checkpoints", "neurons.json", "delta.safetensors"):
        assert not (run / p).exists()
    assert not (tmp_path / "cache" / "stats").exists()  # no statistics cache


def test_lm_eval_problems_before_loading():
    """Unknown task names and bad eval.lm_eval values are caught from the config alone."""
    check_config(_compose(["eval.lm_eval.tasks=[langsub_cloze_af,langsub_cloze_en]"]))
    with pytest.raises(ConfigError, match=r"'langsub_cloze_xx' is not an lm-eval task "
                                          r"\(did you mean langsub_cloze"):
        check_config(_compose(["eval.lm_eval.tasks=[langsub_cloze_xx]"]))
    with pytest.raises(ConfigError) as e:
        check_config(_compose(["eval.lm_eval.tasks=[langsub_cloze_af]", "eval.lm_eval.limit=0",
                               "eval.lm_eval.include_path=[/nonexistent]"]))
    assert "eval.lm_eval.limit=0" in str(e.value)
    assert "/nonexistent is not a directory" in str(e.value)
