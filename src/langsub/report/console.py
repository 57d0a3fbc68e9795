"""The table the main job prints: perplexity of the corpus and of held-out text, benchmarks."""
from __future__ import annotations

import math
from pathlib import Path


def _row(label: str, b: float, a: float, note: str = "") -> str:
    return f"{label:<22}{b:>10.2f}{a:>10.2f}{100 * (a / b - 1):>8.2f}%{note}"


def _score(m: dict, phase: str, key: str) -> str:
    v, se = m[f"lm_eval_{phase}/{key}"], m.get(f"lm_eval_{phase}/{key}_stderr")
    scale = 1 if key.endswith(("chrf", "bleu")) else 100  # accuracy in %, chrF and BLEU in points
    err = f" ± {scale * se:.1f}" if isinstance(se, (int, float)) and math.isfinite(se) else ""
    return f"{scale * v:.1f}{err}"


def print_table(m: dict, out_dir: Path) -> None:
    print(f"\n[langsub] {m['method']} on {m['lang']}: {m['trainable_params']:,} trainable "
          f"({100 * m['trainable_fraction']:.3f} %), neurons {m['neurons']}")
    print(f"{'':<22}{'before':>10}{'after':>10}{'change':>9}")
    for name in ("target", "general"):
        print(_row(f"{name} ppl", m[f"ppl_before/{name}"], m[f"ppl_after/{name}"],
                   f"   ({m.get('data') or 'corpus'}, test split)" if name == "target" else ""))
    held = [k for k in m if k.startswith("heldout_ppl_before/") and k.count("/") == 2]
    for name in ("target", "general"):
        b, a = m.get(f"heldout_ppl_before/{name}"), m.get(f"heldout_ppl_after/{name}")
        if b is not None and a is not None:
            print(_row(f"{name} held-out ppl", b, a,
                       f"   ({m.get('heldout_set')}, test half)" if name == "target" else ""))
    for k in held:  # every held-out set and language
        a = m.get(k.replace("heldout_ppl_before/", "heldout_ppl_after/", 1))
        if a is not None:
            print(_row(f"  {k[len('heldout_ppl_before/'):]}", m[k], a))
    scores = [k[len("lm_eval_before/"):] for k in m if k.startswith("lm_eval_before/")
              and not k.endswith("_stderr") and f"lm_eval_after/{k[15:]}" in m]
    standin = set(m.get("standin_tasks") or [])
    if scores:
        print(f"{'benchmark (% or chrF)':<28}{'before':>14}{'after':>16}")
    for k in scores:
        mark = "   stand-in" if k.split("/")[0] in standin else ""
        print(f"{k:<28}{_score(m, 'before', k):>14}{_score(m, 'after', k):>16}{mark}")
    if standin & {k.split("/")[0] for k in scores}:
        print("stand-in: items built from the embedded corpus, not the real benchmark "
              "(data/README.md)")
    print(f"run dir: {out_dir}\n")
