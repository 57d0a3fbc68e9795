"""The main job's analyses (`analysis=[deactivation,alignment,weights,reversal]` or `all`).

Writes <run dir>/analysis/*.json and PNG figures, and logs to TensorBoard.
"""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from langsub import analysis as A  # noqa: E402
from langsub.stats import atomic_write_text  # noqa: E402

KINDS = ("deactivation", "alignment", "weights", "reversal")


def wanted(cfg) -> set[str]:
    a = cfg.get("analysis") or []
    a = list(KINDS) if a == "all" or "all" in a else list(a)
    bad = [k for k in a if k not in KINDS]
    if bad:
        raise ValueError(f"analysis={a}: allowed are {list(KINDS)} or 'all'")
    return set(a)


def _heatmap(matrix, rows, cols, title, path: Path, logger, tag):
    fig, ax = plt.subplots(figsize=(0.45 * len(cols) + 2, 0.45 * len(rows) + 1.5))
    im = ax.imshow([[100 * v for v in r] for r in matrix], cmap="Reds")
    ax.set(xticks=range(len(cols)), xticklabels=cols, yticks=range(len(rows)),
           yticklabels=rows, xlabel="evaluated language", ylabel="neurons switched off",
           title=title)
    fig.colorbar(im, ax=ax, label="ppl increase, %")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    exp = getattr(logger, "experiment", None)
    if exp is not None:
        exp.add_figure(tag, fig)
    plt.close(fig)


def deactivation(out: Path, model, dm, masks: dict, seed: int, tokens: int, logger) -> dict:
    """The LAPE check on the base model: LAPE neurons vs random neurons of the same counts."""
    from langsub.lape import select_random

    test = {l: dm.blocks(l, "test", tokens) for l in dm.eval_langs}
    n = model.config.intermediate_size
    rand = {l: select_random([len(t) for t in m], n, seed + i) for i, (l, m) in
            enumerate(masks.items())}
    res = {}
    for name, ms in (("deactivation", masks), ("deactivation_random", rand)):
        r = A.deactivation_matrix(model, test, ms)
        atomic_write_text(out / f"{name}.json", json.dumps(r, indent=1))
        _heatmap(r["matrix"], r["langs"], r["eval_langs"], name, out / f"{name}.png", logger,
                 f"analysis/{name}")
        res[name] = A.diagonal_contrast(r)
    return {"deactivation_diag": res["deactivation"][0],
            "deactivation_offdiag": res["deactivation"][1],
            "deactivation_random_diag": res["deactivation_random"][0]}


def alignment_curves(model, tok, cfg, langs) -> dict:
    sents = A.parallel_sentences(cfg.paths.data_dir, langs)
    return A.alignment(model.eval(), tok, sents, cfg.lang.code)


def write_alignment(out: Path, before: dict, after: dict, target: str, logger) -> dict:
    layer = round(0.75 * (len(before["en"]) - 1))
    atomic_write_text(out / "alignment.json", json.dumps(
        {"target": target, "layer": layer, "before": before, "after": after}, indent=1))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(before["en"], "o-", label="before")
    ax.plot(after["en"], "o-", label="after")
    ax.set(xlabel="layer (0 = embeddings)", ylabel=f"cosine {target} ↔ en",
           title="cross-lingual alignment")
    ax.legend()
    fig.savefig(out / "alignment.png", dpi=110, bbox_inches="tight")
    exp = getattr(logger, "experiment", None)
    if exp is not None:
        for i, (b, a) in enumerate(zip(before["en"], after["en"])):
            exp.add_scalars("analysis/alignment_en", {"before": b, "after": a}, i)
    plt.close(fig)
    return {"alignment_layer": layer, "alignment_before": before["en"][layer],
            "alignment_after": after["en"][layer]}


def write_weights(out: Path, change: dict, logger) -> dict:
    atomic_write_text(out / "weight_change.json", json.dumps(change, indent=1))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for comp, vals in change.items():
        ax.plot(vals, "o-", label=comp)
    ax.set(xlabel="layer", ylabel="‖ΔW‖ / ‖W‖", title="where the weights moved")
    ax.legend()
    fig.savefig(out / "weight_change.png", dpi=110, bbox_inches="tight")
    exp = getattr(logger, "experiment", None)
    if exp is not None:
        exp.add_figure("analysis/weight_change", fig)
    plt.close(fig)
    return {f"weight_change/{c}": sum(v) / len(v) for c, v in change.items()}


def reversal(out: Path, model, dm, target: str, delta, original, tokens, logger) -> dict:
    """Target ppl with each trained component put back (lape/random: a neuron delta)."""
    if not delta:
        print("[langsub] analysis=reversal skipped: the method trains no neuron slices")
        return {}
    r = A.component_reversal(model, delta, original, dm.blocks(target, "test", tokens))
    atomic_write_text(out / "reversal.json", json.dumps(r, indent=1))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([k.replace("_", "\n") for k in r], list(r.values()),
           color=["C0" if k.startswith("revert") else "C7" for k in r])
    ax.set(ylabel=f"{target} test perplexity", title="put back one component at a time")
    ax.set_ylim(0.95 * min(r.values()), 1.02 * max(r.values()))
    fig.savefig(out / "reversal.png", dpi=110, bbox_inches="tight")
    exp = getattr(logger, "experiment", None)
    if exp is not None:
        exp.add_figure("analysis/reversal", fig)
        for k, v in r.items():
            exp.add_scalar(f"analysis/reversal/{k}", v)
    plt.close(fig)
    return {f"reversal/{k[len('revert_'):]}": v for k, v in r.items() if k.startswith("revert_")}
