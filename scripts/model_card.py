"""Measure the embedded model and write its model card (assets/tiny-llama/README.md).

    python scripts/model_card.py

With the main job's defaults (ρ = 0.05, τ = 0.95, identification over all corpus languages)
it reports per language: neurons found, their share of the parameters, and the
deactivation effect of LAPE neurons vs random neurons of the same count.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LANGSUB_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from langsub.neurons import lape  # noqa: E402
from langsub.analysis.maths import deactivation_matrix, diagonal_contrast  # noqa: E402
from langsub.data.datamodule import Batching, LangDataModule, TokenBudgets  # noqa: E402
from langsub.training.module import CausalLMModule  # noqa: E402
from langsub.model.load import load_model  # noqa: E402
from langsub.neurons.counting import ActivationStats  # noqa: E402

TARGETS = ["mt", "af", "is", "cy", "mk", "lv", "lt", "sl", "sk", "et", "ka", "ne"]


def main() -> None:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra.run.dir=/tmp"], return_hydra_config=False)
    model, tok = load_model(cfg.model)
    model.eval()
    d = cfg.data
    dm = LangDataModule(d.corpus_dir, list(d.langs), "af", tok, block_size=d.block_size,
                        budgets=TokenBudgets(d.ident_max_tokens, d.eval_max_tokens),
                        batching=Batching(eval_batch_size=d.eval_batch_size),
                        cache_dir=cfg.paths.cache_dir)
    cb = ActivationStats(len(dm.langs))
    L.Trainer(accelerator="cpu", devices=1, logger=False, callbacks=[cb],
              enable_progress_bar=False).predict(
        CausalLMModule(model, dm.langs), dataloaders=dm.identification_dataloaders(),
        return_predictions=False)
    sel = lape.select_neurons(cb.over_zero, cb.n_tokens, rho=cfg.rho, threshold=cfg.threshold)
    masks = dict(zip(dm.langs, sel))
    total = sum(p.numel() for p in model.parameters())
    per_neuron = 3 * model.config.hidden_size
    N = model.config.intermediate_size
    rand = {l: lape.select_random([len(t) for t in m], N, seed=1 + i)
            for i, (l, m) in enumerate(masks.items())}
    test = {l: dm.blocks(l, "test", 6400) for l in dm.langs}  # 50 blocks per language
    deact = deactivation_matrix(model, test, masks)
    deact_r = deactivation_matrix(model, test, rand)
    info = json.loads((Path(cfg.model.path) / "pretrain_info.json").read_text())
    rows = []
    for i, l in enumerate(dm.langs):
        n = int(sum(len(t) for t in masks[l]))
        j = deact["eval_langs"].index(l)
        others = [v for c, v in zip(deact["eval_langs"], deact["matrix"][i]) if c != l]
        rows.append({"lang": l, "target": l in TARGETS, "neurons": n,
                     "param_share_pct": 100 * n * per_neuron / total,
                     "deact_self_pct": 100 * deact["matrix"][i][j],
                     "deact_others_pct": 100 * sum(others) / len(others),
                     "random_self_pct": 100 * deact_r["matrix"][i][j],
                     "test_ppl": info["test_ppl"].get(l)})
    dg, off = diagonal_contrast(deact)
    rdg, roff = diagonal_contrast(deact_r)
    card = {"rows": rows, "diag": dg, "offdiag": off, "random_diag": rdg, "random_offdiag": roff,
            "total_params": total, "ident_tokens": cb.n_tokens.tolist(), "pretrain": info}
    (Path(cfg.model.path) / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    render(Path(cfg.model.path), card)
    for r in rows:
        print(r)
    print(f"mean diagonal {100 * dg:.2f} %, off-diagonal {100 * off:.2f} %, "
          f"random diagonal {100 * rdg:.2f} %")


def render(model_dir: Path, card: dict) -> None:
    """Write README.md (the model card) from card.json's measurements."""
    p = card["pretrain"]
    a = p["args"]
    lines = [
        "# tiny-llama: the embedded multilingual base model of langsub", "",
        "    python scripts/pretrain_tiny.py   # retrains it (seeded, about 30 min on 2 CPU cores)",
        "    python scripts/model_card.py      # remeasures this card", "",
        f"A `LlamaForCausalLM` (SwiGLU FFN) of {card['total_params'] / 1e6:.2f} M parameters: "
        f"{a['layers']} layers, hidden size {a['hidden']}, FFN width {a['ffn']}, 4 heads, tied "
        f"embeddings, byte-level BPE tokenizer ({a['vocab']} tokens) trained with `tokenizers` on "
        "the corpus. Stored in fp16 (`config.json` says float32, so loaders upcast). Loads "
        "with plain `AutoModelForCausalLM` / `AutoTokenizer`.", "",
        f"**Data**: the `pretrain` split of `data/corpus` (see data/README.md): en de fr es ru zh "
        f"sw fully, the 12 targets thinly ({100 * a['target_share']:.0f} % of their pretraining "
        f"split) so that they are underrepresented, as in the paper's setting: "
        f"{p['pretraining_tokens_per_epoch']:,} tokens per epoch. **Training**: {a['steps']} "
        f"steps of {a['batch']}×{a['block']} tokens ({p['tokens_seen']:,} tokens), AdamW lr "
        f"{a['lr']}, cosine, seed {a['seed']}, {p['minutes']} min on 2 CPU cores.", "",
        "## Language-specific neurons (the phenomenon langsub relies on)", "",
        "Identification with the main job's defaults (ρ = 0.05, τ = 0.95, all 19 languages, "
        "40 000 tokens each of the `train` split). *Deactivation*: the relative perplexity rise "
        "on the test split when the language's neurons are zeroed (act_fn output), on the "
        "language itself vs. the mean over the other 18; *random*: the same count of random "
        "neurons per layer, on the language itself. *Test ppl*: the pretrained model, fp32.", "",
        "| lang | target | neurons | share of params | deactivation: self | others | random: self | test ppl |",
        "|---|---|---|---|---|---|---|---|"]
    for r in card["rows"]:
        lines.append(f"| {r['lang']} | {'yes' if r['target'] else ''} | {r['neurons']} | "
                     f"{r['param_share_pct']:.2f} % | {r['deact_self_pct']:+.2f} % | "
                     f"{r['deact_others_pct']:+.2f} % | {r['random_self_pct']:+.2f} % | "
                     f"{r['test_ppl']} |")
    t = [r for r in card["rows"] if r["target"]]
    hi = [r for r in card["rows"] if r["lang"] in ("en", "de", "fr", "es", "ru", "zh")]
    lines += ["", f"Mean deactivation diagonal {100 * card['diag']:.2f} % vs off-diagonal "
              f"{100 * card['offdiag']:.2f} % ({card['diag'] / card['offdiag']:.1f}×); random "
              f"neurons: diagonal {100 * card['random_diag']:.2f} %. Every target gets "
              f"{min(r['param_share_pct'] for r in t):.2f}–{max(r['param_share_pct'] for r in t):.2f} % "
              "of the parameters. Test perplexity: high-resource median "
              f"{sorted(r['test_ppl'] for r in hi)[len(hi) // 2]:.1f}, targets median "
              f"{sorted(r['test_ppl'] for r in t)[len(t) // 2]:.1f} (Nepali is low because "
              "its byte-level tokens are short and predictable, not because it is well learnt).",
              "", "## What moved the phenomenon", "",
              "Two earlier tries: 4 layers × 512 FFN on MediaWiki text only (134 K tokens, 8 min) "
              "gave Afrikaans 2 neurons (0.03 %) and a deactivation diagonal of 1.2 % vs 0.3 %; "
              "d = 256, 4 × 1024 FFN on MediaWiki + LibreOffice with targets at 20 % gave 5–19 "
              "neurons per Latin-script target. This model (4 × 1536 FFN, targets at 25 %, "
              "5.3 M tokens seen) gives 26–90 per target: more text, a wider FFN and a larger "
              "target share all raised the counts; the targets' share must stay small enough "
              "that they remain underrepresented (their test ppl stays ~2–3× the high-resource).",
              ""]
    (model_dir / "README.md").write_text("\n".join(lines))


if __name__ == "__main__":
    if "--render" in sys.argv:  # only re-render README.md from card.json
        d = ROOT / "assets/tiny-llama"
        render(d, json.loads((d / "card.json").read_text()))
    else:
        main()
