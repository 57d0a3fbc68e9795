"""Fixed rho against the data-driven size (selection=significance) on every target: one table.

    python train.py -m method=lape lang=mt,af,is,cy,mk,lv,lt,sl,sk,et,ka,ne selection=lape,significance export=false
    langsub analyze <one run per selection> analysis=[deactivation] data.eval_langs=[<all 19>]
    langsub report selection outputs/multirun/<time> --out docs/selection

Reads every run's metrics.json (neurons, target and general test-perplexity change) and, per
selection, the deactivation matrix of the run that has one (analysis/deactivation.json:
every language's neurons switched off in turn, perplexity change of every language). Prints
a markdown table — per target: neurons, own-language and mean other-language perplexity rise
when its neurons are off, fine-tuning change of target and general perplexity — and writes
selection.json and selection.md.
"""
from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

from langsub.io import atomic_write_text
from langsub.report.charts import pct
from langsub.errors import ArgParser


def runs(root: Path) -> dict[str, dict[str, dict]]:
    """{selection: {lang: metrics}} and each selection's deactivation matrix (key "_deact")."""
    out: dict[str, dict[str, dict]] = {}
    def job_order(p: Path):  # a sweep's job numbers in numeric order: 0, 1, …, 10
        return [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in p.relative_to(root).parts]

    for p in sorted(root.rglob("metrics.json"), key=job_order):
        m = json.loads(p.read_text())
        sel = out.setdefault(m.get("selection", "lape"), {})
        sel[m["lang"]] = m
        deact = p.parent / "analysis" / "deactivation.json"
        if deact.is_file():
            sel["_deact"] = json.loads(deact.read_text())
    return out


def own_and_other(deact: dict | None, lang: str) -> tuple[float | None, float | None]:
    """Perplexity rise (%) of `lang` and the mean of the other languages with its neurons off."""
    if deact is None or lang not in deact["langs"]:
        return None, None
    row, cols = deact["matrix"][deact["langs"].index(lang)], deact["eval_langs"]
    return 100 * row[cols.index(lang)], 100 * mean(v for c, v in zip(cols, row) if c != lang)


def rows(data: dict[str, dict[str, dict]]) -> list[dict]:
    langs = [l for l in next(iter(data.values())) if not l.startswith("_")]
    out = []
    for lang in langs:
        r = {"lang": lang}
        for sel, by_lang in data.items():
            m = by_lang.get(lang)
            if m is None:
                continue
            own, other = own_and_other(by_lang.get("_deact"), lang)
            r[sel] = {"neurons": m["neurons"], "deact_own": own, "deact_other": other,
                      "target": pct(m["ppl_after/target"], m["ppl_before/target"]),
                      "general": pct(m["ppl_after/general"], m["ppl_before/general"])}
        out.append(r)
    return out


def _f(v, fmt="+.2f") -> str:
    return "–" if v is None else format(v, fmt)


def table(rs: list[dict], selections: list[str]) -> str:
    head = "| lang |" + "".join(f" {s}: neurons | off: own % | off: others % | target Δ % | "
                                f"general Δ % |" for s in selections)
    lines = [head, "|---|" + "---|" * 5 * len(selections)]
    for r in rs:
        cells = []
        for s in selections:
            c = r.get(s, {})
            cells += [_f(c.get("neurons"), "d"), _f(c.get("deact_own")), _f(c.get("deact_other")),
                      _f(c.get("target")), _f(c.get("general"))]
        lines.append(f"| {r['lang']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    data = runs(a.root)
    selections = sorted(data)
    rs = rows(data)
    md = table(rs, selections)
    from langsub.analysis.maths import diagonal_contrast

    for sel in selections:
        if "_deact" in data[sel]:
            diag, off = diagonal_contrast(data[sel]["_deact"])
            md += (f"\n\n{sel}: deactivation over all {len(data[sel]['_deact']['langs'])} "
                   f"languages, mean diagonal {100 * diag:+.2f} %, off-diagonal {100 * off:+.2f} %")
    print(md)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.out / "selection.json", json.dumps(rs, indent=1))
        atomic_write_text(a.out / "selection.md", md + "\n")


if __name__ == "__main__":
    main()
