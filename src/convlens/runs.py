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

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .config import RECORDED, TrainConfig
from .errors import RunError, SpecError
from .files import check_state, read_json, read_safetensors, save_safetensors, write_json
from .models import ConvNet, build_model
from .names import RUN_NAME, check_name, printable

MAX_SIDE, MAX_CHANNELS = 4096, 64   # far above any image convlens trains on; bounds what a model.json can ask
PREPROCESSING = "uint8 pixels / 255, shape (N, C, H, W)"


def new_run_dir(runs_dir: str | os.PathLike, name: str | None, model: str, dry_run: bool = False) -> Path:
    """Create runs_dir/NAME (generated from the model and time when not given); RunError if it exists.
    dry_run: only check that it could be made."""
    root = Path(runs_dir)
    if root.exists() and not root.is_dir():
        raise RunError(f"--runs-dir {root} is a file, not a folder")
    if name is None:
        stem = check_name(model) if RUN_NAME.fullmatch(model) and len(model) <= 40 else "custom"
        name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        for n in range(2, 100):
            if not (root / name).exists():
                break
            name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    path = root / check_name(name)
    if dry_run:
        if path.exists():
            raise RunError(f"run {path} already exists; {_way_out(path)}")
        return path
    try:
        root.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except FileExistsError:
        raise RunError(f"run {path} already exists; {_way_out(path)}") from None
    except OSError as e:
        raise RunError(f"cannot create run directory {path}: {e.strerror or e}") from None
    return path


def _way_out(path: Path) -> str:
    """What to do about an existing run folder of the name asked for."""
    if (path / "results.json").exists():
        return "pick another --name"
    if any(path.glob("checkpoint*.safetensors")):
        return f"`convlens train --resume {path}` goes on with it, or pick another --name"
    return f"it stopped before its first checkpoint, so nothing was trained: delete {path}, or pick another --name"


LOCK_FILE = ".lock"


class RunLock:
    """An exclusive OS lock (flock) on RUN/.lock, held by the process that trains, resumes, renames or
    deletes the run. The kernel releases it when that process ends, however it ends: a SIGKILL leaves
    no stale lock behind."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.fd = Path(run_dir), None

    def __enter__(self) -> "RunLock":
        try:
            fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(f"cannot lock run {self.run_dir}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunError(f"run {self.run_dir} is in use by another convlens process (pid {holder}), which is "
                           "still training it; wait for it to finish or stop it (Ctrl-C) first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)              # closing the descriptor releases the lock
            self.fd = None


def classes_digest(classes) -> str:
    """SHA-256 of the class names in order: model.json's classes must be the ones the weights learned."""
    return hashlib.sha256(json.dumps(list(classes)).encode()).hexdigest()


def save_weights(path: Path, model: ConvNet, classes=None) -> None:
    """model.safetensors, with the spec, input shape and classes in its metadata so the file explains
    itself and model.json can be checked against it (and the tensors' checksum, files.save_safetensors)."""
    meta = {"spec": model.spec, "input_shape": json.dumps(list(model.input_shape)),
            "num_classes": str(model.num_classes), "format": "convlens-1"}
    if classes is not None:
        meta["classes_sha256"] = classes_digest(classes)
    save_safetensors(path, model.state_dict(), meta)


def _check_against(path: Path, meta: dict, spec: str, input_shape, classes) -> None:
    """RunError when the weights' own metadata says they were written for another spec, shape or classes."""
    written = {"spec": meta.get("spec"), "input_shape": meta.get("input_shape"),
               "num_classes": meta.get("num_classes"), "classes_sha256": meta.get("classes_sha256")}
    now = {"spec": spec, "input_shape": json.dumps(list(input_shape)), "num_classes": str(len(classes)),
           "classes_sha256": classes_digest(classes)}
    changed = [k for k, v in written.items() if v is not None and v != now[k]]   # older files lack some keys
    if changed:
        raise RunError(f"{path.parent / 'model.json'} does not match {path.name}: its "
                       f"{' and '.join(k.replace('_sha256', '') for k in changed)} differ from those the weights "
                       f"were trained with (model.json edited or swapped?)")


def load_weights(path: Path, model: ConvNet, classes=None) -> ConvNet:
    """Fill `model` from a safetensors file, refusing pickles and damage, checking every name, dtype and shape
    and, given the run's classes, that the file was written for this spec, input shape and classes."""
    limit = 2 * sum(t.numel() * t.element_size() for t in model.state_dict().values()) + (1 << 20)
    state, meta = read_safetensors(path, limit)
    if classes is not None:
        _check_against(path, meta, model.spec, model.input_shape, classes)
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
        return cls(info["spec"], tuple(shape), tuple(map(printable, classes)), printable(str(info.get("dataset", ""))),
                   rule, str(info.get("preprocessing", PREPROCESSING)))

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

    @property
    def completed(self) -> bool:
        """Its results are written and training was not stopped before its last epoch."""
        return completed(self.results)

    @property
    def resumable(self) -> bool:
        """Stopped or killed before its last epoch, with a checkpoint to go on from (`train --resume`)."""
        return not self.completed and not self.record.get("imported") and any(self.path.glob("checkpoint*.safetensors"))

    @property
    def test_precision(self) -> str:
        """What the recorded test figures were computed in, "bf16" or "fp32": every face evaluates the test
        set in it, so the runs table, `evaluate`, the report and the explorer show one number. Runs from
        before it was recorded: the precision they trained in."""
        trained = self.record.get("resolved", {}).get("precision")
        return self.results.get("test_precision") or ("bf16" if trained == "bfloat16" else "fp32")

    def load_model(self, device: str | torch.device = "cpu") -> ConvNet:
        """The trained network, in eval mode, on `device`, channels_last as training leaves it (oneDNN runs
        it without reordering each batch: the seed's test set in half the time on a CPU)."""
        info = self.model_info
        try:
            model = build_model(info.spec, info.input_shape, len(info.classes))
        except SpecError as e:
            raise RunError(f"{self.path / 'model.json'}: {e}") from None
        load_weights(self.path / "model.safetensors", model, info.classes)
        return model.to(device).to(memory_format=torch.channels_last).eval()


def completed(results: dict) -> bool:
    """A run's results.json says it trained to its last epoch (an interrupted run writes one too)."""
    return bool(results) and not results.get("interrupted")


def completed_at(path: Path) -> bool:
    """The run folder at `path` holds a completed run's results (before a Run can be opened: a resume or a
    rung checks this first)."""
    return (path / "results.json").is_file() and completed(read_json(path / "results.json"))


def is_run(run: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> bool:
    """Whether `run` names a run folder (a path, or a name under runs_dir) rather than, say, a spec."""
    try:
        return (resolve_run(run, runs_dir) / "model.json").is_file()
    except RunError:
        return False


def resolve_run(run: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Path:
    """A run given as a path, or as a name under runs_dir."""
    p = Path(run)
    if len(p.parts) == 1 and RUN_NAME.fullmatch(str(run)) and (Path(runs_dir) / p).is_dir():
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


# The numbers the views compute with (curves, the comparison table): each must be one, or the run is damaged.
EPOCH_NEEDS, EPOCH_MAY = ("epoch", "loss", "accuracy"), ("val_loss", "val_accuracy", "lr", "time_s")
RESULTS_MAY = ("test_loss", "test_accuracy", "test_accuracy_tta", "val_accuracy_tta", "train_time_s", "wall_time_s",
               "epochs_run")


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)     # NaN is one: a diverged loss


def _not_a_number(record: dict, key: str) -> str:
    return f"{key} is missing" if key not in record else f"{key} is {str(record[key])[:40]!r}, not a number"


def check_numbers(run: Run) -> Run:
    """The run, or RunError naming the file and field where a number the views compute with (curves, the
    comparison table, the report) is not one."""
    for n, epoch in enumerate(run.metrics, start=1):
        bad = [k for k in EPOCH_NEEDS if not is_number(epoch.get(k))]
        bad += [k for k in EPOCH_MAY if k in epoch and not is_number(epoch[k])]
        if ("val_loss" in epoch) != ("val_accuracy" in epoch):          # the curves draw them together
            bad.append("val_accuracy" if "val_loss" in epoch else "val_loss")
        if bad:
            raise RunError(f"{run.path / 'metrics.jsonl'}: epoch record {n}: {_not_a_number(epoch, bad[0])} "
                           "(a damaged run)")
    results = run.results
    bad = [k for k in RESULTS_MAY if k in results and not is_number(results[k])]
    if results.get("best_epoch") is not None and not is_number(results["best_epoch"]):
        bad.append("best_epoch")
    if bad:
        raise RunError(f"{run.path / 'results.json'}: {_not_a_number(results, bad[0])} (a damaged run)")
    return run


def open_run(run: str | os.PathLike, runs_dir: str | os.PathLike = "runs") -> Run:
    """Read a run directory (by path or name under runs_dir); RunError if it is missing or damaged."""
    path = resolve_run(run, runs_dir)
    saved = read_json(path / "config.json")
    config = TrainConfig.from_json(saved, str(path / "config.json"))
    model_info = ModelInfo.from_json(path / "model.json", read_json(path / "model.json"))
    results = read_json(path / "results.json") if (path / "results.json").exists() else {}
    return check_numbers(Run(path, config, {k: saved[k] for k in RECORDED if k in saved}, model_info,
                             read_metrics(path / "metrics.jsonl"), results))


# ---------------------------------------------------------------------------
# Keeping the runs folder tidy

def rename_run(path: Path, new_name: str) -> Path:
    """Rename a run inside its runs folder (a name, never a path); refused while a process trains it."""
    check_name(new_name)
    target = path.parent / new_name
    if target.exists():
        raise RunError(f"run {new_name} already exists; pick another name")
    with RunLock(path):
        os.rename(path, target)
        _record_name(target, new_name)
    return target


def _record_name(run_dir: Path, name: str) -> None:
    """config.json's name follows its folder's (its command, what was typed then, stays as it was). A
    config.json that cannot be read is left alone: the run says so when it is opened."""
    path = run_dir / "config.json"
    try:
        record = read_json(path)
    except RunError:
        return
    if "name" in record and record["name"] != name:
        write_json(path, {**record, "name": name})


def delete_run(path: Path) -> None:
    """Delete a run folder and its files; refused while a process trains it, and for anything but a
    real folder (a link is never followed out of the runs folder)."""
    if path.is_symlink() or not path.is_dir():
        raise RunError(f"{path.name} is not a run folder")
    with RunLock(path):
        shutil.rmtree(path)
