"""The residual block (He et al. 2016, "Deep Residual Learning", the basic block of ResNet-18/34):

    x ─ conv3×3, stride S ─ BN ─ relu ─ conv3×3 ─ BN ─ (+) ─ relu
    └──────────────── skip: x, or conv1×1 stride S ─ BN ──┘

The skip is x itself when the block keeps the width and the size; where either changes (more
filters, or a stride) it is a 1×1 convolution with the same stride and batch norm (the
"projection shortcut", option B of the paper). Both 3×3 convolutions pad 1 pixel on every side,
so the block's output is ⌈input / S⌉ pixels a side, as `same` padding gives; they have no bias (the
batch norm after each adds its own shift). The relu after the sum is the layer's activation,
applied by ConvNet like a conv layer's: the module's forward returns the sum before it, so a
block's pre-activation is there for whoever needs it (activation maximisation does).

In a spec a block is one token, `res64` or `res128s2`, and one row of the layer table; its
parameter count is split into its parts (`parts`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KERNEL = 3      # both convolutions of a basic block are 3×3
PAD = 1         # on every side: ⌈input / stride⌉ out, as `same`


def has_projection(c_in: int, c_out: int, stride: int) -> bool:
    """A block needs a projection on its skip when its width or its size changes."""
    return c_in != c_out or stride != 1


def out_size(h: int, stride: int) -> int:
    """Output side of a block on a side of h: (h + 2·1 − 3) // S + 1 = ⌈h / S⌉ (the skip's 1×1 conv agrees)."""
    return (h + 2 * PAD - KERNEL) // stride + 1


def parts(c_in: int, c_out: int, stride: int) -> list[tuple[str, int, int]]:
    """(what, parameters, of which running statistics) of each piece of a block, in order. A batch norm
    has 4 numbers per channel (γ and β trained, mean and variance tracked), as the `bn` layer."""
    k2 = KERNEL * KERNEL
    bn = (f"BN 4×{c_out}", 4 * c_out, 2 * c_out)
    pieces = [(f"{KERNEL}×{KERNEL}×{c_in}×{c_out}", k2 * c_in * c_out, 0), bn,
              (f"{KERNEL}×{KERNEL}×{c_out}×{c_out}", k2 * c_out * c_out, 0), bn]
    if has_projection(c_in, c_out, stride):
        pieces += [(f"skip 1×1×{c_in}×{c_out}", c_in * c_out, 0), bn]
    return pieces


def arithmetic(c_in: int, c_out: int, stride: int) -> str:
    """Why a block has the parameters it has, e.g. for res64 after 32 channels:
    '3×3×32×64 + BN 4×64 + 3×3×64×64 + BN 4×64 + skip 1×1×32×64 + BN 4×64 = 18,432 + 256 + … = 58,112'."""
    pieces = parts(c_in, c_out, stride)
    total = sum(p for _, p, _ in pieces)
    skip = "" if has_projection(c_in, c_out, stride) else " (skip: x itself)"
    return (" + ".join(w for w, _, _ in pieces) + " = " + " + ".join(f"{p:,}" for _, p, _ in pieces)
            + f" = {total:,}{skip}")


def mult_adds(c_in: int, c_out: int, stride: int, h_out: int, w_out: int) -> int:
    """Multiply-adds of a block per image: its convolutions (batch norm and the sum are ~1 per value)."""
    per_pixel = KERNEL * KERNEL * c_in * c_out + KERNEL * KERNEL * c_out * c_out
    if has_projection(c_in, c_out, stride):
        per_pixel += c_in * c_out
    return h_out * w_out * per_pixel


class ResidualBlock(nn.Module):
    """The basic block; forward returns the sum before the final relu (ConvNet applies it)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, eps: float = 1e-5):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, KERNEL, stride, PAD, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out, eps=eps)
        self.conv2 = nn.Conv2d(c_out, c_out, KERNEL, 1, PAD, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=eps)
        self.skip_conv = self.skip_bn = None
        if has_projection(c_in, c_out, stride):
            self.skip_conv = nn.Conv2d(c_in, c_out, 1, stride, bias=False)
            self.skip_bn = nn.BatchNorm2d(c_out, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                       # (B, C_in, H, W)
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))             # (B, C, ⌈H/S⌉, ⌈W/S⌉)
        return y + (x if self.skip_conv is None else self.skip_bn(self.skip_conv(x)))

    def reset_parameters(self) -> None:
        """Every piece as PyTorch initialises a new one (the sanity check re-draws layers this way)."""
        for m in self.children():
            m.reset_parameters()
