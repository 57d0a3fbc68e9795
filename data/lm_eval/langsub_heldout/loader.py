"""lm-eval `custom_dataset` and prompt functions of the langsub_heldout tasks.

Items are read by path relative to this file (the benchmarks' `<name>.jsonl` here, Tatoeba
from data/heldout/tatoeba), so the tasks work from any working directory, offline.
"""
import json
from functools import partial
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent
TATOEBA = HERE.parents[1] / "heldout" / "tatoeba"
NAMES = {"af": "Afrikaans", "cy": "Welsh", "de": "German", "en": "English", "es": "Spanish",
         "et": "Estonian", "fr": "French", "is": "Icelandic", "ka": "Georgian",
         "lt": "Lithuanian", "lv": "Latvian", "mk": "Macedonian", "ru": "Russian",
         "sk": "Slovak", "sl": "Slovenian", "sw": "Swahili", "zh": "Chinese"}
# lm-eval's XCOPA connectors (lm_eval/tasks/xcopa/utils.py)
CONNECTORS = {"et": {"cause": "sest", "effect": "seetõttu"},
              "sw": {"cause": "kwa sababu", "effect": "kwa hiyo"},
              "zh": {"cause": "因为", "effect": "所以"}}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def load(name: str, **_) -> datasets.DatasetDict:
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(_rows(HERE / f"{name}.jsonl"))})


def tatoeba(lang: str, src: str, tgt: str, **_) -> datasets.DatasetDict:
    """The valid half (few-shot examples) and the test half (scored) of one direction."""
    out = {}
    for split, name in (("valid", "validation"), ("test", "test")):
        rows = [r for r in _rows(TATOEBA / f"{lang}.jsonl") if r["split"] == split]
        side = {lang: "text", "en": "en"}
        out[name] = datasets.Dataset.from_list([
            {"source": r[side[src]], "reference": r[side[tgt]], "src_name": NAMES[src],
             "tgt_name": NAMES[tgt]} for r in rows])
    return datasets.DatasetDict(out)


def _xcopa_text(doc, lang):
    return doc["premise"].strip()[:-1] + f" {CONNECTORS[lang][doc['question']]}"


def xcopa_choices(doc):
    return [c[0].lower() + c[1:] for c in (doc["choice1"], doc["choice2"])]


xcopa_text_et = partial(_xcopa_text, lang="et")
xcopa_text_sw = partial(_xcopa_text, lang="sw")
xcopa_text_zh = partial(_xcopa_text, lang="zh")
