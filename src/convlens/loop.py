"""The training loop: `fit` trains a model in place, one screen of numbered beats.

    for each epoch:  a seeded permutation of the training images
      for each batch:  1. batch  2. forward  3. loss  4. backward + step  5. schedule  6. log
      validate, keep the best weights, checkpoint

Around it, in small named pieces: the optimizer and schedule (schedule.py), the images each epoch
trains on (selection.py), the augmentation of each batch (augment.py), the moving average of the
weights (ema.py), the input normalisation folded into the first layer afterwards, checkpoints
(checkpoint.py), Ctrl-C (stop after the current step), and DistributedDataParallel (distributed.py).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from .augment import alternating, augment, flip_parity
from .checkpoint import Checkpoint, Progress, restore, save_checkpoint
from .config import TrainConfig
from .datasets import Dataset, batches, on_device, stats_sample
from .distributed import SINGLE, Cluster, all_sum, any_rank, lost
from .ema import WeightAverage
from .engine import autocast, channel_stats, device_of, drain, loss_and_accuracy, normalizer, predict_logits, to_input
from .errors import RunError
from .models import ConvNet
from .resizing import resized, training_size
from .schedule import lr_at, optimizer_for
from .selection import Selection
from .warmup import warm_up

# Normalisation statistics of a streamed image folder: from this many images, seeded (exact below it).
STATS_SAMPLE = 10_000
# Devices whose start-up is taken off the training clock (warmup.py): a CPU has none worth the copy.
WARM_UP_DEVICES = ("cuda",)


def init_weights(model: ConvNet, init: str) -> None:
    if init == "glorot":   # Keras: glorot_uniform kernels, zero biases
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def can_fold_normalization(model: ConvNet) -> bool:
    """Normalisation folds exactly into a first conv without padding, or a dense right after flatten."""
    first, infos = model.infos[0].spec, model.infos
    if first.kind == "conv":
        return infos[0].pads == (0, 0, 0, 0) and first.bias
    return first.kind == "flatten" and len(infos) > 1 and infos[1].spec.kind == "dense" and infos[1].spec.bias


def input_stats(model: ConvNet, data: Dataset, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The per-channel (mean, std) the model trains on ((pixel / 255 - mean) / std), or None: the
    recipe does not normalise, or it could not be folded into this model's first layer."""
    if config.settings.normalize and can_fold_normalization(model):
        return channel_stats(stats_sample(data.train_x, STATS_SAMPLE, config.seed))
    return None


@torch.no_grad()
def fold_normalization(model: ConvNet, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Rewrite the first layer so that it takes [0, 1] pixels and computes what it computed on
    (pixel - mean) / std: W' = W / std, b' = b - Σ W · mean / std."""
    if model.infos[0].spec.kind == "conv":
        layer = model.layers[0]
        mean, std = mean.to(layer.weight), std.to(layer.weight)
        layer.bias -= (layer.weight * (mean / std)[None, :, None, None]).sum(dim=(1, 2, 3))
        layer.weight /= std[None, :, None, None]
    else:
        layer = model.layers[1]
        per_pixel = math.prod(model.input_shape[1:])
        mean_v = mean.to(layer.weight).repeat_interleave(per_pixel)
        std_v = std.to(layer.weight).repeat_interleave(per_pixel)
        layer.bias -= layer.weight @ (mean_v / std_v)
        layer.weight /= std_v[None, :]


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks training to stop after the current step, so that the
    weights and the checkpoint are those of a whole step; a second Ctrl-C stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> "StopRequest":
        self.requested, self.previous = False, {}
        if threading.current_thread() is threading.main_thread():   # signal handlers live there only
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def __bool__(self) -> bool:
        return self.requested


def fit(model: ConvNet, data: Dataset, config: TrainConfig, precision: torch.dtype = torch.float32,
        run_dir: Path | None = None, resume: Checkpoint | None = None, cluster: Cluster = SINGLE,
        on_epoch: Callable[[dict, ConvNet], None] | None = None,
        on_step: Callable[[int, int, StepLogs], None] | None = None) -> Progress:
    """Train `model` in place on data.train, validating on data.val after each epoch; the final Progress.

    config: the recipe's settings, epochs, seed, early stopping (stops after that many epochs
    without a lower validation loss and restores the best weights, as Keras's EarlyStopping(
    restore_best_weights=True)), checkpoint_every, compile. run_dir: write a resumable checkpoint
    there at the start, after every epoch, every checkpoint_every steps and when stopped; resume:
    a checkpoint to go on from. Ctrl-C ends training after the current step; what was trained is
    kept. cluster: the processes of a torchrun launch; each takes its share of every batch.
    on_epoch(record, weights) after every epoch: its metrics.jsonl record, and the model as it was
    validated (the moving average of the weights when the recipe keeps one, else `model` itself).
    on_step(done, steps, logs) after every step, as Keras's on_train_batch_end: logs["loss"],
    logs["accuracy"] (the epoch's running means so far) and logs["lr"], read only when asked.
    """
    loop, r = _Loop(model, data, config, precision, run_dir, resume, cluster), config.settings
    p, stopping = loop.p, False
    with StopRequest() as stop:
        try:
            loop.checkpoint()    # at once: a resume is counted even if this process is killed before its next one
            while p.epoch <= config.epochs and not p.stopped_early and not (stopping := loop.stop_asked(stop)):
                t0 = time.perf_counter()
                for idx, x_u8 in loop.epoch_batches():
                    x, y = loop.inputs(idx, x_u8)                                          # 1. batch
                    with autocast(loop.device, precision):
                        logits = loop.forward(x)                                           # 2. forward
                        loss = F.cross_entropy(logits, y, label_smoothing=r.label_smoothing)   # 3. loss
                    loop.opt.zero_grad(set_to_none=True)
                    loss.backward()                                                        # 4. backward + step
                    loop.opt.step()
                    loop.average()
                    loop.schedule()                                                        # 5. schedule
                    loop.log(logits, loss, y, idx)                                         # 6. log
                    if on_step:
                        on_step(p.step_in_epoch, loop.steps_per_epoch, StepLogs(loop))
                    stopping = loop.stop_asked(stop)
                    if loop.checkpoint_due(stopping):
                        drain(loop.device)
                        p.epoch_time_s += time.perf_counter() - t0   # checkpoint writes are not training time
                        loop.checkpoint()
                        t0 = time.perf_counter()
                        if stopping:
                            break
                drain(loop.device)                                # a GPU's queued steps are training time too
                p.epoch_time_s += time.perf_counter() - t0
                if p.step_in_epoch < loop.steps_per_epoch:        # stopped inside the epoch
                    break
                record = loop.end_epoch()
                if on_epoch:
                    on_epoch(record, loop.evaluated)
            p.interrupted = stopping and p.epoch <= config.epochs and not p.stopped_early
        except KeyboardInterrupt:   # a second Ctrl-C, or raised by a callback: keep what was trained
            p.interrupted = True
        except RuntimeError as e:   # DDP's gradient all-reduce when another rank died
            if cluster.active:
                raise lost(cluster, "training", e) from None
            raise
    return loop.finish()


class StepLogs(Mapping):
    """The running figures of the epoch so far, computed when read: reading them waits for the
    device, so a callback that looks every ~1 % of an epoch costs a GPU nothing at the other steps."""

    KEYS = ("loss", "accuracy", "lr")

    def __init__(self, loop: "_Loop"):
        self._loop = loop

    def __getitem__(self, key: str) -> float:
        loop = self._loop             # images this process saw this epoch (its share, under torchrun)
        seen = max(1, min(loop.p.step_in_epoch * loop.r.batch_size, loop.n_used) // loop.cluster.world)
        if key == "loss":
            return loop.loss_sum.item() / seen
        if key == "accuracy":
            return loop.correct.item() / seen
        if key == "lr":
            return loop.opt.param_groups[0]["lr"]
        raise KeyError(key)

    def __iter__(self):
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)


class _Loop:
    """The moving parts of one fit: optimizer, data order, running sums, normalisation, checkpoints."""

    def __init__(self, model: ConvNet, data: Dataset, config: TrainConfig, precision: torch.dtype,
                 run_dir: Path | None, resume: Checkpoint | None, cluster: Cluster):
        self.model, self.data, self.config, self.r = model, data, config, config.settings
        self.run_dir, self.cluster, self.precision = run_dir, cluster, precision
        self.device = device_of(model)
        forward = model
        if cluster.active:          # averages the gradients over the ranks in every backward
            forward = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                              else None)
        self.forward = torch.compile(forward) if config.compile else forward
        self.x_train, self.y_train = on_device(data.train_x, self.device), data.train_y.to(self.device)
        self.stats = input_stats(model, data, config)
        self.norm = normalizer(*self.stats, self.device) if self.stats is not None else None
        self.selection = Selection(len(self.y_train), self.r.select, self.r.select_power, self.device, cluster.world)
        self.total = sum(self.steps_in(epoch) for epoch in range(1, config.epochs + 1))
        self.opt = optimizer_for(model, self.r, self.device)
        self.ema = WeightAverage(model, self.r.ema) if self.r.ema else None
        self.gen = torch.Generator(device="cpu").manual_seed(config.seed)
        self.parity = (flip_parity(len(self.y_train), self.r.flip, config.seed).to(self.device)
                       if self.r.flip_order == "alternate" else None)
        self.p, self.best_state, self.perm = Progress(), None, None
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        if resume is not None:
            self._resume(resume)
        model.train()
        self.warm_up()          # before the clock

    def warm_up(self) -> None:
        """A GPU's first-step costs paid on a copy before the clock starts, and counted apart (warmup.py)."""
        if self.device.type in WARM_UP_DEVICES:
            bs, c = self.r.batch_size, self.cluster
            last = {self.used_in(epoch) % bs or bs for epoch in range(self.p.epoch, self.config.epochs + 1)}
            shares = {len(range(c.rank, n, c.world)) for n in {bs, *last}}   # this process's
            sizes = {self.training_size(epoch) for epoch in range(self.p.epoch, self.config.epochs + 1)}
            self.p.warmup_s += warm_up(self.model, lambda twin: optimizer_for(twin, self.r, self.device),
                                       self.blank_inputs, [(n, size) for n in sorted(shares) for size in sorted(sizes)],
                                       self.precision, self.r.label_smoothing, self.r.ema)

    def blank_inputs(self, shape: tuple[int, tuple[int, int]]) -> torch.Tensor:
        """(n, size): n blank images as a step's input at that image size: augmented as the recipe says (with
        draws of their own, not the run's) and normalised, so the warm-up loads those kernels too."""
        n, size = shape
        blank = torch.zeros((n, *self.model.input_shape), dtype=torch.uint8, device=self.device)
        return self.model_input(blank, torch.Generator().manual_seed(0), size=size)

    def used_in(self, epoch: int) -> int:
        """The images epoch `epoch` trains on: all, or a share under selective training; several processes
        take whole batches only (a short last batch could leave a rank with no image)."""
        n, bs = self.selection.size(epoch), self.r.batch_size
        return n - n % bs if self.cluster.active and n >= bs else n

    def steps_in(self, epoch: int) -> int:
        return math.ceil(self.used_in(epoch) / self.r.batch_size)

    @property
    def n_used(self) -> int:
        """The images the epoch in progress trains on."""
        return self.used_in(self.p.epoch)

    @property
    def steps_per_epoch(self) -> int:
        """The optimizer steps of the epoch in progress."""
        return self.steps_in(self.p.epoch)

    def training_size(self, epoch: int) -> tuple[int, int]:
        """The (height, width) of epoch `epoch`'s training images (smaller early on under progressive resizing)."""
        r = self.r
        return training_size(epoch, self.config.epochs, self.model.input_shape[1:], r.resize_from, r.resize_until)

    def _resume(self, ckpt: Checkpoint) -> None:
        restore(ckpt, self.model, self.opt, self.gen)
        if self.ema is not None:
            if ckpt.ema is None:
                raise RunError(f"{ckpt.path}: the run averages its weights (ema) but the checkpoint has no average")
            self.ema.load_state_dict(ckpt.ema)
        self.p, self.best_state = ckpt.progress, ckpt.best
        self.p.interrupted, self.p.stopped_at = False, None
        if self.selection.active:
            self.selection.load(ckpt.losses, str(ckpt.path))
        n, taken = len(self.y_train), self.selection.size(self.p.epoch)
        if ckpt.perm is not None and (len(ckpt.perm) != taken or int(ckpt.perm.max()) >= n):
            raise RunError(f"{ckpt.path}: its data order is for {len(ckpt.perm):,} training images, the data now has "
                           f"{n:,}" + (f" (this epoch takes {taken:,})" if taken < n else "")
                           + ": resume with the data the run was trained on")
        self.perm = ckpt.perm.to(self.device) if ckpt.perm is not None else None
        if self.cluster.main:           # the sums of every rank so far (gather_sums): counted once
            self.loss_sum.copy_(ckpt.sums[0]), self.correct.copy_(ckpt.sums[1])

    def stop_asked(self, stop: StopRequest) -> bool:
        return any_rank(self.cluster, bool(stop), self.device)    # one Ctrl-C stops every rank

    def epoch_batches(self):
        """(indices, uint8 images) of each remaining step of the epoch (a new order at its start)."""
        if self.p.step_in_epoch == 0:
            self.perm = self.selection.order(self.p.epoch, self.gen).to(self.device)
            self.loss_sum.zero_(), self.correct.zero_()
        bs, c = self.r.batch_size, self.cluster
        order = [self.perm[i:i + bs][c.rank::c.world]     # (all of a batch in one process)
                 for i in range(self.p.step_in_epoch * bs, self.n_used, bs)]
        return zip(order, batches(self.x_train, order))

    def inputs(self, idx: torch.Tensor, x_u8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's input and targets for one step, augmented as the recipe says (drawn from the data-order
        generator, so a resumed run draws the same; for the step's whole batch, of which this process keeps
        its share's draws, so several processes draw what one would)."""
        bs, c = self.r.batch_size, self.cluster
        whole = min(bs, self.n_used - self.p.step_in_epoch * bs)
        mirror = None if self.parity is None else alternating(self.parity[idx], self.p.epoch)
        x = self.model_input(x_u8.to(self.device), self.gen, batch=whole, part=slice(c.rank, None, c.world),
                             mirror=mirror)
        return x, self.y_train[idx]

    def model_input(self, x_u8: torch.Tensor, gen: torch.Generator, size: tuple[int, int] | None = None,
                    **share) -> torch.Tensor:
        """uint8 images on the device -> the model's input: augmented as the recipe says, drawing from `gen`
        (augment's batch and part: this process's share of a batch; mirror: an alternating flip's), scaled and
        normalised, then resized to `size` (default: the epoch's, smaller under progressive resizing)."""
        r = self.r
        x_u8 = augment(x_u8, gen, r.crop, r.crop_pad, r.flip, r.erase, r.erase_area, r.erase_ratio, **share)
        return resized(to_input(x_u8, self.device, self.norm), size or self.training_size(self.p.epoch))

    def average(self) -> None:
        """Fold the weights of the step just taken into their moving average (when the recipe keeps one)."""
        if self.ema is not None:
            self.ema.update(self.model, self.p.step)

    @property
    def evaluated(self) -> ConvNet:
        """The weights that are validated, kept as the best and saved: the moving average when there is one."""
        return self.model if self.ema is None else self.ema.average

    def schedule(self) -> None:
        self.p.step, self.p.step_in_epoch = self.p.step + 1, self.p.step_in_epoch + 1
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.p.step, self.total, self.r)

    def log(self, logits: torch.Tensor, loss: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
        # Logged loss is plain cross-entropy, comparable with val_loss (the smoothed one is not); under selective
        # training each image's is kept, to choose the next epochs' images.
        if self.r.label_smoothing or self.selection.active:
            each = F.cross_entropy(logits.detach().float(), y, reduction="none")
            if self.selection.active:
                self.selection.record(idx, each)
            self.loss_sum += each.sum()
        else:
            self.loss_sum += loss.detach() * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()

    def checkpoint_due(self, stopping: bool) -> bool:
        """Mid-epoch: a checkpoint when asked to stop, or every checkpoint_every steps."""
        every = self.config.checkpoint_every
        return self.p.step_in_epoch < self.steps_per_epoch and (stopping or (every and self.p.step % every == 0))

    def gather_sums(self) -> None:
        """The epoch's running sums of every rank, on rank 0 (the others start again from zero); under selective
        training every rank takes the image losses all of them recorded."""
        all_sum(self.cluster, self.loss_sum, self.correct)
        self.selection.merge(lambda *t: all_sum(self.cluster, *t))
        if not self.cluster.main:
            self.loss_sum.zero_(), self.correct.zero_()

    def checkpoint(self) -> None:
        p = self.p
        if p.step_in_epoch:
            self.gather_sums()
        if self.run_dir is not None and self.cluster.main:
            save_checkpoint(self.run_dir, p, self.model, self.opt, self.gen, self.perm if p.step_in_epoch else None,
                            (self.loss_sum, self.correct), self.best_state,
                            self.ema.state_dict() if self.ema is not None else None,
                            self.selection.losses if self.selection.active else None)

    def end_epoch(self) -> dict:
        """The finished epoch's record: training sums, validation, the best epoch so far; then a checkpoint."""
        p, data, patience = self.p, self.data, self.config.early_stopping
        self.gather_sums()
        record = {"epoch": p.epoch, "loss": self.loss_sum.item() / self.n_used,
                  "accuracy": self.correct.item() / self.n_used, "lr": lr_at(p.step - 1, self.total, self.r),
                  "time_s": round(p.epoch_time_s, 3)}
        if self.selection.active:           # the images the training figures are of: the epoch's share
            record["images"] = self.n_used
        if len(data.val_y):
            record["val_loss"], record["val_accuracy"] = loss_and_accuracy(
                predict_logits(self.evaluated, data.val_x, precision=self.precision, norm=self.norm), data.val_y)
            if record["val_loss"] < p.best_loss:
                p.best_loss, p.best_epoch = record["val_loss"], p.epoch
                if patience:
                    self.best_state = {k: v.detach().clone() for k, v in self.evaluated.state_dict().items()}
        p.epochs.append(record)
        p.train_time_s, p.epoch_time_s = p.train_time_s + p.epoch_time_s, 0.0
        p.stopped_early = bool(patience) and p.epoch - p.best_epoch >= patience
        p.epoch, p.step_in_epoch = p.epoch + 1, 0
        self.checkpoint()
        return record

    def finish(self) -> Progress:
        """Where training stopped; the averaged weights taken (ema) or the best ones restored (early stopping),
        the normalisation folded in."""
        p = self.p
        if p.interrupted:
            p.stopped_at = [p.epoch, p.step_in_epoch]
        if self.ema is not None:
            self.model.load_state_dict(self.ema.state_dict())
        if self.best_state is not None and p.best_epoch != len(p.epochs):
            self.model.load_state_dict(self.best_state)
        if self.stats is not None:
            fold_normalization(self.model, *self.stats)
        return p
