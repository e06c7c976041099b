"""A Keras model file, read as data: nothing in it is executed or unpickled.

    MODEL.keras        Keras 3: a zip of config.json (the layers, as JSON) and model.weights.h5
    MODEL.h5           the legacy format: an HDF5 file with the config in its `model_config` attribute
    MODEL.weights.h5   Keras 3 weights only (the layers must come from a convlens spec)

The zip and the JSON are read with the standard library, HDF5 with h5py, and every size is checked
before anything is read: a member over its cap (a zip bomb), a damaged archive, a file that is not
HDF5, JSON nested too deep: one DataError naming the file. What the layers mean is kerasimport.py's.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from .errors import DataError
from .reading import read_regular

MAX_FILE_BYTES = 4 << 30          # a .keras of the largest model convlens builds (1 G parameters in fp32)
MAX_CONFIG_BYTES = 16 << 20       # a model's config.json; the seed's is 6 KB
HDF5_MAGIC, ZIP_MAGIC = b"\x89HDF\r\n\x1a\n", b"PK\x03\x04"
FLOATS = ("float16", "float32", "float64")


@dataclass
class KerasLayer:
    class_name: str
    name: str
    config: dict
    custom: bool = False                             # registered by user code (a custom object): never imported
    weights: list = field(default_factory=list)     # h5py datasets (read later, once their shapes are checked)


@dataclass
class KerasFile:
    path: Path
    format: str                      # "keras", "h5" or "weights.h5"
    layers: list[KerasLayer]         # in order, the input layer first where the file has one
    keras_version: str
    handle: h5py.File                # keeps the weights open while they are converted
    sha256: str = ""                 # of the file as read

    def close(self) -> None:
        self.handle.close()


def _json(data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataError(f"{what}: not readable JSON ({str(e).splitlines()[0][:100] if str(e) else 'nested too deep'})"
                        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{what}: expected a JSON object")
    return obj


def _member(zf: zipfile.ZipFile, name: str, cap: int, path: Path) -> bytes:
    """A zip member's bytes: its stated size checked before reading, never more than that read."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise DataError(f"{path}: not a Keras model: the archive has no {name}") from None
    if info.file_size > cap or info.flag_bits & 0x1:
        raise DataError(f"{path}: {name} is {info.file_size:,} bytes (at most {cap:,} here) or encrypted; refused")
    with zf.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise DataError(f"{path}: {name} is not the size the archive says; damaged")
    return data


def _open_h5(data: bytes, what: str) -> h5py.File:
    if not data.startswith(HDF5_MAGIC):
        raise DataError(f"{what}: not an HDF5 file")
    try:
        return h5py.File(io.BytesIO(data), "r")
    except (OSError, ValueError) as e:
        raise DataError(f"{what}: damaged HDF5 file ({str(e).splitlines()[0][:100]})") from None


def read_keras(path: str | Path) -> KerasFile:
    """Read a .keras, legacy .h5 or Keras 3 .weights.h5 file as data; DataError for anything else."""
    path = Path(path)
    data = read_regular(path, MAX_FILE_BYTES, DataError, "a Keras model file")
    try:
        if data.startswith(ZIP_MAGIC):
            kf = _read_zip(path, data)
        elif data.startswith(HDF5_MAGIC):
            kf = _read_h5(path, data)
        else:
            kf = None
        if kf is not None:
            kf.sha256 = hashlib.sha256(data).hexdigest()
            return kf
    except (KeyError, TypeError, ValueError, AttributeError, OSError, zipfile.BadZipFile, RuntimeError) as e:
        raise DataError(f"{path}: damaged or not a Keras file ({type(e).__name__}: {str(e)[:100]})") from None
    raise DataError(f"{path}: not a Keras model file (a .keras zip or an HDF5 .h5)")


def _read_zip(path: Path, data: bytes) -> KerasFile:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        config = _json(_member(zf, "config.json", MAX_CONFIG_BYTES, path), f"{path}: config.json")
        meta = zf.namelist()
        version = _json(_member(zf, "metadata.json", 1 << 16, path), f"{path}: metadata.json").get(
            "keras_version", "?") if "metadata.json" in meta else "?"
        h5 = _open_h5(_member(zf, "model.weights.h5", MAX_FILE_BYTES, path), f"{path}: model.weights.h5")
    layers = model_layers(config, path)
    seen: dict[str, int] = {}
    for layer in layers:           # Keras 3 files key a layer by its class and ordinal in the model, not its name
        stem = snake_case(layer.class_name)
        key = stem + (f"_{seen[stem]}" if seen.get(stem) else "")
        seen[stem] = seen.get(stem, 0) + 1
        layer.weights = _keras3_vars(h5, key) or _keras3_vars(h5, layer.name)
    return KerasFile(path, "keras", layers, str(version), h5)


def snake_case(class_name: str) -> str:
    """Conv2D -> conv2d, BatchNormalization -> batch_normalization: how Keras names a layer by its class."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", class_name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _read_h5(path: Path, data: bytes) -> KerasFile:
    h5 = _open_h5(data, str(path))
    if "model_config" not in h5.attrs:
        if "layers" in h5:
            return KerasFile(path, "weights.h5", [], "?", h5)
        h5.close()
        raise DataError(f"{path}: an HDF5 file, but not a Keras model (no model_config, no layers)")
    raw = h5.attrs["model_config"]
    config = _json(raw if isinstance(raw, bytes) else str(raw).encode(), f"{path}: model_config")
    layers = model_layers(config, path)
    weights = h5.get("model_weights", h5)
    for layer in layers:
        layer.weights = _legacy_vars(weights, layer.name)
    version = h5.attrs.get("keras_version", "?")
    return KerasFile(path, "h5", layers, version.decode() if isinstance(version, bytes) else str(version), h5)


def _keras3_vars(h5: h5py.File, name: str) -> list:
    """A layer's weights in a Keras 3 file (layers/NAME/vars/0, 1, …), in order."""
    group = h5.get(f"layers/{name}/vars")
    if group is None:
        return []
    return [_dataset(group[k], f"layers/{name}/vars/{k}") for k in sorted(group, key=int)]


def _legacy_vars(h5: h5py.Group, name: str) -> list:
    """A layer's weights in a legacy .h5 (its group's weight_names attribute lists them, in order)."""
    if name not in h5:
        return []
    group = h5[name]
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs.get("weight_names", [])]
    return [_dataset(group[n], n) for n in names]


def _dataset(obj, where: str):
    if not isinstance(obj, h5py.Dataset) or obj.dtype.name not in FLOATS:
        raise DataError(f"weights {where}: not an array of floats")
    return obj


def weights_only_layers(h5: h5py.File) -> list[tuple[str, list]]:
    """A Keras 3 .weights.h5's layers that hold weights: (layer name, datasets), in the order Keras
    named them (conv2d, conv2d_1, …; dense, dense_1, …): what a convlens spec's layers are matched to."""
    def order(name: str) -> tuple[str, int]:
        stem, _, n = name.rpartition("_")
        return (stem, int(n)) if n.isdigit() and stem else (name, 0)
    names = sorted((n for n in h5.get("layers", {}) if _keras3_vars(h5, n)), key=order)
    return [(n, _keras3_vars(h5, n)) for n in names]


# ---------------------------------------------------------------------------
# The layer list of a model config: Sequential, or a Functional model that is one chain

def model_layers(config: dict, path: Path) -> list[KerasLayer]:
    """The layers of a Sequential model, or of a Functional one whose layers form a single chain."""
    kind, body = config.get("class_name"), config.get("config") or {}
    raw = body.get("layers") if isinstance(body, dict) else None
    if kind not in ("Sequential", "Functional", "Model") or not isinstance(raw, list) or not raw:
        raise DataError(f"{path}: a Keras {kind or 'object'} with no layer list; convlens imports Sequential "
                        "models and Functional models whose layers form one chain")
    layers = []
    for entry in raw:
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise DataError(f"{path}: malformed layer entry in the model config")
        cfg = entry["config"]
        custom = entry.get("registered_name") is not None or not str(entry.get("module", "keras")).startswith("keras")
        layers.append(KerasLayer(str(entry.get("class_name")), str(cfg.get("name", entry.get("name", "?"))), cfg,
                                 custom))
        if kind != "Sequential":
            _check_chain(entry, layers, path)
    return layers


def _check_chain(entry: dict, layers: list[KerasLayer], path: Path) -> None:
    """In a Functional model, each layer must take the one before it as its only input."""
    sources = _histories(entry.get("inbound_nodes") or [])
    before = layers[-2].name if len(layers) > 1 else None
    if sources != ([before] if before else []):
        raise DataError(f"{path}: layer {layers[-1].name!r} takes {sources or 'no input'}; convlens imports models "
                        "whose layers form one chain, each feeding the next")


def _histories(nodes) -> list[str]:
    """The names of the layers feeding a layer, from Keras 3's keras_history or Keras 2's nested lists."""
    found = []

    def walk(x):
        if isinstance(x, dict):
            if "keras_history" in x.get("config", {}):
                found.append(str(x["config"]["keras_history"][0]))
            else:
                for v in x.values():
                    walk(v)
        elif isinstance(x, list):
            if len(x) >= 3 and isinstance(x[0], str) and isinstance(x[1], int):   # Keras 2: [name, node, tensor, …]
                found.append(x[0])
            else:
                for v in x:
                    walk(v)
    walk(nodes)
    return found
