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

from langsub import lape  # noqa: E402
from langsub.analysis import deactivation_matrix, diagonal_contrast  # noqa: E402
from langsub.data import LangDataModule  # noqa: E402
from langsub.module import CausalLMModule  # noqa: E402
from langsub.run import load_model  # noqa: E402
from langsub.stats import ActivationStats  # noqa: E402

TARGETS = ["mt", "af", "is", "cy", "mk", "lv", "lt", "sl", "sk", "et", "ka", "ne"]


def main() -> None:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra.run.dir=/tmp"], return_hydra_config=False)
    model, tok = load_model(cfg.model)
    model.eval()
    d = cfg.data
    dm = LangDataModule(d.corpus_dir, list(d.langs), "af", tok, d.block_size,
                        eval_batch_size=d.eval_batch_size, ident_max_tokens=d.ident_max_tokens,
                        eval_max_tokens=d.eval_max_tokens, cache_dir=cfg.paths.cache_dir)
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
    for r in rows:
        print(r)
    print(f"mean diagonal {100 * dg:.2f} %, off-diagonal {100 * off:.2f} %, "
          f"random diagonal {100 * rdg:.2f} %")


if __name__ == "__main__":
    main()
