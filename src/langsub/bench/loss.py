"""The loss at real-vocabulary scale: plain (the model's [B, T, V] logits) against chunked
(training/loss.py), on an evaluation batch and a training step; prints a table, writes JSON.

    langsub bench loss                                # model=gemma3_270m, bf16
    langsub bench loss --model tiny --out docs/benchmarks/loss_tiny.json

Each (loss, phase) runs in its own process; peak memory is the process's resident-set high
water mark over the measured calls alone (reset through /proc/self/clear_refs after the
model is loaded), minus the resident set before them. Same batch, same loss to 1e-5.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from langsub.paths import project_root
from langsub.errors import ArgParser

ROOT = project_root()


def _rss(field: str) -> int:
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field))


def model_by_name(name: str, dtype: str):
    from hydra import compose, initialize_config_dir

    from langsub.model.load import load_model

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", f"model.dtype={dtype}"])
    model, tok = load_model(cfg.model)
    return model.eval(), tok


def one(args) -> dict:
    """One measurement in this process: `args.loss` (plain|chunked) on `args.phase`."""
    import torch

    from langsub.training.loss import token_nll

    model, tok = model_by_name(args.model, args.dtype)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, len(tok), (args.batch, args.block), generator=g)
    ids[:, 0] = tok.bos_token_id if tok.bos_token_id is not None else ids[:, 0]
    labels = ids.clone()
    labels[:, 0] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    chunk = None if args.loss == "plain" else "auto"
    train = args.phase == "train"
    for n, p in model.named_parameters():  # a training step: the FFN trains, the head is frozen
        p.requires_grad_(train and ".mlp." in n)

    def step():
        with torch.set_grad_enabled(train):
            nll, count = token_nll(model, batch, chunk)
            if train:
                (nll / count).backward()
                model.zero_grad(set_to_none=True)
        return float(nll) / int(count)

    loss = step()  # warm-up
    base = _rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the high-water mark from here on
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"loss": args.loss, "phase": args.phase, "batch": args.batch, "block": args.block,
            "vocab": len(tok), "mean_nll": loss, "seconds": statistics.median(times),
            "tokens_per_s": args.batch * args.block / statistics.median(times),
            "peak_extra_gb": (_rss("VmHWM") - base) / 1e9}


def main(argv=None) -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3_270m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--eval-batch", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "loss_gemma3_270m.json"))
    ap.add_argument("--one", nargs=3, metavar=("LOSS", "PHASE", "BATCH"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        a.loss, a.phase, a.batch = a.one[0], a.one[1], int(a.one[2])
        print(json.dumps(one(a)))
        return
    rows = []
    jobs = [(p, "eval", b) for b in a.eval_batch for p in ("plain", "chunked")] + \
        [(p, "train", a.train_batch) for p in ("plain", "chunked")]
    for loss, phase, batch in jobs:
        r = subprocess.run([sys.executable, "-m", __spec__.name, "--model", a.model, "--dtype", a.dtype,
                            "--block", str(a.block), "--repeat", str(a.repeat),
                            "--one", loss, phase, str(batch)],
                           capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            sys.exit(f"{loss} {phase} {batch}: failed\n{r.stderr[-2000:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"{'phase':<6}{'batch':>6}{'loss':>9}{'mean nll':>12}{'s':>8}{'tok/s':>8}{'peak +GB':>10}")
    for r in rows:
        print(f"{r['phase']:<6}{r['batch']:>6}{r['loss']:>9}{r['mean_nll']:>12.6f}"
              f"{r['seconds']:>8.2f}{r['tokens_per_s']:>8.0f}{r['peak_extra_gb']:>10.2f}")
    for phase, batch in {(r["phase"], r["batch"]) for r in rows}:
        pair = {r["loss"]: r for r in rows if (r["phase"], r["batch"]) == (phase, batch)}
        rel = abs(pair["chunked"]["mean_nll"] / pair["plain"]["mean_nll"] - 1)
        print(f"{phase} batch {batch}: same loss to {rel:.1e} relative; memory "
              f"{pair['plain']['peak_extra_gb']:.2f} -> {pair['chunked']['peak_extra_gb']:.2f} GB")
    out = {"model": a.model, "dtype": a.dtype, "block": a.block, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
