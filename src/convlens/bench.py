"""`convlens bench`: time to the seed's accuracy, convlens vs a plain PyTorch loop vs the seed's Keras code.

Every variant runs in its own child process (so peak memory is its own) on the same
Fashion-MNIST arrays, all 60,000 training images, and is evaluated on the 10,000 test
images after each epoch (bench only; evaluation time is not training time):

  convlens   the default recipe (in-memory uint8 batches, channels_last, bf16 where native)
  pytorch    a plain loop as a tutorial writes it: DataLoader, batch 32, fp32, Adam 1e-3
  keras      the seed notebook's code verbatim (needs TensorFlow; `make bench-keras` installs it)

Ratios are taken against the convlens variant, measured in the same invocation.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .config import TrainConfig
from .datasets import load_dataset
from .engine import channel_stats, loss_and_accuracy, pick_device, pick_precision, predict_logits, set_threads
from .evaluate import evaluate
from .loop import can_fold_normalization, fit, fold_normalization, init_weights
from .models import build_model
from .registry import FASHION_MNIST
from .sources import fetch
from .spread import mean_std

TARGET = 0.9128          # the seed notebook's test accuracy after 5 epochs
VARIANTS = ("convlens", "pytorch", "keras")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux reports KiB


def _test_set(data_dir):
    return load_dataset("fashion-mnist", data_dir, val_split=0.0)


def run_convlens(seed: int, epochs: int, data_dir: str | None, recipe: str = "fast", inference: bool = False) -> dict:
    t0 = time.perf_counter()
    data = _test_set(data_dir)
    set_threads()
    device = pick_device("auto")
    precision = pick_precision("auto", device)
    torch.manual_seed(seed)
    config = TrainConfig(recipe=recipe, val_split=0.0, epochs=epochs, seed=seed)
    r = config.settings
    model = build_model("seed")
    init_weights(model, r.init)
    model = model.to(device).to(memory_format=torch.channels_last)
    setup = time.perf_counter() - t0
    per_epoch = []
    stats = channel_stats(data.train_x) if r.normalize and can_fold_normalization(model) else None

    def on_epoch(rec, weights):
        # Bench only: a copy with the normalisation folded in, as the finished run would hold.
        acc = _accuracy_after_fold(weights, data, stats, precision)
        per_epoch.append({"epoch": rec["epoch"], "train_time_s": rec["time_s"], "test_accuracy": acc})

    warmup_s = fit(model, data, config, precision=precision, on_epoch=on_epoch).warmup_s
    if per_epoch:       # a GPU's start-up (warmup.py) counted in, as the baselines' first epochs count theirs
        per_epoch[0]["train_time_s"] += warmup_s
    out = {"setup_s": setup, "epochs": per_epoch, "precision": str(precision).removeprefix("torch.")}
    if inference:
        out["inference"] = measure_inference(model, data.test_x, data.test_y, precision)
    return out


def _accuracy_after_fold(model, data, stats, precision) -> float:
    """Test accuracy of `model` with the training normalisation `stats` (mean, std) folded into a copy."""
    m = model
    if stats is not None:
        m = copy.deepcopy(model)
        fold_normalization(m, *stats)
    return loss_and_accuracy(predict_logits(m, data.test_x, precision=precision), data.test_y)[1]


def measure_inference(model, test_x, test_y, precision) -> dict:
    """Throughput of evaluating 10,000 test images, and single-image latency, in this process."""
    classes = [str(i) for i in range(10)]
    evaluate(model, test_x, test_y, classes, precision)        # warm-up
    best = min(_timed(lambda: evaluate(model, test_x, test_y, classes, precision)) for _ in range(3))
    one = test_x[:1]
    for _ in range(20):
        predict_logits(model, one, precision=torch.float32)
    lat = sorted(_timed(lambda: predict_logits(model, one, precision=torch.float32)) for _ in range(300))
    return {"eval_images_per_s": len(test_y) / best, "eval_s": best, "predict_median_ms": 1e3 * lat[len(lat) // 2],
            "predict_p90_ms": 1e3 * lat[int(len(lat) * 0.9)]}


def _timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def run_pytorch(seed: int, epochs: int, data_dir: str | None) -> dict:
    """The loop a PyTorch tutorial writes (pytorch/examples mnist style): no convlens engine at all,
    its own / 255 included."""
    t0 = time.perf_counter()
    data = _test_set(data_dir)
    torch.manual_seed(seed)
    train_ds = TensorDataset(data.train_x.float() / 255, data.train_y)
    test_x = data.test_x.float() / 255
    loader = DataLoader(train_ds, batch_size=32, shuffle=True)
    model = nn.Sequential(nn.Conv2d(1, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    setup = time.perf_counter() - t0
    per_epoch = []
    for epoch in range(1, epochs + 1):
        model.train()
        t = time.perf_counter()
        for x, y in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        elapsed = time.perf_counter() - t
        model.eval()
        with torch.no_grad():
            acc = sum((model(test_x[i:i + 1000]).argmax(1) == data.test_y[i:i + 1000]).sum().item()
                      for i in range(0, len(test_x), 1000)) / len(test_x)
        per_epoch.append({"epoch": epoch, "train_time_s": elapsed, "test_accuracy": acc})
    return {"setup_s": setup, "epochs": per_epoch, "precision": "float32"}


def child(argv: list[str]) -> None:
    """python -m convlens.bench VARIANT SEED EPOCHS DATA_DIR [--inference]: one JSON line on stdout."""
    variant, seed, epochs, data_dir = argv[0], int(argv[1]), int(argv[2]), argv[3] or None
    if variant == "convlens":
        out = run_convlens(seed, epochs, data_dir, inference="--inference" in argv)
    elif variant == "pytorch":
        out = run_pytorch(seed, epochs, data_dir)
    else:
        raise SystemExit(f"unknown variant {variant}")
    out["peak_rss_mb"] = _peak_rss_mb()
    print("BENCH " + json.dumps(out), flush=True)


def _keras_python(explicit: str | None) -> str | None:
    """A Python that can import TensorFlow: --keras-python, .venv-keras/bin/python, or this one."""
    candidates = [explicit] if explicit else [str(Path(".venv-keras/bin/python")), sys.executable]
    for py in candidates:
        if py and Path(py).exists():
            ok = subprocess.run([py, "-c", "import tensorflow"], capture_output=True, timeout=120)
            if ok.returncode == 0:
                return py
    return None


def _run_child(cmd: list[str], log) -> dict:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = [l for l in p.stdout.splitlines() if l.startswith("BENCH ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {' | '.join(tail)}")
    out = json.loads(lines[-1][6:])
    out["process_wall_s"] = time.perf_counter() - t
    return out


def summarize_variant(runs: list[dict]) -> dict:
    """Mean ± std over seeds: final accuracy, training time, time to TARGET, peak memory."""
    def to_target(r):
        t = 0.0
        for e in r["epochs"]:
            t += e["train_time_s"]
            if e["test_accuracy"] >= TARGET:
                return t, e["epoch"]
        return None, None
    finals = [r["epochs"][-1]["test_accuracy"] for r in runs]
    times = [sum(e["train_time_s"] for e in r["epochs"]) for r in runs]
    targets = [to_target(r) for r in runs]
    reached = [t for t, _ in targets if t is not None]
    mean_curve = [statistics.mean(r["epochs"][i]["test_accuracy"] for r in runs) for i in range(len(runs[0]["epochs"]))]
    cum = 0.0
    mean_to_target = None
    for i, acc in enumerate(mean_curve):
        cum += statistics.mean(r["epochs"][i]["train_time_s"] for r in runs)
        if acc >= TARGET and mean_to_target is None:
            mean_to_target = (cum, i + 1)
    final_mean, final_std = mean_std(finals)
    time_mean, time_std = mean_std(times)
    return {"seeds": len(runs), "epochs": len(runs[0]["epochs"]),
            "final_accuracy_mean": final_mean, "final_accuracy_std": final_std,
            "train_time_s_mean": time_mean, "train_time_s_std": time_std,
            "time_to_target_s_mean": statistics.mean(reached) if len(reached) == len(runs) else None,
            "seeds_reaching_target": len(reached),
            "mean_curve_to_target": {"seconds": mean_to_target[0], "epoch": mean_to_target[1]} if mean_to_target else None,
            "mean_curve": mean_curve,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "precision": runs[0].get("precision"), "inference": runs[0].get("inference")}


def machine() -> dict:
    import platform
    model = ""
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        flags = next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split()
    except (OSError, StopIteration):
        flags = []
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem, 1), "python": platform.python_version(),
            "bf16": any(f in flags for f in ("avx512_bf16", "amx_bf16")), "amx": "amx_bf16" in flags}


def run_bench(variants=VARIANTS, seeds: int = 3, epochs: dict | None = None, data_dir: str | None = None,
              keras_python: str | None = None, log=print, on_result=None) -> dict:
    """Run every variant for every seed in child processes; the summary per variant and ratios to convlens.

    on_result(result) is called after every child, so a caller can save what is done so far.
    """
    epochs = {"convlens": 3, "pytorch": 5, "keras": 5, **(epochs or {})}
    files = {loc.role: str(loc.path) for loc in fetch(FASHION_MNIST, data_dir)}
    result = {"target_accuracy": TARGET, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
              "variants": {}, "runs": {}}
    for v in variants:
        runs = []
        for seed in range(seeds):
            if v == "keras":
                py = _keras_python(keras_python)
                if py is None:
                    log("keras: TensorFlow is not importable here (`make bench-keras` installs it); skipped")
                    break
                # -P: do not put this package's folder on sys.path, where our inspect.py would
                # shadow the standard library's for NumPy and TensorFlow.
                cmd = [py, "-P", str(Path(__file__).with_name("bench_keras.py")), str(seed), str(epochs[v]),
                       json.dumps(files)]
            else:
                cmd = [sys.executable, "-m", "convlens.bench", v, str(seed), str(epochs[v]), data_dir or ""]
                if v == "convlens" and seed == 0:
                    cmd.append("--inference")
            log(f"{v}: seed {seed}, {epochs[v]} epochs …")
            try:
                r = _run_child(cmd, log)
            except RuntimeError as e:          # one variant failing must not lose the others' results
                log(f"  failed: {e}")
                result.setdefault("errors", {})[v] = str(e)
                break
            accs = " ".join(f"{e['test_accuracy']:.4f}" for e in r["epochs"])
            log(f"  test accuracy per epoch {accs}; {sum(e['train_time_s'] for e in r['epochs']):.1f} s of training")
            runs.append(r)
            if on_result:
                on_result(result)
        if runs:
            result["runs"][v] = runs
            result["variants"][v] = summarize_variant(runs)
            if on_result:
                on_result(result)
    base = result["variants"].get("convlens")
    for v, s in result["variants"].items():
        if base:
            s["train_time_ratio"] = s["train_time_s_mean"] / base["train_time_s_mean"]
            if s["time_to_target_s_mean"] and base["time_to_target_s_mean"]:
                s["time_to_target_ratio"] = s["time_to_target_s_mean"] / base["time_to_target_s_mean"]
            s["peak_rss_ratio"] = s["peak_rss_mb"] / base["peak_rss_mb"]
    return result


def table(result: dict) -> str:
    """The result as a Markdown table (printed, and pasted into the README)."""
    head = ("variant", "epochs", "test accuracy (mean ± std)", "time to 91.28 %", "training time", "× convlens",
            "peak RSS")
    rows = []
    for v, s in result["variants"].items():
        if s["time_to_target_s_mean"] is not None:
            ttt = f"{s['time_to_target_s_mean']:.1f} s"
        else:
            ttt = f"not reached ({s['seeds_reaching_target']}/{s['seeds']} seeds)"
        rows.append((v, str(s["epochs"]),
                     f"{100 * s['final_accuracy_mean']:.2f} ± {100 * s['final_accuracy_std']:.2f} % (n={s['seeds']})",
                     ttt, f"{s['train_time_s_mean']:.1f} ± {s['train_time_s_std']:.1f} s",
                     f"{s.get('train_time_ratio', float('nan')):.1f}×", f"{s['peak_rss_mb']:.0f} MB"))
    m = result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB"
             f"{', AVX-512 BF16' if m['bf16'] else ''}{', AMX' if m['amx'] else ''}; {result['date']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    inf = result["variants"].get("convlens", {}).get("inference")
    if inf:
        lines += ["", f"Inference (convlens, seed model): evaluate {inf['eval_images_per_s']:,.0f} test images/s; "
                      f"single-image predict {inf['predict_median_ms']:.2f} ms median "
                      f"({inf['predict_p90_ms']:.2f} ms p90)"]
    return "\n".join(lines)


if __name__ == "__main__":
    child(sys.argv[1:])
