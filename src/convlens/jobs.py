"""Training jobs of the web explorer: each one a `convlens train` process, never work inside a request.

The process prints one JSON object per line (`--progress json`): start, a step every ~1 % of an
epoch, every finished epoch, the end. A reader thread folds them into the Job the page polls.
Stopping sends SIGINT: the run stops after the current step, writes its checkpoint and results,
and can be resumed like any other (`convlens train --resume RUN`).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import TrainConfig
from .errors import ConvlensError
from .runs import Run, check_name
from .spec import PRESETS


class JobError(ConvlensError):
    """A job cannot be started (another is running, bad settings) or does not exist."""


@dataclass
class Job:
    id: str
    run: str                              # run name under the server's runs folder
    model: str
    epochs: int
    process: subprocess.Popen
    state: str = "running"                # running | finished | stopped | failed
    epoch: int = 0                        # epochs finished
    step: int = 0                         # step within the epoch in progress
    steps: int = 0                        # steps per epoch
    metrics: list[dict] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)   # running loss, accuracy, lr every ~1 % of an epoch
    curve_gen: int = 0                    # how often the curve was thinned: a poll's `since` counts within one
    results: dict | None = None
    error: str | None = None
    log: deque = field(default_factory=lambda: deque(maxlen=40))
    started: float = field(default_factory=time.time)
    stop_requested: bool = False
    begun: bool = False                   # the run's folder is there (its "start" event came)

    MAX_POINTS = 2000      # past it every other point goes: a 200-epoch run stays a small answer

    def add_point(self, event: dict) -> None:
        """One step event on the curve, at x = epochs done (fractional): 1.5 is half-way through epoch 2."""
        x = event.get("epoch", 1) - 1 + event.get("step", 0) / max(1, event.get("steps", 1))
        self.curve.append({"x": round(x, 4), **{k: event[k] for k in ("loss", "accuracy", "lr") if k in event}})
        if len(self.curve) > self.MAX_POINTS:
            self.curve_gen += 1           # first: a poll that sees the thinned curve also sees the new count
            self.curve = self.curve[::2]

    def to_dict(self, since: int | None = None, gen: int | None = None) -> dict:
        """The job as the explorer polls it. since, gen: the points of the curve a poll already holds, and
        the thinning they came from; only the later points are sent (curve_from: where they start), or the
        whole curve again when it was thinned meanwhile."""
        curve = self.curve                # read before the count (add_point bumps the count first)
        start = since if since is not None and gen == self.curve_gen and since <= len(curve) else 0
        return {"id": self.id, "run": self.run, "model": self.model, "epochs": self.epochs, "state": self.state,
                "epoch": self.epoch, "step": self.step, "steps": self.steps, "metrics": self.metrics,
                "curve": curve[start:], "curve_from": start, "curve_gen": self.curve_gen,
                "results": self.results, "error": self.error, "log": list(self.log),
                "stopping": self.stop_requested and self.state == "running", "begun": self.begun,
                "elapsed_s": round(time.time() - self.started, 1)}


class Jobs:
    """The training processes one server started; one runs at a time (two would halve each other's speed)."""

    def __init__(self, data_dir: str | None = None, device: str = "auto"):
        self.data_dir, self.device = data_dir, device      # where the server's jobs find data and train
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def start(self, config: TrainConfig) -> Job:
        """Start `convlens train` with this config in a process of its own (its name made up when not given)."""
        with self.lock:
            self._refuse_if_busy()
            if config.name is None:
                stem = config.model if config.model in PRESETS else "custom"
                config = replace(config, name=f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
            check_name(config.name)
            if (Path(config.runs_dir) / config.name).exists():
                raise JobError(f"run {config.name} already exists; pick another name")
            job = self._launch(config.name, config.model, config.epochs, config.to_argv())
        return job

    def resume(self, run: Run) -> Job:
        """Continue a stopped or killed run (`convlens train --resume`) in a process of its own, from its
        latest checkpoint, with its own settings; the data and the device are the server's."""
        with self.lock:
            self._refuse_if_busy()
            if not run.resumable:
                raise JobError(f"run {run.name} has nothing to resume: "
                               + ("it has finished" if run.results else "it has no checkpoint"))
            argv = ["--resume", run.name, "--runs-dir", str(run.path.parent), "--device", self.device,
                    *(["--data-dir", self.data_dir] if self.data_dir else [])]
            job = self._launch(run.name, run.config.model, run.config.epochs, argv, done=len(run.metrics))
        return job

    def refuse_if_training(self, run: str) -> None:
        """JobError (409) while one of this server's jobs trains `run`."""
        if any(j.run == run and j.state == "running" for j in self.jobs.values()):
            raise JobError(f"run {run} is training; stop it first")

    def _refuse_if_busy(self) -> None:
        busy = [j for j in self.jobs.values() if j.state == "running"]
        if busy:
            raise JobError(f"run {busy[0].run} is still training; stop it or wait for it to finish")

    def _launch(self, name: str, model: str, epochs: int, args: list[str], done: int = 0) -> Job:
        """`convlens train ARGS` with JSON progress, followed by a thread of its own (the lock is held)."""
        argv = [sys.executable, "-m", "convlens", "train", *args, "--progress", "json"]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   stdin=subprocess.DEVNULL, bufsize=1)
        job = Job(id=f"{len(self.jobs) + 1}-{name}", run=name, model=model, epochs=epochs, process=process,
                  epoch=done)
        self.jobs[job.id] = job
        threading.Thread(target=self._follow, args=(job,), daemon=True, name=f"job {job.id}").start()
        return job

    def _follow(self, job: Job) -> None:
        """Read the process's lines until it ends; JSON lines are progress, the rest is log."""
        for line in job.process.stdout:
            line = line.rstrip("\n")
            try:
                event = json.loads(line) if line.startswith("{") else None
            except json.JSONDecodeError:
                event = None
            if not isinstance(event, dict):
                if line.strip():
                    job.log.append(line)
                    if line.startswith("convlens: error:"):
                        job.error = line.removeprefix("convlens: error:").strip()
                continue
            kind = event.pop("event", None)
            job.begun = job.begun or kind == "start"
            if kind == "step":
                job.step, job.steps = event.get("step", 0), event.get("steps", 0)
                if "loss" in event:
                    job.add_point(event)
            elif kind == "epoch":
                job.metrics.append(event)
                job.epoch, job.step = event.get("epoch", job.epoch), 0
            elif kind == "done":
                job.results = event
        code = job.process.wait()
        if code == 0:
            job.state = "stopped" if (job.results or {}).get("interrupted") or job.stop_requested else "finished"
        else:
            job.state = "stopped" if job.stop_requested else "failed"
            job.error = job.error or f"training exited with status {code}"

    def get(self, job_id: str) -> Job:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise JobError(f"no job {job_id!r}") from None

    def stop(self, job_id: str) -> Job:
        """Ask the job to stop after its current step (it keeps what it trained and can be resumed)."""
        job = self.get(job_id)
        if job.state == "running":
            job.stop_requested = True
            job.process.send_signal(signal.SIGINT)
        return job

    def stop_all(self, wait_s: float = 30.0) -> None:
        for job in self.jobs.values():
            if job.state == "running":
                self.stop(job.id)
        for job in self.jobs.values():
            try:
                job.process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                job.process.kill()
