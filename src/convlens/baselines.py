"""What a missing pixel is: the reference images that Integrated Gradients integrates from,
Occlusion puts in a patch's place and the deletion curves put in a removed pixel's place.

Black is the textbook choice and the wrong default here: a black baseline gives black pixels zero
attribution by construction (x − baseline = 0), and Fashion-MNIST's backgrounds are black.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .errors import ConvlensError

BASELINES = {  # what a missing pixel is: IG integrates from it, Occlusion and the deletion curve put it in
    "mean": "a uniform image at the training images' mean pixel value: every pixel differs from it, the black "
            "background included, so every pixel can be given attribution",
    "blur": "the image blurred (Gaussian, sigma 1/7 of its side): what is left without its shapes",
    "black": "all black: black pixels get zero attribution by construction (x - baseline = 0), and "
             "Fashion-MNIST's backgrounds are black",
}
DEFAULT_BASELINE = "mean"


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (N, C, H, W) blurred channel by channel with a Gaussian of `sigma` pixels (edges replicated)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g, c = g / g.sum(), x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)             # along rows
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)          # along columns


def baseline_image(x: torch.Tensor, kind: str = DEFAULT_BASELINE, mean: Sequence[float] | None = None) -> torch.Tensor:
    """The reference image for x (1, C, H, W) (BASELINES); mean: the per-channel mean pixel in [0, 1]."""
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "blur":
        return gaussian_blur(x, max(x.shape[-2:]) / 7)
    if kind == "mean":
        if mean is None:
            raise ConvlensError("the mean baseline needs the training images' mean pixel value")
        m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        if m.shape[1] not in (1, x.shape[1]):
            raise ConvlensError(f"a mean of {m.shape[1]} channels for images of {x.shape[1]}")
        return m.expand_as(x).clone()
    raise ConvlensError(f"unknown baseline {kind!r}; known: {', '.join(BASELINES)}")
