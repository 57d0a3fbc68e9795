"""Benchmark log-likelihood scoring: lm-eval's HFLM (logits of every position) against
`evaluation.continuation.ContinuationLM` (the head at the continuation positions only) and
the decoder alone (the floor); prints a table, writes JSON.

    langsub bench loglikelihood                  # model=gemma3_270m, bfloat16
    langsub bench loglikelihood --model tiny --out docs/benchmarks/loglikelihood_tiny.json

The requests are eval=heldout's own (the first `--items` of MMLU, BoolQ and PIQA, built by
lm-eval from the task YAMLs). Each path runs in a fresh process (its peak resident memory
above the loaded model is its own), `--rounds` times, median; the log-likelihoods of the
two scorers are compared (max absolute difference, greedy flags equal).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from langsub.paths import project_root
from langsub.errors import ArgParser

ROOT = project_root()
PATHS = ("hflm", "continuation", "floor")
TASKS = ["heldout_mmlu", "heldout_boolq", "heldout_piqa"]


def rss_gb(field: str) -> float:
    kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field))
    return kb * 1024 / 1e9


def requests(items: int):
    from lm_eval.tasks import get_task_dict

    from langsub.evaluation.benchmarks import task_manager

    tm = task_manager(TASKS, [str(ROOT / "data" / "lm_eval")])
    out = []
    for task in get_task_dict(TASKS, tm).values():
        task.build_all_requests(limit=items, rank=0, world_size=1)
        out += [r for r in task.instances]
    return out


def child(path: str, model_name: str, dtype: str, items: int, rounds: int, batch: int) -> dict:
    from langsub.bench.loss import model_by_name
    from lm_eval.models.huggingface import HFLM

    from langsub.evaluation.continuation import ContinuationLM

    model, tok = model_by_name(model_name, dtype)
    reqs = requests(items)
    cls = HFLM if path == "hflm" else ContinuationLM
    lm = cls(pretrained=model, tokenizer=tok, batch_size=batch)
    base = rss_gb("VmRSS")
    toks = [lm._encode_pair(*r.args) for r in reqs]
    n_tokens = sum(len(c) + len(x) for c, x in toks)

    def floor():  # the decoder over the same padded batches, nothing else
        dec = model.get_decoder()
        order = sorted(toks, key=lambda p: -(len(p[0]) + len(p[1])))
        for s in range(0, len(order), batch):
            rows = [(c + x)[:-1] for c, x in order[s: s + batch]]
            ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, : len(r)] = torch.tensor(r)
            with torch.no_grad():
                dec(input_ids=ids)

    run = floor if path == "floor" else (lambda: lm.loglikelihood(reqs, disable_tqdm=True))
    times, result = [], None
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    return {"path": path, "s": round(s, 2), "tokens": n_tokens, "requests": len(reqs),
            "tokens_per_s": round(n_tokens / s), "peak_above_model_gb":
                round(rss_gb("VmHWM") - base, 2), "result": result}


def main(argv=None) -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gemma3_270m")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--items", type=int, default=20, help="items per task")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks/loglikelihood_gemma3_270m.json"))
    ap.add_argument("--only", choices=PATHS, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.only:
        print(json.dumps(child(a.only, a.model, a.dtype, a.items, a.rounds, a.batch)))
        return
    rows = {}
    for p in PATHS:
        r = subprocess.run([sys.executable, "-m", __spec__.name, "--only", p, "--model", a.model, "--dtype",
                            a.dtype, "--items", str(a.items), "--rounds", str(a.rounds),
                            "--batch", str(a.batch)], capture_output=True, text=True, check=True)
        rows[p] = json.loads(r.stdout.strip().splitlines()[-1])
    ours, theirs = rows["continuation"].pop("result"), rows["hflm"].pop("result")
    rows["floor"].pop("result")
    diff = max(abs(x[0] - y[0]) for x, y in zip(ours, theirs))
    same_greedy = all(x[1] == y[1] for x, y in zip(ours, theirs))
    ref_err = {}
    if a.dtype != "float32":  # both against lm-eval's own path in float32
        r = subprocess.run([sys.executable, "-m", __spec__.name, "--only", "hflm", "--model", a.model,
                            "--dtype", "float32", "--items", str(a.items), "--rounds", "1",
                            "--batch", str(a.batch)], capture_output=True, text=True, check=True)
        ref = json.loads(r.stdout.strip().splitlines()[-1])["result"]
        ref_err = {name: max(abs(x[0] - y[0]) for x, y in zip(res, ref))
                   for name, res in (("hflm", theirs), ("continuation", ours))}
    floor = rows["floor"]["s"]
    info = {"model": a.model, "dtype": a.dtype, "tasks": TASKS, "items_per_task": a.items,
            "batch_size": a.batch, "rounds": a.rounds, "threads": torch.get_num_threads(),
            "max_abs_diff_loglikelihood": diff, "greedy_flags_equal": same_greedy,
            "max_abs_error_vs_float32_hflm": ref_err,
            "rows": [{**r, "x_floor": round(r["s"] / floor, 2)} for r in rows.values()]}
    print(f"{a.model} {a.dtype}: {rows['hflm']['requests']} requests, "
          f"{rows['hflm']['tokens']} tokens, median of {a.rounds}")
    print("| path | s | tokens/s | × floor | peak memory above the model, GB |\n|---|---|---|---|---|")
    for r in info["rows"]:
        print(f"| {r['path']} | {r['s']} | {r['tokens_per_s']} | {r['x_floor']} | "
              f"{r['peak_above_model_gb']} |")
    print(f"log-likelihoods: max |difference| {diff:.2e}; greedy flags equal: {same_greedy}")
    for name, err in ref_err.items():
        print(f"{name} ({a.dtype}) vs lm-eval's path in float32: max |error| {err:.2e}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
