"""Figures: PNG files in the run dir, the same figure in TensorBoard."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def save(fig, path: Path, logger=None, tag: str | None = None) -> None:
    """Write `fig` to `path` and, when a TensorBoard logger is given, add it under `tag`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    exp = getattr(logger, "experiment", None)
    if exp is not None and hasattr(exp, "add_figure") and tag:
        exp.add_figure(tag, fig)
    plt.close(fig)


def heatmap(matrix, rows, cols, title, path: Path, logger, tag):
    fig, ax = plt.subplots(figsize=(0.45 * len(cols) + 2, 0.45 * len(rows) + 1.5))
    im = ax.imshow([[100 * v for v in r] for r in matrix], cmap="Reds")
    ax.set(xticks=range(len(cols)), xticklabels=cols, yticks=range(len(rows)),
           yticklabels=rows, xlabel="evaluated language", ylabel="neurons switched off",
           title=title)
    fig.colorbar(im, ax=ax, label="ppl increase, %")
    save(fig, path, logger, tag)


def curves(series: dict[str, list[float]], xlabel: str, ylabel: str, title: str, path: Path,
           logger=None, tag=None) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, ys in series.items():
        ax.plot(ys, "o-", label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    save(fig, path, logger, tag)


def bars(values: dict[str, float], ylabel: str, title: str, path: Path, logger=None, tag=None):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([k.replace("_", "\n") for k in values], list(values.values()),
           color=["C0" if k.startswith("revert") else "C7" for k in values])
    ax.set(ylabel=ylabel, title=title)
    ax.set_ylim(0.95 * min(values.values()), 1.02 * max(values.values()))
    save(fig, path, logger, tag)


def stability_figure(o: dict, path: Path) -> None:
    """Mean Jaccard (± std over seeds) of each language's subsample mask with its all-text
    mask, against the identification tokens per language (log x)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, l in enumerate(o["langs"]):  # 20 colours, then dashed: every language its own
        j = torch.tensor(o["jaccard"][l], dtype=torch.float64)
        std = j.std(1, unbiased=False) if j.shape[1] > 1 else torch.zeros(len(j))
        ax.errorbar(o["tokens"][l], j.mean(1).tolist(), yerr=std.tolist(), marker="o",
                    ms=3, capsize=2, label=l, color=plt.cm.tab20(i % 20),
                    ls="-" if i < 20 else "--")
    ax.set_xscale("log")
    ax.set(xlabel="identification tokens per language", ylabel="Jaccard with the all-text mask",
           title="LAPE identification on less text", ylim=(0, 1.05))
    ax.legend(ncol=2, fontsize=7)
    save(fig, path)


def neuron_figures(out_dir: Path, logger, masks: dict, over_zero=None, n_tokens=None) -> None:
    """Neurons per layer per language, overlap between languages, entropy histogram."""
    from langsub.neurons.lape import lape_entropy

    langs, figs = list(masks), out_dir / "figures"
    per_layer = torch.tensor([[len(t) for t in masks[l]] for l in langs])
    fig, ax = plt.subplots(figsize=(1 + 0.5 * per_layer.shape[1], 0.35 * len(langs) + 1))
    im = ax.imshow(per_layer, aspect="auto", cmap="viridis")
    ax.set(yticks=range(len(langs)), yticklabels=langs, xlabel="layer",
           title="selected neurons per layer")
    fig.colorbar(im, ax=ax)
    save(fig, figs / "neurons_per_layer.png", logger, "neurons/neurons_per_layer")

    sets = [{(l, int(i)) for l, t in enumerate(masks[x]) for i in t} for x in langs]
    overlap = torch.tensor([[len(a & b) for b in sets] for a in sets], dtype=torch.float)
    fig, ax = plt.subplots(figsize=(0.4 * len(langs) + 2, 0.4 * len(langs) + 1.5))
    im = ax.imshow(overlap, cmap="magma")
    ax.set(xticks=range(len(langs)), xticklabels=langs, yticks=range(len(langs)),
           yticklabels=langs, title="shared neurons between languages")
    fig.colorbar(im, ax=ax)
    save(fig, figs / "overlap.png", logger, "neurons/overlap")

    if over_zero is not None:
        _, ent = lape_entropy(over_zero, n_tokens)
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(ent.flatten().numpy(), bins=60)
        ax.set(xlabel="LAPE entropy (nats)", ylabel="neurons", title="entropy of all FFN neurons")
        save(fig, figs / "entropy.png", logger, "neurons/entropy")
