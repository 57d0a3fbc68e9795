"""The analyses' maths: deactivation test, cross-lingual alignment, weight-change anatomy,
component reversal. Functions of a model and data; no files, no figures."""
from __future__ import annotations

import inspect
import logging
import time
from contextlib import contextmanager

import torch

from langsub.clock import since
from langsub.model.ffn import COMPONENTS, find_ffns


@contextmanager
def deactivated(model, mask: list[torch.Tensor]):
    """Zero the activation output (act_fn(gate)) of the given neurons of each layer."""
    handles = []
    for ffn, idx in zip(find_ffns(model), mask):
        if len(idx):
            keep = torch.ones(ffn.n_neurons)
            keep[idx] = 0

            def hook(_m, _i, out, keep=keep, ffn=ffn):
                return ffn.scale_activation(out, keep)
            handles.append(ffn.act.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def deactivation_matrix(model, test: dict, masks: dict, batch_size: int = 32) -> dict:
    """matrix[k][j] = ppl of language j with language k's neurons off / ppl − 1."""
    from langsub.evaluation.perplexity import perplexity  # torchmetrics: only when measuring

    langs, log, t0 = list(masks), logging.getLogger("langsub"), time.perf_counter()
    base = {j: perplexity(model, test[j], batch_size) for j in test}
    matrix = []
    for i, k in enumerate(langs):
        with deactivated(model, masks[k]):
            matrix.append([perplexity(model, test[j], batch_size) / base[j] - 1 for j in test])
        log.info(f"deactivation: {k}'s neurons off, {len(test)} languages measured "
                 f"({i + 1}/{len(langs)}), elapsed {since(t0)}")
    return {"langs": langs, "eval_langs": list(test), "base_ppl": base, "matrix": matrix}


def diagonal_contrast(result: dict) -> tuple[float, float]:
    """(mean diagonal, mean off-diagonal) of a deactivation matrix."""
    langs, cols, m = result["langs"], result["eval_langs"], result["matrix"]
    diag = [m[i][cols.index(l)] for i, l in enumerate(langs) if l in cols]
    off = [m[i][j] for i, l in enumerate(langs) for j, c in enumerate(cols) if c != l]
    return sum(diag) / len(diag), sum(off) / len(off)


def parallel_sentences(data_dir, langs: list[str], limit: int = 200) -> dict[str, list[str]]:
    """Aligned sentences per language from data/parallel/*.jsonl (UDHR + MediaWiki)."""
    import json
    from pathlib import Path

    rows = []
    for p in sorted(Path(data_dir, "parallel").glob("*.jsonl")):
        rows += [json.loads(l) for l in open(p, encoding="utf-8")]
    rows = [r for r in rows if all(r.get(l) for l in langs)][:limit]
    return {l: [r[l] for r in rows] for l in langs}


def _without_logits(model) -> dict:
    """Forward kwargs that skip the LM head where the model allows it (transformers'
    `logits_to_keep`): the hidden states are the same, and a 262 K vocabulary's logits for
    every position cost Gemma 3 270M more than its 18 layers."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(base.forward).parameters \
        else {}


@torch.no_grad()
def pooled_states(model, tokenizer, texts: list[str], max_len: int = 128,
                  batch_size: int = 16) -> torch.Tensor:
    """Hidden states [n_texts, n_layers + 1, d] (embeddings = layer 0), mean-pooled over the
    text's own tokens: the special tokens the tokenizer adds (Llama-3's and Mistral's BOS)
    stay in the input but out of the mean, where one shared vector would inflate every cosine.
    Texts run `batch_size` at a time, right-padded (causal attention: a position never sees
    the padding after it) and masked.
    """
    encs = []
    for t in texts:
        enc = tokenizer(t, truncation=True, max_length=max_len, return_special_tokens_mask=True)
        if all(enc["special_tokens_mask"]):
            raise ValueError(f"no content token to pool in {t!r}")
        encs.append(enc)
    extra, out = _without_logits(model), []
    for b in range(0, len(encs), batch_size):
        chunk = encs[b:b + batch_size]
        width = max(len(e["input_ids"]) for e in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        attn = torch.zeros(len(chunk), width, dtype=torch.long)
        pool = torch.zeros(len(chunk), width)
        for i, e in enumerate(chunk):
            n = len(e["input_ids"])
            ids[i, :n], attn[i, :n] = torch.tensor(e["input_ids"]), 1
            pool[i, :n] = (torch.tensor(e["special_tokens_mask"]) == 0).float()
        hs = model(input_ids=ids.to(model.device), attention_mask=attn.to(model.device),
                   output_hidden_states=True, **extra).hidden_states
        w = (pool / pool.sum(1, keepdim=True)).to(hs[0].device)
        out.append(torch.stack([torch.einsum("bt,btd->bd", w, h.float()) for h in hs], 1).cpu())
    return torch.cat(out)


def alignment(model, tokenizer, sents: dict[str, list[str]], target: str) -> dict:
    """Per layer, mean cosine similarity of target ↔ every other language on parallel items."""
    log, t0, states = logging.getLogger("langsub"), time.perf_counter(), {}
    for i, (l, s) in enumerate(sents.items()):
        states[l] = pooled_states(model, tokenizer, s)
        log.info(f"alignment: {l} done ({i + 1}/{len(sents)} languages, {len(s)} sentences), "
                 f"elapsed {since(t0)}")
    cos = torch.nn.functional.cosine_similarity
    return {l: cos(states[target], states[l], dim=-1).mean(0).tolist()
            for l in sents if l != target}


def bitext_pairs(heldout_dir, name: str, lang: str, limit: int = 200
                 ) -> tuple[list[str], list[str]] | None:
    """(sentences, their English) of the test half of held-out set `name` for `lang`:
    Tatoeba carries the English side (`en`), FLORES is joined with its English file on `id`.
    None without a file (or for English itself)."""
    import json
    from pathlib import Path

    p = Path(heldout_dir, name, f"{lang}.jsonl")
    if lang == "en" or not p.is_file():
        return None
    rows = [r for r in map(json.loads, p.open(encoding="utf-8")) if r["split"] == "test"]
    if rows and "en" not in rows[0]:  # FLORES: the English sentence of the same id
        en_path = Path(heldout_dir, name, "en.jsonl")
        if not en_path.is_file():
            return None
        english = {r["id"]: r["text"] for r in map(json.loads, en_path.open(encoding="utf-8"))}
        rows = [{**r, "en": english[r["id"]]} for r in rows if r["id"] in english]
    rows = rows[:limit]
    return [r["text"] for r in rows], [r["en"] for r in rows]


def retrieval(a: torch.Tensor, b: torch.Tensor) -> dict[str, list[float]]:
    """Bitext retrieval accuracy per layer of pooled states a[i] ↔ b[i] ([n, layers, d]):
    the share of items whose nearest neighbour (cosine) on the other side is their
    translation, both directions."""
    a = torch.nn.functional.normalize(a.float(), dim=-1).transpose(0, 1)  # [layers, n, d]
    b = torch.nn.functional.normalize(b.float(), dim=-1).transpose(0, 1)
    sim = a @ b.transpose(1, 2)  # [layers, n, n]
    gold = torch.arange(sim.shape[1])
    return {"a_to_b": (sim.argmax(2) == gold).float().mean(1).tolist(),
            "b_to_a": (sim.argmax(1) == gold).float().mean(1).tolist()}


@torch.no_grad()
def weight_change(before: dict[str, torch.Tensor], model) -> dict:
    """Per layer and component: ||W_after − W_before|| / ||W_before|| (Frobenius)."""
    out = {}
    for i, ffn in enumerate(find_ffns(model)):
        for comp, w in ffn.weights().items():
            key = f"{i}.{comp}"
            if key in before:
                w = w.detach().float().cpu()
                out.setdefault(comp, []).append(float((w - before[key]).norm() / before[key].norm()))
    return out


def snapshot_ffn(model) -> dict[str, torch.Tensor]:
    """CPU copies of every FFN matrix, keyed `<layer>.<gate|up|down>` (for weight_change)."""
    return {f"{i}.{comp}": w.detach().float().cpu().clone()
            for i, ffn in enumerate(find_ffns(model)) for comp, w in ffn.weights().items()}


def _owners(model) -> dict[str, object]:
    """Linear name -> the GatedFFN it belongs to."""
    ids = {id(lin): ffn for ffn in find_ffns(model) for lin in ffn.linears()}
    return {n: ids[id(m)] for n, m in model.named_modules() if id(m) in ids}


def _positions(delta: dict, model) -> dict[tuple[str, str], torch.Tensor]:
    """(linear, component) -> positions in that linear's delta index."""
    owners, mods, out = _owners(model), dict(model.named_modules()), {}
    for name in sorted({k.rsplit(".", 1)[0] for k in delta}):
        for c, pos in owners[name].parts(mods[name], delta[f"{name}.index"]).items():
            out[(name, c)] = pos
    return out


def trained_components(delta: dict, model) -> list[str]:
    """The components (in gate, up, down order) that the delta changed."""
    have = {c for _, c in _positions(delta, model)}
    return [c for c in COMPONENTS if c in have]


def current_slices(model, delta: dict) -> dict[str, torch.Tensor]:
    """Copies of the model's weights at the delta's indices, `<linear>` -> slice."""
    mods = dict(model.named_modules())
    return {n: mods[n].weight.detach().index_select(
        int(delta[f"{n}.dim"]), delta[f"{n}.index"].to(mods[n].weight.device)).clone()
        for n in sorted({k.rsplit(".", 1)[0] for k in delta})}


@torch.no_grad()
def _put(model, delta: dict, values: dict, components, pos: dict) -> None:
    """Write `values` (slices as from current_slices) back for the chosen components only."""
    mods = dict(model.named_modules())
    for (name, c), p in pos.items():
        if c in components:
            w, dim = mods[name].weight, int(delta[f"{name}.dim"])
            idx = delta[f"{name}.index"][p].to(w.device)
            w.index_copy_(dim, idx, values[name].index_select(dim, p.to(w.device)).to(w))


@torch.no_grad()
def component_reversal(model, delta: dict, original: dict, ds, batch_size: int = 32) -> dict:
    """Target ppl of a fine-tuned model with one component's trained slices put back at a time.

    `model` holds the fine-tuned weights (base + delta); `original` the base weights at the
    delta's indices (sparse.original_slices or current_slices of the base). Returns
    {"full", "revert_<c>" for each trained component, "before": all put back}; the model's
    weights are restored exactly afterwards.
    """
    from langsub.evaluation.perplexity import perplexity

    pos, comps = _positions(delta, model), trained_components(delta, model)
    trained = current_slices(model, delta)
    out = {"full": perplexity(model, ds, batch_size)}
    for name, revert in [(f"revert_{c}", {c}) for c in comps] + [("before", set(comps))]:
        _put(model, delta, original, revert, pos)
        out[name] = perplexity(model, ds, batch_size)
        _put(model, delta, trained, set(comps), pos)
    return out
