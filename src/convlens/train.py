"""Training: recipes, the engine (in-memory uint8 batches, channels_last, bf16), the loop, the run.

Speed notes (2-core AMD EPYC, AVX-512 bf16, no AMX; see benchmarks/PROFILE.md):
- bf16 autocast doubles matmul throughput (fp32 ~175 GFLOP/s, bf16 ~390 GFLOP/s here)
  and channels_last lets oneDNN skip layout reorders around every convolution.
- The dataset lives in memory as uint8 (47 MB for Fashion-MNIST) and is scaled to
  [0, 1] one batch at a time: no DataLoader, no worker processes, no per-item Python.
  Only an image folder too large for memory streams, through DataLoader workers (folders.py).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import LATEST, PREVIOUS, Checkpoint, Progress, load_checkpoint, restore, save_checkpoint
from .data import Dataset, load_dataset
from .distributed import (SINGLE, Cluster, all_sum, any_rank, barrier, broadcast_name, from_env, join, leave,
                          lost)
from .errors import ConvlensError, RunError
from .folders import StreamedImages, batches_of, chunks_of, parse_image_size
from .images import image_rule
from .models import ConvNet, build_model, parse_spec, resolve
from .runs import Run, new_run_dir, open_run, read_json, resolve_run, save_weights, write_atomic, write_json
from .tblog import TensorBoardLog


@dataclass(frozen=True)
class Recipe:
    """How a model is trained; `--recipe NAME` picks one, flags override single fields."""
    name: str
    batch_size: int          # images per optimizer step
    lr: float                # peak learning rate of Adam
    schedule: str            # "constant", or "onecycle": cosine warm-up from lr/25 to lr, cosine decay to ~0
    warmup: float            # fraction of all steps spent warming up (onecycle)
    label_smoothing: float   # share of the target mass spread over all classes
    init: str                # "torch" (Kaiming-uniform) or "glorot" (Keras's default, zero biases)
    eps: float               # Adam epsilon (Keras 1e-7, PyTorch 1e-8)
    val_split: float         # default share held out for validation (keras: 0, all 60,000 like the seed)
    normalize: bool = False  # train on (pixel - mean) / std, folded into the first layer afterwards
    flip: bool = False       # mirror half of each batch left-right (clothes are left-right symmetric)


RECIPES = {
    # Least wall time to the seed's 91.28 % on the 2-core CPU (benchmarks/RESULTS.md): 3 epochs.
    "fast": Recipe("fast", batch_size=64, lr=4e-3, schedule="onecycle", warmup=0.15, label_smoothing=0.1,
                   init="glorot", eps=1e-8, val_split=0.1, normalize=True),
    # The same, also trained on mirror images; reports flip test-time augmentation beside the plain score.
    "flip": Recipe("flip", batch_size=64, lr=4e-3, schedule="onecycle", warmup=0.15, label_smoothing=0.1,
                   init="glorot", eps=1e-8, val_split=0.1, normalize=True, flip=True),
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
    image_size: str | None = None     # image folders: "64" or "48x64" (height×width); None: their most common size
    channels: int | None = None       # image folders: 1 (grayscale) or 3 (RGB); None: 3 if any image has colour
    stream: bool = False              # image folders: decode from disk every epoch even when they fit in memory
    recipe: str = "fast"              # key of RECIPES
    epochs: int = 5                   # passes over the training split
    batch_size: int | None = None     # images per step; None: the recipe's
    lr: float | None = None           # peak learning rate; None: the recipe's
    label_smoothing: float | None = None
    seed: int = 0                     # weights, data order and validation split
    val_split: float | None = None    # share of the training images held out for validation; None: the recipe's
    early_stopping: int = 0           # patience in epochs of no val-loss improvement; 0 = off
    device: str = "auto"              # auto | cpu | cuda
    precision: str = "auto"           # auto | fp32 | bf16
    threads: int = 0                  # CPU threads; 0 = one per core
    compile: bool = False             # torch.compile the model (compile time counts as training time)
    checkpoint_every: int = 0         # also checkpoint every N optimizer steps; 0 = after each epoch only
    deterministic: bool = False       # bit-for-bit repeatable on the CPU (same seed -> same weights)
    tensorboard: bool = False         # also write TensorBoard event files to RUN/tensorboard
    runs_dir: str = "runs"
    name: str | None = None           # run directory name; None: MODEL-DATE-TIME

    def settings(self) -> Recipe:
        """The recipe with this config's overrides applied."""
        if self.recipe not in RECIPES:
            raise ConvlensError(f"unknown recipe {self.recipe!r}; known: {', '.join(RECIPES)}")
        r = RECIPES[self.recipe]
        return replace(r, batch_size=self.batch_size or r.batch_size, lr=self.lr or r.lr,
                       label_smoothing=r.label_smoothing if self.label_smoothing is None else self.label_smoothing,
                       val_split=r.val_split if self.val_split is None else self.val_split)

    def load_data(self) -> Dataset:
        """The dataset this config trains on, with its validation split."""
        return load_dataset(self.dataset, self.data_dir, val_split=self.settings().val_split, seed=self.seed,
                            image_size=parse_image_size(self.image_size), channels=self.channels,
                            stream=self.stream)

    def check(self) -> None:
        """Reject impossible values before anything is loaded or written."""
        parse_spec(self.model)
        parse_image_size(self.image_size)
        if self.channels not in (None, 1, 3):
            raise ConvlensError(f"--channels must be 1 or 3, got {self.channels}")
        if self.epochs < 1:
            raise ConvlensError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConvlensError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not (0 < self.lr < 10):
            raise ConvlensError(f"--lr must be in (0, 10), got {self.lr}")
        if self.label_smoothing is not None and not 0 <= self.label_smoothing < 1:
            raise ConvlensError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.val_split is not None and not 0 <= self.val_split < 1:
            raise ConvlensError(f"--val-split must be in [0, 1), got {self.val_split}")
        if self.early_stopping < 0:
            raise ConvlensError(f"--early-stopping must be 0 (off) or a patience ≥ 1, got {self.early_stopping}")
        if self.early_stopping and self.settings().val_split == 0:
            raise ConvlensError("--early-stopping watches the validation loss: it needs --val-split > 0")
        pick_device(self.device)
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConvlensError(f"--precision must be auto, fp32 or bf16, got {self.precision!r}")
        if self.checkpoint_every < 0:
            raise ConvlensError(f"--checkpoint-every must be ≥ 0 (0: after each epoch only), got {self.checkpoint_every}")
        if self.threads < 0:
            raise ConvlensError(f"--threads must be ≥ 0, got {self.threads}")
        if self.tensorboard:
            TensorBoardLog.check_installed()


# ---------------------------------------------------------------------------
# The engine: device, precision, threads, batches

def pick_device(device: str = "auto") -> torch.device:
    """auto: the GPU where PyTorch has one, else the CPU; cpu, cuda or cuda:N as asked, if it exists."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ConvlensError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConvlensError(f"--device {device}: no CUDA GPU is available to PyTorch here "
                                f"(torch {torch.__version__})")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConvlensError(f"--device {device}: PyTorch sees {torch.cuda.device_count()} GPU(s)")
    return torch.device(device)


def tune_allocator() -> None:
    """Keep freed memory in the process instead of returning it to the OS.

    glibc serves blocks over 128 KiB with mmap and unmaps them on free, so every training
    step page-faults its activations afresh (a 26×26×64 bf16 batch of 128 is 11 MB); the
    kernel zeroing those pages cost ~40 % of a step here. Raising the thresholds makes
    the heap reuse them: 1.8× faster steps on this machine (benchmarks/PROFILE.md).
    """
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
    except OSError:       # not glibc (macOS, musl): nothing to tune
        return
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)   # glibc's maximum on 64-bit
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    libc.mallopt(M_TOP_PAD, 64 << 20)


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
    tune_allocator()
    return torch.get_num_threads()


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


# Normalisation statistics of a streamed image folder: from this many images, seeded (exact below it).
STATS_SAMPLE = 10_000

# Inference batch: 256 keeps a batch's 26×26×64 maps (22 MB in bf16) near the caches;
# 1000 ran at ~11-15k images/s here, 200-256 at ~21-23k (benchmarks/RESULTS.md).
EVAL_BATCH = 256
# Larger images get smaller batches, so that the largest layer output of a batch stays near the
# seed's at 28×28 (26×26×64 × 256 ≈ 11 M values); a 64×64 RGB seed model would otherwise hold
# 250 MB per layer output while evaluating.
EVAL_VALUES = 26 * 26 * 64 * EVAL_BATCH


def eval_batch(model: nn.Module) -> int:
    """Images per inference batch for `model`: EVAL_BATCH, fewer where its layer outputs are large."""
    infos = getattr(getattr(model, "module", model), "infos", None)
    largest = max((math.prod(l.out_shape) for l in infos), default=1) if infos else 1
    return max(1, min(EVAL_BATCH, EVAL_VALUES // largest))

Norm = tuple[torch.Tensor, torch.Tensor]   # per-channel (scale, shift): x = pixel * scale - shift


def to_input(x_u8: torch.Tensor, device: torch.device, norm: Norm | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [0, 1] (or normalised), channels_last, on `device`.

    This is the seed's `reshape(-1, 28, 28, 1)` and `/ 255.`, done for the user.
    """
    x = x_u8.to(device, non_blocking=True).float()
    x = x.mul_(1 / 255) if norm is None else x.mul_(norm[0]).sub_(norm[1])
    return x.contiguous(memory_format=torch.channels_last)


def channel_stats(x_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (Fashion-MNIST: 0.286, 0.353).

    From a 256-bin histogram per channel: exact, and no float copy of the dataset (a float64
    copy of Fashion-MNIST's training images is 376 MB, more than everything else together).
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x_u8.shape[1]):
        counts = torch.bincount(x_u8[:, c].reshape(-1), minlength=256).double()
        n = counts.sum()
        mean = (counts * values).sum() / n
        var = (counts * (values - mean) ** 2).sum() / (n - 1)
        means.append(mean)
        stds.append(var.sqrt())
    return torch.stack(means).float(), torch.stack(stds).float().clamp_min(1e-3)


def can_fold_normalization(model: ConvNet) -> bool:
    """Normalisation folds exactly into a first conv without padding, or a dense right after flatten."""
    first = model.infos[0].spec
    return (first.kind == "conv" and first.padding == 0) or (
        first.kind == "flatten" and len(model.infos) > 1 and model.infos[1].spec.kind == "dense")


@torch.no_grad()
def fold_normalization(model: ConvNet, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Rewrite the first layer so that it takes [0, 1] pixels and computes what it computed on
    (pixel - mean) / std: W' = W / std, b' = b - Σ W · mean / std."""
    if model.infos[0].spec.kind == "conv":
        layer = model.layers[0]
        mean, std = mean.to(layer.weight), std.to(layer.weight)
        layer.bias -= (layer.weight * (mean / std)[None, :, None, None]).sum(dim=(1, 2, 3))
        layer.weight /= std[None, :, None, None]
    else:
        layer = model.layers[1]
        per_pixel = math.prod(model.input_shape[1:])
        mean_v = mean.to(layer.weight).repeat_interleave(per_pixel)
        std_v = std.to(layer.weight).repeat_interleave(per_pixel)
        layer.bias -= layer.weight @ (mean_v / std_v)
        layer.weight /= std_v[None, :]


def predict_logits(model: nn.Module, x_u8: torch.Tensor, batch_size: int | None = None,
                   precision: torch.dtype = torch.float32, norm: Norm | None = None,
                   tta: bool = False) -> torch.Tensor:
    """Float32 logits (N, classes) for uint8 images, in eval mode, without gradients.

    tta: average the softmax of each image and its mirror image (returned as log-probabilities).
    """
    device = next(model.parameters()).device
    batch_size = batch_size or eval_batch(model)
    was_training = model.training
    model.eval()
    outs = []
    with torch.inference_mode(), autocast(device, precision):
        for batch in chunks_of(x_u8, batch_size):
            x = to_input(batch, device, norm)
            if tta:
                probs = (model(x).float().softmax(1) + model(x.flip(3)).float().softmax(1)) / 2
                outs.append(probs.log())
            else:
                outs.append(model(x).float())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, getattr(model, "num_classes", 0))


def confusion_counts(logits: torch.Tensor, y: torch.Tensor, k: int) -> np.ndarray:
    """(k, k) counts, rows the true class, columns the predicted one."""
    return torch.bincount(y.to(logits.device) * k + logits.argmax(1), minlength=k * k).reshape(k, k).cpu().numpy()


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
    """Learning rate for optimizer step `step` of `total` (one-cycle as torch's OneCycleLR draws it)."""
    if r.schedule == "constant":
        return r.lr
    warm = max(1, round(total * r.warmup))
    start, end = r.lr / 25, r.lr / 25 / 1e4

    def cosine(a: float, b: float, t: float) -> float:
        return b + (a - b) * (1 + math.cos(math.pi * min(1.0, t))) / 2
    if step <= warm:
        return cosine(start, r.lr, step / warm)
    return cosine(r.lr, end, (step - warm) / max(1, total - warm))


# ---------------------------------------------------------------------------
# The loop

@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)   # one record per finished epoch
    best_epoch: int = 0                                  # by validation loss (0: no validation)
    stopped_early: bool = False
    interrupted: bool = False
    train_time_s: float = 0.0                            # optimizer steps only, no evaluation
    stopped_at: tuple[int, int] | None = None            # interrupted: (epoch, steps done in it)


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks training to stop after the current step, so that the
    weights and the checkpoint are those of a whole step; a second Ctrl-C stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> "StopRequest":
        self.requested, self.previous = False, {}
        if threading.current_thread() is threading.main_thread():   # signal handlers live there only
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def __bool__(self) -> bool:
        return self.requested


def fit(model: ConvNet, data: Dataset, r: Recipe, epochs: int, seed: int = 0, early_stopping: int = 0,
        precision: torch.dtype = torch.float32, compile: bool = False,
        on_epoch: Callable[[dict], None] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        checkpoint_dir: Path | None = None, checkpoint_every: int = 0,
        resume: Checkpoint | None = None, cluster: Cluster = SINGLE) -> History:
    """Train `model` in place on data.train, validating on data.val after each epoch.

    With early_stopping = P, stops after P epochs without a lower validation loss and
    restores the best weights (Keras's EarlyStopping(restore_best_weights=True)).
    checkpoint_dir: write a resumable checkpoint there at the start, after every epoch,
    every `checkpoint_every` steps (0: only at epoch ends) and when stopped; resume: a
    checkpoint to continue from. Ctrl-C ends training after the current step; what was
    trained is kept. compile: run the steps through torch.compile; its compile time lands
    in epoch 1's time. cluster: the processes of a torchrun launch (distributed.py); each
    takes its share of every batch and only rank 0 writes checkpoints.
    """
    device = next(model.parameters()).device
    forward = model
    if cluster.active:          # averages the gradients over the ranks in every backward
        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(forward) if compile else forward
    streamed = isinstance(data.train_x, StreamedImages)      # a large image folder: decoded as it goes
    x_train, y_train = data.train_x if streamed else data.train_x.to(device), data.train_y.to(device)
    norm, stats = None, None
    if r.normalize and can_fold_normalization(model):
        stats = channel_stats(data.train_x.sample(STATS_SAMPLE, seed) if streamed else data.train_x)
        norm = ((1 / (255 * stats[1])).view(1, -1, 1, 1).to(device),
                (stats[0] / stats[1]).view(1, -1, 1, 1).to(device))
    n, bs = len(y_train), r.batch_size
    # Several processes: whole batches only (a short last batch could leave a rank with no image).
    n_used = n - n % bs if cluster.active and n >= bs else n
    steps_per_epoch = math.ceil(n_used / bs)
    total = epochs * steps_per_epoch
    fused = device.type == "cuda"
    opt = torch.optim.Adam(model.parameters(), lr=lr_at(0, total, r), eps=r.eps, fused=fused or None)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    p, best_state, perm = Progress(), None, None
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    if resume is not None:
        restore(resume, model, opt, gen)
        p, best_state = resume.progress, resume.best
        perm = resume.perm.to(device) if resume.perm is not None else None
        if cluster.main:                # the sums of every rank so far (gather_sums): counted once
            loss_sum.copy_(resume.sums[0]), correct.copy_(resume.sums[1])

    def gather_sums() -> None:
        """The epoch's running sums of every rank, on rank 0 (the others start again from zero)."""
        all_sum(cluster, loss_sum, correct)
        if not cluster.main:
            loss_sum.zero_(), correct.zero_()

    def checkpoint() -> None:
        if p.step_in_epoch:
            gather_sums()
        if checkpoint_dir is not None and cluster.main:
            save_checkpoint(checkpoint_dir, p, model, opt, gen, perm if p.step_in_epoch else None,
                            (loss_sum, correct), best_state)

    hist, stopping = History(), False
    model.train()
    with StopRequest() as stop:
        try:
            if resume is None:
                checkpoint()
            while p.epoch <= epochs and not p.stopped_early and not (stopping := any_rank(cluster, bool(stop), device)):
                if p.step_in_epoch == 0:
                    perm = torch.randperm(n, generator=gen).to(device)
                    loss_sum.zero_(), correct.zero_()
                t0 = time.perf_counter()
                order = [perm[i:i + bs][cluster.rank::cluster.world]     # (all of a batch in one process)
                         for i in range(p.step_in_epoch * bs, n_used, bs)]
                for idx, x_u8 in zip(order, batches_of(x_train, order)):
                    # 1. batch  2. forward  3. loss  4. backward + step  5. schedule  6. log
                    x, y = to_input(x_u8, device, norm), y_train[idx]
                    if r.flip:
                        mirror = (torch.rand(len(idx), generator=gen) < 0.5).to(device).view(-1, 1, 1, 1)
                        x = torch.where(mirror, x.flip(3), x)
                    with autocast(device, precision):
                        logits = forward(x)
                        loss = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    p.step, p.step_in_epoch = p.step + 1, p.step_in_epoch + 1
                    for g in opt.param_groups:
                        g["lr"] = lr_at(p.step, total, r)
                    # Logged loss is plain cross-entropy, comparable with val_loss (the smoothed one is not).
                    loss_sum += (F.cross_entropy(logits.detach().float(), y, reduction="sum") if r.label_smoothing
                                 else loss.detach() * len(y))
                    correct += (logits.detach().argmax(1) == y).sum()
                    if on_step:
                        on_step(p.step_in_epoch, steps_per_epoch)
                    stopping = any_rank(cluster, bool(stop), device)    # one Ctrl-C stops every rank
                    if p.step_in_epoch < steps_per_epoch and (stopping or (checkpoint_every and
                                                                           p.step % checkpoint_every == 0)):
                        p.epoch_time_s += time.perf_counter() - t0   # checkpoint writes are not training time
                        checkpoint()
                        t0 = time.perf_counter()
                        if stopping:
                            break
                p.epoch_time_s += time.perf_counter() - t0
                if p.step_in_epoch < steps_per_epoch:   # stopped inside the epoch
                    break
                gather_sums()
                record = {"epoch": p.epoch, "loss": loss_sum.item() / n_used, "accuracy": correct.item() / n_used,
                          "lr": lr_at(p.step - 1, total, r), "time_s": round(p.epoch_time_s, 3)}
                if len(data.val_y):
                    record["val_loss"], record["val_accuracy"] = loss_and_accuracy(
                        predict_logits(model, data.val_x, precision=precision, norm=norm), data.val_y)
                    if record["val_loss"] < p.best_loss:
                        p.best_loss, p.best_epoch = record["val_loss"], p.epoch
                        if early_stopping:
                            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                p.epochs.append(record)
                p.train_time_s, p.epoch_time_s = p.train_time_s + p.epoch_time_s, 0.0
                p.stopped_early = bool(early_stopping) and p.epoch - p.best_epoch >= early_stopping
                p.epoch, p.step_in_epoch = p.epoch + 1, 0
                checkpoint()
                if on_epoch:
                    on_epoch(record)
            hist.interrupted = stopping and p.epoch <= epochs and not p.stopped_early
        except KeyboardInterrupt:   # a second Ctrl-C, or raised by a callback: keep what was trained
            hist.interrupted = True
        except RuntimeError as e:   # DDP's gradient all-reduce when another rank died
            if cluster.active:
                raise lost(cluster, "training", e) from None
            raise
    hist.epochs, hist.best_epoch, hist.train_time_s = p.epochs, p.best_epoch, p.train_time_s
    hist.stopped_early = p.stopped_early
    if hist.interrupted:
        hist.stopped_at = (p.epoch, p.step_in_epoch)
    if best_state is not None and hist.best_epoch != len(hist.epochs):
        model.load_state_dict(best_state)
    if stats is not None:
        fold_normalization(model, *stats)
    return hist


def overfitting_onset(epochs: list[dict]) -> int | None:
    """The epoch (1-based) from which validation loss rose while training loss kept falling:
    the one after the lowest validation loss, when at least two epochs followed it and the
    last validation loss is >2 % above the lowest. None when the curves show no such thing."""
    vals = [e.get("val_loss") for e in epochs]
    if len(epochs) < 3 or any(v is None for v in vals):
        return None
    best, last = int(np.argmin(vals)), len(epochs) - 1
    if best >= last - 1 or epochs[last]["loss"] >= epochs[best]["loss"] or vals[last] <= vals[best] * 1.02:
        return None
    return best + 2


def overfitting_note(epochs: list[dict], suggest: bool = True) -> str | None:
    """The seed's 20-epoch observation, said with this run's numbers (None when it does not apply).
    suggest: end with the --early-stopping hint (not when early stopping already ran)."""
    onset = overfitting_onset(epochs)
    if onset is None:
        return None
    best, last = epochs[onset - 2], epochs[-1]
    return (f"overfitting: validation loss has been rising since epoch {onset} "
            f"(lowest {best['val_loss']:.4f} at epoch {onset - 1}, now {last['val_loss']:.4f}) while training loss "
            f"kept falling ({best['loss']:.4f} → {last['loss']:.4f})"
            + (f"; --early-stopping 2 would have kept epoch {onset - 1}'s weights" if suggest else ""))


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


def _setup(config: TrainConfig, threads: int, cluster: Cluster) -> tuple[torch.device, torch.dtype, int]:
    """Device, precision and threads for a run (one GPU, or a share of the cores, per process of a
    torchrun launch); deterministic mode where asked; the process group joined."""
    device = pick_device(config.device)
    if cluster.active and device.type == "cuda":
        device = torch.device("cuda", cluster.local_rank)
        torch.cuda.set_device(device)
    if cluster.active and not threads:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // cluster.local_world)
    join(cluster, device)
    if config.deterministic:
        # cuBLAS needs a fixed workspace to reduce in a fixed order (PyTorch "Reproducibility" notes).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return device, pick_precision(config.precision, device), set_threads(threads)


def train(config: TrainConfig = TrainConfig(), data: Dataset | None = None,
          on_start: Callable[[Path, ConvNet, Dataset], None] | None = None,
          on_epoch: Callable[[dict], None] | None = None,
          on_step: Callable[[int, int], None] | None = None) -> Run:
    """Train a model into a new run directory and return the finished Run.

    Everything is checked (arguments, spec against the data, data files) before the
    directory is created; if training fails before its first checkpoint the directory is removed.
    Under torchrun every process calls this; rank 0 writes the run and gets the Run, the
    others get None.
    """
    config.check()
    r = config.settings()
    if data is None:
        data = config.load_data()
    cluster = from_env()
    device, precision, threads = _setup(config, config.threads, cluster)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    model = build_model(config.model, data.input_shape, data.num_classes)
    init_weights(model, r.init)
    model = model.to(device).to(memory_format=torch.channels_last)

    try:
        made = new_run_dir(config.runs_dir, config.name, config.model) if cluster.main else None
        path = Path(config.runs_dir) / broadcast_name(cluster, made.name if made else None)
    except BaseException:
        leave(cluster)
        raise
    try:
        if cluster.main:
            write_json(path / "config.json", {
                **asdict(config), "spec": model.spec, "settings": asdict(r),
                "resolved": {"device": str(device), "precision": str(precision).removeprefix("torch."),
                             "threads": threads, "processes": cluster.world, "train_images": len(data.train_y),
                             "val_images": len(data.val_y), "test_images": len(data.test_y),
                             "streamed": isinstance(data.train_x, StreamedImages),
                             "skipped_files": len(data.skipped)},
                "versions": versions(), "command": sys.argv, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            write_json(path / "model.json", {"spec": model.spec, "input_shape": list(model.input_shape),
                                             "classes": list(data.classes), "dataset": data.name,
                                             "preprocessing": "uint8 pixels / 255, shape (N, C, H, W)",
                                             "image_rule": image_rule(data.name)})
            if data.files is not None:       # an image folder: which files were read, for evaluate & co.
                write_json(path / "files.json", data.files)
        return _train_into(path, config, data, model, precision, None, on_start, on_epoch, on_step, cluster)
    except BaseException:
        if cluster.main and not (path / LATEST).exists() and not (path / PREVIOUS).exists():
            shutil.rmtree(path)              # nothing to resume: leave no run
        raise
    finally:
        leave(cluster)


def resume(run: str | os.PathLike, runs_dir: str | os.PathLike = "runs", data: Dataset | None = None,
           data_dir: str | None = None, device: str | None = None,
           on_start: Callable[[Path, ConvNet, Dataset], None] | None = None,
           on_epoch: Callable[[dict], None] | None = None,
           on_step: Callable[[int, int], None] | None = None) -> Run:
    """Continue a stopped or killed run from its latest good checkpoint, with its own settings.

    data_dir, device: where the data and the compute are now, when they moved since.
    A deterministic run resumed on the same machine ends with the weights it would have had.
    """
    path = resolve_run(run, runs_dir)
    saved = read_json(path / "config.json")
    if (path / "results.json").exists() and not read_json(path / "results.json").get("interrupted"):
        raise RunError(f"run {path.name} has finished; nothing to resume (train a new run for more epochs)")
    known = {f.name for f in fields(TrainConfig)}
    try:
        config = TrainConfig(**{k: v for k, v in saved.items() if k in known})
        config = replace(config, data_dir=data_dir or config.data_dir, device=device or config.device)
        config.check()
        threads = int(saved["resolved"]["threads"])   # the same threads: oneDNN's sums depend on them
    except (TypeError, KeyError, ValueError) as e:
        raise RunError(f"{path / 'config.json'}: malformed ({e})") from None
    if data is None:
        data = config.load_data()
    cluster = from_env()
    device, precision, _ = _setup(config, threads, cluster)
    try:
        model = build_model(config.model, data.input_shape, data.num_classes)
        ckpt = load_checkpoint(path, model)
        ckpt.progress.resumes += 1
        if cluster.main:
            for stale in path.glob(".*.tmp"):        # a write the kill interrupted
                stale.unlink()
        model = model.to(device).to(memory_format=torch.channels_last)
        return _train_into(path, config, data, model, precision, ckpt, on_start, on_epoch, on_step, cluster)
    finally:
        leave(cluster)


def _train_into(path: Path, config: TrainConfig, data: Dataset, model: ConvNet, precision: torch.dtype,
                ckpt: Checkpoint | None, on_start, on_epoch, on_step, cluster: Cluster) -> Run | None:
    """Train (or go on training) in an existing run directory; write weights, metrics and results
    (rank 0 of several processes alone writes and reports)."""
    if not cluster.main:
        return _finish(path, config, data, model, precision, ckpt, None, None, None, cluster)
    if on_start:
        on_start(path, model, data)
    metrics_lines = [(json.dumps(rec) + "\n").encode() for rec in (ckpt.progress.epochs if ckpt else [])]
    write_atomic(path / "metrics.jsonl", b"".join(metrics_lines))   # on resume: as far as the checkpoint got
    tb = TensorBoardLog(path, first_epoch=len(metrics_lines) + 1) if config.tensorboard else None

    def record_epoch(rec: dict) -> None:
        metrics_lines.append((json.dumps(rec) + "\n").encode())
        write_atomic(path / "metrics.jsonl", b"".join(metrics_lines))
        if tb:
            tb.epoch(rec, model)
        if on_epoch:
            on_epoch(rec)

    try:
        return _finish(path, config, data, model, precision, ckpt, record_epoch, on_step, tb, cluster)
    finally:
        if tb:
            tb.close()


def _finish(path: Path, config: TrainConfig, data: Dataset, model: ConvNet, precision: torch.dtype,
            ckpt: Checkpoint | None, record_epoch, on_step, tb: TensorBoardLog | None, cluster: Cluster) -> Run | None:
    """Fit, then write the weights and the test results (and the last TensorBoard images)."""
    r = config.settings()
    wall = time.perf_counter()
    hist = fit(model, data, r, config.epochs, config.seed, config.early_stopping, precision, config.compile,
               record_epoch, on_step, checkpoint_dir=path, checkpoint_every=config.checkpoint_every, resume=ckpt,
               cluster=cluster)
    if not hist.epochs:
        raise KeyboardInterrupt if hist.interrupted else ConvlensError("training produced no epoch")
    if not cluster.main:
        barrier(cluster)                       # rank 0 writes the results meanwhile
        return None
    save_weights(path / "model.safetensors", model)
    test_logits = predict_logits(model, data.test_x, precision=precision)
    test_loss, test_acc = loss_and_accuracy(test_logits, data.test_y)
    tta = {}
    if r.flip:   # trained on mirror images too: report the mirror-averaged test accuracy beside it
        tta = {"test_accuracy_tta": loss_and_accuracy(
            predict_logits(model, data.test_x, precision=precision, tta=True), data.test_y)[1]}
    write_json(path / "results.json", {
        "test_loss": test_loss, "test_accuracy": test_acc, **tta, "epochs_run": len(hist.epochs),
        "best_epoch": hist.best_epoch, "stopped_early": hist.stopped_early, "interrupted": hist.interrupted,
        "stopped_at": list(hist.stopped_at) if hist.stopped_at else None,
        "restored_best": bool(config.early_stopping and hist.best_epoch != len(hist.epochs)),
        "train_time_s": round(hist.train_time_s, 3), "wall_time_s": round(time.perf_counter() - wall, 3),
        "deterministic": config.deterministic, "resumes": ckpt.progress.resumes if ckpt else 0,
        "overfitting": overfitting_note(hist.epochs, suggest=not config.early_stopping)})
    if tb:
        tb.final(len(hist.epochs), test_loss, test_acc, confusion_counts(test_logits, data.test_y, data.num_classes),
                 model, data)
    barrier(cluster)
    return open_run(path)
