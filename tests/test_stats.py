"""The statistics callback counts exactly what LAPE defines, and the cache is reused only for
the same model, dtype, precision, revisions and data."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import ROOT, tiny_llama, tiny_phi3
from langsub.io import fingerprint
from langsub.model.ffn import find_ffns
from langsub.training.module import CausalLMModule
from langsub.neurons.cache import load_stats, save_stats, stats_meta
from langsub.neurons.counting import ActivationStats


def _batches(seed, n=3, T=10):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 101, (2, T), generator=g)
        mask = torch.ones(2, T, dtype=torch.long)
        mask[1, T - 3:] = 0  # padding must not count
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids})
    return out


def _reference(model, batches):
    """Direct count: act_fn(gate_proj(x)) > 0 on unpadded tokens, via the gate output."""
    ffns = find_ffns(model)
    counts = torch.zeros(len(ffns), ffns[0].n_neurons, dtype=torch.long)
    captured = {}
    hooks = [(f.gate_up or f.gate).register_forward_hook(
        lambda m, i, o, l=l: captured.__setitem__(l, o)) for l, f in enumerate(ffns)]
    n = 0
    with torch.no_grad():
        for b in batches:
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            m = b["attention_mask"].bool()
            n += int(m.sum())
            for l, f in enumerate(ffns):
                g = captured[l][..., : f.n_neurons]
                counts[l] += ((f.act(g) > 0) & m[..., None]).sum((0, 1))
    for h in hooks:
        h.remove()
    return counts, n


def _callback_stats(model, langs_batches):
    cb = ActivationStats(len(langs_batches))
    trainer = L.Trainer(accelerator="cpu", devices=1, callbacks=[cb], logger=False,
                        enable_progress_bar=False, enable_checkpointing=False)
    module = CausalLMModule(model, ["x"])
    trainer.predict(module, dataloaders=[DataLoader(b, batch_size=None) for b in langs_batches],
                    return_predictions=False)
    return cb.over_zero, cb.n_tokens


@pytest.mark.parametrize("count", ["count_sign", "count_compare", "count_fused"])
def test_counts_equal_direct_computation_llama_and_phi3(count, monkeypatch):
    """Both ways of counting (the CPU's, and CUDA's when compiled or not) are exact."""
    from langsub.neurons import counting as stats

    monkeypatch.setitem(stats.COUNT, "cpu", getattr(stats, count))
    for model in (tiny_llama(), tiny_phi3()):
        langs = [_batches(0), _batches(1, n=2)]
        over_zero, n_tokens = _callback_stats(model, langs)
        assert over_zero.dtype == torch.long and over_zero.shape == (2, 64, 2)
        for k, b in enumerate(langs):
            ref, n = _reference(model, b)
            assert torch.equal(over_zero[..., k], ref)
            assert n_tokens[k] == n
    assert stats.COUNT["cpu"] is getattr(stats, count)  # count_fused compiled, did not fall back


def test_cache_roundtrip_and_mismatch(tmp_path):
    oz, n = torch.randint(0, 9, (2, 8, 3)), torch.tensor([10, 11, 12])
    meta = {"model": "m", "langs": ["a", "b", "c"]}
    save_stats(tmp_path / "s", oz, n, meta)
    got = load_stats(tmp_path / "s", meta)
    assert torch.equal(got[0], oz) and torch.equal(got[1], n)
    assert load_stats(tmp_path / "s", {**meta, "langs": ["a", "b"]}) is None
    (tmp_path / "s.safetensors").write_bytes(b"garbage")  # a torn write is not trusted
    assert load_stats(tmp_path / "s", meta) is None
    assert not list(tmp_path.glob("*.tmp"))


def test_counts_exact_under_autocast():
    """bf16 autocast (trainer=gpu's bf16-mixed) must not round the counts."""
    from langsub.neurons.counting import ActivationCounter

    model = tiny_llama()
    ids = torch.randint(0, 101, (8, 64))
    mask = torch.ones_like(ids)
    plain = ActivationCounter(model, 1)
    plain.set_batch(0, mask)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    plain.remove()
    acts = {}
    hooks = [f.act.register_forward_hook(lambda m, i, o, l=l: acts.__setitem__(l, o))
             for l, f in enumerate(find_ffns(model))]
    auto = ActivationCounter(model, 1)
    auto.set_batch(0, mask)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, attention_mask=mask)
    auto.remove()
    for h in hooks:
        h.remove()
    for l, a in acts.items():  # counts equal a direct count of the bf16 activations (512 tokens)
        assert torch.equal(auto.over_zero[l, :, 0], (a > 0).reshape(-1, 64).sum(0))
    assert plain.over_zero.max() > 256  # large enough that bf16 rounding would show


def test_fused_count_falls_back_when_compiling_fails(monkeypatch):
    from langsub.neurons import counting as stats

    def broken(fn):
        def run(*a):
            raise RuntimeError("no compiler")
        return run

    monkeypatch.setattr(stats, "_compiled", None)
    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setitem(stats.COUNT, "cpu", stats.count_fused)
    a, w = torch.randn(6, 5), torch.tensor([[1.0, 1, 0, 1, 1, 0]])
    with pytest.warns(UserWarning, match="torch.compile failed"):
        got = stats.count_fused(a, w)
    assert torch.equal(got, ((a > 0) & (w.view(-1, 1) > 0)).sum(0))
    assert stats.COUNT["cpu"] is stats.count_compare  # later batches skip the failing compiler


def _key(embedded, overrides):
    """The statistics cache key of the real config (embedded model and corpus) with overrides."""
    from hydra import compose, initialize_config_dir

    from langsub.data.datamodule import LangDataModule

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    model, tok = embedded
    return fingerprint(stats_meta(cfg, model, tok, LangDataModule.from_config(cfg, tok)))


def test_cache_key_covers_dtype_precision_and_revision(embedded):
    """Statistics counted in another dtype, precision, weights or data revision are not
    reused; the same config (or another spelling of the same precision) finds them again."""
    base = _key(embedded, [])
    assert _key(embedded, []) == base
    assert _key(embedded, ["trainer.precision=32"]) == base  # Lightning's alias of 32-true
    variants = [["model.dtype=bfloat16"], ["model.dtype=float16"],
                ["trainer.precision=bf16-mixed"], ["trainer.precision=16-true"],
                ["+model.revision=0123abc"], ["+model.revision=main"]]
    keys = [_key(embedded, v) for v in variants]
    assert base not in keys and len(set(keys)) == len(keys)
    assert _key(embedded, ["+model.revision=main"]) == keys[-1]
    assert _key(embedded, ["+model.revision=null"]) == base  # no revision given is the default
    hub = _key(embedded, ["data=glotcc"])  # a streamed corpus: its revision was keyed already
    assert hub != _key(embedded, ["data=glotcc", "data.source.revision=0123abc"])
    assert hub == _key(embedded, ["data=glotcc"])
