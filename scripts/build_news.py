"""Build data/news/, the natural-text corpus (`data=news`), from NTREX-128.

    git clone https://github.com/MicrosoftTranslator/NTREX /tmp/NTREX
    python scripts/build_news.py --ntrex /tmp/NTREX

Source: MicrosoftTranslator/NTREX @ 8561f6a6 (CC BY-SA 4.0): 1,997 sentences of English
news (WMT newstest2019, 123 documents) translated into 128 languages; `DOCUMENT_IDS.tsv`
names each line's document. The repository is read at that commit (a git directory or a
checkout), so the output does not depend on what is checked out.

Writes `data/news/<code>.jsonl`, one row per document {"text", "split", "doc"} — the
headline, a newline, the body's sentences joined by spaces — and `data/news/stats.json`.
Splits are drawn per *document* (a seeded permutation of the 123 ids, the same for every
language): a document and all its translations are in one split, so no split shares a
sentence or a story with another, in any language.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "8561f6a622db9edad1217683e5c83daefd8bb2bf"
NTREX = {"mt": "mlt", "af": "afr", "is": "isl", "cy": "cym", "mk": "mkd", "lv": "lav",
         "lt": "lit", "sl": "slv", "sk": "slk", "et": "est", "ka": "kat", "ne": "nep",
         "en": None, "de": "deu", "fr": "fra", "es": "spa", "ru": "rus", "zh": "zho-CN",
         "sw": "swa"}   # our code -> NTREX file code (en: the English source)
SPLITS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))   # shares of the documents
SEED = 1234


def git_text(repo: Path, path: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), "show", f"{COMMIT}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def git_dir(path: Path) -> Path:
    return path / ".git" if (path / ".git").exists() else path


def document_splits(doc_ids: list[str], seed: int = SEED) -> dict[str, str]:
    """Each document id -> its split: a seeded permutation cut by the SPLITS shares."""
    docs = list(dict.fromkeys(doc_ids))
    random.Random(seed).shuffle(docs)
    out, start = {}, 0
    for i, (name, share) in enumerate(SPLITS):
        end = len(docs) if i == len(SPLITS) - 1 else start + round(share * len(docs))
        out.update({d: name for d in docs[start:end]})
        start = end
    return out


def documents(lines: list[str], doc_ids: list[str]) -> list[tuple[str, str]]:
    """(doc id, text) in file order: the first line is the headline, the rest the body."""
    assert len(lines) == len(doc_ids), (len(lines), len(doc_ids))
    grouped: dict[str, list[str]] = {}
    for doc, line in zip(doc_ids, lines):
        grouped.setdefault(doc, []).append(line.strip())
    out = []
    for doc, sents in grouped.items():
        sents = [s for s in sents if s]
        out.append((doc, sents[0] + "\n" + " ".join(sents[1:]) if len(sents) > 1 else sents[0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ntrex", type=Path, required=True, help="MicrosoftTranslator/NTREX (git)")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "news")
    args = ap.parse_args()
    repo = git_dir(args.ntrex)
    doc_ids = git_text(repo, "DOCUMENT_IDS.tsv").splitlines()
    split = document_splits(doc_ids)
    args.out.mkdir(parents=True, exist_ok=True)
    stats = {}
    for code, iso in NTREX.items():
        name = "newstest2019-src.eng.txt" if iso is None else f"newstest2019-ref.{iso}.txt"
        lines = git_text(repo, f"NTREX-128/{name}").splitlines()
        rows = [{"text": text, "split": split[doc], "doc": doc}
                for doc, text in documents(lines, doc_ids)]
        tmp = args.out / f"{code}.jsonl.tmp"
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(args.out / f"{code}.jsonl")
        stats[code] = {"documents": len(rows), "sentences": len(lines),
                       "words": sum(len(r["text"].split()) for r in rows),
                       "bytes": sum(len(r["text"].encode()) for r in rows),
                       **{s: sum(r["split"] == s for r in rows) for s, _ in SPLITS}}
        print(code, stats[code])
    (args.out / "stats.json").write_text(json.dumps(
        {"source": f"MicrosoftTranslator/NTREX@{COMMIT}", "seed": SEED,
         "splits": dict(SPLITS), "languages": stats}, indent=1) + "\n")


if __name__ == "__main__":
    main()
