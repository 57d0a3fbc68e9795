"""The main job's optional exports beside export/: export/model.gguf and export/lora/."""
from __future__ import annotations

import time
from pathlib import Path


def write_formats(cfg, opts: dict, export_dir: Path, model, delta: dict | None,
                  delta_meta: dict | None, method: str) -> dict:
    """Write what `opts` (cfg.export) asks for; sizes and seconds for metrics.json."""
    from langsub.model.sources import describe

    out = {}
    if opts.get("gguf"):
        from langsub.export import gguf
        from langsub.model.sources import gguf_path

        t0 = time.perf_counter()
        meta = {k: v for k, v in (delta_meta or {}).items() if k in
                ("base_model", "base_fingerprint", "neurons", "rho")}
        names = gguf.delta_weights([delta]) if delta else None  # else compared to the base
        info = gguf.write(gguf_path(cfg.model), model, export_dir / "model.gguf",
                          opts["gguf_type"], names, {"lang": cfg.lang.code, "method": method,
                                                     **meta})
        out.update({"export/gguf_bytes": info["bytes"], "export/gguf_base_bytes":
                    info["base_bytes"], "export/gguf_changed_tensors": len(info["changed"]),
                    "export/gguf_seconds": round(time.perf_counter() - t0, 2)})
    if opts.get("lora") and delta:
        from langsub.export import lora

        t0 = time.perf_counter()
        info = lora.export([delta], model, export_dir / "lora", describe(cfg.model))[0]
        out.update({"export/lora_bytes": info["bytes"], "export/lora_max_rank": info["max_rank"],
                    "export/lora_vllm_max_lora_rank": info["vllm_max_lora_rank"],
                    "export/lora_seconds": round(time.perf_counter() - t0, 2)})
    for k, v in out.items():
        print(f"[langsub] {k} = {v}")
    return out
