"""What each profiling child is handed: the resolved run config of one method (and shape),
and where it runs; `measure` runs the timed children, then the memory children."""
from __future__ import annotations

import copy

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from langsub.bench.children import in_child, memory_specs
from langsub.bench.step import step_child


def method_node(name: str) -> DictConfig:
    """conf/method/<name>.yaml as Hydra composes it: its `defaults` (e.g. random's lape)
    first, then its own keys."""
    from langsub.paths import project_root

    node = OmegaConf.load(project_root() / "conf" / "method" / f"{name}.yaml")
    with open_dict(node):
        parents = [method_node(d) for d in node.pop("defaults", None) or [] if d != "_self_"]
    return OmegaConf.merge(*parents, node)


def run_config(cfg: DictConfig, method: str, arch: dict | None = None) -> dict:
    """The resolved run config with method=<method> (conf/method/<name>.yaml; the floor
    takes lape's) and, for scaling, another architecture. A method whose float32 weights
    compute through autocast (full, ffn) on a half-precision model gets the autocast
    precision its train.py run needs (`trainer.precision=bf16-mixed`, as check_config asks)."""
    from langsub.methods import METHODS
    from langsub.methods.precision import AUTOCAST

    c = copy.deepcopy(cfg)  # a shallow copy re-parents the shared nodes
    name = "lape" if method == "floor" else method
    with open_dict(c):
        c.method = method_node(name)
        if arch is not None:
            c.model.arch = arch
    out = OmegaConf.to_container(c, resolve=True)
    half = {"bfloat16": "bf16-mixed", "float16": "16-mixed"}.get(out["model"].get("dtype"))
    if METHODS[name].needs_autocast and half and out["trainer"].get("precision") not in AUTOCAST:
        out["trainer"]["precision"] = half
    return out


def device_of(cfg: DictConfig) -> str:
    acc = cfg.trainer.get("accelerator", "auto")
    return "cpu" if acc == "cpu" or not torch.cuda.is_available() else "cuda"


def spec_for(cfg, method: str, rho: float, arch: dict | None = None) -> dict:
    p = cfg.profile
    return {"cfg": run_config(cfg, method, arch), "method": method, "rho": rho,
            "device": device_of(cfg), "threads": p.threads, "warmup": p.warmup,
            "steps": p.steps}


def measure(specs: list[dict]) -> tuple[list[dict], list[tuple[dict, dict]]]:
    """Timed children of `specs`, then the memory children (CPU)."""
    results = [in_child(step_child, s) for s in specs]
    mem = memory_specs(specs)
    return results, list(zip(mem, [in_child(step_child, s) for s in mem]))


