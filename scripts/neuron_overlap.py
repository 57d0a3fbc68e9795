"""Two identifications side by side: per language the neuron counts, their overlap
(Jaccard) and where they sit (share in the last 4 layers).

    python scripts/neuron_overlap.py docs/compare/gemma3_270m/af/lape_s0/neurons.json \\
        docs/compare/gemma3_270m/news/af/lape_s0/neurons.json --names ui news \\
        --out docs/compare/gemma3_270m/news/neuron_overlap.json

Reads two runs' neurons.json (`langs`: every language's neurons per layer) and prints a
markdown table; `--out` writes it as JSON too.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def sets(path: Path) -> tuple[dict[str, set[tuple[int, int]]], int]:
    """{lang: {(layer, neuron)}} and the number of layers."""
    d = json.loads(path.read_text())
    out = {lang: {(l, i) for l, layer in enumerate(per_layer) for i in layer}
           for lang, per_layer in d["langs"].items()}
    return out, len(next(iter(d["langs"].values())))


def compare(a: dict, b: dict, layers: int, last: int = 4) -> list[dict]:
    rows = []
    for lang in a:
        if lang not in b:
            continue
        x, y = a[lang], b[lang]
        union = x | y
        rows.append({"lang": lang, "a": len(x), "b": len(y), "shared": len(x & y),
                     "jaccard": round(len(x & y) / len(union), 3) if union else None,
                     f"a_last{last}": round(sum(l >= layers - last for l, _ in x) / len(x), 3)
                     if x else None,
                     f"b_last{last}": round(sum(l >= layers - last for l, _ in y) / len(y), 3)
                     if y else None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--names", nargs=2, default=["a", "b"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    (a, layers), (b, _) = sets(args.a), sets(args.b)
    rows = compare(a, b, layers)
    na, nb = args.names
    print(f"| lang | {na} | {nb} | shared | Jaccard | {na}: last 4 of {layers} layers | "
          f"{nb}: last 4 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['lang']} | {r['a']} | {r['b']} | {r['shared']} | {r['jaccard']} | "
              f"{100 * r['a_last4']:.0f} % | {100 * r['b_last4']:.0f} % |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"a": str(args.a), "b": str(args.b), "names": args.names,
                                        "layers": layers, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
