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



def test_the_output_head_gets_a_contiguous_input():
    """load_model's pre-hook: transformers' `logits_to_keep` slice reaches the head as a
    contiguous tensor (a strided one takes a far slower bf16 kernel on CPUs)."""
    from omegaconf import OmegaConf

    from langsub.model.load import load_model

    model, _ = load_model(OmegaConf.create({"path": str(TINY), "dtype": "float32"}))
    seen = []
    model.get_output_embeddings().register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous()))
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]]), logits_to_keep=1)
    assert seen == [True]
