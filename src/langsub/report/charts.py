"""Helpers the report's views share: relative change, paired bars."""


def pct(after: float, before: float) -> float:
    """Relative change in percent."""
    return 100 * (after / before - 1)


def paired_bars(names: list[str], left: list[float], right: list[float], labels: tuple[str, str],
                ylabel: str, path, title: str | None = None) -> None:
    """Two bars per name (e.g. target and general change), one PNG."""
    grouped_bars(names, {labels[0]: (left, None), labels[1]: (right, None)}, ylabel, path, title)


def grouped_bars(names: list[str], series: dict[str, tuple[list[float], list[float] | None]],
                 ylabel: str, path, title: str | None = None) -> None:
    """One bar per series and name, with its spread as an error bar where given; one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, width = range(len(names)), 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(series) * len(names) + 2), 3.5))
    for j, (label, (values, spread)) in enumerate(series.items()):
        offset = (j - (len(series) - 1) / 2) * width
        ax.bar([i + offset for i in x], values, width, yerr=spread, capsize=2, label=label)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(list(x), names)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
