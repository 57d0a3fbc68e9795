"""Pretrain the embedded base model: a tiny multilingual Llama (SwiGLU FFN) + BPE tokenizer.

    python scripts/pretrain_tiny.py                       # writes assets/tiny-llama/
    python scripts/pretrain_tiny.py --steps 200 --out /tmp/t   # a quick try

The high-resource languages (en de fr es ru zh sw) are used fully, the 12 targets thinly
(`--target-share` of their pretraining split), so that the targets are underrepresented as
in the paper's setting. Seeded; about 25 min on 2 CPU cores with the defaults.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["mt", "af", "is", "cy", "mk", "lv", "lt", "sl", "sk", "et", "ka", "ne"]


def read(lang: str, split: str) -> list[str]:
    rows = (json.loads(l) for l in open(ROOT / "data/corpus" / f"{lang}.jsonl", encoding="utf-8"))
    return [r["text"] for r in rows if r["split"] == split]


def train_tokenizer(langs: list[str], vocab: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((t for l in langs for t in read(l, "pretrain") + read(l, "train")),
                            trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", clean_up_tokenization_spaces=False)


def blocks(tok, texts: list[str], block: int) -> torch.Tensor:
    ids = []
    for t in texts:
        ids += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n = len(ids) // block
    return torch.tensor(ids[: n * block]).view(n, block)


@torch.no_grad()
def perplexity(model, data: torch.Tensor, bs: int = 32) -> float:
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(data), bs):
        x = data[i: i + bs]
        tot += model(input_ids=x, labels=x).loss.item() * x.numel()
        n += x.numel()
    model.train()
    return math.exp(tot / n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "assets/tiny-llama")
    ap.add_argument("--steps", type=int, default=1300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=1536)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--target-share", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    langs = sorted(p.stem for p in (ROOT / "data/corpus").glob("*.jsonl"))
    tok = train_tokenizer(langs, args.vocab)
    mix = []
    for lang in langs:
        texts = read(lang, "pretrain")
        if lang in TARGETS:
            texts = random.Random(f"{args.seed}:{lang}").sample(
                texts, int(len(texts) * args.target_share))
        mix.append(blocks(tok, texts, args.block))
        print(f"{lang}: {mix[-1].numel()} pretraining tokens", flush=True)
    data = torch.cat(mix)
    test = {l: blocks(tok, read(l, "test"), args.block) for l in langs}
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.ffn,
                      num_hidden_layers=args.layers, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f} M parameters, {data.numel()} tokens per epoch", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1, betas=(0.9, 0.95))
    warm = args.steps // 20
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warm) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))))
    gen = torch.Generator().manual_seed(args.seed)
    order, pos, t0 = torch.randperm(len(data), generator=gen), 0, time.time()
    for step in range(args.steps):
        if pos + args.batch > len(order):
            order, pos = torch.randperm(len(data), generator=gen), 0
        x = data[order[pos: pos + args.batch]]
        pos += args.batch
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    ppl = {l: round(perplexity(model, d), 2) for l, d in test.items() if len(d)}
    print(json.dumps(ppl), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    # fp16 on disk keeps the file small; config dtype float32 makes loaders upcast
    model.to(torch.float16).save_pretrained(args.out)
    cfg_path = args.out / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "dtype": "float32"},
                                   indent=2) + "\n")
    tok.save_pretrained(args.out)
    info = {"parameters": n_params, "pretraining_tokens_per_epoch": data.numel(),
            "tokens_seen": args.steps * args.batch * args.block, "minutes": round(
                (time.time() - t0) / 60, 1), "test_ppl": ppl,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    (args.out / "pretrain_info.json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
