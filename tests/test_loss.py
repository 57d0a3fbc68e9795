"""The chunked linear cross-entropy (training/loss.py) is the plain loss without the logits;
blocks start with a BOS where the model expects one, and the BOS is never a target or a count."""
from __future__ import annotations

import datasets
import pytest
import torch
from torch.nn.functional import cross_entropy

from langsub.data.corpus import SequenceFormat, expects_bos, pack, sequence_format
from langsub.neurons.counting import counted_tokens
from langsub.training.loss import LinearCrossEntropy, chunk_rows, token_nll


def _plain(h, w, y, softcap=None):
    z = (h @ w.T).float()
    if softcap:
        z = softcap * torch.tanh(z / softcap)
    return cross_entropy(z, y, ignore_index=-100, reduction="sum")


@pytest.mark.parametrize("rows,softcap", [(1, None), (5, None), (64, None), (7, 30.0)])
def test_chunked_equals_plain_with_ignored_targets(rows, softcap):
    g = torch.Generator().manual_seed(rows)
    h = (torch.randn(37, 16, generator=g) * 2).requires_grad_()
    w = torch.randn(53, 16, generator=g).requires_grad_()
    y = torch.randint(0, 53, (37,), generator=g)
    y[[0, 5, 36]] = -100  # padding / BOS: not targets
    ref = _plain(h, w, y, softcap)
    gh, gw = torch.autograd.grad(ref, (h, w))
    keep = y != -100
    hk = h.detach()[keep].clone().requires_grad_()
    out = LinearCrossEntropy.apply(hk, w, y[keep], rows, softcap)
    ch, cw = torch.autograd.grad(out * 1.0, (hk, w))
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(ch, gh[keep], rtol=1e-4, atol=1e-5)
    assert gh[~keep].abs().max() == 0  # ignored positions get no gradient either way
    torch.testing.assert_close(cw, gw, rtol=1e-4, atol=1e-5)


def test_frozen_head_gets_no_gradient_and_no_grad_mode_computes_none():
    h = torch.randn(9, 8).requires_grad_()
    w = torch.randn(20, 8)  # frozen
    y = torch.randint(0, 20, (9,))
    out = LinearCrossEntropy.apply(h, w, y, 4, None)
    (gh,) = torch.autograd.grad(out, (h,))
    torch.testing.assert_close(gh, torch.autograd.grad(_plain(h, w, y), (h,))[0])
    w.requires_grad_(True)  # a trainable head under no_grad (an evaluation): no gradient work
    with torch.no_grad():
        assert LinearCrossEntropy.apply(h, w, y, 4, None, torch.is_grad_enabled()).item() == \
            pytest.approx(_plain(h, w, y).item(), rel=1e-6)


def test_token_nll_equals_the_model_s_own_loss(llama):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 101, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, 0] = -100
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    for p in llama.parameters():
        p.requires_grad_(True)
    plain_sum, n = token_nll(llama, batch, chunk=None)
    chunked_sum, n2 = token_nll(llama, batch, chunk=5)
    assert int(n) == int(n2) == int((labels[:, 1:] != -100).sum())
    assert chunked_sum.item() == pytest.approx(plain_sum.item(), rel=1e-5)
    loss = llama(**batch).loss  # transformers' mean over the same targets
    assert (chunked_sum / n).item() == pytest.approx(loss.item(), rel=1e-5)
    g_plain = torch.autograd.grad(plain_sum, list(llama.parameters()))
    g_chunk = torch.autograd.grad(token_nll(llama, batch, chunk=5)[0], list(llama.parameters()))
    for a, b in zip(g_plain, g_chunk):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_chunk_rows():
    assert chunk_rows(262_144, "auto") == 256  # 256 MB of float32 logits per chunk
    assert chunk_rows(8000, "auto") == (1 << 26) // 8000
    assert chunk_rows(8000, None) is None and chunk_rows(8000, 64) == 64


def _texts(n=40):
    return datasets.Dataset.from_dict({"text": [f"sentence number {i} of the corpus" for i in range(n)]})


def test_blocks_start_with_bos_never_a_target_nor_counted(embedded):
    _, tok = embedded
    fmt = SequenceFormat(tok.bos_token_id, (tok.eos_token_id,))
    ds = pack(_texts(), tok, 16, fmt=fmt)[:]
    plain = pack(_texts(), tok, 16)[:]
    assert (ds["input_ids"][:, 0] == tok.bos_token_id).all()
    assert (ds["labels"][:, 0] == -100).all() and (ds["attention_mask"][:, 0] == 1).all()
    # the same text, 15 tokens a block after the BOS
    body = [t for row, m in zip(ds["input_ids"][:, 1:], ds["attention_mask"][:, 1:])
            for t, k in zip(row.tolist(), m.tolist()) if k]
    flat = [t for row, m in zip(plain["input_ids"], plain["attention_mask"])
            for t, k in zip(row.tolist(), m.tolist()) if k]
    assert body == flat
    counted = counted_tokens(ds)
    assert int(counted.sum()) == int(ds["attention_mask"].sum()) - len(ds["input_ids"])
    assert (counted[:, 0] == 0).all()


def test_embedded_model_keeps_its_blocks(embedded):
    _, tok = embedded
    assert not expects_bos(tok)  # pretrained without one
    fmt = sequence_format(tok)
    assert fmt == SequenceFormat(None, (tok.eos_token_id,))
    a, b = pack(_texts(), tok, 16, fmt=fmt)[:], pack(_texts(), tok, 16)[:]
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert torch.equal(counted_tokens(a), a["attention_mask"])


def test_separator_string_joins_documents(embedded):
    _, tok = embedded
    fmt = sequence_format(tok, add_bos=True, separator="\n\n")
    sep = tok("\n\n", add_special_tokens=False)["input_ids"]
    assert fmt.bos == tok.bos_token_id and list(fmt.separator) == sep
    ds = pack(_texts(3), tok, 64, fmt=fmt)[:]
    ids = ds["input_ids"][0].tolist()
    assert tok.eos_token_id not in ids[: int(ds["attention_mask"][0].sum())]
