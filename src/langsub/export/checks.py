"""`export` keys, checked before any model loads (validate.py collects them)."""
from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

KEYS = ("gguf", "gguf_type", "lora")
# methods that are not a neuron subnetwork already ship in their own form
OWN_FORM = {"full": "export/ is the whole fine-tuned model",
            "ffn": "export/ is the whole model with its FFN weights fine-tuned",
            "lora": "it is a peft LoRA already: train with export.lora=false and use the run's "
                    "checkpoint (peft's save_pretrained), or export/ merged",
            "ia3": "it is a peft IA3 adapter: export/ holds the merged model"}
LLAMA_CPP = ("convert export/ with llama.cpp: python convert_hf_to_gguf.py <run dir>/export "
             "--outfile model.gguf --outtype q8_0")


def options(cfg) -> dict | None:
    """The export options, or None when `export=false`."""
    e = cfg.get("export")
    if e is False or e is None:
        return None
    if e is True:
        return {"gguf": False, "gguf_type": "Q8_0", "lora": False}
    return OmegaConf.to_container(e, resolve=True) if isinstance(e, DictConfig) else dict(e)


def config_problems(cfg) -> list[str]:
    from langsub.export.gguf import type_problems

    e = cfg.get("export")
    if isinstance(e, bool):
        return []
    if not isinstance(e, (DictConfig, dict)):
        return [f"export={e!r}: allowed is false, true, or keys {', '.join(KEYS)}"]
    out = [f"export.{k}: unknown key (allowed: {', '.join(KEYS)})" for k in e if k not in KEYS]
    out += [f"export.{k}={e.get(k)!r}: allowed is true or false" for k in ("gguf", "lora")
            if not isinstance(e.get(k, False), bool)]
    if out:
        return out
    method = (cfg.get("method") or {}).get("name")
    if e.get("gguf"):
        out += type_problems(e.get("gguf_type", "Q8_0"))
        m = cfg.get("model") or {}
        if not (m.get("gguf") or m.get("gguf_package")):
            out.append(f"export.gguf=true: the base {m.get('path') or m.get('hub_id')} is not "
                       "read from a GGUF (model.gguf or model.gguf_package), so there is no "
                       f"file to rewrite; {LLAMA_CPP}")
        if (m.get("quantize")):
            out.append("export.gguf=true with model.quantize: not supported (the shipped model "
                       "is the full-precision base with the trained tensors)")
    if e.get("lora") and method in OWN_FORM:
        out.append(f"export.lora=true with method={method}: a LoRA export takes a neuron "
                   f"subnetwork's delta (lape, random); {OWN_FORM[method]}")
    return out
