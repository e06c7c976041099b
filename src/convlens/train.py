"""Training: recipes, the engine (in-memory uint8 batches, channels_last, bf16), the loop, the run.

Speed notes (2-core AMD EPYC, AVX-512 bf16, no AMX; see benchmarks/PROFILE.md):
- bf16 autocast doubles matmul throughput (fp32 ~175 GFLOP/s, bf16 ~390 GFLOP/s here)
  and channels_last lets oneDNN skip layout reorders around every convolution.
- The dataset lives in memory as uint8 (47 MB for Fashion-MNIST) and is scaled to
  [0, 1] one batch at a time: no DataLoader, no worker processes, no per-item Python.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import Dataset, load_dataset
from .errors import ConvlensError
from .models import ConvNet, build_model, parse_spec, resolve
from .runs import Run, new_run_dir, open_run, save_weights, write_atomic, write_json


@dataclass(frozen=True)
class Recipe:
    """How a model is trained; `--recipe NAME` picks one, flags override single fields."""
    name: str
    batch_size: int          # images per optimizer step
    lr: float                # peak learning rate of Adam
    schedule: str            # "constant", or "onecycle": linear warm-up to lr, then linear decay to ~0
    warmup: float            # fraction of all steps spent warming up (onecycle)
    label_smoothing: float   # share of the target mass spread over all classes
    init: str                # "torch" (Kaiming-uniform) or "glorot" (Keras's default, zero biases)
    eps: float               # Adam epsilon (Keras 1e-7, PyTorch 1e-8)
    val_split: float | None  # None: the command's --val-split; a number forces it (keras: all 60,000)


RECIPES = {
    # Tuned for least wall time to the seed's 91.28 % (benchmarks/RESULTS.md).
    "fast": Recipe("fast", batch_size=64, lr=2e-3, schedule="onecycle", warmup=0.25,
                   label_smoothing=0.0, init="torch", eps=1e-8, val_split=None),
    # The seed notebook exactly: Adam(1e-3) constant, batch 32, every training image.
    "keras": Recipe("keras", batch_size=32, lr=1e-3, schedule="constant", warmup=0.0,
                    label_smoothing=0.0, init="glorot", eps=1e-7, val_split=0.0),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything `convlens train` takes; saved in config.json so the run can be repeated."""
    model: str = "seed"               # preset name or spec string
    dataset: str = "fashion-mnist"
    data_dir: str | None = None       # folder with the dataset's files (else the lookup order)
    recipe: str = "fast"              # key of RECIPES
    epochs: int = 5                   # passes over the training split
    batch_size: int | None = None     # images per step; None: the recipe's
    lr: float | None = None           # peak learning rate; None: the recipe's
    label_smoothing: float | None = None
    seed: int = 0                     # weights, data order and validation split
    val_split: float = 0.1            # share of the training images held out for validation
    early_stopping: int = 0           # patience in epochs of no val-loss improvement; 0 = off
    device: str = "auto"              # auto | cpu | cuda
    precision: str = "auto"           # auto | fp32 | bf16
    threads: int = 0                  # CPU threads; 0 = one per core
    runs_dir: str = "runs"
    name: str | None = None           # run directory name; None: MODEL-DATE-TIME

    def settings(self) -> Recipe:
        """The recipe with this config's overrides applied."""
        if self.recipe not in RECIPES:
            raise ConvlensError(f"unknown recipe {self.recipe!r}; known: {', '.join(RECIPES)}")
        r = RECIPES[self.recipe]
        return replace(r, batch_size=self.batch_size or r.batch_size, lr=self.lr or r.lr,
                       label_smoothing=r.label_smoothing if self.label_smoothing is None else self.label_smoothing,
                       val_split=self.val_split if r.val_split is None else r.val_split)

    def check(self) -> None:
        """Reject impossible values before anything is loaded or written."""
        parse_spec(self.model)
        if self.epochs < 1:
            raise ConvlensError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConvlensError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not (0 < self.lr < 10):
            raise ConvlensError(f"--lr must be in (0, 10), got {self.lr}")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise ConvlensError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.val_split < 1:
            raise ConvlensError(f"--val-split must be in [0, 1), got {self.val_split}")
        if self.early_stopping < 0:
            raise ConvlensError(f"--early-stopping must be 0 (off) or a patience ≥ 1, got {self.early_stopping}")
        if self.early_stopping and self.settings().val_split == 0:
            raise ConvlensError("--early-stopping watches the validation loss: it needs --val-split > 0")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConvlensError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConvlensError("--device cuda: no CUDA GPU is available to PyTorch here")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConvlensError(f"--precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.threads < 0:
            raise ConvlensError(f"--threads must be ≥ 0, got {self.threads}")


# ---------------------------------------------------------------------------
# The engine: device, precision, threads, batches

def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_bf16() -> bool:
    """True where the CPU does bf16 matrix work natively (AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_precision(precision: str, device: torch.device) -> torch.dtype:
    """auto: bf16 on CUDA and on CPUs with native bf16, fp32 elsewhere."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" or cpu_has_bf16() else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def set_threads(threads: int = 0) -> int:
    """One intra-op thread per core (hyper-threads only add contention for these kernels)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(threads or cores)
    return torch.get_num_threads()


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def to_input(x_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [0, 1], channels_last, on `device` (the seed's /255 and reshape)."""
    x = x_u8.to(device, non_blocking=True).float().mul_(1 / 255)
    return x.contiguous(memory_format=torch.channels_last)


def predict_logits(model: nn.Module, x_u8: torch.Tensor, batch_size: int = 1000,
                   precision: torch.dtype = torch.float32) -> torch.Tensor:
    """Float32 logits (N, classes) for uint8 images, in eval mode, without gradients."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outs = []
    with torch.inference_mode(), autocast(device, precision):
        for i in range(0, len(x_u8), batch_size):
            outs.append(model(to_input(x_u8[i:i + batch_size], device)).float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, getattr(model, "num_classes", 0))


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    y = y.to(logits.device)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def init_weights(model: ConvNet, init: str) -> None:
    if init == "glorot":   # Keras: glorot_uniform kernels, zero biases
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)


def lr_at(step: int, total: int, r: Recipe) -> float:
    """Learning rate for optimizer step `step` of `total`."""
    if r.schedule == "constant":
        return r.lr
    warm = max(1, round(total * r.warmup))
    if step < warm:
        return r.lr * (0.04 + 0.96 * step / warm)
    return r.lr * max(0.0, (total - step) / max(1, total - warm))


# ---------------------------------------------------------------------------
# The loop

@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)   # one record per finished epoch
    best_epoch: int = 0                                  # by validation loss (0: no validation)
    stopped_early: bool = False
    interrupted: bool = False
    train_time_s: float = 0.0                            # optimizer steps only, no evaluation


def fit(model: ConvNet, data: Dataset, r: Recipe, epochs: int, seed: int = 0, early_stopping: int = 0,
        precision: torch.dtype = torch.float32,
        on_epoch: Callable[[dict], None] | None = None,
        on_step: Callable[[int, int], None] | None = None) -> History:
    """Train `model` in place on data.train, validating on data.val after each epoch.

    With early_stopping = P, stops after P epochs without a lower validation loss and
    restores the best weights (Keras's EarlyStopping(restore_best_weights=True)).
    Ctrl-C ends training after the current step; what was trained is kept.
    """
    device = next(model.parameters()).device
    x_train, y_train = data.train_x.to(device), data.train_y.to(device)
    n, bs = len(y_train), r.batch_size
    steps_per_epoch = math.ceil(n / bs)
    total = epochs * steps_per_epoch
    fused = device.type == "cuda"
    opt = torch.optim.Adam(model.parameters(), lr=lr_at(0, total, r), eps=r.eps, fused=fused or None)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    hist, best_loss, best_state = History(), math.inf, None
    step = 0
    model.train()
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for i in range(0, n, bs):
                # 1. batch  2. forward  3. loss  4. backward + step  5. schedule
                idx = perm[i:i + bs]
                x, y = to_input(x_train[idx], device), y_train[idx]
                with autocast(device, precision):
                    logits = model(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                for g in opt.param_groups:
                    g["lr"] = lr_at(step, total, r)
                loss_sum += loss.detach() * len(y)
                correct += (logits.detach().argmax(1) == y).sum()
                if on_step:
                    on_step(i // bs + 1, steps_per_epoch)
            elapsed = time.perf_counter() - t0
            hist.train_time_s += elapsed
            record = {"epoch": epoch, "loss": loss_sum.item() / n, "accuracy": correct.item() / n,
                      "lr": lr_at(step - 1, total, r), "time_s": round(elapsed, 3)}
            if len(data.val_y):
                record["val_loss"], record["val_accuracy"] = loss_and_accuracy(
                    predict_logits(model, data.val_x, precision=precision), data.val_y)
                if record["val_loss"] < best_loss:
                    best_loss, hist.best_epoch = record["val_loss"], epoch
                    if early_stopping:
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            hist.epochs.append(record)
            if on_epoch:
                on_epoch(record)
            if early_stopping and epoch - hist.best_epoch >= early_stopping:
                hist.stopped_early = True
                break
    except KeyboardInterrupt:
        hist.interrupted = True
    if best_state is not None and hist.best_epoch != len(hist.epochs):
        model.load_state_dict(best_state)
    return hist


def overfitting_note(epochs: list[dict]) -> str | None:
    """The seed's 20-epoch observation, from the numbers: validation loss rising since epoch k
    while training loss kept falling. None when that is not what the curves show."""
    vals = [e.get("val_loss") for e in epochs]
    if len(epochs) < 3 or any(v is None for v in vals):
        return None
    best = int(np.argmin(vals))
    last = len(epochs) - 1
    if best >= last - 1 or epochs[last]["loss"] >= epochs[best]["loss"] or vals[last] <= vals[best] * 1.02:
        return None
    return (f"overfitting: validation loss has been rising since epoch {best + 2} "
            f"(lowest {vals[best]:.4f} at epoch {best + 1}, now {vals[last]:.4f}) while training loss "
            f"kept falling ({epochs[best]['loss']:.4f} → {epochs[last]['loss']:.4f}); "
            f"--early-stopping 2 would have kept epoch {best + 1}'s weights")


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    from . import __version__
    return {"convlens": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "processor": platform.processor(),
            "git": git_revision()}


def train(config: TrainConfig = TrainConfig(), data: Dataset | None = None,
          on_start: Callable[[Path, ConvNet, Dataset], None] | None = None,
          on_epoch: Callable[[dict], None] | None = None,
          on_step: Callable[[int, int], None] | None = None) -> Run:
    """Train a model into a new run directory and return the finished Run.

    Everything is checked (arguments, spec against the data, data files) before the
    directory is created; if training fails before its first epoch the directory is removed.
    """
    config.check()
    r = config.settings()
    if data is None:
        data = load_dataset(config.dataset, config.data_dir, val_split=r.val_split, seed=config.seed)
    device = pick_device(config.device)
    precision = pick_precision(config.precision, device)
    threads = set_threads(config.threads)
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.input_shape, data.num_classes)
    init_weights(model, r.init)
    model = model.to(device).to(memory_format=torch.channels_last)

    path = new_run_dir(config.runs_dir, config.name, config.model)
    try:
        write_json(path / "config.json", {
            **asdict(config), "spec": resolve(config.model), "settings": asdict(r),
            "resolved": {"device": str(device), "precision": str(precision).removeprefix("torch."),
                         "threads": threads, "train_images": len(data.train_y), "val_images": len(data.val_y),
                         "test_images": len(data.test_y)},
            "versions": versions(), "command": sys.argv, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        write_json(path / "model.json", {"spec": model.spec, "input_shape": list(model.input_shape),
                                         "classes": list(data.classes), "dataset": data.name,
                                         "preprocessing": "uint8 pixels / 255, shape (N, C, H, W)"})
        if on_start:
            on_start(path, model, data)
        metrics_lines: list[bytes] = []

        def record_epoch(rec: dict) -> None:
            metrics_lines.append((json.dumps(rec) + "\n").encode())
            write_atomic(path / "metrics.jsonl", b"".join(metrics_lines))
            if on_epoch:
                on_epoch(rec)

        wall = time.perf_counter()
        hist = fit(model, data, r, config.epochs, config.seed, config.early_stopping, precision,
                   record_epoch, on_step)
        if not hist.epochs:
            raise KeyboardInterrupt if hist.interrupted else ConvlensError("training produced no epoch")
        save_weights(path / "model.safetensors", model)
        test_loss, test_acc = loss_and_accuracy(predict_logits(model, data.test_x, precision=precision), data.test_y)
        write_json(path / "results.json", {
            "test_loss": test_loss, "test_accuracy": test_acc, "epochs_run": len(hist.epochs),
            "best_epoch": hist.best_epoch, "stopped_early": hist.stopped_early, "interrupted": hist.interrupted,
            "restored_best": bool(config.early_stopping and hist.best_epoch != len(hist.epochs)),
            "train_time_s": round(hist.train_time_s, 3), "wall_time_s": round(time.perf_counter() - wall, 3),
            "overfitting": overfitting_note(hist.epochs)})
    except BaseException:
        if not (path / "metrics.jsonl").exists():   # nothing trained: leave no half-written run
            _remove_tree(path)
        raise
    return open_run(path)


def _remove_tree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    path.rmdir()
