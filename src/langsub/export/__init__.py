"""Exports: the merged model as a plain transformers checkpoint, and the trained slices alone.

Apply deltas to a base model (several languages compose into one model):

    langsub export --base assets/tiny-llama --out merged/ \
        --delta outputs/lape/af/<time>/delta.safetensors --delta outputs/lape/is/<time>/delta.safetensors
    langsub export --base <base.gguf> --gguf af.gguf --delta …/delta.safetensors
    langsub export --base assets/tiny-llama --lora lora_af/ --delta …/delta.safetensors

Each delta is "trained slice - base slice" for its own neurons, in float32. Deltas add: where
two languages share a neuron, the merged slice is base + delta_1 + delta_2 (task arithmetic);
everywhere else each delta acts alone, exactly as in its own run. The base loads in the dtype
the run used (the deltas' metadata; `--dtype` overrides) and the sums are the run's own merge
(`methods.sparse.add_slices`: float32, cast once), so one delta reproduces the run's `export/`
bit for bit.

A delta is a portable artifact: its safetensors header names the base it was trained on
(`base_model`, and `base_fingerprint`, a hash of the base's values at the delta's slices),
the language, method, rho, neuron count, components and the langsub version. A base of other
shapes is refused; a base with other values there (a sibling: the instruct model of the same
shapes) gets the delta with a one-line notice. `--delta` also takes a hub id (`owner/name`,
or `owner/name:file.safetensors`); `--push-to-hub REPO` uploads the merged model.
"""
from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from langsub import __version__
from langsub.errors import ArgParser, CheckpointError
from langsub.io import atomic_write
from langsub.methods.precision import DTYPES, dtype_name
from langsub.methods.sparse import add_delta_states, check_delta_state, frozen_weight

FORMAT, FORMAT_VERSION = "langsub-neuron-delta", "1"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w./-]+)?$")


def fingerprint(model: torch.nn.Module, delta: dict, dtype: str | None = None) -> str:
    """sha256 of the base's values at the delta's slices (rounded to `dtype`, the run's, then
    float32 bytes; linears sorted): equal for the same base whatever file or dtype holds it,
    different for a sibling or a fine-tune. `model` is the base, or a model whose deltas are
    not merged yet (its frozen weights)."""
    modules, h = dict(model.named_modules()), hashlib.sha256()
    for name in check_delta_state(model, "the delta", delta):
        w = frozen_weight(modules[name])
        dim, index = int(delta[f"{name}.dim"]), delta[f"{name}.index"]
        part = w.detach().index_select(dim, index.to(w.device))
        part = part.to(getattr(torch, dtype) if dtype else part.dtype).float().cpu().contiguous()
        h.update(name.encode())
        h.update(part.numpy().tobytes())
    return h.hexdigest()


def delta_metadata(model: torch.nn.Module, delta: dict, **facts) -> dict[str, str]:
    """The header of `delta.safetensors`: format, langsub version, the base's fingerprint
    (`model` holds the base weights at the delta's slices) and `facts` (base_model, lang,
    method, rho, neurons, components, dtype), every value a string as safetensors wants."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "langsub_version": __version__,
            "base_fingerprint": fingerprint(model, delta, dtype_name(
                next(model.parameters()).dtype) if facts.get("dtype") is None else facts["dtype"]),
            **{k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
               for k, v in facts.items()}}


def export_model(out_dir: Path, merged, tokenizer, delta: dict | None = None,
                 meta: dict | None = None) -> Path:
    """Write `delta.safetensors` (if given, with its header `meta`) and `export/` (the merged
    model, plain keys), each atomically."""
    if delta:
        meta = {**(meta or {}), "dtype": dtype_name(next(merged.parameters()).dtype)}
        atomic_write(out_dir / "delta.safetensors", lambda p: save_file(delta, p, metadata=meta))
    final, tmp = out_dir / "export", out_dir / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def read_delta(path: str | Path) -> tuple[dict, dict]:
    """(tensors, header) of a delta file; CheckpointError in one line when it is unreadable,
    has no langsub header, or a format version this langsub cannot read."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file "
                              f"({str(e).splitlines()[0][:120]})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: no langsub delta header (format={meta.get('format')!r});"
                              f" expected a delta.safetensors written by langsub")
    version = meta.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: delta format version {version} (langsub "
                              f"{meta.get('langsub_version', '?')}); this langsub {__version__} "
                              f"reads version {FORMAT_VERSION}")
    bad = [k for k in tensors if not k.endswith((".delta", ".index", ".dim"))]
    names = {k.rsplit(".", 1)[0] for k in tensors}
    bad += [f"{n}.{p}" for n in sorted(names) for p in ("delta", "index", "dim")
            if f"{n}.{p}" not in tensors]
    if not tensors or bad:
        raise CheckpointError(f"{path}: not a neuron delta (tensor {bad[0] if bad else 'none'} "
                              "unexpected or missing)")
    return tensors, meta


def resolve_delta(spec: str) -> Path:
    """A local delta file, or `owner/name[:file]` downloaded from the hub (one line if not)."""
    if Path(spec).is_file():
        return Path(spec)
    if not HUB_ID.match(spec):
        raise CheckpointError(f"--delta {spec}: no such file (nor a hub id owner/name[:file])")
    from huggingface_hub import hf_hub_download

    repo, _, filename = spec.partition(":")
    try:
        return Path(hf_hub_download(repo, filename or "delta.safetensors"))
    except Exception as e:  # offline, unknown repo, missing file: hub's many error types
        raise CheckpointError(f"--delta {spec}: not a local file and not downloadable from the "
                              f"hub ({type(e).__name__})") from None


@torch.no_grad()
def apply_deltas(model: torch.nn.Module, paths: list[str | Path], notify=print) -> torch.nn.Module:
    """Add every delta file in `paths` to `model`'s weights, in place (float32 sums, cast
    once). Every file is read and checked against the model before a weight changes; a base
    whose values at a delta's slices differ from its training base gets a `notify` line."""
    deltas = [(str(p), *read_delta(p)) for p in paths]
    seen: dict[tuple, str] = {}
    for path, tensors, meta in deltas:
        key = (meta.get("lang"), meta.get("base_fingerprint"))
        if meta.get("lang") and key in seen:
            raise CheckpointError(f"{seen[key]} and {path} are both deltas for {key[0]} from the "
                                  "same base: they would add twice; pass one")
        seen[key] = path
        check_delta_state(model, path, tensors)
    for path, tensors, meta in deltas:
        have = fingerprint(model, tensors, meta.get("dtype"))
        if meta.get("base_fingerprint") not in (None, have):
            notify(f"notice: {path} was trained on {meta.get('base_model', '?')} (fingerprint "
                   f"{meta['base_fingerprint'][:12]}); this base's is {have[:12]}: applying it "
                   "to a sibling of the same shapes")
    return add_delta_states(model, [(path, tensors) for path, tensors, _ in deltas])


def delta_dtype(metas: list[dict]) -> str:
    """The dtype the deltas' run loaded its model in (their headers)."""
    found = {m.get("dtype", "float32") for m in metas}
    if len(found) > 1:
        raise CheckpointError(f"the deltas come from runs in different dtypes {sorted(found)}: "
                              "choose one with --dtype")
    dtype = found.pop()
    if dtype not in DTYPES:
        raise CheckpointError(f"delta header dtype={dtype!r}: expected one of {DTYPES}")
    return dtype


def push_to_hub(out: Path, repo: str) -> None:
    """Upload the exported folder with the hub's own calls (create the repo if needed)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=str(out))


def _check_out(out: Path | None) -> Path | None:
    if out is None:
        return None
    out = out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) \
            and not (out / "config.json").is_file():
        raise CheckpointError(f"--out {out}: exists and is not an earlier export (no "
                              "config.json); choose a new or empty directory")
    return out


def _gguf_of(source, model, loaded, gguf_out: Path, gguf_type: str, langs: str) -> None:
    """The base GGUF with the deltas' tensors replaced."""
    from langsub.export import gguf as gguf_export
    from langsub.model.sources import gguf_path

    names = gguf_export.delta_weights([t for t, _ in loaded])
    info = gguf_export.write(gguf_path(source), model, gguf_out, gguf_type, names,
                             {"lang": langs, "method": ",".join(m.get("method", "?")
                                                                for _, m in loaded)})
    print(f"GGUF -> {gguf_out} ({len(info['changed'])} tensors in {gguf_type}, "
          f"{info['bytes'] / 1e6:.1f} MB; base {info['base_bytes'] / 1e6:.1f} MB)")


def export(base: str, out: Path | None, specs: list[str], dtype: str | None = None,
           push: str | None = None, gguf_out: Path | None = None, gguf_type: str = "Q8_0",
           lora_out: Path | None = None, lora_each: bool = False) -> Path | None:
    """Everything `langsub export` does; nothing is written unless every delta
    fits the base: the merged model (`out`), a GGUF (`gguf_out`, from a .gguf base) and a
    peft LoRA adapter (`lora_out`: one for all deltas, or one each)."""
    from langsub.export import gguf as gguf_export

    if out is None and gguf_out is None and lora_out is None:
        raise CheckpointError("nothing to write: give --out, --gguf or --lora")
    out = _check_out(out)
    if gguf_out is not None:
        problems = gguf_export.type_problems(gguf_type)
        if not base.endswith(".gguf"):
            problems.append(f"--gguf needs a .gguf --base (got {base}); for a transformers base, "
                            "convert the merged --out directory with llama.cpp's "
                            "convert_hf_to_gguf.py")
        if problems:
            raise CheckpointError(problems[0])
    paths = [resolve_delta(s) for s in specs]
    loaded = [read_delta(p) for p in paths]  # every file checked before the base loads
    metas = [m for _, m in loaded]
    dtype = dtype or delta_dtype(metas)
    from langsub.model.load import load_model
    from langsub.model.sources import cfg_for, source_problems

    source = cfg_for(base)  # a directory, a .gguf (dequantized once) or a hub id
    source.dtype = dtype
    problems = source_problems(source)
    if problems:
        raise CheckpointError(f"--base {base}: {problems[0]}")
    try:
        model, tok = load_model(source, quantized=False)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"--base {base}: cannot load a causal LM and its tokenizer "
                              f"({str(e).splitlines()[0][:120]})") from None
    if lora_out is not None:  # from the deltas alone (the base only gives the shapes)
        from langsub.export import lora

        for info in lora.export([t for t, _ in loaded], model, Path(lora_out), base,
                                merged=not lora_each):
            print(f"LoRA adapter -> {info['lora']} (rank <= {info['max_rank']}; vLLM: "
                  f"--max-lora-rank {info['vllm_max_lora_rank']})")
    apply_deltas(model, paths)
    langs = ", ".join(m.get("lang", "?") for m in metas)
    if gguf_out is not None:
        _gguf_of(source, model, loaded, Path(gguf_out), gguf_type, langs)
    if out is not None:
        _write_merged(model, tok, out, push)
        print(f"applied {len(paths)} delta(s) ({langs}) to {base} ({dtype}) -> {out}")
    return out


def _write_merged(model, tok, out: Path, push: str | None) -> None:
    """save_pretrained into a temporary directory, renamed; then the hub upload if asked."""
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)  # empty, or an earlier export
    tmp.rename(out)
    if push:
        try:
            push_to_hub(out, push)
        except Exception as e:  # not logged in, no rights, offline: the hub's many errors
            raise CheckpointError(f"--push-to-hub {push}: the upload failed ({type(e).__name__}:"
                                  f" {str(e).splitlines()[0][:120]}); {out} is written") from None
        print(f"pushed {out} to the hub as {push}")


def main(argv=None) -> None:
    ap = ArgParser(description="Apply langsub neuron deltas to a base model.")
    ap.add_argument("--base", required=True,
                    help="base model: a directory, a .gguf file (or owner/name:file) or a hub id")
    ap.add_argument("--delta", nargs="+", action="extend", required=True,
                    help="delta.safetensors files or hub ids owner/name[:file] (repeatable)")
    ap.add_argument("--out", default=None, help="output directory of the merged model "
                    "(save_pretrained)")
    ap.add_argument("--gguf", default=None, metavar="FILE",
                    help="write a GGUF: the .gguf --base with the deltas' tensors replaced")
    ap.add_argument("--gguf-type", default="Q8_0", help="the changed tensors' type "
                    "(Q8_0, F16, BF16, F32, Q4_0, Q4_1, Q5_0, Q5_1)")
    ap.add_argument("--lora", default=None, metavar="DIR",
                    help="write the deltas as an exact peft LoRA adapter (one for all)")
    ap.add_argument("--lora-each", action="store_true",
                    help="with --lora: one adapter per delta, in DIR/0, DIR/1, …")
    ap.add_argument("--dtype", choices=DTYPES, default=None,
                    help="load the base in this dtype (default: the one the deltas' run used)")
    ap.add_argument("--push-to-hub", default=None, metavar="REPO",
                    help="upload the merged model to this hub repo")
    a = ap.parse_args(argv)
    from langsub.errors import one_line

    one_line(export, a.base, Path(a.out) if a.out else None, a.delta, a.dtype, a.push_to_hub,
             Path(a.gguf) if a.gguf else None, a.gguf_type, a.lora, a.lora_each)
