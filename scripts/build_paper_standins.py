"""Build small local stand-ins of the paper's evaluation datasets from the embedded corpus.

    python scripts/build_paper_standins.py   # rewrites the stand-ins in data/lm_eval/paper_offline/

Each stand-in is laid out like its hub repository (`<owner>/<name>/README.md` with
`configs:`, then `<config>/<split>.jsonl` with the hub's columns), so `eval=paper_offline`
reads it with the same `datasets.load_dataset` call as the real one. They are stand-ins:
they exercise the suite's plumbing without a hub and say nothing about the benchmarks.
Small on purpose (`--n`, default 24 items; the repository's data stay under 15 MiB).
SIB-200 and FLORES+ are not stand-ins: scripts/build_flores.py writes their real items
into the same directory.
- OPUS-100 (test): the first n/3 UDHR articles (data/parallel/udhr.jsonl), with English.
- Belebele (test): the language's langsub_cloze items: the first half as the passage, the
  four candidate endings as answers.
- MMLU, HellaSwag, PIQA (two endings), ARC-Easy / ARC-Challenge (first / second half): the
  English langsub_cloze items; WinoGrande: English test sentences with one word blanked and
  a word of another sentence as the wrong option.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def write(root: Path, hub_id: str, tables: dict[tuple[str, str], list[dict]]) -> None:
    """`tables[(config, split)]` rows → <root>/<hub_id>/<config>/<split>.jsonl + README.md."""
    base = root / hub_id
    lines = ["---", "configs:"]
    by_config: dict[str, list[str]] = {}
    for (config, split), rows in sorted(tables.items()):
        path = base / config / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                        encoding="utf-8")
        by_config.setdefault(config, []).append(split)
    for config, splits in by_config.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        lines += [f"  - split: {s}\n    path: {config}/{s}.jsonl" for s in splits]
    lines += ["---", f"Stand-in for {hub_id}, built from the embedded corpus by "
              "scripts/build_paper_standins.py (see data/README.md). Not the real dataset.", ""]
    (base / "README.md").write_text("\n".join(lines), encoding="utf-8")
    # the marker langsub.evaluation.paper reads: scores from here are labelled stand-ins
    (base / "STANDIN").write_text("built from the embedded corpus; not the real dataset\n")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def monolingual(data: Path, langs: dict[str, dict], n: int):
    udhr = jsonl(data / "parallel" / "udhr.jsonl")
    opus, bele = {}, {}
    for code, f in langs.items():
        if code == "en":
            continue
        if f.get("opus"):
            pair = "-".join(sorted((f["opus"], "en")))
            opus[(pair, "test")] = [{"translation": {f["opus"]: r[code], "en": r["en"]}}
                                    for r in udhr[:n // 3]]
        if not f.get("belebele"):
            continue
        cloze = jsonl(data / "lm_eval" / "langsub_cloze" / f"{code}.jsonl")[:n]
        bele[(f["belebele"], "test")] = [
            {"link": "", "question_number": i + 1, "flores_passage": c["prefix"],
             "question": "Which ending completes the passage?",
             **{f"mc_answer{k + 1}": c["choices"][k].strip() for k in range(4)},
             "correct_answer_num": str(c["label"] + 1), "dialect": f["belebele"],
             "ds": "stand-in"} for i, c in enumerate(cloze)]
    return {"Helsinki-NLP/opus-100": opus, "facebook/belebele": bele}


def winogrande(sentences: list[str], n: int, seed: int) -> list[dict]:
    rng, out = random.Random(f"winogrande:{seed}"), []
    words = [s.split(" ") for s in sentences if len(s.split(" ")) >= 6]
    for i, w in enumerate(words[:n]):
        k = len(w) // 2
        other = rng.choice([x for x in words[(i + 1) % len(words)] if x != w[k]] or ["it"])
        answer = rng.randrange(2)
        options = [w[k], other] if answer == 0 else [other, w[k]]
        out.append({"sentence": " ".join(w[:k] + ["_"] + w[k + 1:]), "option1": options[0],
                    "option2": options[1], "answer": str(answer + 1)})
    return out


def general(data: Path, n: int) -> dict:
    cloze = jsonl(data / "lm_eval" / "langsub_cloze" / "en.jsonl")[:n]
    test = [r["text"] for r in jsonl(data / "corpus" / "en.jsonl") if r["split"] == "test"]
    ends = lambda c: [x.strip() for x in c["choices"]]  # noqa: E731
    mmlu = [{"question": c["prefix"] + " …", "subject": "stand_in", "choices": ends(c),
             "answer": c["label"]} for c in cloze]
    hellaswag = [{"ind": i, "activity_label": "Stand-in", "ctx_a": c["prefix"], "ctx_b": "",
                  "ctx": c["prefix"], "endings": ends(c), "source_id": "stand-in",
                  "split": "val", "split_type": "indomain", "label": str(c["label"])}
                 for i, c in enumerate(cloze)]
    piqa = []
    for c in cloze:
        real, wrong = ends(c)[c["label"]], ends(c)[(c["label"] + 1) % 4]
        flip = c["id"] % 2
        piqa.append({"goal": c["prefix"], "sol1": wrong if flip else real,
                     "sol2": real if flip else wrong, "label": flip})
    arc = [{"id": f"standin-{c['id']}", "question": c["prefix"] + " …",
            "choices": {"text": ends(c), "label": list("ABCD")},
            "answerKey": "ABCD"[c["label"]]} for c in cloze]
    half = len(arc) // 2
    return {"cais/mmlu": {("all", "validation"): mmlu},
            "Rowan/hellaswag": {("default", "validation"): hellaswag},
            "baber/piqa": {("default", "validation"): piqa},
            "allenai/winogrande": {("winogrande_xl", "validation"): winogrande(test, n, 0)},
            "allenai/ai2_arc": {("ARC-Easy", "validation"): arc[:half],
                                ("ARC-Challenge", "validation"): arc[half:]}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=ROOT / "data", type=Path)
    ap.add_argument("--langs", default=ROOT / "conf" / "lang", type=Path)
    ap.add_argument("--out", default=ROOT / "data" / "lm_eval" / "paper_offline", type=Path)
    ap.add_argument("--n", default=24, type=int,
                    help="items per language and dataset (OPUS-100: n/3 UDHR articles)")
    a = ap.parse_args(argv)
    langs = {p.stem: OmegaConf.to_container(OmegaConf.load(p))
             for p in sorted(a.langs.glob("*.yaml"))}
    for hub_id, tables in {**monolingual(a.data, langs, a.n), **general(a.data, a.n)}.items():
        write(a.out, hub_id, tables)
        print(f"{hub_id}: {sum(len(r) for r in tables.values())} rows")


if __name__ == "__main__":
    main()
