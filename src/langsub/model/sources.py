"""Where a model comes from: one entry point for every command.

A source is one row of `SOURCES`: a local transformers directory (`model.path`), a GGUF file
(`model.gguf`: a local file or `owner/name:file` on the hub), a registry package that ships
a GGUF (`model.gguf_package`), or a hub id (`model.hub_id`, the fallback). Each row checks
its own keys (one line per problem, before any weights load) and resolves to what
`from_pretrained` reads. A GGUF is dequantized once into `model.cache_dir` as a plain
transformers checkpoint keyed by the file's sha256 (written atomically), so later runs load
it like any directory, and the statistics cache keys on that hash (`langsub_source.json`).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from langsub.errors import ConfigError

SOURCE_FILE = "langsub_source.json"  # in a dequantized GGUF's directory: where it came from
DEFAULT_CACHE = ".cache/models"
_SHA: dict[tuple, str] = {}


@dataclass(frozen=True)
class Source:
    """One kind of model source: its config key, its checks, what from_pretrained reads."""

    key: str
    problems: Callable[[DictConfig], list[str]]
    resolve: Callable[[DictConfig], str]


def sha256_file(path: str | Path) -> str:
    """The file's sha256 (memoised per path, size and mtime: a GGUF is hashed once a run)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA[key] = h.hexdigest()
    return _SHA[key]


# ------------------------------------------------------------------ local directory
def _dir_problems(m: DictConfig) -> list[str]:
    p = Path(m.path)
    if not p.is_dir():
        return [f"model.path={m.path}: directory does not exist"]
    if not (p / "config.json").is_file():
        return [f"model.path={m.path}: no config.json (not a transformers model directory)"]
    return []


# ------------------------------------------------------------------ GGUF
def _pip_name(module: str) -> str:
    return module.replace("_", "-")


def _gguf_library_problem() -> list[str]:
    if importlib.util.find_spec("gguf") is None:
        return ["model.gguf: reading a GGUF needs the `gguf` package: pip install -e \".[gemma]\" "
                "(or pip install gguf)"]
    return []


def _is_hub_spec(spec: str) -> bool:
    """`owner/name:file` (a hub repository's GGUF), not a local path."""
    return ":" in spec and not Path(spec).exists() and spec.split(":", 1)[0].count("/") == 1


def gguf_header_problems(path: Path, key: str) -> list[str]:
    """A readable GGUF of an architecture transformers dequantizes (header and tensor table
    only: the file is memory-mapped, nothing is loaded)."""
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        arch = bytes(field.parts[field.data[0]]).decode()
    except KeyError:
        return [f"{key}={path}: the GGUF header names no general.architecture"]
    except Exception as e:  # noqa: BLE001 - truncated, not a GGUF, bad offsets: gguf's many errors
        return [f"{key}={path}: not a readable GGUF file ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:100] if str(e) else 'truncated or corrupt'})"]
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        allowed = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
        return [f"{key}={path}: architecture {arch!r} cannot be read by transformers "
                f"(it reads: {allowed})"]
    return []


def _sha_problems(path: Path, key: str, expected: str | None) -> list[str]:
    if expected and sha256_file(path) != str(expected).lower():
        return [f"{key}={path}: sha256 {sha256_file(path)[:16]}… does not match "
                f"model.gguf_sha256={str(expected)[:16]}…"]
    return []


def _gguf_file(m: DictConfig) -> Path:
    """The local GGUF file of `model.gguf` (downloaded first for `owner/name:file`)."""
    spec = str(m.gguf)
    if _is_hub_spec(spec):
        from huggingface_hub import hf_hub_download

        repo, name = spec.split(":", 1)
        try:
            return Path(hf_hub_download(repo, name, revision=m.get("revision")))
        except Exception as e:  # noqa: BLE001 - offline, no such repo or file
            raise ConfigError(f"model.gguf={spec}: cannot download it from the hub "
                              f"({type(e).__name__})") from None
    return Path(spec)


def _gguf_problems(m: DictConfig) -> list[str]:
    lib = _gguf_library_problem()
    if lib or _is_hub_spec(str(m.gguf)):  # a hub file is checked after its download
        return lib
    path = Path(str(m.gguf))
    if not path.is_file():
        return [f"model.gguf={path}: file does not exist (a local .gguf, or owner/name:file "
                "on the hub)"]
    return gguf_header_problems(path, "model.gguf") or _sha_problems(
        path, "model.gguf", m.get("gguf_sha256"))


def _package_problems(m: DictConfig) -> list[str]:
    pkg = str(m.gguf_package)
    if importlib.util.find_spec(pkg) is None:
        return [f"model.gguf_package={pkg} is not installed: pip install -e \".[gemma]\" "
                f"(or pip install {_pip_name(pkg)})"]
    lib = _gguf_library_problem()
    if lib:
        return lib
    try:
        path = _package_file(m)
    except ConfigError as e:
        return [str(e)]
    except Exception as e:  # noqa: BLE001 - the package's own check (missing chunk, sha256)
        return [f"model.gguf_package={pkg}: cannot assemble its GGUF ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:120]})"]
    return gguf_header_problems(path, "model.gguf_package") or _sha_problems(
        path, "model.gguf_package", m.get("gguf_sha256"))


def _package_file(m: DictConfig) -> Path:
    """The package's GGUF, assembled into the cache once (into a temp file, then renamed:
    the jobs of a sweep may ask at the same time) and checked against the package's sha256."""
    mod = importlib.import_module(str(m.gguf_package))
    name = getattr(mod, "MODEL_NAME", f"{m.gguf_package}.gguf")
    final = Path(m.get("cache_dir") or DEFAULT_CACHE) / "gguf" / name
    if not final.is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{name}.{os.getpid()}.tmp")
        try:
            mod.assemble(tmp, overwrite=True)  # checks the package's own sha256
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    expected = getattr(mod, "EXPECTED_SHA256", None)
    if expected and sha256_file(final) != expected:
        raise ConfigError(f"model.gguf_package={m.gguf_package}: {final} has sha256 "
                          f"{sha256_file(final)[:16]}…, the package ships {expected[:16]}… "
                          "(delete it to assemble it again)")
    return final


def dequantized_dir(gguf: Path, cache_dir: str | Path, origin: str) -> Path:
    """The plain transformers checkpoint of a GGUF (float32, the dequantized values),
    converted on first use; the directory name and `langsub_source.json` hold its sha256."""
    sha = sha256_file(gguf)
    out = Path(cache_dir) / f"gguf-{sha[:16]}"
    if (out / SOURCE_FILE).is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[langsub] dequantizing {gguf.name} (sha256 {sha[:12]}…) into {out} (once)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        # dequantized: a plain checkpoint from here on (transformers refuses to save a model
        # that still names its GGUF quantizer)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / SOURCE_FILE).write_text(json.dumps(
            {"gguf": gguf.name, "sha256": sha, "origin": origin, "dtype": "float32"}, indent=1))
        try:
            os.replace(tmp, out)
        except OSError:  # another process finished first: keep its copy
            if not (out / SOURCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _gguf_resolve(m: DictConfig) -> str:
    path = _gguf_file(m)
    problems = gguf_header_problems(path, "model.gguf") + _sha_problems(
        path, "model.gguf", m.get("gguf_sha256"))
    if problems:
        raise ConfigError("\n".join(problems))
    return str(dequantized_dir(path, m.get("cache_dir") or DEFAULT_CACHE, str(m.gguf)))


def _package_resolve(m: DictConfig) -> str:
    return str(dequantized_dir(_package_file(m), m.get("cache_dir") or DEFAULT_CACHE,
                               f"package:{m.gguf_package}"))


# ------------------------------------------------------------------ hub id
def _hub_problems(m: DictConfig) -> list[str]:
    if m.get("hub_id") is None and m.get("arch") is None:
        return ["model.path, model.gguf, model.gguf_package and model.hub_id are all null: set one"]
    return []


# ------------------------------------------------------------------ random weights
def _random_problems(m: DictConfig) -> list[str]:
    """`model.random_init=true`: a real model's shapes (`arch`) with seeded random weights,
    for speed and memory (profile.py, GPU checks) without downloading anything."""
    out = [] if m.get("arch") and m.arch.get("model_type") else \
        ["model.random_init=true needs model.arch with a model_type (the shapes to build)"]
    if not m.get("tokenizer") or not Path(m.tokenizer).is_dir():
        out.append(f"model.tokenizer={m.get('tokenizer')}: model.random_init=true needs a local "
                   "tokenizer directory whose ids fit arch.vocab_size")
    return out


SOURCES = (
    Source("path", _dir_problems, lambda m: str(m.path)),
    Source("gguf", _gguf_problems, _gguf_resolve),
    Source("gguf_package", _package_problems, _package_resolve),
    Source("random_init", _random_problems, lambda m: str(m.tokenizer)),  # what it tokenizes with
    Source("hub_id", _hub_problems, lambda m: m.hub_id),
)


def source_of(m: DictConfig) -> Source:
    """The source a model config names (the first key set; hub_id when none is)."""
    return next((s for s in SOURCES[:-1] if m.get(s.key)), SOURCES[-1])


def config_problems(cfg: DictConfig) -> list[str]:
    """The model's source keys (`model.*`), checked before anything loads."""
    return source_problems(cfg.model)


def source_problems(m: DictConfig) -> list[str]:
    """One line per problem of the model's source keys (no weights load; a GGUF's header is
    read and a package's GGUF assembled)."""
    set_keys = [s.key for s in SOURCES[:-1] if m.get(s.key)]
    if len(set_keys) > 1:
        return [f"model.{' and model.'.join(set_keys)} are {'both' if len(set_keys) == 2 else 'all'} set: set one "
                "(a directory, a GGUF file or a GGUF package)"]
    return source_of(m).problems(m)


def resolve(m: DictConfig) -> str:
    """What `from_pretrained` reads for this model: a local directory or a hub id."""
    return source_of(m).resolve(m)


def local_dir(m: DictConfig) -> Path | None:
    """The model's local directory (a dequantized GGUF's too), or None for a hub id or
    random weights."""
    if source_of(m).key in ("hub_id", "random_init"):
        return None
    return Path(resolve(m))


def gguf_path(m: DictConfig) -> Path | None:
    """The GGUF file a model config names (a package's assembled), or None."""
    key = source_of(m).key
    return _gguf_file(m) if key == "gguf" else _package_file(m) if key == "gguf_package" else None


def config(m: DictConfig):
    """The transformers config of a local source without converting anything: a GGUF not
    dequantized yet is read from its header (dry runs and config checks stay cheap)."""
    from transformers import AutoConfig

    gguf = gguf_path(m)
    if gguf is not None:
        done = Path(m.get("cache_dir") or DEFAULT_CACHE) / f"gguf-{sha256_file(gguf)[:16]}"
        if not (done / SOURCE_FILE).is_file():
            return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return AutoConfig.from_pretrained(resolve(m))


def describe(m: DictConfig) -> str:
    """The base model's name in metrics and delta headers: the directory, the GGUF (with its
    sha256) or the hub id (with its revision)."""
    key = source_of(m).key
    if key == "random_init":
        return f"random:{m.get('name')}"
    if key in ("gguf", "gguf_package"):
        origin = str(m.gguf) if key == "gguf" else f"package:{m.gguf_package}"
        return f"{origin}@sha256:{sha256_file(gguf_path(m))[:16]}"
    name = str(m.get("path") or m.get("hub_id"))
    return name + (f"@{m.revision}" if key == "hub_id" and m.get("revision") else "")


def cfg_for(spec: str) -> DictConfig:
    """A model config for a command-line `--base`: a directory, a .gguf file, or a hub id."""
    from omegaconf import OmegaConf

    if spec.endswith(".gguf") or _is_hub_spec(spec):
        return OmegaConf.create({"gguf": spec})
    if Path(spec).is_dir():
        return OmegaConf.create({"path": spec})
    return OmegaConf.create({"hub_id": spec})

