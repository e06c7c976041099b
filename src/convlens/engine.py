"""The engine: everything that runs a model and is not training.

Device, precision and threads; the one place uint8 pixels become model input (/ 255, and
the training normalisation where there is one); batched prediction; loss, accuracy and
confusion counts. Training, evaluation, inspection, the report and the explorer all run
their models through here, so they see the same numbers.

Speed notes (2-core AMD EPYC, AVX-512 bf16, no AMX; see benchmarks/PROFILE.md):
- bf16 autocast doubles matmul throughput (fp32 ~175 GFLOP/s, bf16 ~390 GFLOP/s here)
  and channels_last lets oneDNN skip layout reorders around every convolution.
- Images stay uint8 in memory (47 MB for Fashion-MNIST) and are scaled one batch at a time:
  no DataLoader, no worker processes, no per-item Python.
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConvlensError

# ---------------------------------------------------------------------------
# Device, precision, threads

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device_name(device: str) -> str:
    """auto, cpu, cuda or cuda:N, whether or not this machine has it (a config may come from another)."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ConvlensError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def pick_device(device: str = "auto") -> torch.device:
    """auto: the GPU where PyTorch has one, else the CPU; cpu, cuda or cuda:N as asked, if it exists."""
    check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int = 0) -> int:
    """One intra-op thread per core (hyper-threads only add contention for these kernels)."""
    torch.set_num_threads(threads or cores())
    tune_allocator()
    return torch.get_num_threads()


@contextmanager
def threads(n: int):
    """The block runs with n intra-op threads, then the number before is restored. Loops of many small
    ops (an input optimised a step at a time, maps of one image) lose more at the threads' barriers than
    they gain: on the 2-core machine, with another process busy, 2 threads made activation maximisation
    15× slower than 1 (31.9 s against 2.3 s for conv2d_2's 64 filters), and 1 is as fast when idle."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Above this many multiply-adds a step, a loop's ops are big enough for every thread: on the idle 2-core
# machine, maximising resnet-cpu's residual_1 (32 filters × 4 copies through 14.7 M multiply-adds each,
# 1.9 G a step) took 9.2 s on 2 threads against 16.2 s on 1, and its class views 3.0 against 5.1 s. The
# seed's conv2d_2 (0.23 G a step) stays on 1 thread, which loses nothing idle and much under contention.
BIG_STEP = 10**9


def step_threads(mult_adds: int) -> int:
    """Threads for a loop of small steps that each do `mult_adds` multiply-adds: 1, or all when big."""
    return torch.get_num_threads() if mult_adds >= BIG_STEP else 1


def autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode (dropout off, batch-norm running statistics) for the block, then back."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def drain(device: torch.device) -> None:
    """Wait for the work queued on a GPU (its kernels run after the Python that launched them has moved
    on), so that a clock read next counts it; nothing on a CPU, where every operator finishes before it returns."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor (on any device, in any float type) as a contiguous float32 NumPy array."""
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


# ---------------------------------------------------------------------------
# uint8 pixels -> model input: the seed's `reshape(-1, 28, 28, 1)` and `/ 255.`, in one place

PIXEL_MAX = 255              # uint8 white; model inputs are pixel / PIXEL_MAX, in [0, 1]
Norm = tuple[torch.Tensor, torch.Tensor]   # per-channel (scale, shift): x = pixel * scale - shift


def to_input(x_u8: torch.Tensor, device: torch.device, norm: Norm | None = None) -> torch.Tensor:
    """A uint8 batch (B, C, H, W) -> float in [0, 1] (or normalised), channels_last, on `device`."""
    x = x_u8.to(device, non_blocking=True).float()
    x = x.mul_(1 / PIXEL_MAX) if norm is None else x.mul_(norm[0]).sub_(norm[1])
    return x.contiguous(memory_format=torch.channels_last)


def unit_pixels(x):
    """Pixels as float32 in [0, 1]: uint8 is scaled, floats are taken as they are; NumPy or torch."""
    if isinstance(x, torch.Tensor):
        return x.float() / PIXEL_MAX if x.dtype == torch.uint8 else x.to(torch.float32, copy=True)
    x = np.asarray(x)
    return x.astype(np.float32) / PIXEL_MAX if x.dtype == np.uint8 else x.astype(np.float32)


def display_image(image: torch.Tensor) -> np.ndarray:
    """One image (C, H, W) as the grayscale (H, W) float32 in [0, 1] a figure draws under a heat map."""
    x = unit_pixels(image)
    return (x[0] if x.shape[0] == 1 else x.mean(0)).numpy()


def model_input(model: nn.Module, images) -> torch.Tensor:
    """uint8 or [0, 1] float images (H, W), (C, H, W) or (N, C, H, W) -> float32 (N, C, H, W) on the
    model's device, for looking inside it one image at a time (never the caller's tensor)."""
    x = unit_pixels(torch.as_tensor(images))
    while x.dim() < 4:                       # (H, W) -> (1, H, W) -> (1, 1, H, W)
        x = x.unsqueeze(0)
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        hwc = lambda s: "×".join(map(str, (*s[1:], s[0])))        # noqa: E731 (C, H, W) -> "H×W×C", as Keras
        raise ConvlensError(f"the image is {hwc(tuple(x.shape[1:]))} but the model takes "
                            f"{hwc(tuple(model.input_shape))} (height × width × channels)")
    return x.to(device_of(model))


def normalizer(mean: torch.Tensor, std: torch.Tensor, device: torch.device) -> Norm:
    """The (scale, shift) that turns uint8 pixels into (pixel / 255 - mean) / std in one multiply-add."""
    return ((1 / (PIXEL_MAX * std)).view(1, -1, 1, 1).to(device), (mean / std).view(1, -1, 1, 1).to(device))


def channel_stats(x_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (Fashion-MNIST: 0.286, 0.353).

    From a 256-bin histogram per channel: exact, and no float copy of the dataset (a float64
    copy of Fashion-MNIST's training images is 376 MB, more than everything else together).
    """
    values = torch.arange(256, dtype=torch.float64) / PIXEL_MAX
    means, stds = [], []
    for c in range(x_u8.shape[1]):
        counts = torch.bincount(x_u8[:, c].reshape(-1), minlength=256).double()
        n = counts.sum()
        mean = (counts * values).sum() / n
        var = (counts * (values - mean) ** 2).sum() / (n - 1)
        means.append(mean)
        stds.append(var.sqrt())
    return torch.stack(means).float(), torch.stack(stds).float().clamp_min(1e-3)


# ---------------------------------------------------------------------------
# Batched prediction and what is measured on it

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


def predict_logits(model: nn.Module, x_u8, batch_size: int | None = None,
                   precision: torch.dtype = torch.float32, norm: Norm | None = None,
                   tta: bool = False) -> torch.Tensor:
    """Float32 logits (N, classes) for uint8 images (a tensor, or streamed images: anything whose
    split(batch_size) gives uint8 batches), in eval mode, without gradients.

    tta: average the softmax of each image and its mirror image (returned as log-probabilities).
    """
    device = device_of(model)
    outs = []
    with eval_mode(model), torch.inference_mode(), autocast(device, precision):
        for batch in x_u8.split(batch_size or eval_batch(model)):
            x = to_input(batch, device, norm)
            if tta:
                probs = (model(x).float().softmax(1) + model(x.flip(3)).float().softmax(1)) / 2
                outs.append(probs.log())
            else:
                outs.append(model(x).float())
    return torch.cat(outs) if outs else torch.empty(0, getattr(model, "num_classes", 0))


def confusion_counts(logits: torch.Tensor, y: torch.Tensor, k: int) -> np.ndarray:
    """(k, k) counts, rows the true class, columns the predicted one."""
    return torch.bincount(y.to(logits.device) * k + logits.argmax(1), minlength=k * k).reshape(k, k).cpu().numpy()


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    y = y.to(logits.device)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()
