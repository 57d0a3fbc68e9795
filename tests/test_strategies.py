"""Strategies and scale: FSDP with the neuron parametrizations, gradient accumulation.

Lightning runs FSDP on GPUs only; on CPU, torch's FSDP shards with device_id=cpu over gloo,
which `trainer=fsdp_cpu` (langsub.strategies.CPUFSDPStrategy) uses to run the same path.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from conftest import ROOT, tiny_llama


def _cfg(overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, use_orig_params, out):
    """Two CPU processes: FSDP per decoder layer over a LAPE-parametrized tiny Llama."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        from langsub.methods.sparse import add_neuron_deltas

        model = tiny_llama()
        base = {n: p.detach().clone() for n, p in model.named_parameters()}
        add_neuron_deltas(model, [torch.tensor([1, 5]), torch.tensor([3])])
        try:
            fsdp = FSDP(model, device_id=torch.device("cpu"), use_orig_params=use_orig_params,
                        auto_wrap_policy=ModuleWrapPolicy({LlamaDecoderLayer}))
        except ValueError as e:
            torch.save({"error": str(e)}, f"{out}.{rank}")
            return
        opt = torch.optim.AdamW([p for p in fsdp.parameters() if p.requires_grad], lr=1e-2)
        x = torch.randint(0, 101, (4, 16), generator=torch.Generator().manual_seed(rank))
        for _ in range(2):
            fsdp(input_ids=x, labels=x).loss.backward()
            fsdp.clip_grad_norm_(1.0)
            opt.step()
            opt.zero_grad()
        with FSDP.summon_full_params(fsdp):
            from torch.distributed.fsdp._common_utils import clean_tensor_name

            full = {clean_tensor_name(n): p.detach().clone() for n, p in model.named_parameters()}
        torch.save({"full": full, "base": base}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("use_orig_params", [True, False])
def test_parametrized_layers_under_torch_fsdp(use_orig_params, tmp_path):
    out = str(tmp_path / "res")
    mp.spawn(_worker, args=(_free_port(), use_orig_params, out), nprocs=2)
    r = torch.load(f"{out}.0", weights_only=False)
    if not use_orig_params:  # a decoder layer mixes frozen weights and trainable deltas
        assert "both parameters with requires_grad=True and False" in r["error"]
        return
    full, base = r["full"], r["base"]
    deltas = {n: t for n, t in full.items() if n.endswith(".delta")}
    assert len(deltas) == 6 and all(t.abs().sum() > 0 for t in deltas.values())
    for n, t in base.items():  # every frozen weight bit-for-bit unchanged
        key = n.replace(".weight", ".parametrizations.weight.original") \
            if n.replace(".weight", ".parametrizations.weight.original") in full else n
        assert torch.equal(full[key], t), n
    r1 = torch.load(f"{out}.1", weights_only=False)["full"]
    assert all(torch.equal(r1[n], deltas[n]) for n in deltas)  # the processes agree


def test_trainer_fsdp_config():
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from langsub.training.trainers import make_trainer
    from langsub.validate import ConfigError, check_config

    cfg = _cfg(["trainer=fsdp"])
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.strategy.use_orig_params
    check_config(cfg)
    # on this CPU machine Lightning refuses FSDP; the strategy itself builds from the config
    import hydra
    from omegaconf import OmegaConf

    s = OmegaConf.to_container(cfg.trainer.strategy)
    s.pop("auto_wrap_policy")
    strategy = hydra.utils.instantiate(s, auto_wrap_policy={LlamaDecoderLayer})
    assert isinstance(strategy, FSDPStrategy) and strategy.kwargs["use_orig_params"]
    assert isinstance(strategy.kwargs["auto_wrap_policy"], ModuleWrapPolicy)
    with pytest.raises(Exception, match="requires a GPU accelerator"):  # Lightning refuses
        make_trainer(_cfg(["trainer=fsdp", "trainer.accelerator=cpu"]).trainer, tiny_llama())
    with pytest.raises(ConfigError, match="trainer.accelerator=cpu: .*FSDPStrategy runs on GPUs"):
        check_config(_cfg(["trainer=fsdp", "trainer.accelerator=cpu"]))
    with pytest.raises(ConfigError, match="trainer.eval_strategy=None"):
        check_config(_cfg(["trainer=fsdp", "trainer.eval_strategy=null"]))
    t = make_trainer(_cfg(["trainer=fsdp_cpu"]).trainer, tiny_llama(), logger=False)
    assert isinstance(t.strategy, FSDPStrategy) and t.strategy.kwargs["use_orig_params"]
    assert t.strategy.kwargs["auto_wrap_policy"]._module_classes == {LlamaDecoderLayer}
    e = make_trainer(_cfg(["trainer=fsdp_cpu"]).trainer, evaluation=True, logger=False)
    assert type(e.strategy).__name__ == "DDPStrategy"


@pytest.mark.slow
def test_main_job_fsdp_cpu_equals_ddp_cpu(tmp_path):
    """The main job under trainer=fsdp_cpu trains the same deltas as under trainer=ddp_cpu."""
    runs = {}
    for name in ("ddp_cpu", "fsdp_cpu"):
        run = tmp_path / name
        r = subprocess.run([sys.executable, "train.py", f"trainer={name}", "debug=fast",
                            "train.max_steps=3", f"paths.cache_dir={tmp_path}/cache",
                            f"hydra.run.dir={run}"], cwd=ROOT, capture_output=True, text=True,
                           timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = run
    a, b = (load_file(str(runs[n] / "delta.safetensors")) for n in ("ddp_cpu", "fsdp_cpu"))
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    assert any(a[k].abs().sum() > 0 for k in a if k.endswith(".delta"))
    ma, mb = (json.loads((runs[n] / "metrics.json").read_text()) for n in ("ddp_cpu", "fsdp_cpu"))
    assert ma["ppl_before/af"] == mb["ppl_before/af"]
    assert abs(ma["ppl_after/target"] - mb["ppl_after/target"]) < 1e-3 * ma["ppl_after/target"]
    assert (runs["fsdp_cpu"] / "train_ddp_process_1.log").exists()  # really two processes
    assert (runs["fsdp_cpu"] / "export" / "config.json").exists()


def test_budget_steps_count_accumulated_batches():
    from langsub.training.trainers import budget_steps, tokens_per_step

    cfg = _cfg(["train.max_tokens=100000", "data.batch_size=4", "data.block_size=128",
                "+trainer.accumulate_grad_batches=4"])
    assert tokens_per_step(cfg, 2) == 4 * 128 * 2 * 4
    assert budget_steps(cfg, 2) == -(-100000 // 4096) == 25
    assert budget_steps(_cfg(["train.max_steps=7", "+trainer.accumulate_grad_batches=4"]), 8) == 7


@pytest.mark.slow
def test_accumulation_keeps_the_token_budget(tmp_path):
    """accumulate_grad_batches=2: half the optimizer steps for the same tokens; validation
    every train.val_every_n_steps optimizer steps (Lightning counts batches)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "train.py", "debug=fast", "train.max_steps=null",
                        "train.max_tokens=16384", "+trainer.accumulate_grad_batches=2",
                        "export=false", f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={run}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["tokens_per_step"] == 16 * 128 * 2 and m["optimizer_steps"] == 4
    assert 16384 - 128 < m["tokens_seen"] <= 16384  # 8 batches; a padded last block at most
    ev = EventAccumulator(str(next((run / "tensorboard").rglob("events.out.*")).parent))
    ev.Reload()
    # debug=fast validates every 2 optimizer steps: after steps 2 and 4 (not after every 2
    # batches, 4 times); Lightning labels them with the step before, as without accumulation
    assert [e.step for e in ev.Scalars("val/ppl")] == [1, 3]


def test_checkpoint_keys_must_match_exactly():
    from langsub.training.checkpoints import check_trainable_keys

    check_trainable_keys({"a", "b"}, {"a", "b"}, "ckpt")
    with pytest.raises(ValueError, match=r"ckpt does not match .* missing \['b'\], unexpected \[\]"):
        check_trainable_keys({"a"}, {"a", "b"}, "ckpt")
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['c'\]"):
        check_trainable_keys({"a", "b", "c"}, {"a", "b"}, "ckpt")
