"""Selective training: after the first epoch, each epoch trains on a share of the images, drawn mostly
from those the network still gets wrong.

Late in training most images are ones the network already classifies with confidence, and a step
spent on them teaches it little. Selective backprop (Jiang et al. 2019, "Accelerating deep learning
by focusing on the biggest losers") trains on the images with the highest losses more often. Here,
as in their stale variant, an image's loss is the one the training step computed when it last saw
it, so choosing costs no forward pass of its own:

    epoch 1        every image, in a random order; each one's loss is kept
    epoch 2, 3 …   `share` of the images, drawn without replacement, image i with weight
                   (rank_i / n) ** power (rank 1: the lowest loss kept, n: the highest), in a
                   random order; the losses of the images trained on are brought up to date

power 0 draws uniformly; the larger it is, the more the draw keeps to the hardest images, yet every
image keeps a chance, so one learned long ago is seen again. An epoch after the first costs `share`
of a full one, and the learning-rate schedule runs over the steps actually taken. The losses are
part of the checkpoint and the draws come from the run's data-order generator, so a resumed run
trains on what an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .errors import RunError

UNSEEN = float("inf")     # the loss of an image not trained on yet: ranked hardest


class Selection:
    """The images each epoch trains on, and the loss each image had when it was last trained on."""

    def __init__(self, n: int, share: float, power: float, device: torch.device, ranks: int = 1):
        self.n, self.share, self.power = n, share, power
        self.losses = torch.full((n,), UNSEEN, device=device)
        # Several processes each see their share of every batch: what each wrote since the last merge (none to keep,
        # and nothing to merge at every checkpoint, when selection is off).
        self.fresh = (torch.zeros(n, device=device), torch.zeros(n, device=device)) if ranks > 1 and share < 1 else None

    @property
    def active(self) -> bool:
        return self.share < 1

    def size(self, epoch: int) -> int:
        """How many images epoch `epoch` (1-based) trains on."""
        return self.n if epoch == 1 or not self.active else max(1, math.ceil(self.share * self.n))

    def order(self, epoch: int, gen: torch.Generator) -> torch.Tensor:
        """The indices of the images epoch `epoch` trains on, in the order it takes them (on the CPU)."""
        k = self.size(epoch)
        if k == self.n:
            return torch.randperm(self.n, generator=gen)
        chosen = torch.multinomial(self.weights(), k, replacement=False, generator=gen)
        return chosen[torch.randperm(k, generator=gen)]

    def weights(self) -> torch.Tensor:
        """Each image's weight in the draw: (rank of its last loss / n) ** power, on the CPU (rank 1 the lowest
        loss; images not trained on yet rank highest, in their order)."""
        rank = torch.empty(self.n)
        rank[self.losses.cpu().argsort(stable=True)] = torch.arange(1, self.n + 1, dtype=torch.float)
        return (rank / self.n) ** self.power

    def record(self, idx: torch.Tensor, losses: torch.Tensor) -> None:
        """The per-image losses of a training step's images `idx` (computed on the training forward pass)."""
        losses = losses.detach().float()
        self.losses[idx] = losses
        if self.fresh is not None:
            self.fresh[0][idx], self.fresh[1][idx] = losses, 1.0

    def merge(self, all_sum: Callable[..., None]) -> None:
        """Several processes: every rank takes the losses every other rank recorded since the last merge
        (an image is trained on once an epoch, so by one rank: the sums hold one value each)."""
        if self.fresh is None:
            return
        values, written = self.fresh
        all_sum(values, written)
        self.losses = torch.where(written > 0, values, self.losses)
        values.zero_(), written.zero_()

    def load(self, losses: torch.Tensor | None, source: str) -> None:
        """Take a checkpoint's losses; RunError when it has none or they are for another number of images."""
        if losses is None:
            raise RunError(f"{source}: the run trains selectively but the checkpoint has no image losses")
        if losses.shape != (self.n,):
            raise RunError(f"{source}: its image losses are for {losses.numel():,} training images, the data now "
                           f"has {self.n:,}: resume with the data the run was trained on")
        self.losses = losses.to(self.losses)
