"""How training reports itself: what `convlens train` prints before, during and after a run.

During a run: a rich progress bar per epoch (a terminal), one plain line per epoch (a pipe or
a log), or JSON lines for programs (the explorer's training jobs read them).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

from .summary import summarize


def say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


def start_lines(start, resumed: bool) -> list[str]:
    """What a run says when training begins (start: train.Start)."""
    config, data = start.config, start.data
    if resumed:
        return [f"Resuming {start.path}: {start.epochs_done} of {config.epochs} epochs done, going on from its "
                f"checkpoint"]
    s = config.settings
    return [summarize(config.model, data.input_shape, data.num_classes).text(), "",
            f"Training {config.model!r} on {data.name}: {len(data.train_y):,} images "
            f"({len(data.val_y):,} held out for validation), recipe {s.name}: "
            f"batch {s.batch_size}, lr {s.lr:g} {s.schedule}{technique_text(s)}, {config.epochs} epochs "
            f"→ {start.path}"]


def technique_text(s) -> str:
    """The recipe's optimizer and regularisers beyond the fast recipe's, e.g. ', adamw wd 0.05, crop 1 (±2 px),
    flip 0.5 alternating, erase 0.25, ema 0.999, resized from 0.57 of the side, full by 70 % of the epochs,
    selective: 50 % of the images an epoch after the first (power 1)' (s: a config.Recipe)."""
    parts = [s.optimizer + (f" wd {s.weight_decay:g}" if s.weight_decay else "")] if s.optimizer != "adam" else []
    parts += [f"crop {s.crop:g} (±{s.crop_pad} px)"] if s.crop and s.crop_pad else []
    alternate = " alternating" if s.flip_order == "alternate" else ""
    parts += [f"{name} {getattr(s, name):g}" + (alternate if name == "flip" else "")
              for name in ("flip", "erase", "ema") if getattr(s, name)]
    parts += [f"resized from {s.resize_from:.2g} of the side, full by {s.resize_until:.0%} of the epochs"
              ] if s.resize_from < 1 else []
    parts += [f"selective: {s.select:.0%} of the images an epoch after the first (power {s.select_power:g})"
              ] if s.select < 1 else []
    return "".join(", " + p for p in parts)


def progress_text(results: dict) -> str:
    """Where an interrupted run stopped, from its results: "in epoch 2, after step 325" or "after epoch 1"."""
    epoch, step = results.get("stopped_at") or (results.get("epochs_run", 0) + 1, 0)
    return f"after epoch {epoch - 1}" if not step else f"in epoch {epoch}, after step {step}"


def result_lines(run) -> list[str]:
    """What a finished (or stopped) run says: how it ended, the test result, the overfitting note."""
    res, lines = run.results, []
    if res.get("interrupted"):
        lines.append(f"Interrupted {progress_text(res)}: kept the weights trained so far; "
                     f"`convlens train --resume {run.path}` continues from there.")
    if res.get("stopped_early"):
        lines.append(f"Early stopping: no better validation loss after epoch {res['best_epoch']}; "
                     f"restored its weights.")
    tta = f" (with flip test-time augmentation {res['test_accuracy_tta']:.2%})" if "test_accuracy_tta" in res else ""
    warmed = f"; {res['device_warmup_s']:.1f} s of device start-up before it" if res.get("device_warmup_s") else ""
    lines += ["", f"Test: loss {res['test_loss']:.4f}, accuracy {res['test_accuracy']:.2%}{tta} "
                  f"({res['epochs_run']} epochs, {res['train_time_s']:.1f} s of training{warmed})"]
    if res.get("overfitting"):
        lines.append(f"Note: {res['overfitting']}")
    return lines


class TrainingProgress:
    """A run as it goes: mode "bar", "lines", "json", or "auto" (a bar on a terminal, else lines).
    begin, step, epoch are train()'s on_start, on_step and on_epoch; finish says how it ended."""

    def __init__(self, mode: str = "auto", resumed: bool = False):
        self.epochs, self.bar, self.task, self.done, self.resumed = 0, None, None, 0, resumed
        self.path = self.data = None            # known once training begins
        self.mode = ("bar" if sys.stdout.isatty() else "lines") if mode == "auto" else mode
        if self.mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self.bar.start()

    def begin(self, start) -> None:
        """Training begins (start: train.Start): the model's table and the plan, or where a resume goes on."""
        self.epochs, self.done, self.path, self.data = start.config.epochs, start.epochs_done, start.path, start.data
        self.event("start", run=str(start.path), epochs=self.epochs)
        say(*start_lines(start, self.resumed))

    def finish(self, run) -> None:
        self.event("done", **run.results)
        say(*result_lines(run))

    def event(self, kind: str, **fields) -> None:
        if self.mode == "json":
            say(json.dumps({"event": kind, **fields}))

    def step(self, done: int, total: int, logs: Mapping | None = None) -> None:
        if self.mode == "json" and (done % max(1, total // 100) == 0 or done == total):
            running = {k: round(v, 6) for k, v in (logs or {}).items()}     # the epoch's running loss, accuracy; lr
            self.event("step", epoch=self.done + 1, step=done, steps=total, **running)
        if not self.bar:
            return
        if self.task is None:
            self.task = self.bar.add_task(f"epoch {self.done + 1}/{self.epochs}", total=total, info="")
        if done % 20 == 0 or done == total:
            self.bar.update(self.task, completed=done)

    def epoch(self, rec: dict) -> None:
        self.done = rec["epoch"]
        if self.mode == "json":
            self.event("epoch", **rec)
            return
        line = (f"loss {rec['loss']:.4f} acc {rec['accuracy']:.4f}"
                + (f" on {rec['images']:,} images" if "images" in rec else "")     # selective training's share
                + (f"  val_loss {rec['val_loss']:.4f} val_acc {rec['val_accuracy']:.4f}" if "val_loss" in rec else "")
                + f"  {rec['time_s']:.1f}s")
        if self.bar:
            self.bar.update(self.task, info=line)
            self.task = None
        else:
            say(f"epoch {rec['epoch']}/{self.epochs}  {line}")

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
