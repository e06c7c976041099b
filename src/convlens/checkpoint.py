"""Resumable checkpoints: everything a killed run needs to continue as if it never stopped.

    RUN/checkpoint.safetensors        the latest complete checkpoint
    RUN/checkpoint.prev.safetensors   the one before it, kept until the latest is on disk

One safetensors file holds every tensor (weights, the optimizer's moments, the weights of the
best epoch for early stopping, the moving average of the weights (ema), the data order of the
epoch in progress, each image's last loss under selective training, the torch and CUDA random
states); its metadata holds the rest as JSON (epoch, step, finished epochs, Python's and
NumPy's random states, the optimizer's settings). No pickle: a checkpoint
handed over by someone else is data, never code.

A checkpoint is written after every epoch, every N optimizer steps with
`--checkpoint-every N`, and when Ctrl-C stops a run. Resuming restores all of it, so a
deterministic run that was killed and resumed ends with weights equal bit for bit to
one that never stopped (tests/test_checkpoint.py kills one 20 times).
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import RunError
from .files import check_state, read_safetensors, save_safetensors

LATEST = "checkpoint.safetensors"
PREVIOUS = "checkpoint.prev.safetensors"
FORMAT = "convlens-checkpoint-1"


@dataclass
class Progress:
    """Where training stands, as plain numbers (JSON in the checkpoint's metadata); what fit returns."""
    epoch: int = 1                 # the epoch in progress, 1-based
    step_in_epoch: int = 0         # optimizer steps done in it
    step: int = 0                  # optimizer steps done in all (drives the learning-rate schedule)
    epochs: list[dict] = field(default_factory=list)   # the finished epochs' records (metrics.jsonl)
    best_epoch: int = 0            # lowest validation loss so far (0: none yet)
    best_loss: float = float("inf")
    stopped_early: bool = False    # early stopping ended training after the last finished epoch
    resumes: int = 0               # how often this run was resumed
    train_time_s: float = 0.0      # optimizer time of the finished epochs
    epoch_time_s: float = 0.0      # optimizer time spent in the epoch in progress
    interrupted: bool = False      # training was stopped (Ctrl-C, SIGTERM) before its last epoch
    stopped_at: list[int] | None = None   # interrupted: [epoch, steps done in it]
    warmup_s: float = 0.0          # a GPU's start-up before the first step (warmup.py), off the training clock


@dataclass
class Checkpoint:
    """A checkpoint read back: the progress plus the tensors that go with it."""
    progress: Progress
    model: dict[str, torch.Tensor]
    optimizer: dict                       # as torch's Optimizer.state_dict()
    best: dict[str, torch.Tensor] | None  # weights of the best epoch (early stopping)
    perm: torch.Tensor | None             # data order of the epoch in progress (None at an epoch start)
    sums: tuple[torch.Tensor, torch.Tensor]   # running loss sum and correct count of that epoch
    rng: dict                             # every random state: capture_rng's tensors and JSON together
    path: Path                            # the file it came from
    ema: dict[str, torch.Tensor] | None = None   # the moving average of the weights (recipes with ema)
    losses: torch.Tensor | None = None    # each training image's last loss (selective training: selection.py)


# ---------------------------------------------------------------------------
# Random states

def capture_rng(data_order: torch.Generator) -> tuple[dict[str, torch.Tensor], dict]:
    """Every random state training touches: (tensors, JSON). Python's and NumPy's are not used by
    the loop itself but by user callbacks and augmentations, so they are kept too."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.data_order": data_order.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    meta = {"python": [py_version, list(py_state), py_gauss],
            "numpy": [np_kind, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)]}
    return tensors, meta


def restore_rng(rng: dict, data_order: torch.Generator) -> None:
    """Undo capture_rng: `rng` holds its tensors and its JSON side by side."""
    torch.set_rng_state(rng["rng.torch"])
    data_order.set_state(rng["rng.data_order"])
    cuda = [rng[k] for k in sorted((k for k in rng if k.startswith("rng.cuda.")), key=lambda k: int(k[9:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---------------------------------------------------------------------------
# Writing

def _optimizer_tensors(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split torch's optimizer state_dict into tensors ("optim.PARAM.NAME") and JSON (the rest)."""
    tensors, scalars = {}, {}
    for param_id, per_param in opt_state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param_id}.{name}"] = value
            else:
                scalars[f"{param_id}.{name}"] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def save_checkpoint(run_dir: Path, progress: Progress, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    data_order: torch.Generator, perm: torch.Tensor | None = None,
                    sums: tuple[torch.Tensor, torch.Tensor] | None = None,
                    best: dict[str, torch.Tensor] | None = None,
                    ema: dict[str, torch.Tensor] | None = None, losses: torch.Tensor | None = None) -> Path:
    """Write RUN/checkpoint.safetensors atomically, keeping the previous one as checkpoint.prev.

    On any failure (disk full, read-only folder) both existing checkpoints stay as they were
    and RunError says which file could not be written.
    """
    opt_tensors, opt_meta = _optimizer_tensors(optimizer.state_dict())
    rng_tensors, rng_meta = capture_rng(data_order)
    tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **opt_tensors, **rng_tensors}
    if best is not None:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.items()})
    if perm is not None:
        tensors["perm"] = perm
    if losses is not None:
        tensors["losses"] = losses
    if sums is not None:
        tensors["sums.loss"], tensors["sums.correct"] = sums
    progress_json = asdict(progress)
    progress_json["best_loss"] = None if progress.best_loss == float("inf") else progress.best_loss
    meta = {"format": FORMAT, "progress": json.dumps(progress_json), "optimizer": json.dumps(opt_meta),
            "rng": json.dumps(rng_meta)}
    path = run_dir / LATEST
    save_safetensors(path, tensors, meta, keep_previous=run_dir / PREVIOUS)
    return path


# ---------------------------------------------------------------------------
# Reading

def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def read_checkpoint(path: Path, model: torch.nn.Module) -> Checkpoint:
    """Read and check one checkpoint file against `model`; RunError for anything malformed."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise RunError(f"{path}: not a convlens checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        p = json.loads(meta["progress"])
        progress = Progress(**p)
        if progress.best_loss is None:
            progress.best_loss = float("inf")
        opt_meta = json.loads(meta["optimizer"])
        rng_meta = json.loads(meta["rng"])
        param_groups, scalars = opt_meta["param_groups"], opt_meta["scalars"]
        ints = (progress.epoch, progress.step_in_epoch, progress.step, progress.best_epoch)
        if not all(isinstance(v, int) and v >= 0 for v in ints) or progress.epoch < 1:
            raise ValueError("negative or non-integer epoch/step")
        if not isinstance(progress.epochs, list) or not all(isinstance(e, dict) for e in progress.epochs):
            raise ValueError("epochs is not a list of records")
        if not isinstance(param_groups, list) or not isinstance(scalars, dict):
            raise ValueError("malformed optimizer settings")
        for key in ("python", "numpy"):
            if not isinstance(rng_meta.get(key), list):
                raise ValueError(f"no {key} random state")
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: damaged checkpoint metadata ({e})") from None

    expected = model.state_dict()
    check_state(path, _prefixed(tensors, "model."), expected, "the run's model")
    best, ema = _prefixed(tensors, "best.") or None, _prefixed(tensors, "ema.") or None
    for state in (best, ema):
        if state is not None:
            check_state(path, state, expected, "the run's model")
    for key in ("rng.torch", "rng.data_order"):
        if key not in tensors or tensors[key].dtype != torch.uint8:
            raise RunError(f"{path}: damaged checkpoint: {key} missing or not uint8")
    perm = tensors.get("perm")
    if progress.step_in_epoch and (perm is None or perm.dtype != torch.int64 or perm.ndim != 1):
        raise RunError(f"{path}: damaged checkpoint: the epoch in progress has no data order")
    if perm is not None and (len(perm) == 0 or perm.min() < 0 or len(perm.unique()) != len(perm)):
        raise RunError(f"{path}: damaged checkpoint: its data order does not take distinct training images")
    losses = tensors.get("losses")
    if losses is not None and (losses.dtype != torch.float32 or losses.ndim != 1):
        raise RunError(f"{path}: damaged checkpoint: its image losses are not one float32 vector")
    sums = (tensors.get("sums.loss", torch.zeros(())), tensors.get("sums.correct", torch.zeros((), dtype=torch.long)))

    state: dict = {}
    try:
        for key, value in [*_prefixed(tensors, "optim.").items(), *scalars.items()]:
            param_id, _, name = key.partition(".")
            state.setdefault(int(param_id), {})[name] = value
    except ValueError:
        raise RunError(f"{path}: damaged checkpoint: optimizer entry {key!r}") from None
    optimizer = {"state": state, "param_groups": param_groups}
    rng = {**{k: v for k, v in tensors.items() if k.startswith("rng.")}, **rng_meta}
    return Checkpoint(progress, _prefixed(tensors, "model."), optimizer, best, perm, sums, rng, path, ema, losses)


def load_checkpoint(run_dir: Path, model: torch.nn.Module) -> Checkpoint:
    """The latest good checkpoint of a run: checkpoint.safetensors, or, when that one is missing
    or damaged, checkpoint.prev.safetensors with a warning on stderr. RunError when neither loads."""
    errors = []
    for name in (LATEST, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            ckpt = read_checkpoint(path, model)
        except RunError as e:
            errors.append(str(e))
            continue
        if errors:
            print(f"convlens: warning: {errors[0]}; resuming from the previous checkpoint {path.name} "
                  f"(epoch {ckpt.progress.epoch}, step {ckpt.progress.step})", file=sys.stderr)
        return ckpt
    if errors:
        raise RunError("no usable checkpoint: " + "; ".join(errors))
    raise nothing_to_resume(run_dir)


def nothing_to_resume(run_dir: Path) -> RunError:
    """The error for a run that has no checkpoint at all, and the way out."""
    return RunError(f"{run_dir}: no checkpoint to resume from: it stopped before its first one, so nothing was "
                    f"trained; delete {run_dir} and train again (or pick another --name)")


def restore(ckpt: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            data_order: torch.Generator) -> None:
    """Put a checkpoint's weights, optimizer state and random states back in place."""
    model.load_state_dict(ckpt.model)
    try:
        optimizer.load_state_dict(ckpt.optimizer)
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
        raise RunError(f"{ckpt.path}: the optimizer state does not fit this model ({e})") from None
    try:
        restore_rng(ckpt.rng, data_order)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise RunError(f"{ckpt.path}: damaged random-number state ({e})") from None
