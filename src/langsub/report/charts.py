"""Helpers the report's views share: relative change, paired bars."""


def pct(after: float, before: float) -> float:
    """Relative change in percent."""
    return 100 * (after / before - 1)


def paired_bars(names: list[str], left: list[float], right: list[float], labels: tuple[str, str],
                ylabel: str, path, title: str | None = None) -> None:
    """Two bars per name (e.g. target and general change), one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = range(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(names) + 2), 3.5))
    ax.bar([i - 0.2 for i in x], left, 0.4, label=labels[0])
    ax.bar([i + 0.2 for i in x], right, 0.4, label=labels[1])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xticks(list(x), names)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
