"""What each scorer's statistics pass costs: tokens/s of the pass against the plain decoder
forward it hooks, on the same batch, in the same process; prints a table, writes JSON.

    langsub bench scorers                        # model=gemma3_270m, bf16
    langsub bench scorers --model tiny --batch 32 --out docs/benchmarks/scorers_tiny.json

The pass is what `trainer.predict` runs per identification batch (`CausalLMModule.predict_step`
with the statistic's hooks of `neurons/passes.py` attached): `forward` is the decoder alone
(the floor), `counts` (lape, significance), `values` (activation) and `importance` (plnd) add
forward hooks under inference mode, `gradients` (attribution) adds the LM loss and its
backward. The passes alternate in rounds (the median over rounds), so a machine that slows
down slows all of them alike.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from langsub.bench.loss import ROOT, model_by_name
from langsub.errors import ArgParser

PASSES = ("forward", "counts", "values", "importance", "gradients")
SCORERS = {"forward": "", "counts": "lape, significance", "values": "activation",
           "importance": "plnd", "gradients": "attribution"}


def run_pass(module, name: str, batch) -> float:
    """Seconds of one statistics pass of `name` over `batch` (hooks attached and removed)."""
    import torch

    from langsub.neurons.counting import counted_tokens
    from langsub.neurons.passes import HOOKS

    hooks = HOOKS[name](module.model, 1) if name != "forward" else None
    module.stats_backward = bool(hooks and hooks.backward)
    if hooks is not None:
        hooks.set_batch(0, counted_tokens(batch))
    t0 = time.perf_counter()
    if module.stats_backward:
        module.predict_step(batch, 0)
    else:
        with torch.inference_mode():
            module.predict_step(batch, 0)
    seconds = time.perf_counter() - t0
    if hooks is not None:
        hooks.remove()
    module.model.zero_grad(set_to_none=True)
    return seconds


def main(argv=None) -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3_270m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "scorers_gemma3_270m.json"))
    a = ap.parse_args(argv)

    import torch

    from langsub.training.module import CausalLMModule

    model, tok = model_by_name(a.model, a.dtype)
    for p in model.parameters():  # as identification: a frozen base
        p.requires_grad_(False)
    module = CausalLMModule(model, eval_langs=["x"])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, len(tok), (a.batch, a.block), generator=g)
    labels = ids.clone()
    if tok.bos_token_id is not None:
        ids[:, 0], labels[:, 0] = tok.bos_token_id, -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    for name in PASSES:  # warm-up
        run_pass(module, name, batch)
    times = {name: [] for name in PASSES}
    for _ in range(a.rounds):
        for name in PASSES:
            times[name].append(run_pass(module, name, batch))
    tokens = a.batch * a.block
    floor = statistics.median(times["forward"])
    rows = [{"pass": name, "scorers": SCORERS[name], "seconds": statistics.median(t),
             "tokens_per_s": tokens / statistics.median(t),
             "relative_to_forward": statistics.median(t) / floor} for name, t in times.items()]
    print(f"{'pass':<12}{'scorers':<20}{'s/batch':>9}{'tok/s':>9}{'x forward':>11}")
    for r in rows:
        print(f"{r['pass']:<12}{r['scorers']:<20}{r['seconds']:>9.3f}{r['tokens_per_s']:>9.0f}"
              f"{r['relative_to_forward']:>11.2f}")
    out = {"model": a.model, "dtype": a.dtype, "batch": a.batch, "block": a.block,
           "rounds": a.rounds, "threads": torch.get_num_threads(), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
