"""The GPU preset with larger batches: settings chosen on the validation split, then fitted on all images.

    PYTHONPATH=src python3 benchmarks/gpu_sweep.py --data-dir DIR --runs-dir RUNS --out sweep.json

On a GPU a training step of resnet-gpu takes about as long at 1,024 images as at 64 (launch-bound:
benchmarks/results/gpu-steps-h200.json), so larger batches buy many more epochs in the same minutes.
Whether those epochs buy accuracy is what this measures, under the ladder's protocol:

1. every candidate (the strong recipe with a larger batch, its learning rate and moving-average decay
   scaled to it) is trained once, seed 0, on 54,000 images, validated on the other 6,000 after every
   epoch; the candidates train at once, each its own process;
2. the candidate with the highest final validation accuracy is chosen (the test figures of step 1 are
   written by every run, as always, but not read here);
3. the chosen settings are trained on all 60,000 images, --seeds seeds at once, and their test accuracy
   (plain and with flip TTA) and training times are the result.

On an H200 step 1 took ~3 min (2026-11-28) and step 3 did not finish in the ~2 min of device time left
(benchmarks/LADDER.md): give the whole script 6 minutes.

Scaling: Adam's learning rate by the square root of the batch (4e-3 at 64; Hoffer et al. 2017,
Malladi et al. 2022), and the average's decay so that it spans the same ~1.2 epochs as 0.999 does at
batch 64 (1,000 steps).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from at_once import group_summary, read_results, train_at_once

CANDIDATES = {
    "b1024-lr16": ["--batch-size", "1024", "--lr", "1.6e-2", "--ema", "0.985", "--epochs", "100"],
    "b1024-lr8": ["--batch-size", "1024", "--lr", "8e-3", "--ema", "0.985", "--epochs", "100"],
    "b512-lr11": ["--batch-size", "512", "--lr", "1.1e-2", "--ema", "0.992", "--epochs", "60"],
}


def train_or_exit(jobs: dict[str, list[str]], common: list[str], runs: Path) -> None:
    failed = train_at_once(jobs, common, runs)
    if failed:
        sys.exit(f"gpu_sweep: {', '.join(failed)} failed: see {runs}/NAME.log")


def curve(runs: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()]


def validate(args, common: list[str], runs: Path, extra: list[str]) -> dict:
    """Steps 1-2: every candidate once on the validation split; the one with the best final figure chosen.
    Written to --out at once, so a run cut short in step 3 keeps them."""
    print(f"== {len(CANDIDATES)} candidates at once, seed 0, validated on 6,000 images", flush=True)
    train_or_exit({f"val-{n}": [*f, "--seed", "0", *extra] for n, f in CANDIDATES.items()}, common, runs)
    validated = {n: curve(runs, f"val-{n}") for n in CANDIDATES}
    summary = {"model": args.model, "candidates": CANDIDATES,
               "chosen": max(validated, key=lambda n: validated[n][-1]["val_accuracy"]),
               "validation": {n: [round(r["val_accuracy"], 4) for r in c] for n, c in validated.items()},
               "validation_train_time_s": {n: round(sum(r["time_s"] for r in c), 1) for n, c in validated.items()},
               "candidates_test_not_used": {n: json.loads((runs / f"val-{n}" / "results.json").read_text())[
                   "test_accuracy"] for n in CANDIDATES}}
    Path(args.out).write_text(json.dumps(summary, indent=1))
    for n, c in validated.items():
        print(f"{n}: validation {100 * c[-1]['val_accuracy']:.2f} % after {len(c)} epochs, "
              f"{sum(r['time_s'] for r in c):.1f} s of training", flush=True)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--runs-dir", default="/tmp/gpu-sweep-runs")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="resnet-gpu")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=3, help="CPU threads of each process")
    ap.add_argument("--extra", default="", help='flags added to every run, e.g. "--limit 512 --epochs 1" on a CPU')
    ap.add_argument("--out", default="gpu-sweep.json")
    ap.add_argument("--chosen", choices=tuple(CANDIDATES), default=None,
                    help="skip steps 1-2: the candidate a past sweep chose on validation (results/gpu-sweep-h200.json)")
    args = ap.parse_args()
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    common = ["--model", args.model, "--recipe", "strong", "--device", args.device, "--runs-dir", str(runs),
              "--threads", str(args.threads), "--no-report", "--progress", "lines"]
    common += ["--data-dir", args.data_dir] if args.data_dir else []
    extra = args.extra.split()

    summary = validate(args, common, runs, extra) if args.chosen is None else {
        "model": args.model, "candidates": CANDIDATES, "chosen": args.chosen, "chosen_by": "--chosen"}
    chosen = summary["chosen"]
    print(f"== chosen on validation: {chosen}; {args.seeds} seeds at once on all 60,000 images", flush=True)
    train_or_exit({f"all-{chosen}-s{s}": [*CANDIDATES[chosen], "--val-split", "0", "--seed", str(s), *extra]
                   for s in range(args.seeds)}, common, runs)
    summary |= group_summary(read_results(runs, [f"all-{chosen}-s{s}" for s in range(args.seeds)]))
    Path(args.out).write_text(json.dumps(summary, indent=1))
    print(f"{args.model} {chosen}: test {summary['test_mean_std'][0]} ± {summary['test_mean_std'][1]} % (flip TTA "
          f"{summary['tta_mean_std'][0]} ± {summary['tta_mean_std'][1]} %), at most "
          f"{summary['train_time_s_max']:.1f} s of training each", flush=True)


if __name__ == "__main__":
    main()
