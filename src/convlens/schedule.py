"""The recipe's optimizer and its learning-rate schedule: one-cycle (a cosine warm-up from lr/25 to lr over
the recipe's warm-up share of the steps, then a cosine decay to lr/25/1e4, as torch's OneCycleLR draws
it) or constant. The loop sets each step's rate itself (lr_at), so a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .config import Recipe


def lr_at(step: int, total: int, r: Recipe) -> float:
    """Learning rate for optimizer step `step` of `total` (one-cycle as torch's OneCycleLR draws it)."""
    if r.schedule == "constant":
        return r.lr
    warm = max(1, round(total * r.warmup))
    start, end = r.lr / 25, r.lr / 25 / 1e4

    def cosine(a: float, b: float, t: float) -> float:
        return b + (a - b) * (1 + math.cos(math.pi * min(1.0, t))) / 2
    if step <= warm:
        return cosine(start, r.lr, step / warm)
    return cosine(r.lr, end, (step - warm) / max(1, total - warm))


def optimizer_for(model: nn.Module, r: Recipe, device: torch.device) -> torch.optim.Optimizer:
    """The recipe's optimizer at the schedule's first learning rate. Weight decay applies to conv and dense
    weights only: decaying batch norm's scale and the biases only pulls them towards 0 (Goyal et al. 2017)."""
    params = list(model.parameters())
    groups = ([{"params": [p for p in params if p.ndim > 1], "weight_decay": r.weight_decay},
               {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}] if r.weight_decay else params)
    lr, fused = lr_at(0, 1, r), (device.type == "cuda") or None
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=r.weight_decay)
    if r.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, eps=r.eps, weight_decay=r.weight_decay, fused=fused)
    return torch.optim.Adam(groups, lr=lr, eps=r.eps, fused=fused)
