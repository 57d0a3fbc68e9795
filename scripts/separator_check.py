"""How much the document separator moves a held-out perplexity, scored and unscored.

    python scripts/separator_check.py model=gemma3_270m            # the base model
    python scripts/separator_check.py model=gemma3_270m --delta RUN/delta.safetensors

Packs each held-out half (eval.heldout.sets, the target and `general`) as a run does, with
`model.doc_separator` "\\n\\n" and "\\n", and measures the untouched model (or the base
with a run's delta) twice: every target counted (`score_separator=True`, as before
separators were left out) and the separators left out (what every perplexity now reports).
Prints a table and writes JSON (`--out`, default separator_check.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEPARATORS = ("\n\n", "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (model=…, lang=…)")
    ap.add_argument("--delta", type=Path, help="a run's delta.safetensors, applied to the base")
    ap.add_argument("--half", default="test", choices=("test", "valid"))
    ap.add_argument("--out", type=Path, default=Path("separator_check.json"))
    a = ap.parse_args()
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=a.overrides)
    import torch

    from langsub.data.corpus import load_texts, pack, sequence_format
    from langsub.evaluation import heldout
    from langsub.evaluation.perplexity import perplexity
    from langsub.model.load import load_model, load_tokenizer

    tok = load_tokenizer(cfg.model)
    model, tok = load_model(cfg.model, tok, on_cpu=True)
    if a.delta is not None:
        from langsub.export import apply_deltas

        model = apply_deltas(model, [a.delta])
    model.eval()
    h, rows, t0 = heldout.hcfg(cfg), [], time.perf_counter()
    for name, lang in heldout.plan(cfg):
        texts = load_texts(Path(h["dir"]) / name / f"{lang}.jsonl", a.half, cfg.paths.cache_dir)
        row = {"set": name, "lang": lang}
        for sep in SEPARATORS:
            fmt = sequence_format(tok, cfg.model.get("add_bos", "auto"), sep)
            for scored in (True, False):
                ds = pack(texts, tok, cfg.data.block_size, h.get("max_tokens"), fmt=fmt,
                          score_separator=scored)
                with torch.no_grad():
                    ppl = perplexity(model, ds, cfg.data.eval_batch_size,
                                     cfg.model.get("loss_chunk", "auto"))
                row[f"{'all' if scored else 'language'}/{sep!r}"] = round(ppl, 3)
        for kind in ("all", "language"):
            x, y = row[f"{kind}/{SEPARATORS[0]!r}"], row[f"{kind}/{SEPARATORS[1]!r}"]
            row[f"{kind}/change_%"] = round(100 * (y / x - 1), 2)
        rows.append(row)
        print(f"{name}/{lang:<4} all tokens {row['all/change_%']:+7.2f} %   "
              f"separators left out {row['language/change_%']:+7.2f} %", file=sys.stderr)
    names = [f"{k} {s!r}" for k in ("all", "lang") for s in SEPARATORS]
    print(f"{'set/lang':<14}{names[0]:>10}{names[1]:>10}{'change':>9}{names[2]:>11}"
          f"{names[3]:>10}{'change':>9}")
    for r in rows:
        v = [r[f"{k}/{s!r}"] for k in ("all", "language") for s in SEPARATORS]
        print(f"{r['set'] + '/' + r['lang']:<14}{v[0]:>10.2f}{v[1]:>10.2f}"
              f"{r['all/change_%']:>8.2f}%{v[2]:>10.2f}{v[3]:>10.2f}{r['language/change_%']:>8.2f}%")
    a.out.write_text(json.dumps({"model": cfg.model.name, "delta": str(a.delta) if a.delta else None,
                                 "half": a.half, "max_tokens": h.get("max_tokens"),
                                 "seconds": round(time.perf_counter() - t0, 1), "rows": rows},
                                indent=1) + "\n")


if __name__ == "__main__":
    main()
