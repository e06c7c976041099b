"""Memory of training on a large image folder: 100,000 colour images of 64×64 streamed from disk.

    python benchmarks/folder_memory.py [--images 100000] [--size 64] [--dir /tmp/convlens-folder-100k]

Builds the folder once (real Fashion-MNIST images, enlarged to SIZE×SIZE and tinted with a
random colour, as PNGs in 10 class folders; 70,000 originals, mirrored beyond that), then runs
`convlens train --dataset folder:DIR --epochs 1` in a subprocess and samples, four times a
second, the memory of its whole process tree (the trainer and its DataLoader workers):
proportional set size (PSS: shared pages split between the processes that share them, so
the forked workers' copy-on-write pages are not counted twice) and each process's RSS.
Decoded, the images would take N × 3 × SIZE² bytes (1.23 GB for 100,000 of 64×64): above
convlens's 1 GiB in-memory limit, so they stream. Writes benchmarks/results/folder-memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def _write(job):
    """Write one chunk of images: job = (folder, first index, images uint8 (n, 28, 28), labels, size, seed)."""
    folder, start, images, labels, size, seed = job
    rng = np.random.default_rng(seed)
    for k, (img, label) in enumerate(zip(images, labels)):
        tint = rng.uniform(0.4, 1.0, size=3)
        big = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        rgb = (big[..., None] * tint).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(folder / f"class{label}" / f"{start + k:06d}.png", compress_level=1)


def build_folder(folder: Path, n: int, size: int) -> None:
    from convlens.datasets import load_fashion_mnist
    done = folder / ".complete"
    if done.exists() and done.read_text() == f"{n} {size}":
        return
    data = load_fashion_mnist(val_split=0.0)
    x = np.concatenate([data.train_x[:, 0].numpy(), data.test_x[:, 0].numpy()])
    y = np.concatenate([data.train_y.numpy(), data.test_y.numpy()])
    idx = np.arange(n) % len(x)
    images = np.where((np.arange(n) >= len(x))[:, None, None], x[idx][:, :, ::-1], x[idx])   # mirrored repeats
    for c in range(10):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    chunk = 2000
    jobs = [(folder, i, images[i:i + chunk], y[idx][i:i + chunk], size, i) for i in range(0, n, chunk)]
    t0 = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        pool.map(_write, jobs)
    done.write_text(f"{n} {size}")
    print(f"built {n:,} PNGs of {size}×{size} in {folder} in {time.perf_counter() - t0:.0f} s", flush=True)


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in KiB, (0, 0) if it is gone."""
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def cpu_name() -> str:
    """The CPU's model name and whether it has AVX-512 (what decides convlens's precision on a CPU)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    return f"{name}, {'AVX-512' if 'avx512f' in info else 'AVX2, no AVX-512'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--dir", default="/tmp/convlens-folder-100k")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "folder-memory.json"))
    args = ap.parse_args()
    folder = Path(args.dir)
    build_folder(folder, args.images, args.size)

    runs = tempfile.mkdtemp(prefix="convlens-folder-runs-")
    cmd = [sys.executable, "-m", "convlens", "train", "--dataset", f"folder:{folder}", "--epochs", str(args.epochs),
           "--runs-dir", runs, "--name", "big"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_pss = peak_main = peak_procs = 0
    while proc.poll() is None:
        pids = tree(proc.pid)
        mem = [memory_kb(p) for p in pids]
        peak_pss = max(peak_pss, sum(m[0] for m in mem))
        peak_main = max(peak_main, mem[0][1])
        peak_procs = max(peak_procs, len(pids))
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    log = proc.stdout.read()
    if proc.returncode:
        sys.exit(f"training failed ({proc.returncode}):\n{log[-3000:]}")
    config = json.loads((Path(runs) / "big" / "config.json").read_text())
    results = json.loads((Path(runs) / "big" / "results.json").read_text())
    decoded_mb = args.images * 3 * args.size * args.size / 1e6
    out = {"images": args.images, "size": args.size, "decoded_images_mb": round(decoded_mb),
           "streamed": config["resolved"]["streamed"], "epochs": args.epochs,
           "peak_pss_tree_mb": round(peak_pss / 1024), "peak_rss_trainer_mb": round(peak_main / 1024),
           "processes": peak_procs, "wall_s": round(wall, 1), "train_time_s": results["train_time_s"],
           "test_accuracy": results["test_accuracy"],
           "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}}
    print(json.dumps(out, indent=2))
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
