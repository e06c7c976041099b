"""The convolution lab: convolution as sum(pixel × filter), named filters, max pooling.

The study note's claims, made checkable (DESIGN.md §1):
- S2: an output pixel is the sum, over the kernel, of pixel × weight. `conv2d_reference`
  computes exactly that; the tests hold it equal to torch's conv2d.
- S3: filters detect features: `NAMED_KERNELS` (vertical and horizontal edges and the
  usual others) or any k×k matrix the user types (`parse_kernel`).
- S5: 2×2 max pooling keeps the largest value of each window and halves the size
  (`max_pool_reference`).
`convolution_lab` puts them together for one image. Arrays in, arrays out: no dataset is
loaded here (the caller brings the image, already scaled to [0, 1] by the engine) and no
plotting (figures.py draws the arrays it returns).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ConvlensError, ImageError
from .images import read_image, upright_8bit

MAX_KERNEL_SIZE = 15   # a 15×15 kernel already covers half a 28×28 image; anything larger is a typo
LAB_MAX_SIDE = 512     # px: a 4000×3000 photo becomes 512×384, enough to see edges, small enough to draw


# name: (weights, what it shows). Cross-correlation convention (no flip), as in every
# deep-learning framework: `vertical` is positive where the window is brighter on its left.
_KERNELS = {
    "vertical": ([[1, 0, -1]] * 3, "vertical edges: left column minus right column"),
    "horizontal": ([[1, 1, 1], [0, 0, 0], [-1, -1, -1]], "horizontal edges: top row minus bottom row"),
    "sobel_x": ([[1, 0, -1], [2, 0, -2], [1, 0, -1]], "vertical edges, smoothed: Sobel, the middle row counts twice"),
    "sobel_y": ([[1, 2, 1], [0, 0, 0], [-1, -2, -1]],
                "horizontal edges, smoothed: Sobel, the middle column counts twice"),
    "laplacian": ([[0, 1, 0], [1, -4, 1], [0, 1, 0]], "edges in every direction: 4 neighbours minus 4 × centre"),
    "sharpen": ([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], "sharpen: the centre plus its difference from its 4 neighbours"),
    "blur": (np.ones((3, 3)) / 9, "box blur: the mean of the 3×3 neighbourhood"),
    "gaussian": (np.outer([1, 2, 1], [1, 2, 1]) / 16, "Gaussian blur: a weighted mean, the centre counting most"),
    "identity": ([[0, 0, 0], [0, 1, 0], [0, 0, 0]], "identity: the image unchanged (less a 1-pixel border)"),
    "emboss": ([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], "emboss: bottom-right minus top-left, a relief lit from one side"),
    "outline": ([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], "outline: 8 × the centre minus its 8 neighbours"),
}


def _frozen(weights) -> np.ndarray:
    kernel = np.asarray(weights, np.float64).astype(np.float32)
    kernel.setflags(write=False)     # shared: parse_kernel hands out copies
    return kernel


NAMED_KERNELS: dict[str, np.ndarray] = {name: _frozen(w) for name, (w, _) in _KERNELS.items()}
KERNEL_DESCRIPTIONS: dict[str, str] = {name: text for name, (_, text) in _KERNELS.items()}


# ---------------------------------------------------------------------------
# Kernels from text

def _shorten(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")   # repr: one line, always


def _number(token: str, row: int, col: int) -> float:
    """One kernel value: a float ("0.5", "-1e-3") or a fraction ("1/9")."""
    numerator, _, denominator = token.partition("/")
    where = f"kernel row {row}, value {col}"
    try:
        value = float(numerator) / float(denominator) if denominator else float(numerator)
    except ValueError:
        raise ConvlensError(f"{where}: {_shorten(token)} is not a number") from None
    except ZeroDivisionError:
        raise ConvlensError(f"{where}: {_shorten(token)} divides by zero") from None
    if not math.isfinite(value):
        raise ConvlensError(f"{where}: {_shorten(token)} is not finite")
    if abs(value) > float(np.finfo(np.float32).max):   # kernels are float32, like a layer's weights
        raise ConvlensError(f"{where}: {_shorten(token)} is beyond float32's range (±3.4e38)")
    return value


def parse_kernel(text: str) -> tuple[str, np.ndarray]:
    """A kernel name (case-insensitive) or a matrix like "1,0,-1;2,0,-2;1,0,-1": (display name, (k, k) float32).

    Rows are separated by ';' or new lines, or by '/' when there are neither (then '/'
    cannot also write a fraction: use ';' rows for "1/9"); values by ',' or spaces.
    """
    names = ", ".join(NAMED_KERNELS)
    text = text.strip()
    if not text:
        raise ConvlensError(f"empty kernel: give a name ({names}) or a matrix like '1,0,-1;1,0,-1;1,0,-1'")
    key = re.sub(r"[\s-]+", "_", text.lower())
    if key in NAMED_KERNELS:
        return key, NAMED_KERNELS[key].copy()
    if not any(ch.isdigit() for ch in text):     # no number in it: meant as a name
        close = difflib.get_close_matches(key, NAMED_KERNELS, n=2)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ConvlensError(f"not a kernel name or a matrix: {_shorten(text)} ({hint}names: {names})")
    row_separator = r"[;\n]" if re.search(r"[;\n]", text) else "/"
    rows = [[t for t in re.split(r"[,\s]+", r.strip()) if t] for r in re.split(row_separator, text) if r.strip()]
    biggest = f"the largest kernel is {MAX_KERNEL_SIZE}×{MAX_KERNEL_SIZE}"
    if len(rows) > MAX_KERNEL_SIZE:
        raise ConvlensError(f"kernel has {len(rows)} rows; {biggest}")
    for i, row in enumerate(rows, 1):
        if len(row) > MAX_KERNEL_SIZE:
            raise ConvlensError(f"kernel row {i} has {len(row)} values; {biggest}")
        if len(row) != len(rows[0]):
            plural = "value" if len(row) == 1 else "values"
            raise ConvlensError(f"kernel row {i} has {len(row)} {plural}, row 1 has {len(rows[0])}")
    if len(rows) != len(rows[0]):
        raise ConvlensError(f"kernel is {len(rows)}×{len(rows[0])} (rows × values); it must be square, k×k")
    kernel = np.array([[_number(t, i, j) for j, t in enumerate(row, 1)] for i, row in enumerate(rows, 1)],
                      dtype=np.float32)
    return f"custom {len(rows)}×{len(rows)}", kernel


# ---------------------------------------------------------------------------
# The reference convolution and pooling

def _numpy(x) -> np.ndarray:
    """An array, or a tensor (a layer's weight included) as one."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _float64(x) -> np.ndarray:
    return _numpy(x).astype(np.float64)


def _check_whole(what: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ConvlensError(f"{what} must be a whole number ≥ {least}, got {value!r}")


def _check_step(stride, padding) -> None:
    _check_whole("stride", stride, 1)
    _check_whole("padding", padding, 0)


def _output_size(h: int, w: int, kh: int, kw: int, stride: int, padding: int = 0,
                 what: str = "kernel") -> tuple[int, int]:
    """(Ho, Wo) = ((H + 2p − kh) // s + 1, (W + 2p − kw) // s + 1); ConvlensError if the window does not fit."""
    ho, wo = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    if ho < 1 or wo < 1:
        raise ConvlensError(f"a {kh}×{kw} {what} does not fit a {h}×{w} input (padding {padding})")
    return ho, wo


def conv2d_reference(image, kernel, stride: int = 1, padding: int = 0, bias=None) -> np.ndarray:
    """Convolution written as the sum over kernel positions of pixel × weight, in float64.

    image (H, W) with kernel (kh, kw)                             -> (Ho, Wo)
    image (C, H, W) with kernel (O, C, kh, kw), bias (O,) or None -> (O, Ho, Wo)
    Ho = (H + 2·padding − kh) // stride + 1, zero padding. Like every deep-learning
    framework (torch.nn.functional.conv2d, Keras Conv2D) this is cross-correlation: the
    kernel is not flipped, so kernel[0, 0] meets the top-left pixel of each window.
    """
    x, w = _float64(image), _float64(kernel)
    single = x.ndim == 2 and w.ndim == 2
    if single:
        x, w = x[None], w[None, None]                   # (1, H, W), (1, 1, kh, kw)
    elif x.ndim != 3 or w.ndim != 4:
        raise ConvlensError(f"expected an (H, W) image with a (k, k) kernel or a (C, H, W) image with an "
                            f"(O, C, k, k) kernel; got image {x.shape} and kernel {w.shape}")
    (c, h, wd), (o, kc, kh, kw) = x.shape, w.shape
    if kc != c:
        raise ConvlensError(f"the kernel takes {kc} input channels, the image has {c}")
    _check_step(stride, padding)
    ho, wo = _output_size(h, wd, kh, kw, stride, padding)
    padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))   # (C, H + 2p, W + 2p)
    out = np.zeros((o, ho, wo))                                              # (O, Ho, Wo)
    for a in range(kh):
        for b in range(kw):
            # The pixel under kernel[a, b] for every output pixel at once: rows a, a + s, a + 2s, …
            pixels = padded[:, a: a + stride * (ho - 1) + 1: stride, b: b + stride * (wo - 1) + 1: stride]
            out += np.tensordot(w[:, :, a, b], pixels, axes=1)   # (O, C) · (C, Ho, Wo): × weight, + over C
    if bias is not None:
        bias = _float64(bias).reshape(-1)
        if bias.shape != (o,):
            raise ConvlensError(f"bias has {bias.size} values, the kernel has {o} output channels")
        out += bias[:, None, None]
    return out[0] if single else out


def max_pool_reference(x, size: int = 2, stride: int | None = None) -> np.ndarray:
    """Max pooling of (H, W) or (C, H, W): the largest value of each size×size window.

    stride defaults to size (windows side by side, so 2×2 halves the size); a partial
    window at the edge is dropped (floor mode, torch's and Keras's default).
    """
    a = _numpy(x)
    stride = size if stride is None else stride
    _check_whole("pool size", size, 1)
    _check_whole("pool stride", stride, 1)
    if a.ndim not in (2, 3):
        raise ConvlensError(f"max pooling takes an (H, W) or (C, H, W) array, got shape {a.shape}")
    ho, wo = _output_size(*a.shape[-2:], size, size, stride, what="pool")
    windows = [a[..., i: i + stride * (ho - 1) + 1: stride, j: j + stride * (wo - 1) + 1: stride]
               for i in range(size) for j in range(size)]       # size² × (…, Ho, Wo)
    return np.stack(windows).max(axis=0)


# ---------------------------------------------------------------------------
# One output pixel, worked out

def _weight(w: float) -> str:
    return f"({w:.4g})" if w < 0 else f"{w:.4g}"


@dataclass(frozen=True)
class PixelArithmetic:
    """How one output pixel of a 2-D convolution comes about: the sum of patch × kernel."""
    row: int                # the output pixel
    col: int
    top: int                # the patch's top-left pixel in the input; negative: in the zero padding
    left: int
    patch: np.ndarray       # (kh, kw) input pixels under the kernel, padding zeros included
    kernel: np.ndarray      # (kh, kw)
    products: np.ndarray    # (kh, kw) patch × kernel
    total: float            # products.sum(): the output pixel's value

    def text(self, digits: int = 2) -> str:
        """The sum as a person writes it: one line per kernel row, then the total."""
        kh, kw = self.kernel.shape
        lines = [f"output ({self.row}, {self.col}) = sum of pixel × weight over the {kh}×{kw} patch "
                 f"whose top-left is input ({self.top}, {self.left}):"]
        for i, (pixels, weights) in enumerate(zip(self.patch, self.kernel)):
            terms = " + ".join(f"{p:.{digits}f}×{_weight(w)}" for p, w in zip(pixels, weights))
            lines.append(("  " if i == 0 else "+ ") + terms)
        lines.append(f"= {self.total:.{digits}f}")
        return "\n".join(lines)


def pixel_arithmetic(image, kernel, row: int, col: int, stride: int = 1, padding: int = 0) -> PixelArithmetic:
    """Output pixel (row, col) of conv2d_reference(image (H, W), kernel (k, k)), term by term."""
    x, w = _float64(image), _float64(kernel)
    if x.ndim != 2 or w.ndim != 2:
        raise ConvlensError(f"pixel arithmetic takes an (H, W) image and a (k, k) kernel; "
                            f"got {x.shape} and {w.shape}")
    _check_step(stride, padding)
    (kh, kw) = w.shape
    ho, wo = _output_size(*x.shape, kh, kw, stride, padding)
    if not (0 <= row < ho and 0 <= col < wo):
        raise ConvlensError(f"output pixel ({row}, {col}) is outside the {ho}×{wo} result")
    top, left = row * stride, col * stride                    # in the padded image
    patch = np.pad(x, padding)[top: top + kh, left: left + kw]  # (kh, kw)
    products = patch * w
    return PixelArithmetic(row, col, top - padding, left - padding, patch, w, products, float(products.sum()))


# ---------------------------------------------------------------------------
# The lab

@dataclass(frozen=True)
class LabResult:
    """A kernel applied to one image, then max pooled: every array a figure needs."""
    image: np.ndarray            # (H, W) float32 in [0, 1]
    kernel: np.ndarray           # (k, k) float32
    kernel_name: str             # "vertical", "custom 3×3", …
    stride: int
    padding: int
    pool: int                    # pool×pool max pooling of the result; 0: none
    result: np.ndarray           # (Ho, Wo) float64: conv2d_reference(image, kernel, stride, padding)
    pooled: np.ndarray | None    # (Ho // pool, Wo // pool) float64; None when pool is 0
    shapes: str                  # "28×28 → 26×26 → 13×13"
    pixel: PixelArithmetic       # one output pixel, worked out
    torch_max_diff: float        # max |result − torch's conv2d| (float64): S2's "equal to the framework's"


def _lab_array(image) -> np.ndarray:
    """One grayscale image as (H, W) float32, its values as they are; a (1, H, W) array squeezed."""
    a = _numpy(image)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ConvlensError(f"the lab convolves one grayscale (H, W) image; got shape {a.shape}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ConvlensError("the image has values that are not finite")
    return a


def convolution_lab(image, kernel: str | np.ndarray, stride: int = 1, padding: int = 0, pool: int = 2,
                    pixel: tuple[int, int] | None = None) -> LabResult:
    """Convolve one image with a named or custom kernel, max pool the result, and explain one pixel.

    pixel: the output pixel to work out; default the one with the largest |response|.
    """
    x = _lab_array(image)                                              # (H, W)
    if isinstance(kernel, str):
        name, k = parse_kernel(kernel)
    else:
        k = _float64(kernel).astype(np.float32)
        if k.ndim != 2 or not np.isfinite(k).all():
            raise ConvlensError(f"a lab kernel is a finite (k, k) matrix; got shape {k.shape}")
        name = f"custom {k.shape[0]}×{k.shape[1]}"
    result = conv2d_reference(x, k, stride, padding)                   # (Ho, Wo)
    framework = F.conv2d(torch.from_numpy(x.astype(np.float64))[None, None],
                         torch.from_numpy(k.astype(np.float64))[None, None], stride=stride, padding=padding)
    torch_max_diff = float(np.abs(result - framework[0, 0].numpy()).max())
    _check_whole("pool", pool, 0)
    shapes = [x.shape, result.shape]
    pooled = None
    if pool:
        if min(result.shape) < pool:
            raise ConvlensError(f"the {result.shape[0]}×{result.shape[1]} result is smaller than the "
                                f"{pool}×{pool} pool (use pool 0 for none)")
        pooled = max_pool_reference(result, pool)                      # (Ho // pool, Wo // pool)
        shapes.append(pooled.shape)
    if pixel is None:
        pixel = np.unravel_index(int(np.argmax(np.abs(result))), result.shape)
    arithmetic = pixel_arithmetic(x, k, int(pixel[0]), int(pixel[1]), stride, padding)
    return LabResult(x, k, name, stride, padding, pool, result, pooled,
                     " → ".join(f"{h}×{w}" for h, w in shapes), arithmetic, torch_max_diff)


def lab_image(source: str | os.PathLike | bytes | Image.Image, name: str | None = None) -> np.ndarray:
    """A user's photo (a file, bytes, or an image images.read_image decoded) as grayscale uint8 (H, W),
    as it looks: no inversion, no cropping. Only shrunk (keeping the aspect ratio) so the longer
    side is at most LAB_MAX_SIDE.
    """
    label = name or (str(source) if not isinstance(source, (bytes, Image.Image)) else "upload")
    img = source if isinstance(source, Image.Image) else read_image(source, name)
    img = upright_8bit(img).convert("L")
    if min(img.size) < 3:
        raise ImageError(f"{label}: {img.width}×{img.height} pixels is too small to convolve (at least 3×3)")
    if max(img.size) > LAB_MAX_SIDE:
        scale = LAB_MAX_SIDE / max(img.size)
        size = (max(3, round(img.width * scale)), max(3, round(img.height * scale)))
        # reducing_gap: box-reduce first, then Lanczos; Pillow's docs: 3.0 is indistinguishable from
        # plain Lanczos and much faster on a 40-megapixel photo.
        img = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(img, dtype=np.uint8)
