"""The `langsub` command: its table of subcommands and one error path for all of them."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
from hydra import compose, initialize_config_dir

from conftest import ROOT
from langsub.cli import COMMANDS, creatable
from langsub.errors import ConfigError
from langsub.validate import check_config

RUN = "docs/compare/gemma3_270m/af/lape_s0"  # a finished run, committed


def langsub(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "langsub", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def one_line(r, says: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], r.stderr[-2000:]


def test_the_console_script_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["langsub"] == "langsub.cli:main"


def test_help_lists_every_subcommand():
    r = langsub("--help")
    assert r.returncode == 0
    names = [c.name for c in COMMANDS]
    assert names == ["train", "dry-run", "profile", "analyze", "stability", "report", "export",
                     "bench"]
    for name in names:
        assert f"\n  {name} " in r.stdout


def test_no_command_and_an_unknown_one():
    assert langsub().returncode == 2
    one_line(langsub("trian"), "unknown command 'trian'; allowed: train, dry-run, profile")


def test_langsub_train_is_train_py():
    """The same composed job config, whichever entry point reads the overrides."""
    args = ["method=lora", "lang=cy", "--cfg", "job"]
    a = langsub("train", *args)
    b = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout and "name: lora" in a.stdout


@pytest.mark.parametrize("args,says", [
    (["train", "foo=1"], "Could not override 'foo': no such key"),
    (["train", "rho=2"], "rho=2: allowed is a number in (0, 1] or 'auto'"),
    (["train", "method=nope"], "method=nope is unknown; available: ffn, full, ia3, lape"),
    (["train", "rho=[1"], "no viable alternative"),
    (["dry-run", "train.lr=-1"], "train.lr=-1: allowed is a number in (0, inf]"),
    (["profile", "profile.rounds=0"], "profile.rounds=0: allowed is an integer >= 1"),
    (["analyze"], "usage: langsub analyze RUN_DIR"),
    (["analyze", RUN, "foo=1"], "foo: not a key of the run's config"),
    (["analyze", "/nonexistent"], "no .hydra/config.yaml"),
    (["stability", "foo=1"], "Could not override 'foo'"),
    (["stability", "stability.seeds=0"], "stability.seeds=0: allowed is a count >= 1"),
    (["report", "/nonexistent"], "no metrics.json below /nonexistent"),
    (["report", "--bad"], "langsub report: the following arguments are required: root"),
    (["report", "scorers"], "the following arguments are required"),
    (["export", "--base", "x"], "langsub export: the following arguments are required: --delta"),
    (["bench", "nope"], "unknown benchmark 'nope'; allowed: loss, loglikelihood"),
    (["bench", "loss", "--nope"], "langsub bench loss: unrecognized arguments: --nope"),
])
def test_bad_input_is_one_line_before_any_model(args, says):
    one_line(langsub(*args), says)


def test_an_output_dir_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = langsub("train", f"hydra.run.dir={blocker}/run")
    one_line(r, f"hydra.run.dir={blocker}/run: cannot be created")
    assert blocker.is_file() and not list(tmp_path.glob("file*/**"))


def test_creatable_probes_without_leaving_anything(tmp_path):
    assert creatable(tmp_path / "a" / "b") is None
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("")
    assert "not a directory" in creatable(tmp_path / "f" / "x")


def _compose(*overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_the_target_leaves_general(capsys):
    cfg = _compose("lang=de", "paths.output_dir=/tmp")
    check_config(cfg)
    assert list(cfg.general) == ["en", "fr", "es", "ru", "zh"]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds the target lang=de" in err[0]
    with pytest.raises(ConfigError, match=r"general=\['en'\]: holds only the target lang=en"):
        check_config(_compose("lang=en", "general=[en]", "paths.output_dir=/tmp"))


def test_no_file_in_scripts_is_imported():
    """scripts/ holds the builders of committed assets: neither the package nor the tests
    import from it or put it on sys.path (a test may run a builder as a command)."""
    import ast

    names = {p.stem for p in (ROOT / "scripts").glob("*.py")}
    for p in [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").glob("*.py")]:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & names, p
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in names, p
            elif isinstance(node, ast.Call) and ast.unparse(node.func) == "sys.path.insert":
                assert "scripts" not in ast.unparse(node), p
