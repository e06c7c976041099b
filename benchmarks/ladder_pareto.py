"""The ladder's runs as a Pareto front: test accuracy against time, in multiples of a default run's time.

    python benchmarks/ladder_pareto.py RUNS_DIR --baseline RUN [--budgets 2,5,20]

RUNS_DIR holds the ladder's runs (ladder-RUNG-sSEED, from `convlens ladder --seeds 3`), any other runs
named NAME-sSEED (points trained for a budget, e.g. pareto2x-s0), and a default `convlens train` run
(--baseline) trained on the same machine in the same sitting. A run's time is its
results.json wall_time_s: training, validation and the test passes, from the first step to the last
result (the same span for the baseline; not the process's start-up nor a report). For each rung: the
mean time over its seeds, its multiple of the baseline's, test accuracy mean ± std (and with flip
test-time augmentation where the run has it); then, for each budget, the most accurate rung whose mean
time fits in that many default runs.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from convlens.spread import mean_std

RUN_NAME = re.compile(r"(?:ladder-)?(?P<rung>[a-z0-9-]+?)-s(?P<seed>\d+)$")


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def rung_runs(runs_dir: Path) -> dict[str, list[dict]]:
    """Finished runs by rung (or NAME), the ladder's first and in its order when ladder/ladder.json is there."""
    by_rung: dict[str, list[dict]] = {}
    for run in sorted(runs_dir.iterdir()):
        m = RUN_NAME.match(run.name)
        if m and (run / "results.json").is_file():
            results = read(run / "results.json")
            if not results.get("interrupted"):
                by_rung.setdefault(m["rung"], []).append(results)
    order = runs_dir / "ladder" / "ladder.json"
    if order.is_file():
        names = [row["rung"] for row in read(order)["rows"]]
        by_rung = {n: by_rung[n] for n in names + sorted(set(by_rung) - set(names)) if n in by_rung}
    return by_rung


def rows(by_rung: dict[str, list[dict]], baseline_s: float) -> list[dict]:
    out = []
    for rung, results in by_rung.items():
        wall = statistics.fmean(r["wall_time_s"] for r in results)
        test = mean_std([r["test_accuracy"] for r in results])
        tta = [r["test_accuracy_tta"] for r in results if "test_accuracy_tta" in r]
        out.append({"rung": rung, "seeds": len(results), "wall_s": wall, "multiple": wall / baseline_s,
                    "test": test, "tta": mean_std(tta) if len(tta) == len(results) else None})
    return out


def pct(ms: tuple[float, float] | None) -> str:
    return "–" if ms is None else f"{ms[0]:.2%} ± {ms[1]:.2%}"


def report(table: list[dict], budgets: list[float], baseline: str, baseline_s: float) -> str:
    lines = [f"Baseline: {baseline}, {baseline_s:.1f} s from first step to test result.", "",
             "| rung | seeds | time (mean) | × default | test accuracy | with flip TTA |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['rung']} | {r['seeds']} | {r['wall_s']:.0f} s | {r['multiple']:.1f}× | {pct(r['test'])} | "
              f"{pct(r['tta'])} |" for r in table]
    lines += ["", "| budget | most accurate rung within it | × default | test accuracy |", "|---|---|---|---|"]
    for budget in budgets:
        fits = [r for r in table if r["multiple"] <= budget]
        best = max(fits, key=lambda r: r["test"][0]) if fits else None
        if best:
            lines.append(f"| {budget:g}× | {best['rung']} | {best['multiple']:.1f}× | {pct(best['test'])} |")
        else:
            lines.append(f"| {budget:g}× | (none fits) | – | – |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--baseline", required=True, help="a default convlens train run in RUNS_DIR")
    parser.add_argument("--budgets", default="2,5,20", help="multiples of the baseline's time (default 2,5,20)")
    args = parser.parse_args(argv)
    baseline_s = read(args.runs_dir / args.baseline / "results.json")["wall_time_s"]
    by_rung = rung_runs(args.runs_dir)
    if not by_rung:
        print(f"no finished ladder runs in {args.runs_dir}", file=sys.stderr)
        return 1
    budgets = [float(b) for b in args.budgets.split(",")]
    print(report(rows(by_rung, baseline_s), budgets, args.baseline, baseline_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
