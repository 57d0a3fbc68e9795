"""Elapsed time as every progress line writes it (`1m42s`), the Lightning phases and the
analyses, data preparation and statistics outside them alike."""
from __future__ import annotations

import time


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def since(t0: float) -> str:
    """`clock` of the time since `t0` (a `time.perf_counter()` reading)."""
    return clock(time.perf_counter() - t0)
