"""Where a training step of the seed network goes on this CPU, and what each optimisation bought.

    .venv/bin/python benchmarks/profile_step.py [--batch 128] [--steps 40]

1. Ablation, one process, same random batches: each line adds one optimisation to the
   line above and prints ms/step, s/epoch (60,000 images) and the speed-up so far.
2. torch.profiler breakdown of the final configuration, grouped into conv forward,
   conv backward, pooling, relu, dense, optimizer, and the rest (casts, Python, autograd).
Results are written beside this file (PROFILE.md quotes them, with the machine).
"""

import argparse
import ctypes
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from convlens.bench import machine
from convlens.models import build_model

libc = ctypes.CDLL("libc.so.6")
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def glibc_defaults():
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    libc.mallopt(M_TOP_PAD, 0)


def step_time(cfg, x8, y, batch, steps):
    torch.manual_seed(0)
    model = build_model("seed")
    if not cfg["pool_first"]:
        model._pool_first = set()        # relu then pool, as the spec reads
    fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), 1e-3)

    def one(k):
        i = (k * batch) % (len(x8) - batch)
        x = x8[i:i + batch].float().mul_(1 / 255).contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg["bf16"]):
            loss = F.cross_entropy(model(x), y[i:i + batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for k in range(5):
        one(k)
    t = time.perf_counter()
    for k in range(steps):
        one(k)
    return (time.perf_counter() - t) / steps, (model, one)


GROUPS = [("conv backward", ("convolution_backward", "ConvolutionBackward")),
          ("conv forward", ("mkldnn_convolution", "aten::convolution", "aten::_convolution", "aten::conv2d")),
          ("pooling (incl. zero-filling its gradient)", ("max_pool2d", "MaxPool2D", "aten::fill_", "aten::zero_")),
          ("relu", ("clamp_min", "relu", "threshold_backward")),
          ("dense", ("aten::mm", "aten::addmm", "aten::linear", "aten::t")),
          ("optimizer", ("Optimizer.", "_foreach", "aten::lerp", "aten::addcmul", "aten::addcdiv", "aten::sqrt")),
          ("loss", ("log_softmax", "nll_loss", "cross_entropy"))]


def breakdown(one, steps):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(steps):
            one(k)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    groups = {g: 0.0 for g, _ in GROUPS}
    groups["other (casts, fill, autograd, Python)"] = 0.0
    for e in prof.key_averages():
        for g, keys in GROUPS:
            if any(k in e.key for k in keys):
                groups[g] += e.self_cpu_time_total
                break
        else:
            groups["other (casts, fill, autograd, Python)"] += e.self_cpu_time_total
    return {g: {"ms_per_step": v / 1e3 / steps, "share": v / total} for g, v in groups.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    x8 = torch.randint(0, 256, (20000, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 10, (20000,))
    ladder = [("fp32, NCHW, relu→pool (PyTorch defaults)", dict(channels_last=False, bf16=False, pool_first=False, malloc=False)),
              ("+ channels_last", dict(channels_last=True, bf16=False, pool_first=False, malloc=False)),
              ("+ bf16 autocast", dict(channels_last=True, bf16=True, pool_first=False, malloc=False)),
              ("+ pool before relu (they commute)", dict(channels_last=True, bf16=True, pool_first=True, malloc=False)),
              ("+ glibc malloc keeps freed memory", dict(channels_last=True, bf16=True, pool_first=True, malloc=True))]
    rows, base, last = [], None, None
    for name, cfg in ladder:
        if cfg["malloc"]:
            from convlens.engine import tune_allocator
            tune_allocator()
        else:
            glibc_defaults()
        dt, last = step_time(cfg, x8, y, args.batch, args.steps)
        base = base or dt
        rows.append({"step": name, "ms_per_step": dt * 1e3, "s_per_epoch": dt * 60000 / args.batch,
                     "speedup": base / dt})
        print(f"{name:45s} {dt * 1e3:7.1f} ms/step {dt * 60000 / args.batch:6.1f} s/epoch  {base / dt:4.2f}×",
              flush=True)
    parts = breakdown(last[1], args.steps)
    print("\nWhere the final step's time goes (torch.profiler, self CPU time):")
    for g, v in parts.items():
        print(f"  {g:40s} {v['ms_per_step']:6.2f} ms  {100 * v['share']:5.1f} %")
    out = {"machine": machine(), "batch": args.batch, "steps": args.steps, "ladder": rows, "breakdown": parts,
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    path = Path(__file__).with_name("results") / f"profile-b{args.batch}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
