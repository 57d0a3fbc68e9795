"""Local stand-ins for hub datasets, built from the embedded corpus, in the hubs' own layouts.

`datasets.load_dataset(<dir>, name=<config>, split=..., streaming=True)` reads them exactly as
it reads the hub repositories: a README.md whose `configs:` map each config to its files.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import OmegaConf

from conftest import ROOT

CORPUS = ROOT / "data" / "corpus"
LANG_DIR = ROOT / "conf" / "lang"


def rows(lang: str, splits) -> list[str]:
    return [r["text"] for r in map(json.loads, open(CORPUS / f"{lang}.jsonl", encoding="utf-8"))
            if r["split"] in splits]


def _field(lang: str, key: str) -> str:
    return OmegaConf.load(LANG_DIR / f"{lang}.yaml")[key]


def _card(configs: dict[str, dict[str, str]]) -> str:
    lines = ["---", "configs:"]
    for name, files in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {path}" for split, path in files.items()]
    return "\n".join(lines + ["---", "# local stand-in", ""])


def glotcc(root: Path, langs, splits=("pretrain", "train")) -> Path:
    """Like cis-lmu/GlotCC-V1: v1.0/<lang-Script>/<lang-Script>_0.parquet, text in `content`."""
    configs = {}
    for lang in langs:
        name = _field(lang, "glotcc")
        d = root / "v1.0" / name
        d.mkdir(parents=True, exist_ok=True)
        texts = rows(lang, splits)
        pq.write_table(pa.table({"content": texts,
                                 "warc-target-uri": [f"https://example.org/{i}" for i in
                                                     range(len(texts))]}), d / f"{name}_0.parquet")
        configs[name] = {"train": f"v1.0/{name}/*"}
    (root / "README.md").write_text(_card(configs))
    return root


def flores(root: Path, langs) -> Path:
    """Like openlanguagedata/flores_plus: dev/<lang_Script>.parquet, devtest/…, text in `text`.
    dev holds the embedded corpus's valid rows, devtest its test rows."""
    configs = {}
    for lang in langs:
        name = _field(lang, "flores")
        for split, src in (("dev", "valid"), ("devtest", "test")):
            (root / split).mkdir(parents=True, exist_ok=True)
            texts = rows(lang, (src,))
            iso, script = name.split("_")
            pq.write_table(pa.table({"id": list(range(len(texts))), "iso_639_3": [iso] * len(texts),
                                     "iso_15924": [script] * len(texts), "text": texts}),
                           root / split / f"{name}.parquet")
        configs[name] = {"dev": f"dev/{name}.parquet", "devtest": f"devtest/{name}.parquet"}
    (root / "README.md").write_text(_card(configs))
    return root
