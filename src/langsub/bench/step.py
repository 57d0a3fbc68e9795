"""Speed and memory of every method against the floor, on one model, in one run.

The floor: the same model frozen, back-propagating to its first layer (the input
embeddings require grad) with no weight gradient, which any method that trains something
in every layer must pay. Each (method, round) runs in its own forked process so its peak
memory is its own; rounds interleave methods so that machine noise hits all alike.
Peak memory on CPU is the process's peak RSS (VmHWM, reset after the model is built)
above the RSS of the built model, measured in one extra child per method whose allocator
returns every freed block (`_exact_rss`), so that RSS follows live tensor memory; with
`device=cuda`, torch.cuda.max_memory_allocated above the memory allocated for the built
model.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.utils import parametrize

from langsub.neurons.lape import select_random_global
from langsub.methods import build_method, count_params
from langsub.io import atomic_write_text
from langsub.neurons.counting import ActivationCounter
from langsub.errors import ConfigError
from langsub.methods.precision import DTYPES


def _build(cls, cfg, dev: torch.device, dtype: str):
    """The model initialised directly on `dev` in `dtype` (a CPU init of a big model dominates)."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with dev:
            return cls(cfg)
    finally:
        torch.set_default_dtype(prev)


def flop_model(model: dict, rho: float, seq_len: int) -> dict:
    """Matmul multiply-adds per token, by the shapes alone: what lape must add to the floor.

    The floor does each matmul forward and again backward for its input gradient. Sparse
    training of k = ρ·N neurons adds, per FFN matrix, the delta's product forward, its
    weight gradient and its input gradient: 3·k·D each, 9·k·D per layer. Returns the
    floor's and lape's counts and their ratio (the step-time ratio if time were FLOPs)."""
    d, n, layers = model["hidden_size"], model["intermediate_size"], model["num_hidden_layers"]
    heads = model["num_attention_heads"]
    kv = model.get("num_key_value_heads") or heads
    attn = 2 * d * d + 2 * d * (d * kv // heads) + 2 * seq_len * d  # q,o + k,v + scores/values
    per_layer = attn + 3 * n * d
    floor = 2 * (layers * per_layer + model["vocab_size"] * d)
    k = round(rho * layers * n) / layers
    lape = floor + layers * 9 * k * d
    return {"floor": floor, "lape": lape, "ratio": lape / floor}


def _rss_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def _exact_rss() -> None:
    """Make the peak RSS follow live tensor memory: glibc's adaptive mmap threshold otherwise
    keeps freed blocks in its heap, so the same step's peak RSS moved by ±10 MB between runs
    and between methods. A fixed 128 KiB threshold (mallopt) maps every larger block on its
    own and returns it on free: three runs agreed to 0.1 MB. It slows allocation, so only the
    memory children use it."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: RSS as it comes
        pass


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


class NaiveDelta(torch.nn.Module):
    """A plain parametrization returning a new full weight each forward (kept for comparison)."""

    def __init__(self, w, index, dim):
        super().__init__()
        self.dim = dim
        self.register_buffer("index", index.to(w.device))
        shape = (len(index), w.shape[1]) if dim == 0 else (w.shape[0], len(index))
        self.delta = torch.nn.Parameter(torch.zeros(shape, device=w.device, dtype=w.dtype))

    def forward(self, w):
        return w.index_add(self.dim, self.index, self.delta)


def _prepare(name: str, model, mask):
    if name == "floor":
        for p in model.parameters():
            p.requires_grad_(False)
        return model
    if name == "naive":
        from langsub.model.ffn import COMPONENTS, find_ffns

        for p in model.parameters():
            p.requires_grad_(False)
        for f, idx in zip(find_ffns(model), mask):
            for lin, index, dim in f.slices(idx, COMPONENTS):
                parametrize.register_parametrization(lin, "weight", NaiveDelta(lin.weight, index, dim))
        return model
    return build_method({"name": name}).apply(model, mask)


def _worker(spec: dict, queue) -> None:
    """Build, prepare, step; report per-step seconds and peak memory above the built model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    cfg = LlamaConfig(**spec["model"])
    dev = torch.device(spec.get("device", "cpu"))
    if spec.get("memory") and dev.type == "cpu":
        _exact_rss()
    model = _build(LlamaForCausalLM, cfg, dev, spec.get("dtype", "float32"))
    L, N = cfg.num_hidden_layers, cfg.intermediate_size
    # every method trains the same random stand-in mask: its cost depends on its size only
    mask = select_random_global(round(spec["rho"] * L * N), L, N, spec["seed"])
    model = _prepare(spec["method"], model, mask)
    trainable, total = count_params(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None
    x = torch.randint(0, cfg.vocab_size, (spec["batch_size"], spec["seq_len"]), device=dev)
    emb = model.get_input_embeddings()
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        _reset_peak()
        base = _rss_mb("VmRSS")
    times = []
    for i in range(spec["steps"] + 1):
        t0 = time.perf_counter()
        h = emb(x)
        if not params:
            h = h.detach().requires_grad_(True)  # the floor: gradients reach the first layer
        loss = model(inputs_embeds=h, labels=x).loss
        loss.backward()
        if opt:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if i:  # step 0 is warm-up (allocates optimizer state; counted in the peak)
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb("VmHWM")
    queue.put({"times": times, "peak": peak - base, "trainable": trainable,
               "total": total})


def _in_child(fn, *args):
    """Run fn(*args, queue) in a forked process and return what it puts on the queue.

    The parent never computes with torch, so no OpenMP pool exists at fork time (a forked
    child of a process whose OpenMP pool is running hangs)."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    while True:
        try:
            out = q.get(timeout=1.0)
            break
        except Exception:  # queue.Empty: is the child still alive?
            if not p.is_alive():
                raise RuntimeError(f"profiling child {fn.__name__} died (exit {p.exitcode})")
    p.join()
    return out


def measure(specs: list[dict]) -> list[dict]:
    return [_in_child(_worker, spec) for spec in specs]


def forward_overhead(model_cfg: dict, batch_size, seq_len, repeats, threads, device, dtype,
                     queue) -> None:
    """Median forward seconds without and with the statistics hooks, same batches."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(threads)
    dev = torch.device(device)
    model = _build(LlamaForCausalLM, LlamaConfig(**model_cfg), dev, dtype).eval()
    x = torch.randint(0, model_cfg["vocab_size"], (batch_size, seq_len), device=dev)
    mask = torch.ones_like(x)
    dec = model.get_decoder()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    plain, stats = [], []

    def timed():
        sync()
        t0 = time.perf_counter()
        dec(input_ids=x, attention_mask=mask)
        sync()
        return time.perf_counter() - t0

    with torch.no_grad():
        timed()
        c = ActivationCounter(model, 1)  # warm-up with the hooks too (CUDA compiles the count)
        c.set_batch(0, mask)
        timed()
        c.remove()
        for _ in range(repeats):
            plain.append(timed())
            c = ActivationCounter(model, 1)
            c.set_batch(0, mask)
            stats.append(timed())
            c.remove()
    queue.put({"forward_s/plain": statistics.median(plain),
               "forward_s/stats": statistics.median(stats)})


def _base_spec(cfg) -> dict:
    """What every child of this run shares."""
    return {"batch_size": cfg.batch_size, "seq_len": cfg.seq_len, "steps": cfg.steps,
            "device": cfg.device, "dtype": cfg.dtype, "threads": cfg.threads, "seed": cfg.seed}


def _interleaved(items: list, rounds: int) -> list[tuple[int, object]]:
    """(round, item) for `rounds` rounds, each in an order rotated by one."""
    return [(r, it) for r in range(rounds)
            for it in items[r % len(items):] + items[: r % len(items)]]


def _specs(cfg, methods, model, rho, rounds):
    base = {**_base_spec(cfg), "model": model, "rho": rho}
    return [{**base, "method": m, "round": r} for r, m in _interleaved(methods, rounds)]


def memory_specs(specs: list[dict]) -> list[dict]:
    """On the CPU, one memory child per distinct spec (warm-up + 1 step under _exact_rss);
    on CUDA none: max_memory_allocated of the timed children is exact already."""
    if specs[0]["device"] != "cpu":
        return []
    seen = {}
    for s in specs:
        key = json.dumps({k: v for k, v in s.items() if k != "round"}, sort_keys=True)
        seen.setdefault(key, {**{k: v for k, v in s.items() if k != "round"},
                              "memory": True, "steps": 1})
    return list(seen.values())


def measure_memory(specs: list[dict]) -> list[tuple[dict, dict]]:
    """(memory spec, its result) for the memory children of `specs` (none on CUDA)."""
    mspecs = memory_specs(specs)
    return list(zip(mspecs, measure(mspecs)))


def _peak(spec: dict, rs: list[dict], mem: list[tuple[dict, dict]]) -> float:
    """The memory child's peak for this spec, else the median over the timed children."""
    for ms, mr in mem:
        if all(ms[k] == spec[k] for k in ("method", "rho", "model")):
            return mr["peak"]
    return statistics.median(r["peak"] for r in rs)


def summarise(specs, results, mem=()) -> dict:
    out = {}
    for m in dict.fromkeys(s["method"] for s in specs):
        sp = [s for s in specs if s["method"] == m]
        rs = [r for s, r in zip(specs, results) if s["method"] == m]
        step = statistics.median(t for r in rs for t in r["times"])
        out[f"step_s/{m}"] = step
        out[f"peak_mem_mb/{m}"] = _peak(sp[0], rs, mem)
        out[f"tokens_per_s/{m}"] = specs[0]["batch_size"] * specs[0]["seq_len"] / step
        out[f"trainable_params/{m}"] = rs[0]["trainable"]
    return out


def table(res: dict, methods) -> str:
    fl_t, fl_m = res["step_s/floor"], res["peak_mem_mb/floor"]
    lines = ["| method | step s | × floor | peak MB | × floor | tokens/s | trainable |",
             "|---|---|---|---|---|---|---|"]
    for m in methods:
        lines.append(f"| {m} | {res[f'step_s/{m}']:.4f} | {res[f'step_s/{m}'] / fl_t:.3f} | "
                     f"{res[f'peak_mem_mb/{m}']:.1f} | {res[f'peak_mem_mb/{m}'] / fl_m:.3f} | "
                     f"{res[f'tokens_per_s/{m}']:.0f} | {res[f'trainable_params/{m}']:,} |")
    f = res["forward_s/stats"] / res["forward_s/plain"]
    lines.append(f"\nforward: plain {res['forward_s/plain']:.4f} s, with statistics hooks "
                 f"{res['forward_s/stats']:.4f} s ({f:.3f}×)")
    if "flop_model_ratio/lape" in res:
        lines.append(f"lape by matmul FLOPs alone: {res['flop_model_ratio/lape']:.3f}× the floor "
                     "(delta products forward, weight gradient, input gradient)")
    return "\n".join(lines)


def scaling(cfg, model: dict, out_dir: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = []  # (width, rho, method, model config)
    for d in cfg.scaling.widths:
        m = {**model, "hidden_size": d, "intermediate_size": 4 * d,
             "num_attention_heads": max(1, d // 64), "num_key_value_heads": max(1, d // 64)}
        cells += [(d, cfg.rho, meth, m) for meth in cfg.scaling.methods]
    cells += [(model["hidden_size"], r, cfg.scaling.rho_method, model) for r in cfg.scaling.rhos]
    rounds = cfg.scaling.get("rounds", 1)
    base = _base_spec(cfg)
    order = _interleaved(list(range(len(cells))), rounds)
    specs = [{**base, "model": cells[c][3], "rho": cells[c][1], "method": cells[c][2]}
             for _, c in order]
    results = measure(specs)
    mem = measure_memory(specs)
    rows = []
    for c, (d, rho, meth, _) in enumerate(cells):
        rs = [res for (_, c2), res in zip(order, results) if c2 == c]
        spec = next(s for (_, c2), s in zip(order, specs) if c2 == c)
        rows.append({"width": d, "rho": rho, "method": meth, "rounds": rounds,
                     "step_s": statistics.median(t for r in rs for t in r["times"]),
                     "peak_mem_mb": _peak(spec, rs, mem),
                     "trainable_params": rs[0]["trainable"],
                     "flop_model_ratio": flop_model(cells[c][3], rho, cfg.seq_len)["ratio"]})
    atomic_write_text(out_dir / "scaling.json", json.dumps(rows, indent=1))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for meth in cfg.scaling.methods:
        pts = [r for r in rows if r["method"] == meth and r["rho"] == cfg.rho
               and r["width"] in cfg.scaling.widths]
        pts = sorted({r["width"]: r for r in pts}.values(), key=lambda r: r["width"])
        a.plot([r["width"] for r in pts], [r["step_s"] for r in pts], "o-", label=meth)
    a.set(xlabel="hidden size (FFN = 4×)", ylabel="step s", title="step time vs width")
    a.legend()
    pts = sorted((r for r in rows if r["method"] == cfg.scaling.rho_method and r["width"] == model["hidden_size"]
                  and r["rho"] in cfg.scaling.rhos), key=lambda r: r["rho"])
    b.plot([r["rho"] for r in pts], [r["step_s"] for r in pts], "o-", label="step s")
    b.set(xscale="log", xlabel="ρ (share of FFN neurons trained)", ylabel="step s",
          title=f"{cfg.scaling.rho_method} step time vs ρ")
    fig.tight_layout()
    fig.savefig(out_dir / "scaling.png", dpi=110)
    return rows


def profile_all(cfg: DictConfig) -> dict:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = OmegaConf.to_container(cfg.profile_model, resolve=True)
    model.pop("_target_", None)
    methods = list(cfg.methods)
    if "floor" not in methods:
        methods.insert(0, "floor")
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"dtype={cfg.dtype} is not allowed; allowed: {', '.join(DTYPES)}")
    if cfg.device not in ("cpu", "cuda"):
        raise ConfigError(f"device={cfg.device} is not allowed; allowed: cpu, cuda")
    res = _in_child(forward_overhead, model, cfg.batch_size, cfg.seq_len, cfg.forward_repeats,
                    cfg.threads, cfg.device, cfg.dtype)
    specs = _specs(cfg, methods, model, cfg.rho, cfg.rounds)
    res.update(summarise(specs, measure(specs), measure_memory(specs)))
    res["flop_model_ratio/lape"] = flop_model(model, cfg.rho, cfg.seq_len)["ratio"]
    md = table(res, methods)
    atomic_write_text(out_dir / "profile.json", json.dumps(res, indent=1))
    atomic_write_text(out_dir / "profile.md", f"# profile.py\n\nmodel: {model}\n\n{md}\n")
    print(md)
    if cfg.scaling.enabled:
        scaling(cfg, model, out_dir)
    print(f"\nwritten: {out_dir}/profile.json, profile.md"
          + (", scaling.json, scaling.png" if cfg.scaling.enabled else ""))
    return res
