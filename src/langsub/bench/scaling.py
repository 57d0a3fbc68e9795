"""Step time and memory against width and ρ, on random weights (`model.random_init`):
`profile.scaling.enabled=true` (profile.py). Each cell is the real step of
`bench/step.py` with the model's `arch` resized (FFN = 4 × width, heads of 64)."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from langsub.bench.children import interleaved, peak_of
from langsub.bench.specs import measure, spec_for
from langsub.bench.step import flop_model
from langsub.io import atomic_write_text


def cells(cfg: DictConfig) -> list[tuple[int, float, str, dict]]:
    """(width, ρ, method, arch) of every cell: each width for each scaling method at `rho`,
    then each ρ for `rho_method` at the model's own width."""
    s, arch = cfg.profile.scaling, OmegaConf.to_container(cfg.model.arch, resolve=True)
    out = []
    for d in s.widths:
        a = {**arch, "hidden_size": d, "intermediate_size": 4 * d,
             "num_attention_heads": max(1, d // 64), "num_key_value_heads": max(1, d // 64)}
        out += [(d, cfg.rho, m, a) for m in s.methods]
    return out + [(arch["hidden_size"], r, s.rho_method, arch) for r in s.rhos]


def scaling(cfg: DictConfig, out_dir: Path) -> list[dict]:
    s = cfg.profile.scaling
    cs = cells(cfg)
    order = interleaved(list(range(len(cs))), s.rounds)
    specs = [spec_for(cfg, cs[c][2], cs[c][1], cs[c][3]) for _, c in order]
    results, mem = measure(specs)
    rows = []
    for c, (d, rho, meth, arch) in enumerate(cs):
        rs = [r for (_, c2), r in zip(order, results) if c2 == c]
        spec = next(sp for (_, c2), sp in zip(order, specs) if c2 == c)
        rows.append({"width": d, "rho": rho, "method": meth, "rounds": s.rounds,
                     "step_s": statistics.median(t for r in rs for t in r["times"]),
                     "peak_mem_mb": peak_of(spec, rs, mem), "trainable_params": rs[0]["trainable"],
                     "flop_model_ratio": flop_model(arch, rho, cfg.data.block_size)["ratio"]})
    atomic_write_text(out_dir / "scaling.json", json.dumps(rows, indent=1))
    figure(rows, cfg, out_dir / "scaling.png")
    return rows


def figure(rows: list[dict], cfg: DictConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, width = cfg.profile.scaling, cfg.model.arch.hidden_size
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for meth in s.methods:
        pts = sorted({r["width"]: r for r in rows if r["method"] == meth and r["rho"] == cfg.rho
                      and r["width"] in s.widths}.values(), key=lambda r: r["width"])
        a.plot([r["width"] for r in pts], [r["step_s"] for r in pts], "o-", label=meth)
    a.set(xlabel="hidden size (FFN = 4×)", ylabel="step s", title="step time vs width")
    a.legend()
    pts = sorted((r for r in rows if r["method"] == s.rho_method and r["width"] == width
                  and r["rho"] in s.rhos), key=lambda r: r["rho"])
    b.plot([r["rho"] for r in pts], [r["step_s"] for r in pts], "o-", label="step s")
    b.set(xscale="log", xlabel="ρ (share of FFN neurons trained)", ylabel="step s",
          title=f"{s.rho_method} step time vs ρ")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
