"""Run directories: what a training run leaves on disk, written atomically, read back safely.

    runs/NAME/
      config.json       everything needed to rerun it, library versions, git revision
      model.json        spec, input shape, classes: what a loader needs beside the weights
      model.safetensors the weights (never a pickle)
      metrics.jsonl     one JSON line per epoch
      results.json      test loss and accuracy, timings, how training ended
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import DataError, RunError, SpecError
from .models import ConvNet, build_model

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UMASK = os.umask(0o022)
os.umask(_UMASK)
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")   # pickle protocol 2+ / torch.save's zip archive


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable: without this a power cut can forget it (ext4, XFS)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_as(path: Path, previous: Path) -> None:
    """Make `previous` hold what `path` holds, with `path` never missing meanwhile: a hard link
    renamed into place (file systems without hard links: a plain rename, briefly leaving no `path`)."""
    link = previous.with_name(f".{previous.name}.{os.getpid()}.link.tmp")
    try:
        if os.path.lexists(link):
            os.unlink(link)
        os.link(path, link)
    except OSError:
        os.replace(path, previous)
        return
    try:
        os.replace(link, previous)
    except OSError:
        os.unlink(link)
        raise


def write_atomic(path: Path, data: bytes, keep_previous: Path | None = None) -> None:
    """Write bytes so that `path` is either the old file or the whole new one, never a torn mix.

    A temporary file in the same folder is written, flushed and fsynced, then renamed over
    `path`, and the folder is fsynced. keep_previous: the file `path` held is moved there
    first, once the new bytes are safely on disk. Any failure (disk full, read-only folder)
    leaves every existing file as it was and raises RunError naming the file.
    """
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)      # mkstemp makes 0600; a run is as readable as any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            _keep_as(path, keep_previous)
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


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


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; RunError for a pickle or anything malformed.

    A pickle (torch.save, .pt, .pth) is recognised by its first bytes and refused before
    any parser sees it: unpickling runs whatever code the file names.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: no such file") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read: {e.strerror or e}") from None
    if data.startswith(PICKLE_MAGIC):
        raise RunError(f"{path}: this is a pickle (torch.save/.pt/.pth), which can run code when loaded; "
                       "convlens loads only safetensors")
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, RuntimeError, OverflowError, TypeError, MemoryError,
            AttributeError) as e:
        raise RunError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    return tensors, metadata


def check_state(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """RunError unless `state` has exactly the names, dtypes and shapes of `expected`, all finite."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise RunError(f"{path}: weights do not match {what}"
                       + (f"; missing {', '.join(missing[:3])}" if missing else "")
                       + (f"; unexpected {', '.join(extra[:3])}" if extra else ""))
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise RunError(f"{path}: {key} is {got.dtype} {tuple(got.shape)}, {what} needs "
                           f"{want.dtype} {tuple(want.shape)}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise RunError(f"{path}: {key} holds NaN or infinite values")


def load_weights(path: Path, model: ConvNet) -> ConvNet:
    """Fill `model` from a safetensors file, refusing pickles and checking every name, dtype and shape."""
    state, _ = read_safetensors(path)
    check_state(path, state, model.state_dict(), f"the model {model.spec!r}")
    model.load_state_dict(state)
    return model


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: no such file (an incomplete run?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object")
    return obj


@dataclass
class Run:
    """A finished (or interrupted) run read back from its directory."""
    path: Path
    config: dict
    model_info: dict
    metrics: list[dict]
    results: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def classes(self) -> list[str]:
        return list(self.model_info["classes"])

    @property
    def image_rule(self) -> str:
        """How a user's image is prepared for this model (images.prepare_image): "object" or "folder"."""
        return self.model_info.get("image_rule", "object")

    def data_options(self, dataset: str | None = None) -> dict:
        """load_dataset's image-folder options that give `dataset` (default the run's) the size and
        channels this model takes."""
        if not (dataset or self.config.get("dataset", "fashion-mnist")).startswith("folder:"):
            return {}
        c, h, w = self.model_info["input_shape"]
        return {"image_size": (h, w), "channels": c, "stream": bool(self.config.get("stream")) and not dataset}

    def dataset(self, data_dir: str | os.PathLike | None = None):
        """The run's dataset, all training images and the test split (for evaluating and inspecting).

        An image folder's run reads the files its files.json lists, streamed: nothing is listed or
        decoded again until an image is asked for (a 100,000-image folder takes a minute to list).
        """
        from .data import Dataset, load_dataset
        name, listed = self.config.get("dataset", "fashion-mnist"), self.path / "files.json"
        if name.startswith("folder:") and listed.is_file():
            from .folders import from_files
            c, h, w = self.model_info["input_shape"]
            try:
                train_x, train_y, test_x, test_y = from_files(Path(name.removeprefix("folder:")).expanduser(),
                                                              read_json(listed), (h, w), c, len(self.classes))
            except DataError as e:
                raise RunError(f"{listed}: {e}") from None
            return Dataset(name, tuple(self.classes), train_x, train_y, train_x.subset([]), train_y[:0],
                           test_x, test_y)
        return load_dataset(self.config.get("dataset", "fashion-mnist"), data_dir or self.config.get("data_dir"),
                            val_split=0.0, **self.data_options())

    def load_model(self, device: str | torch.device = "cpu") -> ConvNet:
        """The trained network, in eval mode, on `device`."""
        info = self.model_info
        try:
            model = build_model(info["spec"], tuple(info["input_shape"]), len(info["classes"]))
        except SpecError as e:
            raise RunError(f"{self.path / 'model.json'}: {e}") from None
        load_weights(self.path / "model.safetensors", model)
        return model.to(device).eval()


MAX_SIDE, MAX_CHANNELS = 4096, 64   # far above any image convlens trains on; bounds what a model.json can ask


def check_model_info(path: Path, info: dict) -> dict:
    """model.json has a spec string, a (C, H, W) input shape within bounds and a list of class names."""
    shape, classes = info.get("input_shape"), info.get("classes")
    if not isinstance(info.get("spec"), str):
        raise RunError(f"{path}: malformed: no model spec")
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int for v in shape)
            and 1 <= shape[0] <= MAX_CHANNELS and all(1 <= v <= MAX_SIDE for v in shape[1:])):
        raise RunError(f"{path}: malformed input_shape {str(shape)[:40]} (expected [channels, height, width])")
    if not (isinstance(classes, list) and len(classes) >= 1 and all(isinstance(c, str) for c in classes)):
        raise RunError(f"{path}: malformed: classes must be a list of names")
    return info


def resolve_run(run: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Path:
    """A run given as a path, or as a name under runs_dir."""
    p = Path(run)
    if len(p.parts) == 1 and _NAME.fullmatch(str(run)) and (Path(runs_dir) / p).is_dir():
        return Path(runs_dir) / p       # a run's name wins over a folder of that name here (its data, say)
    if p.is_dir():
        return p
    raise RunError(f"no run {str(run)!r} (looked for a directory {p} and {Path(runs_dir) / p.name}); "
                   "`ls runs/` shows the runs")


def open_run(run: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Run:
    """Read a run directory (by path or name under runs_dir); RunError if it is missing or damaged."""
    path = resolve_run(run, runs_dir)
    config = read_json(path / "config.json")
    model_info = check_model_info(path / "model.json", read_json(path / "model.json"))
    results = read_json(path / "results.json") if (path / "results.json").exists() else {}
    metrics = []
    if (path / "metrics.jsonl").exists():
        try:
            lines = (path / "metrics.jsonl").read_text().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise RunError(f"{path / 'metrics.jsonl'}: not readable ({e})") from None
        for n, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise RunError(f"{path / 'metrics.jsonl'}: line {n} is not JSON") from None
                if not isinstance(record, dict):
                    raise RunError(f"{path / 'metrics.jsonl'}: line {n} is not a JSON object")
                metrics.append(record)
    return Run(path, config, model_info, metrics, results)
