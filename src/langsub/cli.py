"""Entry-point plumbing shared by train.py and profile.py: early checks, user-error handling.

Only the project's own errors (`errors.LangsubError`) become one line; anything else is a
bug and keeps its traceback."""
from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path

from langsub.errors import USER_ERRORS


def _values(val: str) -> list[str]:
    """The choices of a command-line value: `a` or a simple sweep `a,b,c` (not choice()/range())."""
    if "(" in val or "[" in val or "$" in val:
        return []
    return [v.strip() for v in val.split(",") if v.strip()]


def check_group_choices(argv: list[str], conf_dir: Path) -> list[str]:
    """One line per `group=option` on the command line whose option file does not exist."""
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    problems = []
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, val = arg.split("=", 1)
        key = key.lstrip("+~")
        if key not in groups or key == "hydra":
            continue
        have = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
        for v in _values(val):
            if v != "null" and v not in have:
                problems.append(f"{key}={v} is unknown; available: {', '.join(have)}")
    return problems


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def precheck(conf_dir: Path) -> None:
    """Run before Hydra: unknown config choices get one line and exit 2."""
    problems = check_group_choices(sys.argv[1:], conf_dir)
    if problems:
        fail("\n       ".join(problems))


def one_line(fn, *args, also: tuple = (), debug: bool = False):
    """`fn(*args)`, with every user error (and the exception types in `also`, e.g. Hydra's
    for a malformed override: their first line) as one line on stderr and exit code 2 —
    the one error path of every command. `debug` or LANGSUB_DEBUG=1: the traceback too."""
    try:
        return fn(*args)
    except (*USER_ERRORS, *also) as e:
        if debug or os.environ.get("LANGSUB_DEBUG"):
            traceback.print_exc()
        text = str(e).strip()
        if not isinstance(e, USER_ERRORS):
            text = text.splitlines()[0] if text else type(e).__name__
        fail(text.replace("\n", "\n       "))


def user_errors(fn):
    """A Hydra task function with `one_line`'s error path (debug_errors=true: the traceback)."""

    @functools.wraps(fn)
    def wrapper(cfg, *a, **kw):
        return one_line(fn, cfg, *a, **kw, debug=bool(cfg.get("debug_errors")))

    return wrapper
