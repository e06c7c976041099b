"""Batch norm's statistics recomputed after training ("precise BN", Wu & Johnson 2021), on validation only.

A run trained with crops and flips keeps running statistics of augmented images, tracked with momentum
while the weights moved. This recomputes them on the finished weights, as an equal-weight average over
batches of 64 training images, clean or augmented as the run's recipe augments them, and validates the result.

    PYTHONPATH=src python benchmarks/precise_bn.py RUN [RUN ...] --data-dir DIR

RUN: runs trained with a validation split (LADDER_SWEEP.md s11's, whose "test" figure is validation).
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn as nn

from convlens.augment import augment
from convlens.config import Recipe, TrainConfig
from convlens.datasets import training_data
from convlens.engine import autocast, loss_and_accuracy, predict_logits, set_threads, to_input
from convlens.runs import open_run

CPU = torch.device("cpu")


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return loss_and_accuracy(predict_logits(model, x, precision=torch.bfloat16), y)[1]


@torch.no_grad()
def recalibrated(model: nn.Module, x_u8: torch.Tensor, n: int, recipe: Recipe | None, batch: int = 64) -> nn.Module:
    """A copy whose batch norms hold the equal-weight average of n training images' batch statistics, the
    images augmented as `recipe` augments them (None: clean)."""
    m = copy.deepcopy(model).train()
    for bn in (b for b in m.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)):
        bn.reset_running_stats()
        bn.momentum = None                       # a cumulative average, not a moving one
    g = torch.Generator().manual_seed(1)
    order = torch.randperm(len(x_u8), generator=g)[:n]
    for i in range(0, n, batch):
        xb = x_u8[order[i:i + batch]]
        xb = augment(xb, g, recipe.crop, recipe.crop_pad, recipe.flip, recipe.erase, recipe.erase_area,
                     recipe.erase_ratio) if recipe else xb
        with autocast(CPU, torch.bfloat16):
            m(to_input(xb, CPU))
    return m.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    set_threads(2)
    for path in args.runs:
        run = open_run(path)
        data = training_data(TrainConfig(data_dir=args.data_dir, val_split=run.config.settings.val_split,
                                           seed=run.config.seed))
        model, vx, vy = run.load_model(), data.val_x, data.val_y
        line = [f"{run.name}: as trained {accuracy(model, vx, vy):.2%}"]
        for n, augmented in ((len(data.train_y), False), (len(data.train_y), True), (10_000, False)):
            again = accuracy(recalibrated(model, data.train_x, n, run.config.settings if augmented else None), vx, vy)
            line.append(f"{'augmented' if augmented else 'clean'} {n:,}: {again:.2%}")
        print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
