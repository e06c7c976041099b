"""`convlens train` as a user runs it: the defaults over 3 seeds, the dense baseline, the Keras recipe.

    .venv/bin/python benchmarks/defaults.py [--runs-dir /tmp/convlens-defaults]

Each command runs as its own process; its peak resident memory is that process's own
(benchmarks/measured.py). Writes results/defaults.json (RESULTS.md quotes it, with the machine).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import measured  # benchmarks/measured.py: a command's own peak RSS
from convlens.bench import machine
from convlens.spread import mean_std

COMMANDS = [(f"seed, defaults, seed {s}", ["--seed", str(s)]) for s in range(3)] + [
    ("dense baseline", ["--model", "dense"]),
    ("seed, --recipe keras", ["--recipe", "keras"]),
]


def run(args: list[str], runs_dir: Path, name: str) -> dict:
    cmd = [sys.executable, "-m", "convlens", "train", "--runs-dir", str(runs_dir), "--name", name, "--no-report",
           *args]
    log = runs_dir / f"{name}.log"
    runs_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with open(log, "w") as f:
        p, peak = measured.start(cmd, stdout=f, stderr=subprocess.STDOUT)   # its own peak RSS (measured.py)
        p.wait()
    wall = time.perf_counter() - t
    out = log.read_text()
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.strip().splitlines()[-1:]}")
    results = json.loads((runs_dir / name / "results.json").read_text())
    return {"command": "convlens train " + " ".join(args), "test_accuracy": results["test_accuracy"],
            "train_time_s": results["train_time_s"], "epochs": results["epochs_run"], "process_wall_s": wall,
            "peak_rss_mb": measured.peak_mb(peak), "last_lines": out.strip().splitlines()[-4:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs-dir", default="/tmp/convlens-defaults")
    a = ap.parse_args()
    runs_dir = Path(a.runs_dir)
    rows = []
    for i, (label, args) in enumerate(COMMANDS):
        r = run(args, runs_dir, f"d{i}-{time.strftime('%H%M%S')}")
        r["label"] = label
        rows.append(r)
        print(f"{label:28s} {100 * r['test_accuracy']:.2f} %  {r['train_time_s']:.1f} s training  "
              f"{r['process_wall_s']:.1f} s wall  peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    seeds = [r["test_accuracy"] for r in rows[:3]]
    out = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "runs": rows,
           **dict(zip(("seed_defaults_mean", "seed_defaults_std"), mean_std(seeds)))}
    print(f"seed, defaults: {100 * out['seed_defaults_mean']:.2f} ± {100 * out['seed_defaults_std']:.2f} % over 3 seeds")
    path = Path(__file__).with_name("results") / "defaults.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
