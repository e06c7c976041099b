"""Runs of `convlens train` side by side, each its own process, and the mean ± std of a group of them.

On a GPU one training process leaves the card idle much of a step (launch-bound: results/gpu-steps-h200.json),
so gpu_check.sh and gpu_sweep.py train their seeds or candidates at once. Both launch through `train_at_once`
and summarise through `group_summary`, so a recorded "95.30 ± 0.06 %" means the same thing everywhere.

    PYTHONPATH=src python3 benchmarks/at_once.py --runs-dir RUNS --prefix strong --seeds 3 -- --model resnet-gpu ...

trains RUNS/strong-0 … strong-2 (`--name strong-S --seed S` added to the flags after `--`), logs in
RUNS/strong-S.log; exits 1 if any run failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from convlens.spread import mean_std, percent_mean_std  # noqa: E402

RECORDED = ("test_accuracy", "test_accuracy_tta", "test_precision", "train_time_s", "wall_time_s", "epochs_run")


def train_at_once(jobs: dict[str, list[str]], common: list[str], runs: Path) -> list[str]:
    """`convlens train --name NAME` with `common` and each job's flags, all at once; each run's last result
    line printed; the names of those that failed returned (their logs: runs/NAME.log)."""
    procs = {}
    for name, flags in jobs.items():
        with open(runs / f"{name}.log", "w") as log:
            procs[name] = subprocess.Popen([sys.executable, "-m", "convlens", "train", "--name", name, *common,
                                            *flags], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    failed = [name for name, p in procs.items() if p.wait() != 0]
    for name in jobs:
        said = (runs / f"{name}.log").read_text().splitlines() or [""]
        shown = said[-5:] if name in failed else [next((s for s in said if s.startswith("Test:")), said[-1])]
        print(f"-- {name}" + (" FAILED" if name in failed else "") + ": " + "\n".join(shown), flush=True)
    return failed


def group_summary(results: list[dict]) -> dict:
    """The runs' recorded figures, and their test accuracy's mean ± std in % (plain and, where every run has
    it, with flip test-time augmentation)."""
    summary = {"runs": [{k: r[k] for k in RECORDED if k in r} for r in results],
               "test_mean_std": percent_mean_std(r["test_accuracy"] for r in results),
               "train_time_s_mean": round(mean_std(r["train_time_s"] for r in results)[0], 3),
               "train_time_s_max": max(r["train_time_s"] for r in results)}
    if all("test_accuracy_tta" in r for r in results):
        summary["tta_mean_std"] = percent_mean_std(r["test_accuracy_tta"] for r in results)
    return summary


def read_results(runs: Path | str, names: list[str]) -> list[dict]:
    return [json.loads((Path(runs) / name / "results.json").read_text()) for name in names]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", type=Path, required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("flags", nargs=argparse.REMAINDER, help="-- then the flags every run takes")
    args = ap.parse_args(argv)
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    jobs = {f"{args.prefix}-{s}": ["--seed", str(s)] for s in range(args.seeds)}
    failed = train_at_once(jobs, ["--runs-dir", str(args.runs_dir), *flags], args.runs_dir)
    if failed:
        print(f"at_once: {', '.join(failed)} failed: see {args.runs_dir}/NAME.log", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
