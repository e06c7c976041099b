"""A GPU's start-up kept off the training clock.

A fresh process's first steps on a GPU pay for things that have nothing to do with training: the cuBLAS
and cuDNN handles are created, each kernel's module is loaded on its first launch, the caching allocator
takes its memory. On an H200 the seed network's first epoch took 0.5–0.8 s and each later one 0.10 s
(benchmarks/LADDER.md); that start-up is the likely cause, not yet measured apart. `warm_up` runs those
first steps on a throwaway copy of the model, on blank images, before training starts, as MLPerf's rules
allow ("system warm-up on synthetic data"), and says how long it took: results.json records it as
`device_warmup_s` beside `train_time_s`, never inside it.

The model, its optimizer, its moving average and every random generator are left exactly as they were,
so a run trains to the same weights with or without it.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ema import WeightAverage
from .engine import autocast, device_of, drain


def warm_up(model: nn.Module, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
            make_input: Callable[[tuple], torch.Tensor], shapes: list[tuple], precision: torch.dtype,
            label_smoothing: float = 0.0, ema: float = 0.0) -> float:
    """Seconds spent on one training step of a copy of `model` at each input shape the run will train on
    (the full batch and the short last one where the data leaves one, at each image size: other shapes can
    take other kernels), its input from `make_input(shape)` (the run's augmentation and normalisation of
    blank images, with their own random draws), with an optimizer of the run's kind and, where the run keeps
    one, a moving average."""
    device = device_of(model)
    t0 = time.perf_counter()
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        twin = copy.deepcopy(model).train()
        opt = make_optimizer(twin)
        average = WeightAverage(twin, ema) if ema else None
        for shape in dict.fromkeys(shapes):
            x = make_input(shape)
            y = torch.zeros(len(x), dtype=torch.long, device=device)
            # loop.fit's beats 2-4, on the copy (kept there in full so fit reads as one screen: change both)
            with autocast(device, precision):
                loss = F.cross_entropy(twin(x), y, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                average.update(twin, 1)
        drain(device)
    return time.perf_counter() - t0
