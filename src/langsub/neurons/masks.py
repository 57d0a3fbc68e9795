"""Neuron masks on disk: the released LAPE .pth (a list over languages), the project's JSON,
and the original code's per-language activation files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from langsub.errors import MaskError
from langsub.io import atomic_write_text
from langsub.neurons.lape import Mask


def _to_mask(layers, where: str) -> Mask:
    """Convert one language's per-layer index lists/tensors to sorted unique int64 tensors."""
    if not isinstance(layers, (list, tuple)):
        raise MaskError(f"{where}: expected a list over layers, got {type(layers).__name__}")
    out = []
    for l, idx in enumerate(layers):
        if isinstance(idx, torch.Tensor):
            if idx.dim() > 1 or idx.is_floating_point() or idx.dtype == torch.bool:
                raise MaskError(f"{where} layer {l}: expected a 1-D integer tensor, got "
                                 f"{idx.dtype} {tuple(idx.shape)}")
            idx = idx.view(-1).long()
        elif isinstance(idx, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            idx = torch.tensor(idx, dtype=torch.long)
        else:
            raise MaskError(f"{where} layer {l}: expected a list of ints, got {idx!r:.80}")
        if idx.numel() and idx.min() < 0:
            raise MaskError(f"{where} layer {l}: negative neuron index {idx.min().item()}")
        out.append(torch.unique(idx, sorted=True))
    return out


def _read_raw(path: Path):
    """Parsed file content: JSON (if it starts with '{') or a weights_only torch.load."""
    try:
        data = path.read_bytes()
        if data.lstrip()[:1] == b"{":
            return json.loads(data.decode("utf-8"))
        return torch.load(path, weights_only=True)
    except Exception as exc:  # any failure here means an unusable file
        raise MaskError(f"cannot read neuron mask {path}: {type(exc).__name__}: {exc}") from exc


def _from_json(data: dict, path: Path, langs) -> dict[str, Mask]:
    """Masks from {"langs": {lang: layers}, ...} or {lang: layers}, filtered to `langs`."""
    table = data["langs"] if isinstance(data.get("langs"), dict) else data
    if langs is None:
        langs = list(table)
    missing = [lang for lang in langs if lang not in table]
    if missing:
        raise MaskError(f"{path} has no mask for languages {missing} (has: {sorted(table)})")
    return {lang: _to_mask(table[lang], f"{path} language {lang!r}") for lang in langs}


def _from_released(data, path: Path, langs) -> dict[str, Mask]:
    """Masks from the released LAPE list-over-languages format, named by `langs`."""
    if not isinstance(data, (list, tuple)):
        raise MaskError(f"cannot read neuron mask {path}: expected a list over languages, "
                         f"got {type(data).__name__}")
    if langs is None:
        langs = [str(k) for k in range(len(data))]
    if len(langs) != len(data):
        raise MaskError(
            f"{path} has {len(data)} languages but method.neurons_langs lists {len(langs)}: {list(langs)}"
        )
    return {lang: _to_mask(entry, f"{path} language {lang!r}") for lang, entry in zip(langs, data)}


def _check_model_shape(masks: dict[str, Mask], path: Path, n_layers, n_neurons) -> None:
    """Layer count consistent (and equal to n_layers), indices below n_neurons."""
    found_layers = {len(m) for m in masks.values()}
    top = max((int(t.max()) for m in masks.values() for t in m if t.numel()), default=-1)
    n_found = sorted(found_layers)[0] if len(found_layers) == 1 else sorted(found_layers)
    found = f"{n_found} layers, max neuron index {top}"
    model = "model has " + " x ".join(
        f"{v} {name}" for v, name in ((n_layers, "layers"), (n_neurons, "neurons")) if v is not None
    )
    if len(found_layers) > 1:
        raise MaskError(f"{path}: languages disagree on the number of layers: {found}")
    if n_layers is not None and found_layers and found_layers != {n_layers}:
        raise MaskError(f"{path} does not fit the model: mask has {found}; {model}")
    if n_neurons is not None and top >= n_neurons:
        raise MaskError(f"{path} does not fit the model: mask has {found}; {model}")


def load_neurons(
    path,
    langs: Sequence[str] | None = None,
    n_layers: int | None = None,
    n_neurons: int | None = None,
) -> dict[str, Mask]:
    """Read a neuron mask: released LAPE .pth (list over languages) or the project's JSON.

    `langs` names the .pth entries in file order (count must match) or picks JSON languages.
    With n_layers / n_neurons the mask is checked against the model shape.
    """
    path = Path(path)
    if langs is not None:
        langs = list(langs)
        if len(set(langs)) != len(langs):
            raise MaskError(f"langs has duplicates: {langs}")
    data = _read_raw(path)
    if isinstance(data, dict):
        masks = _from_json(data, path, langs)
    else:
        masks = _from_released(data, path, langs)
    _check_model_shape(masks, path, n_layers, n_neurons)
    return masks


def neurons_to_json(neurons: dict[str, Mask]) -> dict:
    """{lang: [[indices of layer 0], [layer 1], ...]} with plain ints, for json.dump."""
    return {lang: [[int(i) for i in t.view(-1).tolist()] for t in layers] for lang, layers in neurons.items()}


def load_activation_stats(paths: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the original activation.py outputs ({"n": int, "over_zero": [L,N]}), one per language.

    Returns over_zero int64 [L,N,K] and n_tokens int64 [K], in the order of `paths`.
    """
    if not paths:
        raise MaskError("load_activation_stats needs at least one file")
    counts, totals = [], []
    for p in paths:
        try:
            data = torch.load(p, weights_only=True)
            n, oz = int(data["n"]), torch.as_tensor(data["over_zero"])
        except Exception as exc:
            raise MaskError(f"cannot read activation stats {p}: {type(exc).__name__}: {exc}") from exc
        if oz.dim() != 2 or (counts and oz.shape != counts[0].shape):
            want = "2-D [layers, neurons]" if not counts else f"shape {tuple(counts[0].shape)}"
            raise MaskError(f"activation stats {p}: over_zero has shape {tuple(oz.shape)}, expected {want}")
        counts.append(oz.long())
        totals.append(n)
    return torch.stack(counts, dim=-1), torch.tensor(totals, dtype=torch.long)


def write_neurons_json(path: Path, masks: dict, target: str, trained: list, meta: dict) -> None:
    out = {target: neurons_to_json({target: trained})[target],
           "counts": {l: int(sum(len(t) for t in m)) for l, m in masks.items()},
           "langs": neurons_to_json(masks), "meta": meta}
    atomic_write_text(path, json.dumps(out))
