"""TokenPerplexity is exp(token-mean cross-entropy): finite where the loss is, token-weighted
across batches and processes, and the same number in the analyses' `perplexity()`."""
from __future__ import annotations

import json
import math

import datasets
import pytest
import torch
from torch.nn.functional import cross_entropy
from torchmetrics.text import Perplexity

from conftest import ROOT
from langsub.data.corpus import pack
from langsub.evaluation.perplexity import TokenPerplexity, perplexity


def _batch(b, t, v=11, seed=0, pads=2):
    """Random logits [b, t, v] and targets [b, t]; the last `pads` targets of row 0 are -100."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g) * 3
    targets = torch.randint(0, v, (b, t), generator=g)
    targets[0, t - pads:] = -100
    return logits, targets


def _exp_mean_ce(logits, targets):
    return math.exp(cross_entropy(logits.flatten(0, 1).double(), targets.flatten(),
                                  ignore_index=-100).item())


def test_equals_exp_of_mean_token_cross_entropy_with_padding():
    logits, targets = _batch(3, 7)
    m = TokenPerplexity(ignore_index=-100)
    m.update(logits, targets)
    assert int(m.count) == 3 * 7 - 2
    assert float(m.compute()) == pytest.approx(_exp_mean_ce(logits, targets), rel=1e-6)
    ref = Perplexity(ignore_index=-100)  # where softmax-then-log is still exact, they agree
    ref.update(logits, targets)
    assert float(m.compute()) == pytest.approx(float(ref.compute()), rel=1e-5)


def test_target_110_nats_below_the_top_is_finite():
    logits = torch.zeros(1, 3, 5)
    logits[0, :, 0] = 110.0
    targets = torch.tensor([[1, 0, -100]])  # one token 110 nats below the top logit
    ours, theirs = TokenPerplexity(), Perplexity(ignore_index=-100)
    ours.update(logits, targets)
    theirs.update(logits, targets)
    assert math.isinf(float(theirs.compute()))  # softmax underflows to 0, log(0) = -inf
    got = float(ours.compute())
    assert math.isfinite(got) and got == pytest.approx(_exp_mean_ce(logits, targets), rel=1e-6)
    assert got == pytest.approx(math.exp((110 + math.log1p(4 * math.exp(-110))) / 2), rel=1e-6)


def test_token_weighted_across_batches_and_processes():
    """Two batches of different sizes weigh by their tokens, not as two equal means; two
    metrics merged with their dist_reduce_fx (what a multi-process sync does) likewise."""
    a, b = _batch(1, 4, seed=1, pads=1), _batch(5, 9, seed=2, pads=3)
    m = TokenPerplexity()
    m.update(*a)
    m.update(*b)
    nll = sum(cross_entropy(l.flatten(0, 1).double(), t.flatten(), ignore_index=-100,
                            reduction="sum").item() for l, t in (a, b))
    n = (4 - 1) + (5 * 9 - 3)
    assert int(m.count) == n
    assert float(m.compute()) == pytest.approx(math.exp(nll / n), rel=1e-6)
    batch_mean = math.exp((math.log(_exp_mean_ce(*a)) + math.log(_exp_mean_ce(*b))) / 2)
    assert abs(float(m.compute()) / batch_mean - 1) > 1e-3  # the two weightings differ here
    rank0, rank1 = TokenPerplexity(), TokenPerplexity()
    rank0.update(*a)
    rank1.update(*b)
    rank0.merge_state(rank1)
    assert float(rank0.compute()) == pytest.approx(float(m.compute()), rel=1e-12)


def test_states_survive_a_half_precision_module():
    """precision=16-true casts the LightningModule: a float16 sum overflows past 65504 nats."""
    holder = torch.nn.Module()
    holder.ours, holder.theirs = TokenPerplexity(), Perplexity(ignore_index=-100)
    holder.to(torch.float16)
    assert holder.ours.nll_sum.dtype == torch.float64 and holder.ours.count.dtype == torch.long
    logits, targets = _batch(64, 512, v=101, seed=3)  # 32 766 tokens, ~5 nats each
    for m in (holder.ours, holder.theirs):
        m.update(logits, targets)
    assert math.isinf(float(holder.theirs.compute()))
    assert float(holder.ours.compute()) == pytest.approx(_exp_mean_ce(logits, targets), rel=1e-6)
    holder.ours.reset()
    assert holder.ours.nll_sum.dtype == torch.float64 and int(holder.ours.count) == 0


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"expected \[B, T, V\] and \[B, T\]"):
        TokenPerplexity().update(torch.zeros(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))


def _blocks(tok, n_docs=6, block_size=64):
    rows = [json.loads(l) for l in open(ROOT / "data" / "corpus" / "af.jsonl", encoding="utf-8")]
    ds = datasets.Dataset.from_dict({"text": [r["text"] for r in rows[:n_docs]]})
    return pack(ds, tok, block_size=block_size).with_format("torch")


@torch.no_grad()
def test_perplexity_function_equals_the_metric_on_the_embedded_model(embedded):
    """perplexity() gives exactly what the metric gives fed as the LightningModule feeds it
    (logits[:, :-1] in float32 against labels[:, 1:]), padding included."""
    model, tok = embedded
    ds = _blocks(tok)
    assert len(ds) >= 3 and (ds[len(ds) - 1]["labels"] == -100).any()
    got = perplexity(model, ds, batch_size=2)
    m = TokenPerplexity(ignore_index=-100)
    nll, n = 0.0, 0
    for i in range(0, len(ds), 2):
        b = ds[i: i + 2]
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        m.update(logits[:, :-1].float(), b["labels"][:, 1:])
        labels = b["labels"][:, 1:]
        nll += cross_entropy(logits[:, :-1].flatten(0, 1).double(), labels.flatten(),
                             ignore_index=-100, reduction="sum").item()
        n += int((labels != -100).sum())
    assert got == pytest.approx(float(m.compute()), rel=1e-6)  # same sums; CPU kernels may reorder them
    assert got == pytest.approx(math.exp(nll / n), rel=1e-6)  # an independent hand loop
    assert perplexity(model, ds, batch_size=len(ds)) == pytest.approx(got, rel=1e-6)
    assert 1 < got < len(tok)


def test_separators_are_context_not_targets(embedded, tmp_path):
    """Held-out text packed with "\\n\\n" or "\\n" between sentences: the same targets (the
    sentences' tokens, in order) are scored, and the perplexity moves far less than when the
    separator's predictions count."""
    from langsub.data.corpus import SequenceFormat, load_texts, pack

    model, tok = embedded
    texts = load_texts(ROOT / "data" / "heldout" / "flores" / "af.jsonl", "test", str(tmp_path))
    texts = texts.select(range(120))
    got = {}
    for scored in (True, False):
        for sep in ("\n\n", "\n"):
            fmt = SequenceFormat(None, tuple(tok(sep, add_special_tokens=False)["input_ids"]))
            ds = pack(texts, tok, 128, fmt=fmt, score_separator=scored)
            labels = ds[:]["labels"]
            got[scored, sep] = (labels[labels != -100].tolist(), perplexity(model, ds, 16))
    lang = {sep: got[False, sep] for sep in ("\n\n", "\n")}
    assert lang["\n\n"][0] == lang["\n"][0]  # the same tokens are scored
    assert got[True, "\n\n"][0] != got[True, "\n"][0]
    moved = {s: abs(got[s, "\n"][1] / got[s, "\n\n"][1] - 1) for s in (True, False)}
    assert moved[False] < 0.03 and moved[False] < moved[True] / 4, moved
