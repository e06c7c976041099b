"""`convlens ladder`: from the seed's 91 % upwards, one measured step at a time.

Each rung adds one thing to the rung before it and is trained with every seed, on the same data
and protocol (the seed's own validation split: 54,000 training images, 6,000 held out, the 10,000
test images evaluated once, when a run ends):

    seed     the study note's network, recipe fast, 10 epochs (`convlens train --epochs 10`)
    bn       + batch normalisation (preset seed-bn)
    augment  + random crops and flips
    resnet   + a residual network (preset resnet-cpu)
    ema      + a moving average of the weights (= `--model resnet-cpu --recipe strong`)
    tta      + flip test-time augmentation (the ema rung's runs, their mirror-averaged figure: nothing trained)
    longer   + a longer schedule: 18 epochs, what fits in 20× a default `convlens train`'s wall time on a 2-core
             CPU (= `convlens train --model resnet-cpu --recipe strong --epochs 18`, report included)

Every rung's run is a normal run named `ladder-RUNG-sSEED` in the runs folder, so every verb takes
it, and a ladder started again skips the finished ones and resumes a stopped one from its checkpoint.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch

from .bench import machine as bench_machine
from .charts import ladder_curves
from .config import TrainConfig
from .engine import cores
from .errors import ConvlensError
from .files import read_json, write_atomic, write_json
from .runs import Run, completed_at, open_run
from .spread import mean_std
from .summary import summarize
from .train import resume, train


@dataclass(frozen=True)
class Rung:
    name: str
    adds: str                                     # what it adds to the rung before it
    settings: dict = field(default_factory=dict)  # TrainConfig fields; epochs before --epochs-scale
    tta_of: str | None = None                     # a rung that trains nothing: that rung's flip-TTA figures


# The rungs that train share one budget of EPOCHS (the default run's 5 is too short for augmentation to pay:
# benchmarks/LADDER_SWEEP.md), the last one LONGER: the most epochs of the strong preset that fit, report
# included, in 20× the wall time of a default `convlens train` (48.3 s on the 2-core AVX-512 EPYC: 966 s; the
# three 18-epoch runs took 784–817 s, benchmarks/LADDER.md); both before --epochs-scale. The ema and longer rungs
# are exactly `--model resnet-cpu --recipe strong`, so a run trained by `convlens train` under the rung's
# name (ladder-longer-s0, …) is found by the ladder as its own.
EPOCHS, LONGER = 10, 18
AUGMENT = {"crop": 1.0, "crop_pad": 2, "flip": 0.5}
FAST = {"recipe": "fast", "epochs": EPOCHS}
RUNGS = [
    Rung("seed", "the seed network, recipe fast", {"model": "seed", **FAST}),
    Rung("bn", "+ batch normalisation (seed-bn)", {"model": "seed-bn", **FAST}),
    Rung("augment", "+ random crops (±2 px) and flips", {"model": "seed-bn", **FAST, **AUGMENT}),
    Rung("resnet", "+ a residual network (resnet-cpu)", {"model": "resnet-cpu", **FAST, **AUGMENT}),
    Rung("ema", "+ a moving average of the weights (ema 0.999)", {"model": "resnet-cpu", "recipe": "strong",
                                                                   "epochs": EPOCHS}),
    Rung("tta", "+ flip test-time augmentation (the ema rung's runs)", tta_of="ema"),
    Rung("longer", f"+ a longer schedule ({LONGER} epochs)", {"model": "resnet-cpu", "recipe": "strong",
                                                              "epochs": LONGER}),
]
BY_NAME = {r.name: r for r in RUNGS}


def chosen_rungs(only: str | None) -> list[Rung]:
    """The rungs `--only a,b` names (in the ladder's order; a TTA rung brings the rung it reads), or all."""
    if not only:
        return list(RUNGS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise ConvlensError(f"--only: unknown rung {(unknown or [only])[0]!r}; the rungs are {', '.join(BY_NAME)}")
    wanted = set(names) | {BY_NAME[n].tta_of for n in names if BY_NAME[n].tta_of}
    return [r for r in RUNGS if r.name in wanted]


def rung_config(rung: Rung, seed: int, epochs_scale: float = 1.0, **where) -> TrainConfig:
    """The TrainConfig of one rung's run with one seed: its settings, epochs scaled (at least 1), and where
    things are (runs_dir, data_dir, threads, device, limit)."""
    epochs = max(1, round(rung.settings["epochs"] * epochs_scale))
    return TrainConfig(**{**rung.settings, **where, "epochs": epochs, "seed": seed,
                          "name": f"ladder-{rung.name}-s{seed}"})


# What must agree between a run found in the runs folder and the run the ladder wants there.
_SAME = tuple(f.name for f in fields(TrainConfig) if f.name not in ("data_dir", "device", "runs_dir", "threads",
                                                                       "name", "compile", "tensorboard"))


def _check_same(run_dir: Path, config: TrainConfig) -> None:
    found = TrainConfig.from_json(read_json(run_dir / "config.json"), str(run_dir / "config.json"))
    differ = [k for k in _SAME if getattr(found, k) != getattr(config, k)]
    if differ:
        raise ConvlensError(f"{run_dir} was trained with other settings ({differ[0]} {getattr(found, differ[0])!r}, "
                            f"the ladder wants {getattr(config, differ[0])!r}): give the ladder another --runs-dir, or "
                            f"delete that run")


def run_rung(config: TrainConfig, on_start: Callable | None = None, on_epoch: Callable | None = None) -> Run:
    """One rung's run: found finished, resumed from its checkpoint, or trained."""
    path = Path(config.runs_dir) / config.name
    if (path / "config.json").is_file():
        _check_same(path, config)
        if completed_at(path):
            return open_run(path)
        if any(path.glob("checkpoint*.safetensors")):
            return resume(path, config.runs_dir, data_dir=config.data_dir, on_start=on_start, on_epoch=on_epoch)
    if path.is_dir() and not any(path.glob("*.safetensors")):   # killed before its first checkpoint: nothing trained
        shutil.rmtree(path)
    return train(config, on_start=on_start, on_epoch=on_epoch)


# ---------------------------------------------------------------------------
# The table

def rung_row(rung: Rung, runs: list[Run]) -> dict:
    """One rung's line of the table from its runs (a TTA rung: from the runs of the rung it reads)."""
    key = "_tta" if rung.tta_of else ""
    test = [r.results["test_accuracy" + key] for r in runs]
    val = [r.results["val_accuracy_tta"] if key else r.metrics[-1]["val_accuracy"] for r in runs]
    s = summarize(runs[0].model_info.spec, runs[0].input_shape, len(runs[0].classes))
    test_mean, test_std = mean_std(test)
    val_mean, val_std = mean_std(val)
    return {"rung": rung.name, "adds": rung.adds, "runs": [r.name for r in runs], "model": runs[0].config.model,
            "params": s.total_params, "mult_adds": s.mult_adds, "epochs": runs[0].results["epochs_run"],
            "trained": not key, "train_time_s": statistics.fmean(r.results["train_time_s"] for r in runs),
            "val_accuracy": val_mean, "val_std": val_std, "test_accuracy": test_mean, "test_std": test_std,
            "test_accuracies": test, "seeds": len(runs), "reads": rung.tta_of}


def with_gains(rows: list[dict]) -> list[dict]:
    """Each row with its gain in test accuracy (None for the first) over the row it builds on: a trained rung's
    over the last trained rung before it, so plain figures are compared with plain ones (the longer schedule is
    not credited with, or charged for, the TTA rung between); a TTA rung's over the rung whose runs it reads."""
    out, trained = [], None
    for row in rows:
        base = trained if row["trained"] else next((r for r in out if r["rung"] == row["reads"]), None)
        out.append({**row, "gain": None if base is None else row["test_accuracy"] - base["test_accuracy"]})
        if row["trained"]:
            trained = row
    return out


TABLE_HEAD = ("rung", "adds", "params", "mult-adds", "epochs", "training time", "val accuracy",
              "test accuracy (mean ± std)", "gain")


def table_cells(row: dict) -> list[str]:
    gain = "–" if row["gain"] is None else f"{row['gain'] * 100:+.2f} pt"
    time = f"{row['train_time_s']:.{0 if row['train_time_s'] >= 10 else 1}f} s" if row["trained"] else "(none)"
    return [row["rung"], row["adds"], f"{row['params']:,}", f"{row['mult_adds'] / 1e6:.1f} M", str(row["epochs"]),
            time, f"{row['val_accuracy']:.2%} ± {row['val_std']:.2%}",
            f"{row['test_accuracy']:.2%} ± {row['test_std']:.2%} (n={row['seeds']})", gain]


def table_text(rows: list[dict]) -> str:
    """The ladder's table as plain text (what `convlens ladder` prints)."""
    cells = [list(TABLE_HEAD)] + [table_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_HEAD))]
    line = lambda cs: "  ".join(c.ljust(w) for c, w in zip(cs, widths)).rstrip()   # noqa: E731
    return "\n".join([line(cells[0]), line(["─" * w for w in widths])] + [line(c) for c in cells[1:]])


def table_markdown(rows: list[dict]) -> str:
    """The same table in Markdown, for README.md and benchmarks/."""
    out = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    return "\n".join(out + ["| " + " | ".join(table_cells(r)) + " |" for r in rows])


# ---------------------------------------------------------------------------
# The ladder

def climb(rungs: list[Rung], seeds: int, epochs_scale: float = 1.0, log: Callable[[str], None] = print,
          on_start: Callable | None = None, on_epoch: Callable | None = None, **where) -> list[dict]:
    """Train (or find, or resume) every run of `rungs` for seeds 0..seeds−1; the table's rows, with gains."""
    if seeds < 1 or epochs_scale <= 0:
        raise ConvlensError(f"the ladder needs --seeds ≥ 1 and --epochs-scale > 0, got {seeds} and {epochs_scale}")
    configs = {r.name: [rung_config(r, s, epochs_scale, **where) for s in range(seeds)] for r in rungs if not r.tta_of}
    done: dict[str, list[Run]] = {}
    rows = []
    for rung in rungs:
        if rung.tta_of:
            done[rung.name] = done[rung.tta_of]
        else:
            done[rung.name] = []
            for config in configs[rung.name]:
                log(f"Rung {rung.name} ({rung.adds}), seed {config.seed}: {config.runs_dir}/{config.name}")
                done[rung.name].append(run_rung(config, on_start, on_epoch))
        rows.append(rung_row(rung, done[rung.name]))
    return with_gains(rows)


def series(rows: list[dict], runs_dir: str) -> list[dict]:
    """Per rung that trained, its first seed's validation accuracy per epoch and its training time so far."""
    out = []
    for row in rows:
        if row["trained"]:
            m = open_run(Path(runs_dir) / row["runs"][0]).metrics
            times = [sum(e["time_s"] for e in m[:n + 1]) for n in range(len(m))]
            out.append({"label": row["rung"], "epochs": [e["epoch"] for e in m],
                        "val_accuracy": [e["val_accuracy"] for e in m], "time_s": times})
    return out


def write_ladder(rows: list[dict], out_dir: Path, runs_dir: str, machine: dict) -> list[Path]:
    """ladder.json (rows and the machine), ladder.md (the table) and ladder.png (the curves) in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "ladder.json", {"machine": machine, "rows": rows})
    write_atomic(out_dir / "ladder.md", (table_markdown(rows) + "\n").encode())
    write_atomic(out_dir / "ladder.png", ladder_curves(series(rows, runs_dir)))
    return [out_dir / n for n in ("ladder.json", "ladder.md", "ladder.png")]


def machine(threads: int) -> dict:
    """Where the ladder ran: the CPU (bench.machine), the GPU if any, the threads, the load when it started (a busy
    machine makes every time longer: say so beside the times)."""
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {**bench_machine(), "gpu": gpu, "torch": torch.__version__, "threads": threads or cores(),
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M")}
