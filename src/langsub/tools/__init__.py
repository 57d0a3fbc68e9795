"""Tools beside the main job: the dry run (memory plan, no weights), the profiler, the
report's views (fair comparison, capacity x data, forgetting, the paper's Table 2)."""


def pct(after: float, before: float) -> float:
    """Relative change in percent."""
    return 100 * (after / before - 1)
