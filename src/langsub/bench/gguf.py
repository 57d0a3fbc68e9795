"""An exported GGUF in llama.cpp against the PyTorch model it came from: perplexity of the
same token blocks (the target's held-out Tatoeba test half and its corpus test split, BOS
first), the base GGUF's, and llama.cpp's speed; prints a table, writes JSON.

    python train.py model=gemma3_270m method=lape lang=af export.gguf=true export.lora=true \
        hydra.run.dir=outputs/export/gemma3_270m_af_lape
    langsub bench gguf outputs/export/gemma3_270m_af_lape   # docs/benchmarks/gguf_gemma3_270m_af.json
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from langsub.paths import project_root
from langsub.errors import ArgParser

ROOT = project_root()


def blocks(tok, texts, n: int, size: int = 128) -> list[list[int]]:
    ids = [t for x in texts for t in tok(x + "\n\n", add_special_tokens=False)["input_ids"]]
    body = size - 1
    return [[tok.bos_token_id] + ids[i: i + body] for i in range(0, n * body, body)
            if len(ids[i: i + body]) == body]


@torch.no_grad()
def torch_ppl(model, bs) -> float:
    nll, n = 0.0, 0
    for b in bs:
        logp = model(torch.tensor([b])).logits[0, :-1].float().log_softmax(-1)
        nll -= float(logp[torch.arange(len(b) - 1), torch.tensor(b[1:])].sum())
        n += len(b) - 1
    return math.exp(nll / n)


def main(argv=None) -> None:
    ap = ArgParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/gguf_gemma3_270m_af.json")
    a = ap.parse_args(argv)
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from langsub.export import llamacpp as L
    from langsub.model.sources import gguf_path

    m = json.loads((a.run / "metrics.json").read_text())
    cfg = OmegaConf.load(a.run / ".hydra" / "config.yaml")
    lang, tok = m["lang"], AutoTokenizer.from_pretrained(a.run / "export")
    tatoeba = [json.loads(l) for l in open(ROOT / "data/heldout/tatoeba" / f"{lang}.jsonl")]
    corpus = [json.loads(l) for l in open(ROOT / "data/corpus" / f"{lang}.jsonl")]
    sets = {"tatoeba test half": blocks(tok, [r["text"] for r in tatoeba if r["split"] == "test"],
                                        a.blocks),
            "corpus test split": blocks(tok, [r["text"] for r in corpus if r["split"] == "test"],
                                        a.blocks)}
    shipped = AutoModelForCausalLM.from_pretrained(a.run / "export", dtype=getattr(
        torch, m["dtype"])).eval()
    after = L.load(a.run / "export" / "model.gguf", n_ctx=128, threads=torch.get_num_threads())
    before = L.load(gguf_path(cfg.model), n_ctx=128, threads=torch.get_num_threads())
    rows = []
    for name, bs in sets.items():
        rows.append({"text": name, "tokens": sum(len(b) - 1 for b in bs),
                     "pytorch_after": torch_ppl(shipped, bs), "gguf_after": L.perplexity(after, bs),
                     "gguf_before": L.perplexity(before, bs)})
    prompt = sets["tatoeba test half"][0][:32]
    t0 = time.perf_counter()
    after.reset()
    after.eval(prompt)
    prefill = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = L.greedy(after, prompt, 64)
    decode = time.perf_counter() - t0
    info = {"run": str(a.run), "dtype": m["dtype"], "threads": torch.get_num_threads(),
            "gguf_bytes": m.get("export/gguf_bytes"), "base_bytes": m.get("export/gguf_base_bytes"),
            "gguf_seconds": m.get("export/gguf_seconds"), "lora_bytes": m.get("export/lora_bytes"),
            "lora_max_rank": m.get("export/lora_max_rank"), "rows": rows,
            "llama_cpp_prefill_tokens_per_s": round(len(prompt) / prefill, 1),
            "llama_cpp_decode_tokens_per_s": round(len(gen) / decode, 1),
            "sample": tok.decode(gen)}
    print("| text | tokens | PyTorch (export/) | llama.cpp (model.gguf) | difference | llama.cpp base GGUF |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['text']} | {r['tokens']} | {r['pytorch_after']:.2f} | {r['gguf_after']:.2f} | "
              f"{100 * (r['gguf_after'] / r['pytorch_after'] - 1):+.2f} % | {r['gguf_before']:.2f} |")
    print(f"llama.cpp: prefill {info['llama_cpp_prefill_tokens_per_s']} tok/s, decode "
          f"{info['llama_cpp_decode_tokens_per_s']} tok/s ({info['threads']} threads)")
    a.out.write_text(json.dumps(info, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
