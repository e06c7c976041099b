"""A training run: `train` makes a run directory and trains into it, `resume` goes on with one.

Everything is checked (settings, the spec against the data, the data files) before the run
directory is created; the loop itself is loop.fit. What lands on disk (runs.py):
config.json and model.json first, checkpoints while training, then model.safetensors,
metrics.jsonl and results.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checkpoint import (
    LATEST,
    PREVIOUS,
    Checkpoint,
    Progress,
    load_checkpoint,
    nothing_to_resume,
)
from .compare import overfitting_note
from .config import TrainConfig
from .datasets import Dataset, training_data
from .distributed import Cluster, barrier, broadcast_name, from_env, join, leave
from .engine import (
    confusion_counts,
    cores,
    loss_and_accuracy,
    pick_device,
    pick_precision,
    predict_logits,
    set_threads,
)
from .errors import ConvlensError, DataError, RunError
from .files import read_json, write_atomic, write_json
from .loop import fit, init_weights, input_stats
from .models import ConvNet, build_model
from .probe import probe_epochs, snapshot, write_snapshot
from .resizing import check_resizable
from .runs import (
    ModelInfo,
    Run,
    RunLock,
    completed_at,
    new_run_dir,
    open_run,
    resolve_run,
    save_weights,
)
from .tblog import TensorBoardLog
from .versions import versions


@dataclass
class Start:
    """What a caller learns when training begins (on_start): where, what, on which data."""
    path: Path
    config: TrainConfig
    model: ConvNet
    data: Dataset
    epochs_done: int = 0       # resumed: the epochs the checkpoint had finished


OnStart = Callable[[Start], None]
OnEpoch = Callable[[dict], None]
OnStep = Callable[[int, int, Mapping], None]    # done, steps, running logs (loop.StepLogs)


def _setup(config: TrainConfig, threads: int, cluster: Cluster) -> tuple[torch.device, torch.dtype, int]:
    """Device, precision and threads for a run (one GPU, or a share of the cores, per process of a
    torchrun launch); deterministic mode where asked; the process group joined."""
    device = pick_device(config.device)
    if cluster.active and device.type == "cuda":
        device = torch.device("cuda", cluster.local_rank)
        torch.cuda.set_device(device)
    if cluster.active and not threads:
        threads = max(1, cores() // cluster.local_world)
    join(cluster, device)
    if config.deterministic:
        # cuBLAS needs a fixed workspace to reduce in a fixed order (PyTorch "Reproducibility" notes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return device, pick_precision(config.precision, device), set_threads(threads)


def _check_environment(config: TrainConfig) -> None:
    """What a config cannot say by itself: is its device here, is TensorBoard installed."""
    pick_device(config.device)
    if config.tensorboard:
        TensorBoardLog.check_installed()


def _check_new_run(config: TrainConfig) -> None:
    """Before any data is loaded: a runs folder that is a file, a run name already taken."""
    _check_environment(config)
    if config.name is not None:
        new_run_dir(config.runs_dir, config.name, config.model, dry_run=True)


def _check_data(data: Dataset, config: TrainConfig) -> None:
    if not len(data.train_y):
        raise DataError(f"{data.name}: no training images")
    if not len(data.test_y):
        raise DataError(f"{data.name}: no test images to score the trained model on (an image folder with a test "
                        "share of 0: give each class more images, or train/ and test/ folders)")
    r = config.settings
    check_resizable(config.model, data.input_shape, data.num_classes, config.epochs, r.resize_from, r.resize_until)
    if config.probe >= len(data.test_y):
        raise DataError(f"--probe {config.probe}: no test image {config.probe}; the test set has "
                        f"{len(data.test_y):,} images (0 to {len(data.test_y) - 1}), or -1 for none")


@contextmanager
def _finishing():
    """Ctrl-C or SIGTERM while the weights and results are written is noted and said, and acted on once
    they are on disk (a second Ctrl-C used to land here and lose the results)."""
    if threading.current_thread() is not threading.main_thread():     # signal handlers live there only
        yield
        return
    noted = []

    def note(signum, frame):
        noted.append(signum)
        print("convlens: stopping: writing the weights and results first", file=sys.stderr, flush=True)
    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if noted:
        raise KeyboardInterrupt


def _write_start(path: Path, config: TrainConfig, model: ConvNet, data: Dataset, resolved: dict) -> None:
    """config.json (settings, what was resolved, versions) and model.json, before any training."""
    write_json(path / "config.json", {
        **config.to_json(), "spec": model.spec, "settings": asdict(config.settings), "resolved": resolved,
        "versions": versions(), "command": sys.argv, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    write_json(path / "model.json", ModelInfo(model.spec, model.input_shape, tuple(data.classes), data.name,
                                              config.dataset_ref.image_rule).to_json())
    if data.files is not None:       # an image folder: which files were read, for evaluate & co.
        write_json(path / "files.json", data.files)


def train(config: TrainConfig = TrainConfig(), data: Dataset | None = None, on_start: OnStart | None = None,
          on_epoch: OnEpoch | None = None, on_step: OnStep | None = None) -> Run | None:
    """Train a model into a new run directory and return the finished Run.

    If training fails before its first checkpoint the directory is removed. Under torchrun every
    process calls this; rank 0 writes the run and gets the Run, the others get None.
    """
    _check_new_run(config)
    if data is None:
        data = training_data(config)
    _check_data(data, config)
    cluster = from_env()
    device, precision, threads = _setup(config, config.threads, cluster)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.input_shape, data.num_classes)
    init_weights(model, config.settings.init)
    model = model.to(device).to(memory_format=torch.channels_last)
    try:
        made = new_run_dir(config.runs_dir, config.name, config.model) if cluster.main else None
        path = Path(config.runs_dir) / broadcast_name(cluster, made.name if made else None)
    except BaseException:
        leave(cluster)
        raise
    try:
        with RunLock(path) if cluster.main else nullcontext():
            if cluster.main:
                _write_start(path, config, model, data, {
                    "device": str(device), "precision": str(precision).removeprefix("torch."), "threads": threads,
                    "processes": cluster.world, "train_images": len(data.train_y), "val_images": len(data.val_y),
                    "test_images": len(data.test_y), "streamed": data.streamed, "skipped_files": len(data.skipped)})
            return _train_into(Start(path, config, model, data), precision, None, on_start, on_epoch, on_step,
                               cluster)
    except BaseException:
        if cluster.main and not (path / LATEST).exists() and not (path / PREVIOUS).exists():
            shutil.rmtree(path)              # nothing to resume: leave no run
        raise
    finally:
        leave(cluster)


def resume(run: str | os.PathLike, runs_dir: str | os.PathLike = "runs", data: Dataset | None = None,
           data_dir: str | None = None, device: str | None = None, on_start: OnStart | None = None,
           on_epoch: OnEpoch | None = None, on_step: OnStep | None = None) -> Run | None:
    """Continue a stopped or killed run from its latest good checkpoint, with its own settings.

    data_dir, device: where the data and the compute are now, when they moved since.
    A deterministic run resumed on the same machine ends with the weights it would have had.
    """
    path = resolve_run(run, runs_dir)
    saved = read_json(path / "config.json")
    if completed_at(path):
        raise RunError(f"run {path.name} has finished; nothing to resume (train a new run for more epochs)")
    config = TrainConfig.from_json(saved, str(path / "config.json"))
    try:
        config = replace(config, data_dir=data_dir or config.data_dir, device=device or config.device)
        threads = int(saved["resolved"]["threads"])   # the same threads: oneDNN's sums depend on them
    except (TypeError, KeyError, ValueError) as e:
        raise RunError(f"{path / 'config.json'}: malformed ({e})") from None
    _check_environment(config)
    if not any(path.glob("checkpoint*.safetensors")):
        raise nothing_to_resume(path)
    if data is None:
        data = training_data(config)
    cluster = from_env()
    device_, precision, _ = _setup(config, threads, cluster)
    try:
        with RunLock(path) if cluster.main else nullcontext():   # refused while another process trains it
            model = build_model(config.model, data.input_shape, data.num_classes)
            ckpt = load_checkpoint(path, model)
            ckpt.progress.resumes += 1
            if cluster.main:
                for stale in path.glob(".*.tmp"):        # a write the kill interrupted (no one else writes now)
                    stale.unlink()
            model = model.to(device_).to(memory_format=torch.channels_last)
            start = Start(path, config, model, data, len(ckpt.progress.epochs))
            return _train_into(start, precision, ckpt, on_start, on_epoch, on_step, cluster)
    finally:
        leave(cluster)


def _train_into(start: Start, precision: torch.dtype, ckpt: Checkpoint | None, on_start: OnStart | None,
                on_epoch: OnEpoch | None, on_step: OnStep | None, cluster: Cluster) -> Run | None:
    """Train (or go on training) in an existing run directory: metrics as the epochs end, then the
    weights and results (rank 0 of several processes alone writes and reports)."""
    if not cluster.main:
        return _finish(start, precision, ckpt, None, None, None, cluster)
    if on_start:
        on_start(start)
    path, config, model = start.path, start.config, start.model
    lines = [(json.dumps(rec) + "\n").encode() for rec in (ckpt.progress.epochs if ckpt else [])]
    write_atomic(path / "metrics.jsonl", b"".join(lines))   # on resume: as far as the checkpoint got
    tb = TensorBoardLog(path, first_epoch=len(lines) + 1) if config.tensorboard else None

    probe = _prober(start)
    if probe and 0 not in probe_epochs(path):
        probe(0, model)                            # the untrained network, to compare the first epoch with

    def record_epoch(rec: dict, weights: ConvNet) -> None:     # weights: as validated (ema.py)
        lines.append((json.dumps(rec) + "\n").encode())
        write_atomic(path / "metrics.jsonl", b"".join(lines))
        if probe:
            probe(rec["epoch"], weights)
        if tb:
            tb.epoch(rec, weights)
        if on_epoch:
            on_epoch(rec)

    try:
        return _finish(start, precision, ckpt, record_epoch, on_step, tb, cluster)
    finally:
        if tb:
            tb.close()


def _prober(start: Start) -> Callable[[int, ConvNet], None] | None:
    """What keeps the probe image's maps and prediction after an epoch (probe.py), or None: it takes the
    epoch and the weights as validated."""
    config, data = start.config, start.data
    index = config.probe
    if index < 0:
        return None
    image, stats = data.test_x[index], input_stats(start.model, data, config)
    return lambda epoch, weights: write_snapshot(start.path, epoch, snapshot(weights, image, stats, data.classes),
                                                 index)


def _finish(start: Start, precision: torch.dtype, ckpt: Checkpoint | None,
            record_epoch: Callable[[dict, ConvNet], None] | None, on_step: OnStep | None, tb: TensorBoardLog | None,
            cluster: Cluster) -> Run | None:
    """Fit, then write the weights and the test results (and the last TensorBoard images)."""
    path, config, model, data = start.path, start.config, start.model, start.data
    wall = time.perf_counter()
    p = fit(model, data, config, precision, path, ckpt, cluster, record_epoch, on_step)
    if not p.epochs:
        raise KeyboardInterrupt if p.interrupted else ConvlensError("training produced no epoch")
    if not cluster.main:
        barrier(cluster)                       # rank 0 writes the results meanwhile
        return None
    with _finishing():
        save_weights(path / "model.safetensors", model, data.classes)
        test_logits = predict_logits(model, data.test_x, precision=precision)
        test_loss, test_acc = loss_and_accuracy(test_logits, data.test_y)
        tta = _flip_tta(model, data, precision) if config.settings.flip else {}
        write_json(path / "results.json", {"test_loss": test_loss, "test_accuracy": test_acc, **tta,
                                           "test_precision": "bf16" if precision == torch.bfloat16 else "fp32",
                                           **_ending(p, config), "wall_time_s": round(time.perf_counter() - wall, 3)})
    if tb:
        tb.final(len(p.epochs), test_loss, test_acc, confusion_counts(test_logits, data.test_y, data.num_classes),
                 model, data)
    barrier(cluster)
    return open_run(path)


def _flip_tta(model: ConvNet, data: Dataset, precision: torch.dtype) -> dict:
    """Trained on mirror images too: the mirror-averaged accuracy (flip test-time augmentation), reported beside
    the plain one and never in its place, on the test set and on the validation set (where choices are made)."""
    tta = {"test_accuracy_tta": loss_and_accuracy(predict_logits(model, data.test_x, precision=precision, tta=True),
                                                  data.test_y)[1]}
    if len(data.val_y):
        tta["val_accuracy_tta"] = loss_and_accuracy(predict_logits(model, data.val_x, precision=precision, tta=True),
                                                    data.val_y)[1]
    return tta


def _ending(p: Progress, config: TrainConfig) -> dict:
    """How training ended, for results.json."""
    return {"epochs_run": len(p.epochs), "best_epoch": p.best_epoch, "stopped_early": p.stopped_early,
            "interrupted": p.interrupted, "stopped_at": p.stopped_at,
            "restored_best": bool(config.early_stopping and p.best_epoch != len(p.epochs)),
            "train_time_s": round(p.train_time_s, 3), "deterministic": config.deterministic, "resumes": p.resumes,
            **({"device_warmup_s": round(p.warmup_s, 3)} if p.warmup_s else {}),    # a GPU's, off the clock
            "overfitting": overfitting_note(p.epochs, suggest=not config.early_stopping)}
