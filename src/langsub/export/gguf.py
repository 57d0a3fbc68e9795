"""The adapted model as a GGUF, for llama.cpp, Ollama and LM Studio.

    python train.py model=gemma3_270m method=lape lang=af export.gguf=true   # export/model.gguf
    langsub export --base <base.gguf> --delta delta.safetensors --gguf out.gguf

For a base read from a GGUF: the same file (metadata, tokenizer, tensor order) with the
trained tensors replaced. Untouched tensors are copied byte for byte in their original
quantization; a changed one is written in `export.gguf_type` (Q8_0 by default) from the
trained model's float32 values, laid out as llama.cpp's converter lays it out (the inverse
of what transformers' GGUF reader undoes: Gemma's norm weights +1, Llama's q/k rows
permuted). `langsub.*` metadata names the language, method and base fingerprint. The
file is written to a temporary name and renamed: a crash never leaves half a GGUF.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

# what the `gguf` package quantizes in Python (the K-quants are dequantize-only there)
WRITABLE = ("Q8_0", "F16", "BF16", "F32", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
K_QUANTS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "Q4_K_M", "Q4_K_S", "Q5_K_M",
            "Q5_K_S", "Q3_K_M", "Q3_K_S", "Q3_K_L", "Q2_K_S")
NORM_PLUS_ONE = ("gemma", "gemma2", "gemma3")   # transformers' reader subtracts 1 from norms
PERMUTED_QK = ("llama", "mistral")               # transformers' reader un-permutes q/k rows


def type_problems(name) -> list[str]:
    """One line for a `gguf_type` that cannot be written."""
    if name in WRITABLE:
        return []
    if str(name).upper() in K_QUANTS:
        return [f"export.gguf_type={name}: the K-quants cannot be written in Python (the gguf "
                f"package only dequantizes them); allowed: {', '.join(WRITABLE)} — quantize "
                f"the Q8_0/F16 file with llama.cpp's llama-quantize for {name}"]
    return [f"export.gguf_type={name!r}: allowed is one of {', '.join(WRITABLE)}"]


def _arch(reader) -> str:
    return str(reader.fields["general.architecture"].contents())


def _name_map(reader, hf_names) -> dict[str, str]:
    """transformers parameter name -> GGUF tensor name, for the names the GGUF holds."""
    import gguf

    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[_arch(reader)]
    blocks = int(reader.fields[f"{_arch(reader)}.block_count"].contents())
    tmap = gguf.get_tensor_name_map(arch, blocks)
    have = {t.name for t in reader.tensors}
    out = {}
    for hf in hf_names:
        stem, _, suffix = hf.rpartition(".")
        name = tmap.get_name(stem)
        if name is not None and f"{name}.{suffix}" in have:
            out[hf] = f"{name}.{suffix}"
    return out


def _heads(reader, key: str) -> int:
    return int(reader.fields[f"{_arch(reader)}.{key}"].contents())


def to_gguf_layout(reader, name: str, w: np.ndarray) -> np.ndarray:
    """A transformers weight as the GGUF stores it (the inverse of transformers' reader)."""
    arch = _arch(reader)
    if arch in NORM_PLUS_ONE and name.endswith("norm.weight"):
        return w + 1
    if arch in PERMUTED_QK and (".attn_q." in name or ".attn_k." in name):
        n = _heads(reader, "attention.head_count" if ".attn_q." in name
                   else "attention.head_count_kv")
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    return w


def from_gguf(reader, tensor) -> np.ndarray:
    """A GGUF tensor dequantized to float32, in transformers' layout."""
    import gguf

    w = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    arch = _arch(reader)
    if arch in NORM_PLUS_ONE and tensor.name.endswith("norm.weight"):
        return w - 1
    if arch in PERMUTED_QK and (".attn_q." in tensor.name or ".attn_k." in tensor.name):
        n = _heads(reader, "attention.head_count" if ".attn_q." in tensor.name
                   else "attention.head_count_kv")
        return w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)
    return w


def delta_weights(deltas) -> list[str]:
    """The weight names neuron deltas (langsub's `<module>.delta` keys) change."""
    return sorted({f"{k.rsplit('.', 1)[0]}.weight" for d in deltas for k in d
                   if k.endswith(".delta")})


def changed_tensors(reader, model: torch.nn.Module, names=None) -> dict[str, str]:
    """{transformers name: GGUF name} of the tensors training changed: `names` (a neuron
    delta's weights) or, without them, every tensor whose values differ from the GGUF's in
    the model's dtype (full, FFN-only, merged LoRA/IA3)."""
    state = model.state_dict()
    mapping = _name_map(reader, state)
    if names is not None:
        missing = [n for n in names if n not in mapping]
        if missing:
            from langsub.errors import CheckpointError
            raise CheckpointError(f"export.gguf: {missing[0]} has no tensor in the base GGUF")
        return {n: mapping[n] for n in names}
    by_name = {t.name: t for t in reader.tensors}
    out = {}
    for hf, g in mapping.items():
        w = state[hf]
        base = torch.from_numpy(from_gguf(reader, by_name[g]).reshape(w.shape)).to(w.dtype)
        if not torch.equal(base, w.detach().cpu()):
            out[hf] = g
    return out


def quantize(w: np.ndarray, qtype: str):
    import gguf

    t = getattr(gguf.GGMLQuantizationType, qtype)
    return gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), t), t


def _copy(reader, writer, new: dict, meta: dict | None) -> None:
    """Every field and tensor of `reader` into `writer`, `new` tensors in place of theirs."""
    import gguf

    for field in reader.fields.values():  # as gguf's own gguf_new_metadata.py copies them
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    for k, v in (meta or {}).items():
        writer.add_string(f"langsub.{k}", str(v))
    for t in reader.tensors:
        data, kind = new.get(t.name, (t.data, t.tensor_type))
        writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(new[t.name][0] if t.name in new else t.data,
                                 tensor_endianess=reader.endianess)
    writer.close()


def write(base: Path, model: torch.nn.Module, out: Path, qtype: str = "Q8_0",
          names=None, meta: dict | None = None) -> dict:
    """Write `out` from `base` with the changed tensors of `model` in `qtype`; returns what
    was written (counts, sizes, the changed tensors)."""
    import gguf

    reader = gguf.GGUFReader(str(base))
    changed = changed_tensors(reader, model, names)
    sd = model.state_dict()
    state = {hf: sd[hf] for hf in changed}
    new = {g: quantize(to_gguf_layout(reader, g, state[hf].detach().float().cpu().numpy()), qtype)
           for hf, g in changed.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        _copy(reader, gguf.GGUFWriter(str(tmp), _arch(reader), endianess=reader.endianess),
              new, meta)
    except BaseException:  # a crash or an interrupt leaves no half-written file behind
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return {"gguf": str(out), "bytes": out.stat().st_size, "base_bytes": base.stat().st_size,
            "changed": sorted(changed.values()), "type": qtype}
