"""Build the FLORES held-out set and the real SIB-200 / FLORES items of eval=paper_offline.

    git clone https://github.com/dadelani/sib-200 /tmp/sib-200
    python scripts/build_flores.py --sib200 /tmp/sib-200

Source: dadelani/sib-200 @ 593cea88 (repository Apache-2.0; the sentences are FLORES-200's,
CC BY-SA 4.0): `data/annotated/<flores code>/{train,dev,test}.tsv`, 701 / 99 / 204 FLORES
sentences with their topic (`index_id`, `category`, `text`), aligned across languages by
`index_id`. The repository is read at that commit (a git directory or a checkout).

Writes
  data/heldout/flores/<code>.jsonl    {"id", "text", "category", "split"}: SIB-200 train+dev
                                      sentences are the `valid` half, its test sentences the
                                      `test` half (held-out perplexity, retrieval)
  data/lm_eval/paper_offline/Davlan/sib200/<flores>/test.jsonl           the real SIB-200
  data/lm_eval/paper_offline/openlanguagedata/flores_plus/<flores>/devtest.jsonl
        the 204 test sentences in FLORES+'s columns, joined across languages on `id`
        (translation both directions)
A sentence found in a corpus split used for identification or training (the UI strings'
`pretrain`/`train`, the news `train`) is dropped; none is (the test suite checks it).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMIT = "593cea88519930f776c1a4a1980b6a35b39dca57"
SIB = {"mt": "mlt_Latn", "af": "afr_Latn", "is": "isl_Latn", "cy": "cym_Latn",
       "mk": "mkd_Cyrl", "lv": "lvs_Latn", "lt": "lit_Latn", "sl": "slv_Latn",
       "sk": "slk_Latn", "et": "est_Latn", "ka": "kat_Geor", "ne": "npi_Deva",
       "en": "eng_Latn", "de": "deu_Latn", "fr": "fra_Latn", "es": "spa_Latn",
       "ru": "rus_Cyrl", "zh": "zho_Hans", "sw": "swh_Latn"}
FLORES_PLUS = {"et": "ekk_Latn", "zh": "cmn_Hans"}   # where FLORES+ names a config otherwise
HALF = {"train": "valid", "dev": "valid", "test": "test"}   # SIB-200 split -> held-out half
TRAINING_SPLITS = {"corpus": ("pretrain", "train"), "news": ("train",)}


def git_text(repo: Path, path: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), "show", f"{COMMIT}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def git_dir(path: Path) -> Path:
    return path / ".git" if (path / ".git").exists() else path


def normal(text: str) -> str:
    return " ".join(text.lower().split())


def training_sentences(code: str) -> set[str]:
    """Every row and every sentence line of the splits that identification or training
    read, in both corpora, normalised."""
    out = set()
    for corpus, splits in TRAINING_SPLITS.items():
        p = ROOT / "data" / corpus / f"{code}.jsonl"
        for r in map(json.loads, p.open(encoding="utf-8")) if p.is_file() else ():
            if r.get("split") in splits:
                out.add(normal(r["text"]))
                out.update(normal(x) for x in r["text"].splitlines())
    return out


def sib_rows(repo: Path, flores: str) -> list[dict]:
    rows = []
    for split in ("train", "dev", "test"):
        text = git_text(repo, f"data/annotated/{flores}/{split}.tsv")
        for r in csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE):
            rows.append({"id": int(r["index_id"]), "text": r["text"].strip(),
                         "category": r["category"], "sib_split": split})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def hub_readme(path: Path, split: str, configs: list[str], what: str) -> None:
    lines = ["---", "configs:"]
    for c in configs:
        lines += [f"- config_name: {c}", "  data_files:", f"  - split: {split}",
                  f"    path: {c}/{split}.jsonl"]
    lines += ["---", "", what, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sib200", type=Path, required=True, help="dadelani/sib-200 (git)")
    args = ap.parse_args()
    repo, data = git_dir(args.sib200), ROOT / "data"
    offline = data / "lm_eval" / "paper_offline"
    ids = None
    for code, flores in SIB.items():
        seen, rows = training_sentences(code), sib_rows(repo, flores)
        kept = [r for r in rows if normal(r["text"]) not in seen]
        print(f"{code}: {len(rows)} sentences, {len(rows) - len(kept)} dropped (in training text)")
        ids = ids or {r["id"] for r in rows}
        assert {r["id"] for r in rows} == ids, f"{code}: index_ids differ from the first language"
        write_jsonl(data / "heldout" / "flores" / f"{code}.jsonl",
                    [{"id": r["id"], "text": r["text"], "category": r["category"],
                      "split": HALF[r["sib_split"]]} for r in kept])
        test = [r for r in kept if r["sib_split"] == "test"]
        write_jsonl(offline / "Davlan" / "sib200" / flores / "test.jsonl",
                    [{"index_id": r["id"], "category": r["category"], "text": r["text"]}
                     for r in test])
        plus = FLORES_PLUS.get(code, flores)   # conf/lang/<code>.yaml `flores`
        iso, script = plus.split("_")
        write_jsonl(offline / "openlanguagedata" / "flores_plus" / plus / "devtest.jsonl",
                    [{"id": r["id"], "iso_639_3": iso, "iso_15924": script, "text": r["text"],
                      "domain": "sib-200 test"} for r in test])
    hub_readme(offline / "Davlan" / "sib200" / "README.md", "test", sorted(SIB.values()),
               f"The real SIB-200 test items (dadelani/sib-200@{COMMIT}), laid out like the hub "
               "dataset Davlan/sib200. Built by scripts/build_flores.py.")
    hub_readme(offline / "openlanguagedata" / "flores_plus" / "README.md", "devtest",
               sorted(FLORES_PLUS.get(c, f) for c, f in SIB.items()),
               f"Real FLORES-200 sentences: SIB-200's 204 test sentences "
               f"(dadelani/sib-200@{COMMIT}), aligned by `id` (SIB-200's index_id), laid out "
               "like the hub dataset openlanguagedata/flores_plus. Built by "
               "scripts/build_flores.py.")


if __name__ == "__main__":
    main()
