"""The `langsub` command: one table of subcommands, one error path.

    langsub train method=lape lang=af         # the main job (= python train.py ...)
    langsub --help                            # every subcommand

The Hydra subcommands (train, dry-run, profile) take train.py's overrides; their config is
composed once before Hydra runs, so an unknown key, a malformed override or an output
directory that cannot be created is one line and exit 2 before anything loads. Only the
project's own errors (`errors.LangsubError`) become one line after that; anything else is a
bug and keeps its traceback.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from langsub.errors import fail, user_errors
from langsub.paths import project_root

# ------------------------------------------------------------------ overrides, checked early
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


def hydra_message(e: Exception) -> str:
    """Hydra's composition error in one line: its first line and the reason it chains."""
    lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
    first = lines[0] if lines else type(e).__name__
    cause = str(e.__cause__ or "").strip().splitlines()
    if cause and "not in struct" in cause[0]:
        key = first.split("'")[1] if first.count("'") >= 2 else "it"
        return f"{first[:-1] if first.endswith('.') else first}: no such key in the config " \
               f"(+{key}=... adds a new one)"
    return first + (f" ({cause[0]})" if cause else "")


def creatable(path: Path) -> str | None:
    """None when `path` can be created as a directory (probed: its first missing ancestor is
    made and removed again, nothing is left), else why not."""
    path = Path(path).absolute()
    missing = None
    probe = path
    while not probe.exists():
        missing, probe = probe, probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if missing is None:
        return None if os.access(path, os.W_OK) else f"{path} is not writable"
    try:
        missing.mkdir()
        missing.rmdir()
    except OSError as e:
        return f"{e.strerror or type(e).__name__}"
    return None


def precheck(conf_dir: Path, config_name: str, argv: list[str]) -> None:
    """Before Hydra runs: unknown group choices, keys or values and an output directory that
    cannot be created are one line each and exit 2. Flags (`--cfg`, `-m`) go to Hydra as
    they are (a sweep's jobs are checked one by one by the task)."""
    problems = check_group_choices(argv, conf_dir)
    if problems:
        fail("\n       ".join(problems))
    if any(a.startswith("-") for a in argv):
        return
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=argv, return_hydra_config=True)
            run_dir = Path(cfg.hydra.run.dir)
    except (HydraException, OmegaConfBaseException) as e:
        fail(hydra_message(e))
    why = creatable(run_dir)
    if why:
        fail(f"hydra.run.dir={run_dir}: cannot be created ({why}); allowed is a directory "
             "this user can write")


def hydra_command(config_name: str, task: Callable, argv: list[str]):
    """Run `task(cfg)` as a Hydra app on conf/<config_name>.yaml with `argv` (overrides and
    Hydra's flags), the way `python train.py` does: output dir, .hydra/, sweeps, launchers."""
    import hydra

    conf = project_root() / "conf"
    precheck(conf, config_name, argv)
    sys.argv = [sys.argv[0], *argv]
    hydra.main(version_base="1.3", config_path=str(conf), config_name=config_name)(
        user_errors(task))()


# ------------------------------------------------------------------ the subcommands
def train_task(cfg):
    """The main job (train.py): returns what a sweeper minimises."""
    from langsub.run import run
    from langsub.validate import check_config

    check_config(cfg)  # bad input: one line in seconds, before Lightning and the data stack load
    m = run(cfg, checked=True)
    if cfg.objective == "target_and_general":  # two objectives for Optuna's NSGA-II
        return m.get("ppl_after/target"), m.get("ppl_after/general")
    return m.get("ppl_after/target")


def profile_task(cfg):
    from langsub.bench.profiler import profile_all

    profile_all(cfg)


def named_command(argv: list[str], table: dict, package: str, usage: str, what: str) -> None:
    """`langsub bench NAME …` / `langsub report TABLE …`: run `<package>.<module>.main` of the
    table's row for argv[0] with the rest (the table: name -> (module, help))."""
    import importlib

    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        sys.exit(0 if argv else 2)
    if argv[0] not in table:
        fail(f"unknown {what} {argv[0]!r}; allowed: {', '.join(table)}")
    sys.argv[0] = f"{sys.argv[0]} {argv[0]}"
    importlib.import_module(f"{package}.{table[argv[0]][0]}").main(argv[1:])


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    run: Callable[[list[str]], object]


def _train(argv):
    hydra_command("train", train_task, argv)


def _dry_run(argv):
    hydra_command("train", train_task, ["dry_run=true", *argv])


def _profile(argv):
    hydra_command("profile", profile_task, argv)


def _module_main(module: str, name: str):
    def run(argv):
        import importlib

        sys.argv[0] = f"langsub {name}"  # what usage lines and errors call the command
        return importlib.import_module(module).main(argv)
    return run


COMMANDS = (
    Command("train", "[key=value ...]", "the main job: identify, fine-tune, measure, export "
            "(= python train.py)", _train),
    Command("dry-run", "[key=value ...]", "what a run would train and hold in memory, from the "
            "config alone (no weights)", _dry_run),
    Command("profile", "[key=value ...]", "each method's real training step against the "
            "floor (= python profile.py)", _profile),
    Command("analyze", "RUN_DIR [key=value ...]", "recompute a finished run's analyses "
            "(and benchmarks) without retraining", _module_main("langsub.analyze", "analyze")),
    Command("stability", "[key=value ...]", "how stable the neuron selection is when text is "
            "scarce", _module_main("langsub.stability", "stability")),
    Command("report", "[TABLE] DIR ...", "compare the runs below a directory (report.md); "
            "tables: scorers, selection, rescore-fidelity, gpu-check", _module_main("langsub.report.commands", "report")),
    Command("export", "--base B --delta D ...", "apply neuron deltas to a base: a model "
            "directory, a GGUF, a LoRA adapter", _module_main("langsub.export", "export")),
    Command("bench", "NAME [options]", "the component benchmarks of docs/BENCHMARKS.md "
            "(langsub bench --help lists them)", _module_main("langsub.bench", "bench")),
)


def usage() -> str:
    width = max(len(c.name) for c in COMMANDS)
    rows = "\n".join(f"  {c.name:<{width}}  {c.help}" for c in COMMANDS)
    return ("usage: langsub <command> [arguments]\n\n"
            "Fine-tune only the language-specific neurons of a causal LM.\n\n"
            f"commands:\n{rows}\n\n"
            "`langsub <command> --help` for a command's own arguments; the Hydra commands "
            "take\ntrain.py's overrides (conf/), e.g. `langsub train model=gemma3_270m lang=cy`.")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if argv else 2)
    by_name = {c.name: c for c in COMMANDS}
    cmd = by_name.get(argv[0])
    if cmd is None:
        fail(f"unknown command {argv[0]!r}; allowed: {', '.join(by_name)}")
    project_root()
    cmd.run(argv[1:])


if __name__ == "__main__":
    main()
