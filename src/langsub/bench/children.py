"""Measurements in forked children: each (method, round) in its own process, so that its
peak memory is its own; rounds interleave methods so that machine noise hits all alike.

Peak memory on the CPU is the process's peak RSS (VmHWM, reset when training starts) above
the RSS at that moment, measured in one extra child per configuration whose allocator
returns every freed block (`exact_rss`), so that RSS follows live tensor memory; on CUDA,
torch.cuda.max_memory_allocated above the memory allocated when training starts.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import statistics
from pathlib import Path


def rss_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def exact_rss() -> None:
    """Make the peak RSS follow live tensor memory: glibc's adaptive mmap threshold otherwise
    keeps freed blocks in its heap, so the same step's peak RSS moved by ±10 MB between runs
    and between methods. A fixed 128 KiB threshold (mallopt) maps every larger block on its
    own and returns it on free: three runs agreed to 0.1 MB. It slows allocation, so only the
    memory children use it."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: RSS as it comes
        pass


def reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def in_child(fn, *args):
    """Run fn(*args, queue) in a forked process and return what it puts on the queue.

    The parent never computes with torch, so no OpenMP pool (and no CUDA context) exists at
    fork time (a forked child of a process whose OpenMP pool is running hangs)."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    while True:
        try:
            out = q.get(timeout=1.0)
            break
        except Exception:  # queue.Empty: is the child still alive?
            if not p.is_alive():
                raise RuntimeError(f"profiling child {fn.__name__} died (exit {p.exitcode})")
    p.join()
    return out


def interleaved(items: list, rounds: int) -> list[tuple[int, object]]:
    """(round, item) for `rounds` rounds, each in an order rotated by one."""
    return [(r, it) for r in range(rounds)
            for it in items[r % len(items):] + items[: r % len(items)]]


def _key(spec: dict) -> str:
    """What a configuration is, whatever round, step count or memory child measured it."""
    return json.dumps({k: v for k, v in spec.items() if k not in ("round", "memory", "steps")},
                      sort_keys=True)


def memory_specs(specs: list[dict]) -> list[dict]:
    """On the CPU, one memory child per distinct spec (warm-up + 1 step under exact_rss);
    on CUDA none: max_memory_allocated of the timed children is exact already."""
    if specs[0]["device"] != "cpu":
        return []
    seen = {}
    for s in specs:
        seen.setdefault(_key(s), {**{k: v for k, v in s.items() if k != "round"},
                                  "memory": True, "steps": 1})
    return list(seen.values())


def peak_of(spec: dict, results: list[dict], mem: list[tuple[dict, dict]]) -> float:
    """The memory child's peak for this spec, else the median over the timed children."""
    peaks, key = {_key(ms): mr["peak"] for ms, mr in mem}, _key(spec)
    return peaks[key] if key in peaks else statistics.median(r["peak"] for r in results)
