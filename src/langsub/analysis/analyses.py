"""The paper's analyses (`analysis=[deactivation,alignment,weights,reversal]` or `all`).

Each writes <run dir>/analysis/<name>.json and a PNG, logs to TensorBoard, and returns the
scalars that go into metrics.json.
"""
from __future__ import annotations

import json

import torch

from langsub.analysis import maths as A
from langsub.analysis.registry import Analysis, AnalysisContext, register
from langsub.io import atomic_write_text
from langsub.model.ffn import COMPONENTS, find_ffns
from langsub.neurons.lape import select_random


def _write_json(ctx: AnalysisContext, name: str, obj) -> None:
    atomic_write_text(ctx.out_dir / f"{name}.json", json.dumps(obj, indent=1))


@register
class Deactivation(Analysis):
    """The LAPE check on the base model: LAPE neurons vs random neurons of the same counts."""

    name = "deactivation"
    needs_after = False

    def before(self, ctx, model):
        if ctx.masks is None:
            print("[langsub] analysis=deactivation skipped: no neuron masks (method without "
                  "identification)")
            return {}
        dm, seed = ctx.dm, ctx.cfg.seed
        test = {l: dm.blocks(l, "test", ctx.cfg.analysis_eval_tokens) for l in dm.eval_langs}
        n = find_ffns(model)[0].n_neurons
        rand = {l: select_random([len(t) for t in m], n, seed + i)
                for i, (l, m) in enumerate(ctx.masks.items())}
        res = {}
        for name, masks in (("deactivation", ctx.masks), ("deactivation_random", rand)):
            r = A.deactivation_matrix(model.eval(), test, masks)
            _write_json(ctx, name, r)
            from langsub.analysis import figures  # matplotlib: only when drawing
            figures.heatmap(r["matrix"], r["langs"], r["eval_langs"], name,
                            ctx.out_dir / f"{name}.png", ctx.logger, f"analysis/{name}")
            res[name] = A.diagonal_contrast(r)
        return {"deactivation/diag": res["deactivation"][0],
                "deactivation/offdiag": res["deactivation"][1],
                "deactivation/random_diag": res["deactivation_random"][0]}


@register
class Alignment(Analysis):
    """Cosine of mean-pooled hidden states of parallel sentences, target ↔ every language."""

    name = "alignment"

    def _curves(self, ctx, model) -> dict:
        langs = [ctx.target] + [l for l in ctx.dm.eval_langs if l != ctx.target]
        sents = A.parallel_sentences(ctx.cfg.paths.data_dir, langs)
        return A.alignment(model.eval(), ctx.tokenizer, sents, ctx.target)

    def _retrieval(self, ctx, model) -> dict | None:
        """Bitext retrieval target ↔ en per layer on real parallel text (test halves):
        Tatoeba (`<xx>_en`, `en_<xx>`) and FLORES (`flores_<xx>_en`, `flores_en_<xx>`)."""
        d = ((ctx.cfg.get("eval") or {}).get("heldout") or {}).get("dir")
        out, t = {}, ctx.target
        for name, prefix in (("tatoeba", ""), ("flores", "flores_")):
            pairs = A.bitext_pairs(d, name, t) if d else None
            if pairs is None:
                continue
            xs, ens = (A.pooled_states(model.eval(), ctx.tokenizer, s) for s in pairs)
            r = A.retrieval(xs, ens)
            out.update({f"{prefix}{t}_en": r["a_to_b"], f"{prefix}en_{t}": r["b_to_a"],
                        f"{prefix}n": len(pairs[0])})
        return out or None

    def before(self, ctx, model):
        ctx.state["alignment"] = self._curves(ctx, model)
        ctx.state["retrieval"] = self._retrieval(ctx, model)
        return {}

    def after(self, ctx, model, delta):
        before, after = ctx.state["alignment"], self._curves(ctx, model)
        rb, ra = ctx.state["retrieval"], self._retrieval(ctx, model)
        layer = round(0.75 * (len(before["en"]) - 1))
        _write_json(ctx, "alignment", {"target": ctx.target, "layer": layer, "before": before,
                                       "after": after, "retrieval_before": rb,
                                       "retrieval_after": ra})
        from langsub.analysis import figures  # matplotlib: only when drawing
        figures.curves({"before": before["en"], "after": after["en"]}, "layer (0 = embeddings)",
                       f"cosine {ctx.target} ↔ en", "cross-lingual alignment",
                       ctx.out_dir / "alignment.png")
        exp = getattr(ctx.logger, "experiment", None)
        if exp is not None:
            for i, (b, a) in enumerate(zip(before["en"], after["en"])):
                exp.add_scalars("analysis/alignment_en", {"before": b, "after": a}, i)
        out = {"alignment/layer": layer, "alignment_before/en": before["en"][layer],
               "alignment_after/en": after["en"][layer]}
        for name, r in (("before", rb), ("after", ra)):  # at the same layer, and the best
            for k, curve in (r or {}).items():
                if k not in ("n", "flores_n"):
                    out[f"retrieval_{name}/{k}"] = curve[layer]
                    out[f"retrieval_{name}/{k}_best"] = max(curve)
        return out


@register
class Weights(Analysis):
    """‖ΔW‖/‖W‖ per layer and component (gate, up, down)."""

    name = "weights"

    def before(self, ctx, model):
        ctx.state["weights"] = A.snapshot_ffn(model)
        return {}

    def after(self, ctx, model, delta):
        change = A.weight_change(ctx.state["weights"], model)
        _write_json(ctx, "weight_change", change)
        from langsub.analysis import figures  # matplotlib: only when drawing
        figures.curves(change, "layer", "‖ΔW‖ / ‖W‖", "where the weights moved",
                       ctx.out_dir / "weight_change.png", ctx.logger, "analysis/weight_change")
        return {f"weight_change/{c}": sum(v) / len(v) for c, v in change.items()}


def _trained_slices(model, mask) -> dict:
    """Linear name -> (index, dim, base values) for every component of the trained neurons."""
    names = {id(m): n for n, m in model.named_modules()}
    out = {}
    for ffn, idx in zip(find_ffns(model), mask):
        if len(idx):
            for lin, index, dim in ffn.slices(torch.as_tensor(idx, dtype=torch.long), COMPONENTS):
                out[names[id(lin)]] = (index, dim,
                                       lin.weight.detach().index_select(dim, index).clone())
    return out


def _at_delta(kept: dict, delta: dict) -> dict[str, torch.Tensor]:
    """The kept base values at the delta's own indices, `<linear>` -> slice."""
    out = {}
    for name in sorted({k.rsplit(".", 1)[0] for k in delta}):
        index, dim, values = kept[name]
        pos = torch.searchsorted(index, delta[f"{name}.index"].to(index.device))
        out[name] = values.index_select(dim, pos)
    return out


@register
class Reversal(Analysis):
    """Target ppl with each trained component put back, one at a time (a neuron delta)."""

    name = "reversal"

    def before(self, ctx, model):
        if ctx.trained is not None:
            ctx.state["reversal"] = _trained_slices(model, ctx.trained)
        return {}

    def after(self, ctx, model, delta):
        if not delta or "reversal" not in ctx.state:
            print("[langsub] analysis=reversal skipped: the method trains no neuron slices")
            return {}
        original = _at_delta(ctx.state["reversal"], delta)
        ds = ctx.dm.blocks(ctx.target, "test", ctx.cfg.data.eval_max_tokens)
        r = A.component_reversal(model, delta, original, ds)
        _write_json(ctx, "reversal", r)
        from langsub.analysis import figures  # matplotlib: only when drawing
        figures.bars(r, f"{ctx.target} test perplexity", "put back one component at a time",
                     ctx.out_dir / "reversal.png", ctx.logger, "analysis/reversal")
        exp = getattr(ctx.logger, "experiment", None)
        if exp is not None:
            for k, v in r.items():
                exp.add_scalar(f"analysis/reversal/{k}", v)
        return {f"reversal/{k[len('revert_'):]}": v for k, v in r.items()
                if k.startswith("revert_")}
