"""Where a training step's time goes on a GPU: ms a step by model and batch size, and a profile.

    PYTHONPATH=src python3 benchmarks/gpu_steps.py --data-dir DIR --out steps.json [--device cuda]

For each (model, recipe) of the Plan and each batch size, one process-local `fit` (the very loop
`convlens train` runs: augmentation, optimizer, moving average, schedule, running sums) over
Plan.steps steps of real Fashion-MNIST images, after a short warm-up fit of the same shape; the time
is taken around the whole fit with the device synchronised, so no queued work is left uncounted.
Then torch.profiler over one batch-64 fit of each model: its busiest operators on the CPU and on
the device, and the share of the step the device was busy (the rest is the host launching work).
A step that the device is idle for most of is bound by launches, not arithmetic: larger batches
or fewer, fused kernels are what shorten its epochs, not faster matrix units.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from dataclasses import dataclass
import json
import math
import time

import torch
from torch.profiler import ProfilerActivity, profile

from convlens.config import TrainConfig
from convlens.datasets import load_fashion_mnist
from convlens.engine import drain, pick_precision, set_threads
from convlens.loop import fit, init_weights
from convlens.models import build_model

EPOCH_IMAGES = 60_000


@dataclass(frozen=True)
class Plan:
    """What is timed: each (model, recipe) at each batch size for `steps` steps after `warmup`, and a profile of
    `profiled` steps of batch 64."""
    models: tuple[tuple[str, str], ...] = (("seed", "fast"), ("resnet-gpu", "strong"))
    batches: tuple[int, ...] = (64, 256, 1024)
    steps: int = 120
    warmup: int = 20
    profiled: int = 40


QUICK = dict(batches=(64,), steps=3, warmup=1, profiled=2)     # --quick: the script itself, on a CPU


def one_fit(data, model_name: str, recipe: str, batch: int, steps: int, device: torch.device,
            around=contextlib.nullcontext()) -> tuple[float, int]:
    """(seconds, steps taken) for up to `steps` training steps of a fresh model (fewer where the training set
    runs out first: 59 of 1,024 images), the device drained before and after; `around` (a profiler) is
    entered for the fit alone, not for building the model."""
    config = TrainConfig(model=model_name, recipe=recipe, batch_size=batch, epochs=1, val_split=0.0,
                         device=device.type)
    part = dataclasses.replace(data, train_x=data.train_x[:steps * batch], train_y=data.train_y[:steps * batch])
    torch.manual_seed(0)
    model = build_model(model_name, part.input_shape, part.num_classes)
    init_weights(model, config.settings.init)
    model = model.to(device).to(memory_format=torch.channels_last)
    drain(device)
    with around:
        t0 = time.perf_counter()
        fit(model, part, config, pick_precision("auto", device))
        drain(device)
        return time.perf_counter() - t0, math.ceil(len(part.train_y) / batch)


def step_times(data, device: torch.device, plan: Plan) -> list[dict]:
    """Each model at each batch size with cuDNN's default algorithm choice, then (on a GPU) each at the
    smaller two batch sizes again with cudnn.benchmark (time every algorithm once per shape, keep the fastest)."""
    rows = []
    autotune = (False, True) if device.type == "cuda" else (False,)
    for tuned in autotune:
        torch.backends.cudnn.benchmark = tuned
        for model_name, recipe in plan.models:
            for batch in plan.batches[:2] if tuned else plan.batches:
                one_fit(data, model_name, recipe, batch, plan.warmup, device)    # kernels chosen, memory taken
                seconds, taken = one_fit(data, model_name, recipe, batch, plan.steps, device)
                s = seconds / taken
                rows.append({"model": model_name, "recipe": recipe, "batch": batch, "cudnn_benchmark": tuned,
                             "ms_per_step": round(1e3 * s, 3),
                             "s_per_epoch": round(s * math.ceil(EPOCH_IMAGES / batch), 3),
                             "images_per_s": round(batch / s)})
                print(json.dumps(rows[-1]), flush=True)
    torch.backends.cudnn.benchmark = False
    return rows


def device_us(event) -> float:
    """An operator's own time on the device (the attribute's name changed across PyTorch versions)."""
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return getattr(event, name)
    return 0.0


def profiled(data, device: torch.device, plan: Plan) -> dict:
    out = {}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    steps = plan.profiled
    for model_name, recipe in plan.models:
        one_fit(data, model_name, recipe, 64, plan.warmup, device)
        prof = profile(activities=activities)
        wall, _ = one_fit(data, model_name, recipe, 64, steps, device, around=prof)
        events = prof.key_averages()
        # The kernels alone: an operator's entry also carries the device time of the kernels it launched.
        busy_us = sum(device_us(e) for e in events if getattr(e.device_type, "name", "") == "CUDA")
        by_device = sorted(events, key=device_us, reverse=True)[:15]
        by_cpu = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
        out[model_name] = {
            "ms_per_step_profiled": round(1e3 * wall / steps, 3),
            "device_busy_ms_per_step": round(busy_us / 1e3 / steps, 3),
            "aten_calls_per_step": sum(e.count for e in events if e.key.startswith("aten::")) // steps,
            "top_device": [[e.key, e.count // steps, round(device_us(e) / steps, 1)] for e in by_device],
            "top_cpu": [[e.key, e.count // steps, round(e.self_cpu_time_total / steps, 1)] for e in by_cpu]}
        print(model_name, "profiled:", out[model_name]["ms_per_step_profiled"], "ms a step,",
              out[model_name]["device_busy_ms_per_step"], "ms of it the device busy", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--out", default="gpu-steps.json")
    ap.add_argument("--quick", action="store_true", help="3 steps, batch 64 only: the script itself, on a CPU")
    ap.add_argument("--profile-only", action="store_true", help="only the profile, not the step times")
    ap.add_argument("--models", default=None, help="MODEL:RECIPE,… in place of seed:fast,resnet-gpu:strong "
                    "(e.g. resnet-cpu:strong with --device cpu: where the CPU preset's step goes)")
    args = ap.parse_args()
    models = {"models": tuple(tuple(m.split(":")) for m in args.models.split(","))} if args.models else {}
    plan = Plan(**models, **(QUICK if args.quick else {}))
    device = torch.device(args.device)
    set_threads(args.threads)
    data = load_fashion_mnist(args.data_dir, val_split=0.0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = [] if args.profile_only else step_times(data, device, plan)
    result = {"device": name, "torch": torch.__version__, "steps": plan.steps, "rows": rows,
              "profile": profiled(data, device, plan)}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
