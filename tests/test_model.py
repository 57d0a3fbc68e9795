"""The committed embedded model: plain-transformers loading, finite loss on every language."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY


def test_loads_without_langsub():
    code = ("import sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer;"
            f"m = AutoModelForCausalLM.from_pretrained('{TINY}');"
            f"t = AutoTokenizer.from_pretrained('{TINY}');"
            "ids = t('Hallo wêreld', return_tensors='pt').input_ids;"
            "assert torch.isfinite(m(ids, labels=ids).loss);"
            "assert not any(k.startswith('langsub') for k in sys.modules); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd="/")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-1500:]


def test_finite_loss_every_language(embedded):
    model, tok = embedded
    for p in sorted((ROOT / "data/corpus").glob("*.jsonl")):
        texts = [json.loads(l)["text"] for l in open(p, encoding="utf-8")][:20]
        ids = tok(" ".join(texts), return_tensors="pt").input_ids[:, :128]
        with torch.no_grad():
            assert torch.isfinite(model(ids, labels=ids).loss), p.stem


def test_card_documents_the_phenomenon():
    card = json.loads((TINY / "card.json").read_text())
    targets = [r for r in card["rows"] if r["target"]]
    assert len(targets) == 12 and all(r["param_share_pct"] >= 0.1 for r in targets)
    assert card["diag"] >= 2 * card["offdiag"] and card["diag"] >= 2 * card["random_diag"]

