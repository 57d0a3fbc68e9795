"""The paper's Table 2 from runs with eval=paper: monolingual and general scores per method.

    python train.py -m method=lape,random lang=af eval=paper_offline train.max_steps=5 eval.lm_eval.limit=5
    langsub report outputs/multirun/<time>          # paper_table.png and the tables

Per language, a row for the base model (the runs' "before") and one per method (its runs'
"after", averaged over seeds): each monolingual task and their average, each general task
and theirs, on a 0–100 scale (chrF for translation, accuracy × 100 otherwise), as the
paper's Table 2; the averages also as the change from the base (over the tasks both have). A second table has the
log-likelihood twins (Belebele, the general tasks).
"""
from __future__ import annotations

from pathlib import Path
from statistics import mean

from langsub.report.charts import paired_bars

PREFIX = "lm_eval_before/langsub_"
# column: (task pattern with {x} the language code, metric)
MONO = [("FLORES x→en", "flores_{x}_en", "chrf"), ("FLORES en→x", "flores_en_{x}", "chrf"),
        ("OPUS x→en", "opus_{x}_en", "chrf"), ("OPUS en→x", "opus_en_{x}", "chrf"),
        ("SIB-200", "sib200_{x}", "acc"), ("Belebele", "belebele_{x}", "acc")]
GENERAL = [("MMLU", "mmlu", "acc"), ("HellaSwag", "hellaswag", "acc"), ("PIQA", "piqa", "acc"),
           ("WinoGrande", "winogrande", "acc"), ("ARC-E", "arc_easy", "acc"),
           ("ARC-C", "arc_challenge", "acc")]
LL_MONO = [("Belebele", "belebele_{x}_ll", "acc")]
LL_GENERAL = [(n, f"{t}_ll", m) for n, t, m in GENERAL]


def present(runs: list[dict]) -> list[dict]:
    """The runs that carry the paper's suite (any `lm_eval_before/langsub_<task>` score)."""
    return [m for m in runs if any(k.startswith(PREFIX) and not k.startswith(PREFIX + "cloze")
                                   for k in m)]


def score(m: dict, phase: str, lang: str, pattern: str, metric: str) -> float | None:
    """One task's score on a 0–100 scale, or None when the run lacks it."""
    v = m.get(f"lm_eval_{phase}/langsub_{pattern.format(x=lang)}/{metric}")
    return None if v is None else (v if metric in ("chrf", "bleu") else 100 * v)


def _avg(values) -> float | None:
    vals = [v for v in values if v is not None]
    return mean(vals) if vals else None


def _pair_avg(before: list, after: list) -> tuple[float | None, float | None]:
    """The two rows' averages over the columns both have (a missing task moves neither)."""
    both = [(b, a) for b, a in zip(before, after) if b is not None and a is not None]
    return (mean(b for b, _ in both), mean(a for _, a in both)) if both else (None, None)


def _row(rs: list[dict], phase: str, lang: str, columns) -> list[float | None]:
    return [_avg(score(m, phase, lang, p, metric) for m in rs) for _, p, metric in columns]


def groups(runs: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """{lang: {method: runs}} of the runs with the suite, in first-seen order."""
    out: dict[str, dict[str, list[dict]]] = {}
    for m in present(runs):
        out.setdefault(m["lang"], {}).setdefault(m["method"], []).append(m)
    return out


def _cell(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _change(after: float | None, before: float | None) -> str:
    return "" if after is None or before is None else f" ({after - before:+.2f})"


def _standin(runs: list[dict], pattern: str) -> bool:
    """Whether a column's task was read from a stand-in in any run (metrics.json's
    `standin_tasks`: eval=paper_offline's Belebele, OPUS-100 and English suite)."""
    return any(f"langsub_{pattern.format(x=m['lang'])}" in (m.get("standin_tasks") or [])
               for m in present(runs))


def _table(runs: list[dict], mono, general) -> str:
    def name(n, pattern):
        return f"{n} †" if _standin(runs, pattern) else n

    head = [name(n, p) for n, p, _ in mono] + ["mono avg"] + \
        [name(n, p) for n, p, _ in general] + ["general avg"]
    lines = ["| lang | model | runs | " + " | ".join(head) + " |",
             "|---|---|---|" + "---|" * len(head)]
    for lang, by_method in groups(runs).items():
        everyone = [m for rs in by_method.values() for m in rs]
        base_m, base_g = _row(everyone, "before", lang, mono), _row(everyone, "before", lang, general)
        lines.append(f"| {lang} | base | {len(everyone)} | " + " | ".join(
            [*map(_cell, base_m), _cell(_avg(base_m)), *map(_cell, base_g),
             _cell(_avg(base_g))]) + " |")
        for method, rs in by_method.items():
            am, ag = _row(rs, "after", lang, mono), _row(rs, "after", lang, general)
            (b_m, a_m), (b_g, a_g) = _pair_avg(base_m, am), _pair_avg(base_g, ag)
            lines.append(f"| {lang} | {method} | {len(rs)} | " + " | ".join(
                [*map(_cell, am), _cell(a_m) + _change(a_m, b_m), *map(_cell, ag),
                 _cell(a_g) + _change(a_g, b_g)]) + " |")
    return "\n".join(lines)


def _has(runs: list[dict], columns) -> bool:
    """Whether any run scored any of `columns` (eval=paper_ll_offline runs no generation)."""
    return any(score(m, "before", m["lang"], p, metric) is not None
               for m in present(runs) for _, p, metric in columns)


def table(runs: list[dict]) -> str:
    """Table 2 (generation, the authors' protocol) and the log-likelihood twins, markdown;
    each only where the runs have its tasks."""
    parts = []
    if _has(runs, MONO + GENERAL):
        parts.append("Generation with the authors' prompts and letter extraction; translation: "
                     "sentence chrF, otherwise accuracy × 100. Base = before training; each "
                     "method: after, mean over its runs; (change of the average from the base)."
                     f"\n\n{_table(runs, MONO, GENERAL)}")
    if _has(runs, LL_MONO + LL_GENERAL):
        parts.append("Log-likelihood (lm-eval's formulation of the same items), accuracy × 100"
                     f"{'' if parts else '; base = before, each method: after, mean over its runs'}"
                     f":\n\n{_table(runs, LL_MONO, LL_GENERAL)}")
    if any(_standin(runs, p) for _, p, _ in MONO + GENERAL + LL_MONO + LL_GENERAL):
        parts.append("† stand-in: items built from the embedded corpus (eval=paper_offline), "
                     "not the real benchmark; its score says nothing about it. SIB-200 and "
                     "FLORES are the real items.")
    return "\n\n".join(parts)


def figure(runs: list[dict], path: Path) -> None:
    """Per language and method: the change of the monolingual and general averages."""
    names, mono, gen = [], [], []
    cols = (MONO, GENERAL) if _has(runs, MONO + GENERAL) else (LL_MONO, LL_GENERAL)
    for lang, by_method in groups(runs).items():
        everyone = [m for rs in by_method.values() for m in rs]
        for method, rs in by_method.items():
            (b_m, a_m), (b_g, a_g) = (_pair_avg(_row(everyone, "before", lang, c),
                                                _row(rs, "after", lang, c)) for c in cols)
            names.append(f"{method}\n{lang}")
            mono.append(0.0 if a_m is None else a_m - b_m)
            gen.append(0.0 if a_g is None else a_g - b_g)
    paired_bars(names, mono, gen, ("monolingual avg change", "general avg change"),
                "score change (points, higher is better)", path,
                "The paper's suite, after − before")
