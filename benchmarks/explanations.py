"""Issue 13's measurements on the trained seed: how long `convlens features` (all 128 filters and the
class views) and `convlens explain --index 9 --check` take, and what the checks find.

    .venv/bin/python benchmarks/explanations.py [--run RUN]      # default: trains the seed (5 epochs) first

Timed as a user runs them, each command its own process (wall time, peak RSS from wait4), three
times: a shared 2-core machine varies from minute to minute, so the median and the slowest are
both given. Then, in this process, on test image 9 and the 20 test images 100–119 (the issue's
"20 more"): Integrated Gradients' completeness for every baseline, the randomisation check of every
method with its control; every filter's optimised input against its best test crop; deletion curves
over test images 0–99 for every method (and for saliency with each way of removing a pixel); the
report's size. Writes results/explanations.json (RESULTS.md quotes it, with the machine).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import measured  # benchmarks/measured.py: a command's own peak RSS
from convlens import views
from convlens.attribution import (
    METHODS,
    attribution_map,
    integrated_gradients,
    methods_for,
)
from convlens.baselines import BASELINES
from convlens.bench import machine
from convlens.datasets import mean_pixel
from convlens.engine import set_threads
from convlens.explanations import randomisation_check
from convlens.faithfulness import DELETION_FILL, deletion_curves
from convlens.feature_views import all_layer_features
from convlens.report import write_run_report
from convlens.runs import open_run
from convlens.sanity import CONTROL

IMAGES = [9] + list(range(100, 120))


def timed(args: list[str], log: Path) -> dict:
    """`convlens ARGS` in its own process: wall seconds and peak RSS."""
    cmd = [sys.executable, "-m", "convlens", *args]
    t = time.perf_counter()
    before = os.times()
    with open(log, "w") as f:
        p, peak = measured.start(cmd, stdout=f, stderr=subprocess.STDOUT)
        p.wait()
    wall, after = time.perf_counter() - t, os.times()
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log.read_text()[-2000:]}")
    cpu = after.children_user + after.children_system - before.children_user - before.children_system
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(measured.peak_mb(peak))}


def timings(run: Path, work: Path, repeats: int = 3) -> dict:
    out = {}
    for label, args in (("features (all 128 filters, class views)", ["features", str(run)]),
                        ("explain --index 9 --check", ["explain", str(run), "--index", "9", "--check"]),
                        ("explain --index 9 --check --deletion", ["explain", str(run), "--index", "9", "--check",
                                                                 "--deletion"])):
        rows = [timed(args, work / f"{args[0]}-{n}.log") for n in range(repeats)]
        walls, cpus = [r["wall_s"] for r in rows], [r["cpu_s"] for r in rows]
        out[label] = {"command": "convlens " + " ".join(args), "wall_s": walls, "median_s": statistics.median(walls),
                      "max_s": max(walls), "cpu_s": cpus, "peak_rss_mb": max(r["peak_rss_mb"] for r in rows)}
        print(f"{label:42s} median {statistics.median(walls):5.1f} s, slowest {max(walls):5.1f} s "
              f"(CPU {min(cpus):.1f}–{max(cpus):.1f} s), peak RSS {out[label]['peak_rss_mb']} MB", flush=True)
    out["output"] = {name: (work / f"{name}-0.log").read_text() for name in ("features", "explain")}
    return out


def completeness(model, data, mean) -> dict:
    errors = {b: [] for b in BASELINES}
    steps = {b: [] for b in BASELINES}
    for i in IMAGES:
        for b in BASELINES:
            ig = integrated_gradients(model, data.test_x[i], baseline=b, mean=mean)
            errors[b].append(ig.completeness_error)
            steps[b].append(ig.steps)
    out = {b: {"max_error": max(errors[b]), "median_error": statistics.median(errors[b]), "max_steps": max(steps[b])}
           for b in BASELINES}
    for b, r in out.items():
        print(f"IG completeness, {b:5s} baseline: worst {r['max_error']:.3%}, median {r['median_error']:.3%}, "
              f"at most {r['max_steps']} steps", flush=True)
    return out


def randomisation(model, data, mean) -> dict:
    methods = methods_for(model)
    final = {m: [] for m in methods + [CONTROL]}
    verdicts = {m: [] for m in final}
    image9 = None
    for i in IMAGES:
        c = randomisation_check(model, data.test_x[i], methods, mean=mean)
        for m in c.methods:
            final[m.method].append(m.final)
            verdicts[m.method].append(m.verdict)
        if i == 9:
            image9 = {m.method: [round(r, 3) for r in m.rho] for m in c.methods}
    out = {"images": IMAGES, "image_9_rho_per_step": image9, "steps": c.steps,
           "final_rho": {m: {"mean": float(np.mean(v)), "max": float(np.max(v)), "min": float(np.min(v)),
                             "below_0.5": int(np.sum(np.array(v) < 0.5)), "verdicts": sorted(set(verdicts[m]))}
                         for m, v in final.items()}}
    for m, r in out["final_rho"].items():
        print(f"randomisation, {m:10s}: ρ all random mean {r['mean']:+.2f}, max {r['max']:+.2f}; "
              f"below 0.5 for {r['below_0.5']}/{len(IMAGES)}; {r['verdicts']}", flush=True)
    return out


def features(model, data) -> dict:
    out = {}
    for lf in all_layer_features(model, data):
        r = lf.ratio
        out[lf.layer] = {"filters": len(r), "optimised_at_least_best_crop": int(lf.at_least_best.sum()),
                         "ratio_min": float(r.min()), "ratio_median": float(np.median(r)),
                         "exactly_the_best_crop": int(np.sum(np.abs(r - 1) < 1e-5))}
        print(f"features, {lf.layer}: optimised ≥ best crop for {out[lf.layer]['optimised_at_least_best_crop']}/"
              f"{len(r)} filters, ratio min {r.min():.3f}, median {np.median(r):.2f}", flush=True)
    return out


def deletion(model, data, mean) -> dict:
    methods = methods_for(model)
    scores = {m: [] for m in methods}
    fills = {f: [] for f in BASELINES}
    for i in range(100):
        image = data.test_x[i]
        maps = {m: attribution_map(model, image, m, mean=mean) for m in methods}
        for m, s in deletion_curves(model, image, maps, fill=DELETION_FILL, mean=mean).scores.items():
            scores[m].append(s)
        for f in BASELINES:
            fills[f].append(deletion_curves(model, image, {"saliency": maps["saliency"]}, fill=f, mean=mean)
                            .scores["saliency"])
    out = {"fill": DELETION_FILL,
           "score": {m: {"mean": float(np.mean(v)), "beats_random": int(np.sum(np.array(v) > 0))}
                     for m, v in scores.items()},
           "saliency_by_fill": {f: {"mean": float(np.mean(v)), "beats_random": int(np.sum(np.array(v) > 0))}
                                for f, v in fills.items()}}
    for m, r in out["score"].items():
        print(f"deletion ({DELETION_FILL}), {METHODS[m]:22s}: mean score {r['mean']:+.3f}, beats random on "
              f"{r['beats_random']}/100", flush=True)
    for f, r in out["saliency_by_fill"].items():
        print(f"deletion, saliency, removed pixels {f:5s}: mean score {r['mean']:+.3f}, beats random on "
              f"{r['beats_random']}/100", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None, help="a trained seed run (default: train one, 5 epochs)")
    ap.add_argument("--work", default="/tmp/convlens-explanations")
    ap.add_argument("--timings", action="store_true", help="only time the commands again (into the JSON there is)")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    run_path = Path(a.run) if a.run else work / "runs" / "seed"
    if not a.run and not (run_path / "model.safetensors").exists():
        timed(["train", "--runs-dir", str(run_path.parent), "--name", "seed", "--no-report"], work / "train.log")
    run = open_run(run_path)
    path = Path(__file__).with_name("results") / "explanations.json"
    out = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "run": str(run_path),
           "test_accuracy": run.results.get("test_accuracy")}
    if a.timings:
        out = {**json.loads(path.read_text()), "timings_date": out["date"], "timings": timings(run_path, work)}
        path.write_text(json.dumps(out, indent=2) + "\n")
        return print(f"JSON: {path}")
    out["timings"] = timings(run_path, work)
    set_threads()
    model, data = run.load_model(), views.data_of(run)
    mean = mean_pixel(data)
    out["ig_completeness"] = completeness(model, data, mean)
    out["randomisation"] = randomisation(model, data, mean)
    out["features"] = features(model, data)
    out["deletion"] = deletion(model, data, mean)
    t = time.perf_counter()
    report = write_run_report(run, work / "report.html", data=data)
    out["report"] = {"bytes": report.stat().st_size, "build_s": round(time.perf_counter() - t, 1)}
    print(f"report: {report.stat().st_size / 1e6:.2f} MB, built in {out['report']['build_s']} s", flush=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
