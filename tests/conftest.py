"""Shared fixtures: tiny hand-built models (no download) and the repo paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "assets" / "tiny-llama"
os.environ.setdefault("LANGSUB_ROOT", str(ROOT))


def tiny_llama(layers=2, hidden=32, ffn=64, vocab=101, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def tiny_phi3(layers=2, hidden=32, ffn=64, vocab=101, seed=0):
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(seed)
    cfg = Phi3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn,
                     num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                     max_position_embeddings=64, pad_token_id=0)
    return Phi3ForCausalLM(cfg).eval()


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture
def phi3():
    return tiny_phi3()


@pytest.fixture(scope="session")
def embedded():
    """The committed model and tokenizer, loaded with plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (TINY / "config.json").exists():
        pytest.fail(f"{TINY} is missing: the embedded model must be committed")
    return AutoModelForCausalLM.from_pretrained(TINY).eval(), AutoTokenizer.from_pretrained(TINY)


def pytest_collection_modifyitems(items):
    """The longest file first: one test file per worker (pyproject's --dist=loadfile), and the
    Gemma smoke test (its dequantization included) started last would run alone at the end."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] != "tests/test_gemma.py")
