"""Capacity × data: target and general change over (subnetwork size, training tokens).

    python train.py -m method=lape lang=af rho=0.01,0.02,0.05,0.1 train.max_tokens=40000,80000,150000,300000
    langsub report outputs/multirun/<time>          # capacity.png and its table

A run's capacity is its `rho` (its neuron count in the table), its data the tokens it trained
on (`tokens_seen`); cells average the runs that share both (seeds).
"""
from __future__ import annotations

from pathlib import Path

from langsub.errors import ConfigError
from langsub.report.charts import pct


def axes(runs: list[dict]) -> tuple[list, list]:
    """The distinct rho values and token counts of the runs, sorted."""
    return (sorted({float(m["rho"]) for m in runs if m.get("rho") not in (None, "auto")}),
            sorted({int(m["tokens_seen"]) for m in runs}))


def varies_both(runs: list[dict]) -> bool:
    """The view applies: one method and language, several rho values and token counts."""
    return not problems(runs)


def problems(runs: list[dict]) -> list[str]:
    """One line when the runs are not one method's sweep over both axes."""
    kinds = sorted({(m["method"], m["lang"], m.get("selection", "lape")) for m in runs})
    if len(kinds) > 1:
        return [f"the capacity view compares one method on one language; these runs are "
                f"{', '.join('/'.join(k) for k in kinds)}: give it one sweep's directory"]
    rhos, tokens = axes(runs)
    if len(rhos) > 1 and len(tokens) > 1:
        return []
    return [f"the capacity view needs runs that vary both rho and the training tokens; these "
            f"have rho {rhos or 'none'} and tokens_seen {tokens}: sweep e.g. "
            "rho=0.01,0.05 train.max_tokens=40000,150000"]


def cells(runs: list[dict]) -> dict[tuple[float, int], dict]:
    """(rho, tokens) -> mean target change %, mean general change %, mean neurons, runs."""
    out: dict[tuple[float, int], dict] = {}
    for m in runs:
        if m.get("rho") in (None, "auto"):
            continue
        c = out.setdefault((float(m["rho"]), int(m["tokens_seen"])),
                           {"target": [], "general": [], "neurons": []})
        c["target"].append(pct(m["ppl_after/target"], m["ppl_before/target"]))
        c["general"].append(pct(m["ppl_after/general"], m["ppl_before/general"]))
        c["neurons"].append(m.get("neurons") or 0)
    return {k: {"target": sum(v["target"]) / len(v["target"]),
                "general": sum(v["general"]) / len(v["general"]),
                "neurons": round(sum(v["neurons"]) / len(v["neurons"])), "runs": len(v["target"])}
            for k, v in out.items()}


def table(runs: list[dict]) -> str:
    if problems(runs):
        raise ConfigError(problems(runs)[0])
    rhos, tokens = axes(runs)
    c = cells(runs)
    lines = ["Target ppl change % / general ppl change % (test split; mean over runs per cell)",
             "", "| rho (neurons) | " + " | ".join(f"{t:,} tokens" for t in tokens) + " |",
             "|---|" + "---|" * len(tokens)]
    for r in rhos:
        n = next((c[(r, t)]["neurons"] for t in tokens if (r, t) in c), 0)
        row = [f"{c[(r, t)]['target']:+.2f} / {c[(r, t)]['general']:+.2f}" if (r, t) in c
               else "–" for t in tokens]
        lines.append(f"| {r:g} ({n}) | " + " | ".join(row) + " |")
    return "\n".join(lines)


def figure(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rhos, tokens = axes(runs)
    c = cells(runs)
    fig, axs = plt.subplots(1, 2, figsize=(4 + 1.6 * len(tokens), 1.5 + 0.6 * len(rhos)))
    for ax, key, cmap in ((axs[0], "target", "RdYlGn_r"), (axs[1], "general", "Reds")):
        grid = [[c[(r, t)][key] if (r, t) in c else float("nan") for t in tokens] for r in rhos]
        im = ax.imshow(grid, cmap=cmap, aspect="auto", origin="lower")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8)
        ax.set(xticks=range(len(tokens)), xticklabels=[f"{t:,}" for t in tokens],
               yticks=range(len(rhos)),
               yticklabels=[f"{r:g} ({next((c[(r, t)]['neurons'] for t in tokens if (r, t) in c), 0)})"
                            for r in rhos],
               xlabel="training tokens", ylabel="rho (neurons)",
               title=f"{key} ppl change, %")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
