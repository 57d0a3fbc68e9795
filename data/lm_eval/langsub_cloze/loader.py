"""lm-eval `custom_dataset` of the langsub_cloze tasks: `<lang>.jsonl` next to this file.

Read by path relative to this file, so the tasks work from any working directory, offline.
"""
import json
from pathlib import Path

import datasets


def load(lang: str, **_) -> datasets.DatasetDict:
    path = Path(__file__).with_name(f"{lang}.jsonl")
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
