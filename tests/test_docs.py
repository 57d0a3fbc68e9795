"""Every langsub command in README.md and docs/ works as written.

The commands of the fenced bash blocks that start with `langsub`, `python train.py`,
`python profile.py` or `python -m langsub` are collected. Those that run in seconds are run,
in a copy of the repository (they may write reports), and must exit 0. Those marked
`# long` (minutes of training, a GPU, a hub, a run directory of one's own) are not run; a
Hydra command among them (train, dry-run, profile) has its overrides composed, so a renamed
key, group or option in the docs fails here.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md")),
         *sorted((ROOT / "docs" / "results").glob("*.md")), ROOT / "docs" / "BENCHMARKS.md"]
ENTRY = re.compile(r"^(?:python3? (?:train\.py|profile\.py|-m langsub)|langsub)(?:\s|$)")
HYDRA = {"train.py": "train", "profile.py": "profile", "train": "train", "dry-run": "train",
         "profile": "profile", "stability": "train"}
PLACEHOLDER = re.compile(r"<[^>]*>|…|\.\.\.|\$")


def commands(page: Path) -> list[tuple[str, int, str, bool]]:
    """(page, line, command, long) of the langsub commands in the page's bash blocks."""
    out, fence, buf, start = [], False, "", 0
    for n, line in enumerate(page.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            fence = not fence and line.strip()[3:].strip() in ("bash", "sh", "shell")
            buf = ""
            continue
        if not fence:
            continue
        if not buf:
            start = n
        text = line.strip().removeprefix("$ ")
        if text.endswith("\\"):
            buf += text[:-1] + " "
            continue
        cmd, buf = buf + text, ""
        if ENTRY.match(cmd):
            body, _, comment = cmd.partition(" #")
            out.append((page.relative_to(ROOT).as_posix(), start, body.strip(),
                        "long" in comment.split(":")[0]))
    return out


ALL = [c for p in PAGES for c in commands(p)]


def _id(c):
    return f"{c[0]}:{c[1]}"


def test_the_pages_have_commands():
    assert len(ALL) >= 25 and sum(not c[3] for c in ALL) >= 8  # the collector finds them


def hydra_of(argv: list[str]) -> tuple[str, list[str]] | None:
    """(config name, overrides) of a Hydra command, or None."""
    if argv[0].startswith("python"):
        argv = argv[1:]
        if argv[0] == "-m":
            argv = argv[2:]  # -m langsub
        elif argv[0] in HYDRA:
            return HYDRA[argv[0]], argv[1:]
    else:
        argv = argv[1:]
    if argv and argv[0] in HYDRA:
        extra = ["dry_run=true"] if argv[0] == "dry-run" else []
        return HYDRA[argv[0]], extra + argv[1:]
    return None


def first_of_sweeps(overrides: list[str]) -> list[str]:
    """A sweep's first job: `k=a,b,c` -> `k=a` (not inside brackets), flags dropped."""
    out = []
    for o in overrides:
        if o.startswith("-"):
            continue
        key, _, val = o.partition("=")
        if "," in val and not val.startswith(("[", "{", "'[", '"[')):
            val = val.split(",")[0]
        out.append(f"{key}={val}")
    return out


@pytest.mark.parametrize("cmd", [c for c in ALL if c[3]], ids=_id)
def test_a_long_command_composes(cmd):
    from hydra import compose, initialize_config_dir

    page, line, text, _ = cmd
    if PLACEHOLDER.search(text):
        pytest.skip(f"{page}:{line} has placeholders: {text[:60]}")
    found = hydra_of(shlex.split(text))
    if found is None:
        pytest.skip(f"{page}:{line} is not a Hydra command")
    name, overrides = found
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        compose(name, overrides=first_of_sweeps(overrides))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A copy of what the commands read and write: conf, data, assets, docs, entry points."""
    box = tmp_path_factory.mktemp("repo")
    for d in ("conf", "data", "assets", "docs", "src"):
        shutil.copytree(ROOT / d, box / d, symlinks=True)
    for f in ("train.py", "profile.py", "README.md"):
        shutil.copy(ROOT / f, box / f)
    if (ROOT / ".cache" / "models").is_dir():  # a dequantized Gemma: no conversion again
        (box / ".cache").mkdir()
        (box / ".cache" / "models").symlink_to(ROOT / ".cache" / "models")
    return box


@pytest.mark.parametrize("cmd", [c for c in ALL if not c[3]], ids=_id)
def test_a_quick_command_runs(cmd, sandbox):
    page, line, text, _ = cmd
    argv = shlex.split(text)
    if argv[0] == "langsub":
        argv = [sys.executable, "-m", "langsub", *argv[1:]]
    elif argv[0].startswith("python"):
        argv[0] = sys.executable
    env = {**os.environ, "LANGSUB_ROOT": str(sandbox),
           "PYTHONPATH": str(sandbox / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run(argv, cwd=sandbox, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{page}:{line}: {text}\n{r.stderr[-3000:]}"
