"""Progressive resizing: the first epochs train on smaller copies of the images, which cost less.

A convolution's work grows with the image's area, so an epoch at 20×20 costs about half of one at
28×28 (resnet-cpu on the 2-core CPU: 26 against 47 ms a step). The images start at `start` of
their side and grow linearly, epoch by epoch, to full size at `until` of the epochs; the rest
train at full size, so the network ends on the images it is validated and tested on (fast.ai's
progressive resizing; Touvron et al. 2019 on the train/test size gap that the full-size epochs
close). A network that takes any size works (global average pooling before its dense layers);
validation and test always see full-size images.

Sides are rounded to a multiple of 4 (two stride-2 stages halve it exactly), and an epoch has one
size, so few shapes are ever compiled; the size depends on the epoch alone, so a resumed run
trains at the sizes an uninterrupted one would have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import ConvlensError, SpecError
from .models import layer_infos
from .spec import parse_spec

MULTIPLE = 4      # sides are rounded to this
SMALLEST = 8      # … and never below it


def side_at(epoch: int, epochs: int, full: int, start: float, until: float) -> int:
    """The side, in pixels, of the training images of epoch `epoch` (1-based) of `epochs`: `start` of
    `full` at the first, growing linearly to `full` at `until` of the epochs (a share in (0, 1]), and
    never later than the last epoch, so that a run always ends on full-size images (a 1-epoch run has
    no room to grow: it trains at full size)."""
    growing = min(until * epochs, epochs - 1)      # epochs over which the side grows
    if start >= 1 or growing <= 0:
        return full
    grown = min(1.0, (epoch - 1) / growing)
    scale = start + (1 - start) * grown
    side = MULTIPLE * round(full * scale / MULTIPLE)
    return max(min(SMALLEST, full), min(full, side))


def resized(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A float batch (B, C, H, W) resized to `size` (antialiased bilinear, as PIL shrinks), channels_last as
    engine.to_input gives the model its input; x itself when it has that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    small = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return small.contiguous(memory_format=torch.channels_last)     # a no-op where interpolate kept the layout


def training_size(epoch: int, epochs: int, shape: tuple[int, int], start: float, until: float) -> tuple[int, int]:
    """The (height, width) of epoch `epoch`'s training images, for full-size images of `shape`."""
    return tuple(side_at(epoch, epochs, full, start, until) for full in shape)


def check_resizable(spec: str, input_shape: tuple[int, int, int], num_classes: int, epochs: int, start: float,
                    until: float) -> None:
    """A clear error, before anything is written, when progressive resizing cannot train this network: it
    flattens its feature maps (its dense layer's inputs would change with the size), or the first epoch's
    images are too small for it."""
    if start >= 1:
        return
    if any(layer.kind == "flatten" for layer in parse_spec(spec)):
        raise ConvlensError(f"--resize-from needs a network that takes any image size, with global average pooling "
                            f"('gap') before its dense layers; {spec!r} flattens its feature maps")
    small = training_size(1, epochs, tuple(input_shape[1:]), start, until)
    try:
        layer_infos(spec, (input_shape[0], *small), num_classes)
    except SpecError as e:
        raise ConvlensError(f"--resize-from {start:g}: the first epoch's {small[0]}×{small[1]} images are too small "
                            f"for {spec!r} ({e})") from None
