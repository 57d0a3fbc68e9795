"""Forgetting over training: general validation perplexity against tokens seen, per run.

    python train.py -m method=lape,random,lora,full lang=af data.track_blocks=4 train.max_tokens=600000
    langsub report outputs/multirun/<time>          # forgetting.png and its table

`data.track_blocks=N` measures N valid blocks of each general language at every validation
during training (and once before the first step, the curve's start); metrics.json keeps
the curve (`val_curve`). The report marks where each run's general perplexity first rises
`RISE` above its start.
"""
from __future__ import annotations

from pathlib import Path

RISE = 0.01


def tracked(runs: list[dict]) -> list[dict]:
    """The runs whose curve has the general perplexity (at least a start and one more point)."""
    return [m for m in runs if len([p for p in m.get("val_curve") or [] if "general" in p]) > 1]


def label(m: dict) -> str:
    return f"{m['method']} lr {m['lr']:g} seed {m['seed']}"


def first_rise(curve: list[dict], rise: float = RISE) -> int | None:
    """Tokens seen at the first validation whose general ppl exceeds the start by `rise`."""
    pts = [p for p in curve if "general" in p]
    start = pts[0]["general"]
    return next((p["tokens"] for p in pts[1:] if p["general"] > (1 + rise) * start), None)


def table(runs: list[dict]) -> str:
    lines = [f"General validation ppl over training (tracked blocks); the first point where it "
             f"rose {100 * RISE:g} % above its start.", "",
             "| run | tokens trained | general Δ % at the end | target Δ % at the end | "
             f"first +{100 * RISE:g} % at |", "|---|---|---|---|---|"]
    for m in sorted(tracked(runs), key=lambda r: (r["method"], r["lr"], r["seed"])):
        pts = [p for p in m["val_curve"] if "general" in p]
        g = 100 * (pts[-1]["general"] / pts[0]["general"] - 1)
        t = 100 * (pts[-1][m["lang"]] / pts[0][m["lang"]] - 1)
        r = first_rise(m["val_curve"])
        lines.append(f"| {label(m)} | {pts[-1]['tokens']:,} | {g:+.2f} | {t:+.2f} | "
                     f"{f'{r:,} tokens' if r is not None else 'not within the run'} |")
    return "\n".join(lines)


def figure(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(11, 4))
    methods = sorted({m["method"] for m in tracked(runs)})
    for m in tracked(runs):
        pts = [p for p in m["val_curve"] if "general" in p]
        x = [p["tokens"] for p in pts]
        color = f"C{methods.index(m['method'])}"
        for ax, key in ((axs[0], m["lang"]), (axs[1], "general")):
            ax.plot(x, [100 * (p[key] / pts[0][key] - 1) for p in pts], color=color, lw=1,
                    marker="o", ms=2, label=label(m))
    axs[1].axhline(100 * RISE, color="k", lw=0.6, ls="--")
    axs[0].set(xlabel="tokens seen", ylabel="change from the start, %",
               title="target validation ppl")
    axs[1].set(xlabel="tokens seen", ylabel="change from the start, %",
               title=f"general validation ppl (dashed: +{100 * RISE:g} %)")
    axs[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
