"""An exponential moving average of a model's weights (Polyak averaging, as timm's ModelEmaV2 and
TensorFlow's ExponentialMovingAverage keep it):

    after each optimizer step t (0, 1, 2, …):   avg ← d_t · avg + (1 − d_t) · weights,
    d_t = min(decay, (1 + t) / (10 + t))

The warm-up of d_t (TensorFlow's `num_updates`) lets the average forget the random initial weights
within the first few hundred steps instead of dragging them along for 1 / (1 − decay) of them.
Batch norm's running mean and variance are averaged the same way; its step counter is copied. The
average is a whole model of its own, so it is validated, saved and tested like one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, step: int) -> float:
    """d_t: the decay at optimizer step `step` (0-based), warmed up."""
    return min(decay, (1 + step) / (10 + step))


class WeightAverage:
    """The moving average of `model`'s weights, as a copy of the model (`average`) that never trains."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.average = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the model's weights after optimizer step `step` into the average."""
        d = ema_decay(self.decay, step)
        floats_avg, floats_now = [], []
        for avg, now in zip(self.average.state_dict().values(), model.state_dict().values()):
            if avg.is_floating_point():
                floats_avg.append(avg)
                floats_now.append(now)
            else:                                  # batch norm's num_batches_tracked
                avg.copy_(now)
        torch._foreach_lerp_(floats_avg, floats_now, 1 - d)   # avg + (1 − d)·(now − avg) = d·avg + (1 − d)·now

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.average.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.average.load_state_dict(state)
