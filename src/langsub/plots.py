"""Figures of the selected neurons (PNG in the run dir and in TensorBoard)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _save(fig, out_dir: Path, name: str, logger) -> None:
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / "figures" / f"{name}.png", dpi=110, bbox_inches="tight")
    exp = getattr(logger, "experiment", None)
    if exp is not None and hasattr(exp, "add_figure"):
        exp.add_figure(f"neurons/{name}", fig)
    plt.close(fig)


def log_neuron_figures(out_dir: Path, logger, masks: dict, info: dict) -> None:
    """Neurons per layer per language, overlap between languages, entropy histogram."""
    langs = list(masks)
    per_layer = torch.tensor([[len(t) for t in masks[l]] for l in langs])
    fig, ax = plt.subplots(figsize=(1 + 0.5 * per_layer.shape[1], 0.35 * len(langs) + 1))
    im = ax.imshow(per_layer, aspect="auto", cmap="viridis")
    ax.set(yticks=range(len(langs)), yticklabels=langs, xlabel="layer",
           title="selected neurons per layer")
    fig.colorbar(im, ax=ax)
    _save(fig, out_dir, "neurons_per_layer", logger)

    sets = [{(l, int(i)) for l, t in enumerate(masks[x]) for i in t} for x in langs]
    overlap = torch.tensor([[len(a & b) for b in sets] for a in sets], dtype=torch.float)
    fig, ax = plt.subplots(figsize=(0.4 * len(langs) + 2, 0.4 * len(langs) + 1.5))
    im = ax.imshow(overlap, cmap="magma")
    ax.set(xticks=range(len(langs)), xticklabels=langs, yticks=range(len(langs)),
           yticklabels=langs, title="shared neurons between languages")
    fig.colorbar(im, ax=ax)
    _save(fig, out_dir, "overlap", logger)

    if info.get("over_zero") is not None:
        from langsub.lape import lape_entropy

        _, ent = lape_entropy(info["over_zero"], info["n_tokens"])
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.hist(ent.flatten().numpy(), bins=60)
        ax.set(xlabel="LAPE entropy (nats)", ylabel="neurons", title="entropy of all FFN neurons")
        _save(fig, out_dir, "entropy", logger)
