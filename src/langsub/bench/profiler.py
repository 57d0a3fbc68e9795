"""`python profile.py` / `langsub profile`: every method's real training step against the
floor on one model, in one run; the statistics hooks' overhead; scaling with width and ρ.

Each (method, round) runs `bench/step.py`'s child: the model, LightningModule, loss,
optimizer and trainer of the run config, as train.py builds them. Writes profile.json and
profile.md (and scaling.json/.png) in the run directory and prints the table.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from langsub.bench.children import in_child, interleaved, peak_of
from langsub.bench.specs import device_of, measure, spec_for
from langsub.bench.step import flop_model, forward_overhead
from langsub.errors import ConfigError
from langsub.io import atomic_write_text


def profile_problems(cfg: DictConfig) -> list[str]:
    from langsub.methods import METHODS

    p, out = cfg.profile, []
    allowed = ["floor", *sorted(METHODS)]
    bad = [m for m in p.methods if m not in allowed]
    if bad or not p.methods:
        out.append(f"profile.methods={list(p.methods)}: allowed are {', '.join(allowed)}")
    for key, lo in (("warmup", 0), ("steps", 1), ("rounds", 1), ("forward_repeats", 0),
                    ("threads", 1)):
        v = p.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            out.append(f"profile.{key}={v!r}: allowed is an integer >= {lo}")
    if p.scaling.enabled and not cfg.model.get("random_init"):
        out.append(f"profile.scaling.enabled=true with model={cfg.model.name}: scaling changes "
                   "the shapes, allowed only for random weights (model=llama_d512, "
                   "model.random_init=true)")
    return out


def check(cfg: DictConfig) -> None:
    """The run config (train.py's checks) and the profile keys: one line each, no weights."""
    from langsub.validate import check_config

    problems = profile_problems(cfg)
    if problems:
        raise ConfigError("\n".join(problems))
    check_config(cfg)


def summarise(specs, results, mem=()) -> dict:
    out = {}
    for m in dict.fromkeys(s["method"] for s in specs):
        sp = [s for s in specs if s["method"] == m]
        rs = [r for s, r in zip(specs, results) if s["method"] == m]
        step = statistics.median(t for r in rs for t in r["times"])
        d = sp[0]["cfg"]["data"]
        out[f"step_s/{m}"] = step
        out[f"peak_mem_mb/{m}"] = peak_of(sp[0], rs, mem)
        out[f"tokens_per_s/{m}"] = d["batch_size"] * d["block_size"] / step
        out[f"trainable_params/{m}"] = rs[0]["trainable"]
        out[f"precision/{m}"] = sp[0]["cfg"]["trainer"].get("precision")
        out["total_params"] = rs[0]["total"]
    return out


def table(res: dict, methods) -> str:
    fl_t, fl_m = res["step_s/floor"], res["peak_mem_mb/floor"]
    lines = ["| method | step s | × floor | peak MB | × floor | tokens/s | trainable | precision |",
             "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        lines.append(f"| {m} | {res[f'step_s/{m}']:.4f} | {res[f'step_s/{m}'] / fl_t:.3f} | "
                     f"{res[f'peak_mem_mb/{m}']:.1f} | "
                     f"{res[f'peak_mem_mb/{m}'] / max(fl_m, 1e-9):.3f} | "
                     f"{res[f'tokens_per_s/{m}']:.0f} | {res[f'trainable_params/{m}']:,} | "
                     f"{res.get(f'precision/{m}')} |")
    if "forward_s/plain" in res:
        f = res["forward_s/stats"] / res["forward_s/plain"]
        lines.append(f"\nforward: plain {res['forward_s/plain']:.4f} s, with statistics hooks "
                     f"{res['forward_s/stats']:.4f} s ({f:.3f}×)")
    if "flop_model_ratio/lape" in res:
        lines.append(f"lape by matmul FLOPs alone: {res['flop_model_ratio/lape']:.3f}× the floor "
                     "(delta products forward, weight gradient, input gradient)")
    return "\n".join(lines)


def shapes(cfg: DictConfig) -> dict:
    """The model's shapes for the FLOP model (a multimodal config's text part)."""
    from langsub.model.load import model_config

    c = model_config(cfg.model)
    c = getattr(c, "text_config", None) or c
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "vocab_size")
    return {k: getattr(c, k, None) for k in keys}


def facts(cfg: DictConfig) -> dict:
    """What the figures were measured on."""
    return {"model": cfg.model.name, "dtype": cfg.model.get("dtype"),
            "precision": cfg.trainer.get("precision"), "device": device_of(cfg),
            "batch_size": cfg.data.batch_size, "block_size": cfg.data.block_size,
            "rho": cfg.rho, "threads": cfg.profile.threads, "rounds": cfg.profile.rounds,
            "steps": cfg.profile.steps, "warmup": cfg.profile.warmup,
            "optimizer": cfg.optimizer.get("_target_"),
            "loss_chunk": cfg.model.get("loss_chunk", "auto"), "torch": torch.__version__}


def profile_all(cfg: DictConfig) -> dict:
    """Everything `python profile.py` does; returns profile.json's content."""
    check(cfg)
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    p = cfg.profile
    methods = list(dict.fromkeys(["floor", *p.methods]))
    res = {"facts": facts(cfg)}
    if p.forward_repeats:
        res.update(in_child(forward_overhead, {**spec_for(cfg, "floor", cfg.rho),
                                               "repeats": p.forward_repeats}))
    specs = [{**spec_for(cfg, m, cfg.rho), "round": r} for r, m in interleaved(methods, p.rounds)]
    res.update(summarise(specs, *measure(specs)))
    res["flop_model_ratio/lape"] = flop_model(shapes(cfg), cfg.rho, cfg.data.block_size)["ratio"]
    md = table(res, methods)
    atomic_write_text(out_dir / "profile.json", json.dumps(res, indent=1))
    atomic_write_text(out_dir / "profile.md", f"# profile.py\n\n{json.dumps(res['facts'])}\n\n"
                                              f"{md}\n")
    print(f"{cfg.model.name}: {res['facts']}\n{md}")
    if p.scaling.enabled:
        from langsub.bench.scaling import scaling

        scaling(cfg, out_dir)
    print(f"\nwritten: {out_dir}/profile.json, profile.md"
          + (", scaling.json, scaling.png" if p.scaling.enabled else ""))
    return res
