"""The alignment analysis' hidden-state pass: one sentence at a time through the whole
model (its LM head over every position included) against `analysis/maths.pooled_states`
(padded batches, the head on one position), and the decoder alone as the floor; prints a
table, writes JSON.

    langsub bench alignment                      # model=gemma3_270m, float32
    langsub bench alignment --model tiny --out docs/benchmarks/alignment_tiny.json

Same parallel sentences (data/parallel, the analysis' own), each path timed over all of
them, the paths alternating in `--rounds` rounds, median. The pooled states of every path
are compared with the one-at-a-time path's (max relative difference) and the af ↔ en
cosine per layer must agree.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from langsub.paths import project_root
from langsub.errors import ArgParser

ROOT = project_root()


@torch.no_grad()
def one_at_a_time(model, tok, texts):
    """The analysis before batching: the full forward (logits of every position) per text."""
    out = []
    for t in texts:
        enc = tok(t, return_tensors="pt", truncation=True, max_length=128,
                  return_special_tokens_mask=True)
        content = enc.special_tokens_mask[0] == 0
        hs = model(input_ids=enc.input_ids, output_hidden_states=True).hidden_states
        out.append(torch.stack([h[0, content].float().mean(0) for h in hs]))
    return torch.stack(out)


@torch.no_grad()
def decoder_only(model, tok, texts, batch_size=16):
    """The floor: the decoder's forward over the same padded batches, no head, no states kept."""
    decoder = model.get_decoder()
    for b in range(0, len(texts), batch_size):
        enc = tok(texts[b:b + batch_size], return_tensors="pt", padding=True, truncation=True,
                  max_length=128)
        decoder(input_ids=enc.input_ids, attention_mask=enc.attention_mask)


def main(argv=None) -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3_270m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--n", type=int, default=48, help="parallel sentences per language")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks/alignment_gemma3_270m.json"))
    args = ap.parse_args(argv)

    from bench_loss import model_by_name
    from langsub.analysis.maths import parallel_sentences, pooled_states

    model, tok = model_by_name(args.model, args.dtype)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    sents = parallel_sentences(ROOT / "data", ["af", "en"], limit=args.n)
    texts = sents["af"] + sents["en"]
    n_tokens = sum(len(tok(t, truncation=True, max_length=128).input_ids) for t in texts)
    paths = {"one at a time, full forward (before)": lambda: one_at_a_time(model, tok, texts),
             "pooled_states (batches of 16, head on 1 position)":
                 lambda: pooled_states(model, tok, texts),
             "decoder forward only (the floor)": lambda: decoder_only(model, tok, texts)}
    for f in paths.values():  # warm-up
        f()
    times = {k: [] for k in paths}
    results = {}
    for _ in range(args.rounds):
        for k, f in paths.items():
            t0 = time.perf_counter()
            results[k] = f()
            times[k].append(time.perf_counter() - t0)
    ref = results["one at a time, full forward (before)"]
    got = results["pooled_states (batches of 16, head on 1 position)"]
    rel = float(((got - ref).abs().max(-1).values / ref.abs().max(-1).values).max())
    n = args.n
    cos = torch.nn.functional.cosine_similarity
    cos_ref, cos_got = cos(ref[:n], ref[n:], dim=-1).mean(0), cos(got[:n], got[n:], dim=-1).mean(0)
    floor = statistics.median(times["decoder forward only (the floor)"])
    rows = []
    for k, ts in times.items():
        s = statistics.median(ts)
        rows.append({"path": k, "s": round(s, 3), "tokens_per_s": round(n_tokens / s),
                     "x_floor": round(s / floor, 2)})
    info = {"model": args.model, "dtype": args.dtype, "sentences": len(texts),
            "tokens": n_tokens, "rounds": args.rounds, "threads": torch.get_num_threads(),
            "max_rel_diff_pooled": rel,
            "max_abs_diff_cosine_af_en": float((cos_ref - cos_got).abs().max()),
            "rows": rows}
    print(f"{args.model} {args.dtype}: {len(texts)} sentences, {n_tokens} tokens, "
          f"median of {args.rounds}")
    print("| path | s | tokens/s | × floor |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['s']} | {r['tokens_per_s']} | {r['x_floor']} |")
    print(f"pooled states vs before: max relative difference {rel:.2e}; af↔en cosine per layer "
          f"max |difference| {info['max_abs_diff_cosine_af_en']:.2e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
