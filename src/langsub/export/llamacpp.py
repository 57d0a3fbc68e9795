"""Run an exported GGUF in llama.cpp (llama-cpp-python, the `llamacpp` extra): perplexity of
token blocks and greedy continuations, to hold against the PyTorch model on the same ids.

    pip install -e ".[llamacpp]"   # builds llama.cpp (~6 min on 2 cores, once; pip caches it)
"""
from __future__ import annotations

import math

import numpy as np

INSTALL = ('llama-cpp-python is not installed: CMAKE_ARGS="-DGGML_NATIVE=OFF '
           '-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" pip install -e ".[llamacpp]"')


def load(path, n_ctx: int = 512, threads: int | None = None):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False,
                 n_threads=threads, n_batch=n_ctx)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def perplexity(llm, blocks: list[list[int]], skip_first: int = 1) -> float:
    """Token perplexity of `blocks` (ids; the first `skip_first` of each are context only, as
    a BOS is in langsub's packing): each block evaluated from an empty cache."""
    nll, n = 0.0, 0
    for ids in blocks:
        llm.reset()
        llm.eval(ids)
        logp = _log_softmax(np.asarray(llm.scores[: len(ids) - 1]))
        targets = np.asarray(ids[1:])
        rows = np.arange(len(targets))[skip_first - 1:]
        nll -= float(logp[rows, targets[rows]].sum())
        n += len(rows)
    return math.exp(nll / n)


def greedy(llm, ids: list[int], n: int, eos: int | None = None) -> list[int]:
    """Up to `n` greedy tokens after `ids` (stopping after `eos`, as transformers' generate
    does)."""
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(t)
        if t == eos:
            break
        llm.eval([t])
    return out
