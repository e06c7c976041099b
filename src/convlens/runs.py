"""Run directories: what a training run leaves on disk, and reading it back safely.

    runs/NAME/
      config.json       the TrainConfig, plus what was resolved and recorded: spec, recipe settings,
                        device and sizes, library versions, git revision, command, date
      model.json        spec, input shape, classes: what a loader needs beside the weights
      model.safetensors the weights (never a pickle)
      metrics.jsonl     one JSON line per epoch
      results.json      test loss and accuracy, timings, how training ended
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from .config import RECORDED, TrainConfig
from .errors import RunError, SpecError
from .files import check_state, read_json, read_safetensors, write_atomic
from .models import ConvNet, build_model

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_SIDE, MAX_CHANNELS = 4096, 64   # far above any image convlens trains on; bounds what a model.json can ask
PREPROCESSING = "uint8 pixels / 255, shape (N, C, H, W)"


def check_name(name: str) -> str:
    """A run name is one path component of letters, digits, '.', '_' and '-' (no '..', no '/')."""
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise RunError(f"bad run name {name!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    return name


def new_run_dir(runs_dir: str | os.PathLike, name: str | None, model: str) -> Path:
    """Create runs_dir/NAME (generated from the model and time when not given); RunError if it exists."""
    root = Path(runs_dir)
    if name is None:
        stem = check_name(model) if _NAME.fullmatch(model) and len(model) <= 40 else "custom"
        name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        for n in range(2, 100):
            if not (root / name).exists():
                break
            name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    path = root / check_name(name)
    try:
        root.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except FileExistsError:
        raise RunError(f"run {path} already exists; pick another --name") from None
    except OSError as e:
        raise RunError(f"cannot create run directory {path}: {e.strerror or e}") from None
    return path


def save_weights(path: Path, model: ConvNet) -> None:
    """model.safetensors, with the spec in its metadata so the file explains itself."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {"spec": model.spec, "input_shape": json.dumps(list(model.input_shape)),
            "num_classes": str(model.num_classes), "format": "convlens-1"}
    write_atomic(path, st_save(state, metadata=meta))


def load_weights(path: Path, model: ConvNet) -> ConvNet:
    """Fill `model` from a safetensors file, refusing pickles and checking every name, dtype and shape."""
    state, _ = read_safetensors(path)
    check_state(path, state, model.state_dict(), f"the model {model.spec!r}")
    model.load_state_dict(state)
    return model


@dataclass(frozen=True)
class ModelInfo:
    """model.json: what it takes to rebuild the network and feed it."""
    spec: str
    input_shape: tuple[int, int, int]      # (channels, height, width)
    classes: tuple[str, ...]
    dataset: str = ""                      # what it was trained on
    image_rule: str = "object"             # how a user's image is prepared (images.prepare_image)
    preprocessing: str = PREPROCESSING

    @classmethod
    def from_json(cls, path: Path, info: dict) -> "ModelInfo":
        """model.json has a spec string, a (C, H, W) input shape within bounds and a list of class names."""
        shape, classes = info.get("input_shape"), info.get("classes")
        if not isinstance(info.get("spec"), str):
            raise RunError(f"{path}: malformed: no model spec")
        if not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int for v in shape)
                and 1 <= shape[0] <= MAX_CHANNELS and all(1 <= v <= MAX_SIDE for v in shape[1:])):
            raise RunError(f"{path}: malformed input_shape {str(shape)[:40]} (expected [channels, height, width])")
        if not (isinstance(classes, list) and len(classes) >= 1 and all(isinstance(c, str) for c in classes)):
            raise RunError(f"{path}: malformed: classes must be a list of names")
        rule = info.get("image_rule", "object")
        if rule not in ("object", "folder"):
            raise RunError(f"{path}: malformed image_rule {str(rule)[:40]!r} (expected object or folder)")
        return cls(info["spec"], tuple(shape), tuple(classes), str(info.get("dataset", "")), rule,
                   str(info.get("preprocessing", PREPROCESSING)))

    def to_json(self) -> dict:
        return {**asdict(self), "input_shape": list(self.input_shape), "classes": list(self.classes)}


@dataclass
class Run:
    """A finished (or interrupted) run read back from its directory."""
    path: Path
    config: TrainConfig
    record: dict            # what config.json holds beside the settings (config.RECORDED): resolved, versions, …
    model_info: ModelInfo
    metrics: list[dict]
    results: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def classes(self) -> list[str]:
        return list(self.model_info.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.model_info.input_shape

    @property
    def image_rule(self) -> str:
        """How a user's image is prepared for this model (images.prepare_image): "object" or "folder"."""
        return self.model_info.image_rule

    def load_model(self, device: str | torch.device = "cpu") -> ConvNet:
        """The trained network, in eval mode, on `device`."""
        info = self.model_info
        try:
            model = build_model(info.spec, info.input_shape, len(info.classes))
        except SpecError as e:
            raise RunError(f"{self.path / 'model.json'}: {e}") from None
        load_weights(self.path / "model.safetensors", model)
        return model.to(device).eval()


def resolve_run(run: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Path:
    """A run given as a path, or as a name under runs_dir."""
    p = Path(run)
    if len(p.parts) == 1 and _NAME.fullmatch(str(run)) and (Path(runs_dir) / p).is_dir():
        return Path(runs_dir) / p       # a run's name wins over a folder of that name here (its data, say)
    if p.is_dir():
        return p
    raise RunError(f"no run {str(run)!r} (looked for a directory {p} and {Path(runs_dir) / p.name}); "
                   "`ls runs/` shows the runs")


def read_metrics(path: Path) -> list[dict]:
    """metrics.jsonl: one JSON object per line (none yet: an empty list)."""
    if not path.exists():
        return []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not readable ({e})") from None
    metrics = []
    for n, line in enumerate(lines, start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise RunError(f"{path}: line {n} is not JSON") from None
            if not isinstance(record, dict):
                raise RunError(f"{path}: line {n} is not a JSON object")
            metrics.append(record)
    return metrics


def open_run(run: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Run:
    """Read a run directory (by path or name under runs_dir); RunError if it is missing or damaged."""
    path = resolve_run(run, runs_dir)
    saved = read_json(path / "config.json")
    config = TrainConfig.from_json(saved, str(path / "config.json"))
    model_info = ModelInfo.from_json(path / "model.json", read_json(path / "model.json"))
    results = read_json(path / "results.json") if (path / "results.json").exists() else {}
    return Run(path, config, {k: saved[k] for k in RECORDED if k in saved}, model_info,
               read_metrics(path / "metrics.jsonl"), results)
