"""Augmentation of a training batch: random crop, horizontal flip, random erasing.

Each works on a whole uint8 batch (B, C, H, W) where it lies (CPU or GPU), with no Python loop over
the images (airbench keeps its data the same way), and decides for each image by itself with its
own probability. Every random number comes from the generator handed in, on the CPU, whatever the
device: the run's seeded data-order generator, whose state the checkpoint keeps, so a resumed run
draws exactly what an uninterrupted one would have.

Under torchrun each process holds a share of the step's batch (rank r: images r, r + world, …). Each
draws for the whole batch, `batch` images, and keeps its share's draws (`part`): every image gets the
draws it gets in one process, and the ranks' generators stay in step.

    random_crop    shift the image by up to `pad` pixels each way (pad with zeros, crop back to H×W):
                   the standard CIFAR crop (He et al. 2016: 4 pixels of 32); zeros are the background
                   of Fashion-MNIST
    random_flip    mirror left-right
    alternating    mirror left-right in every other epoch: each image a random way in the first epoch,
                   then the other way each epoch after (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds"),
                   so every image is seen both ways in every two epochs, where fresh coins show half
                   of them one way only
    random_erase   one rectangle of random pixels (Zhong et al., AAAI 2020, "Random Erasing Data
                   Augmentation": area s_l..s_h of the image, aspect r_1..1/r_1, random values)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


ALL = slice(None)


def random_crop(x: torch.Tensor, pad: int, p: float, gen: torch.Generator, batch: int | None = None,
                part: slice = ALL) -> torch.Tensor:
    """Each image, with probability p, shifted by (dy, dx) uniform in −pad..pad, its uncovered border zero.
    batch, part: draw for `batch` images (default: those of x) and give x the draws of `part` of them."""
    b, c, h, w = x.shape
    n = batch or b
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)        # (N, 2): top-left in the padded image
    offsets[torch.rand(n, generator=gen) >= p] = pad                      # not cropped: the image as it was
    offsets = offsets[part].to(x.device)                                  # (B, 2)
    padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)          # (B, H + 2·pad, W + 2·pad, C)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)              # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)              # (B, W)
    image = torch.arange(b, device=x.device)[:, None, None]                # (B, 1, 1)
    return padded[image, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()   # (B, C, H, W)


def random_flip(x: torch.Tensor, p: float, gen: torch.Generator, batch: int | None = None,
                part: slice = ALL) -> torch.Tensor:
    """Each image, with probability p, mirrored left-right (batch, part: as random_crop)."""
    return mirrored(x, (torch.rand(batch or len(x), generator=gen) < p)[part])


def mirrored(x: torch.Tensor, mirror: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) with the images where mirror (B,) bool is true mirrored left-right."""
    return torch.where(mirror.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def flip_parity(n: int, p: float, seed: int) -> torch.Tensor:
    """(n,) bool: the images an alternating flip mirrors in the first epoch, each with probability p, drawn
    from a generator of their own seeded with the run's seed (so a resumed run draws them again, the
    run's data-order generator untouched)."""
    return torch.rand(n, generator=torch.Generator().manual_seed(seed)) < p


def alternating(parity: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which of the images whose first-epoch parity is `parity` an alternating flip mirrors in epoch `epoch`
    (1, 2, …): those of the parity in odd epochs, the others in even ones."""
    return parity ^ (epoch % 2 == 0)


def erase_boxes(b: int, h: int, w: int, area: tuple[float, float], ratio: tuple[float, float],
                gen: torch.Generator) -> torch.Tensor:
    """(B, 4) int64 rectangles (top, left, height, width): area uniform in area[0]..area[1] of h·w, height /
    width log-uniform in ratio[0]..ratio[1], placed uniformly where they fit. Sides are rounded to whole
    pixels; one taller or wider than the image is cut to it (the paper draws again instead)."""
    target = torch.empty(b).uniform_(area[0], area[1], generator=gen) * (h * w)
    aspect = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen).exp()
    eh = (target * aspect).sqrt().round().clamp(1, h).long()
    ew = (target / aspect).sqrt().round().clamp(1, w).long()
    top = (torch.rand(b, generator=gen) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=gen) * (w - ew + 1)).long()
    return torch.stack([top, left, eh, ew], 1)


def random_erase(x: torch.Tensor, p: float, area: tuple[float, float], ratio: tuple[float, float],
                 gen: torch.Generator, batch: int | None = None, part: slice = ALL) -> torch.Tensor:
    """Each image, with probability p, with one rectangle (erase_boxes) of uniformly random pixel values
    (batch, part: as random_crop)."""
    b, c, h, w = x.shape
    n = batch or b
    hit = (torch.rand(n, generator=gen) < p)[part]
    top, left, eh, ew = erase_boxes(n, h, w, area, ratio, gen)[part].T          # each (B,)
    noise = torch.randint(0, 256, (n, c, h, w), generator=gen, dtype=torch.uint8)[part]
    rows, cols = torch.arange(h), torch.arange(w)
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])             # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])           # (B, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & hit[:, None, None])[:, None]   # (B, 1, H, W)
    return torch.where(mask.to(x.device), noise.to(x.device), x)


def augment(x: torch.Tensor, gen: torch.Generator, crop: float = 0.0, crop_pad: int = 0, flip: float = 0.0,
            erase: float = 0.0, erase_area: tuple[float, float] = (0.02, 0.4),
            erase_ratio: tuple[float, float] = (0.3, 3.3), batch: int | None = None,
            part: slice = ALL, mirror: torch.Tensor | None = None) -> torch.Tensor:
    """A uint8 batch (B, C, H, W) cropped, flipped and erased, in that order (erasing last, as Zhong et al.);
    an augmentation whose probability is 0 draws no random number, so adding none changes nothing.
    batch, part: x is `part` of a batch of `batch` images (one rank's share), drawn for as a whole.
    mirror: (B,) bool, the images to mirror (an alternating flip's), in place of drawing with `flip`."""
    if crop and crop_pad:
        x = random_crop(x, crop_pad, crop, gen, batch, part)
    if mirror is not None:
        x = mirrored(x, mirror)
    elif flip:
        x = random_flip(x, flip, gen, batch, part)
    if erase:
        x = random_erase(x, erase, erase_area, erase_ratio, gen, batch, part)
    return x
