"""The network a spec describes: every layer's shape, parameters and arithmetic, and the model.

The grammar is spec.py's. `layer_infos` walks a spec over an input shape, checking every layer
fits and explaining every parameter count; `ConvNet` is the one torch module every spec builds,
so inspecting, reporting and serving need no per-model special cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import residual
from .errors import ConvlensError
from .spec import (  # noqa: F401 (re-exported)
    MONOTONIC,
    PRESETS,
    LayerSpec,
    fail,
    parse_spec,
    register_preset,
    resolve,
)

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu,
               "elu": F.elu, "leaky": F.leaky_relu, "linear": None}
MAX_PARAMS = 1 << 30      # 1,073,741,824 parameters: 4 GiB of fp32 weights
MAX_VALUES = 1 << 28      # values one layer outputs for one image


# ---------------------------------------------------------------------------
# Shapes: walk the spec over an input shape, checking every layer fits

@dataclass(frozen=True)
class LayerInfo:
    spec: LayerSpec
    name: str                       # Keras-style: conv2d_1, max_pooling2d_1, dense_2, ...
    type: str                       # Conv2D, MaxPooling2D, Dense, ...
    in_shape: tuple[int, ...]       # (C, H, W) or (N,)
    out_shape: tuple[int, ...]
    params: int
    trainable: int
    mult_adds: int                  # per image
    arithmetic: str                 # why `params` is what it is
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)   # conv and pools: zeros (pool: −∞) top, bottom, left, right


_TYPES = {"conv": ("conv2d", "Conv2D"), "res": ("residual", "Residual"), "maxpool": ("max_pooling2d", "MaxPooling2D"),
          "avgpool": ("average_pooling2d", "AveragePooling2D"),
          "gap": ("global_average_pooling2d", "GlobalAveragePooling2D"),
          "bn": ("batch_normalization", "BatchNormalization"), "dropout": ("dropout", "Dropout"),
          "act": ("activation", "Activation"), "flatten": ("flatten", "Flatten"), "dense": ("dense", "Dense")}


def _fmt(n: int) -> str:
    return f"{n:,}"


def shape_text(shape: tuple[int, ...]) -> str:
    """(64, 26, 26) -> '26×26×64' (height × width × channels, as Keras prints it); (1600,) -> '1600'."""
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}×{w}×{c}"
    return "×".join(str(d) for d in shape)


def window(l: LayerSpec, h: int, w: int) -> tuple[int, int, tuple[int, int, int, int]]:
    """Output height and width of a conv or pool layer on an h×w input, and its padding (top, bottom,
    left, right). `same`: the output is ⌈input / stride⌉, the odd padding pixel at the bottom and right,
    as TensorFlow and Keras pad."""
    k, s = (l.kernel, l.stride) if l.kind == "conv" else (l.units, l.stride)
    if not l.same:
        p = l.padding
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, (p, p, p, p)
    ho, wo = -(-h // s), -(-w // s)
    ph, pw = max((ho - 1) * s + k - h, 0), max((wo - 1) * s + k - w, 0)
    return ho, wo, (ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)


# Each layer kind's shape rule: (spec text, layer, input shape) -> (output shape, parameters,
# multiply-adds per image, why that many parameters).

def _conv_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    c, h, w = shape
    k = l.kernel
    ho, wo, pads = window(l, h, w)
    if ho < 1 or wo < 1:
        raise fail(text, l.index, l.token, f"a {k}×{k} kernel does not fit the {h}×{w} input"
                   + (f" with padding {l.padding}" if l.padding else ""))
    params = l.units * (k * k * c + l.bias)
    bias = " + 1" if l.bias else ""
    return (l.units, ho, wo), params, ho * wo * l.units * k * k * c, f"{l.units} × ({k}×{k}×{c}{bias}) = {_fmt(params)}"


def _res_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    c, h, w = shape
    ho, wo = residual.out_size(h, l.stride), residual.out_size(w, l.stride)
    params = sum(p for _, p, _ in residual.parts(c, l.units, l.stride))
    return ((l.units, ho, wo), params, residual.mult_adds(c, l.units, l.stride, ho, wo),
            residual.arithmetic(c, l.units, l.stride))


def _pool_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    c, h, w = shape
    n = l.units
    if not l.same and (h < n or w < n):
        raise fail(text, l.index, l.token, f"a {n}×{n} pool does not fit the {h}×{w} input")
    ho, wo, _ = window(l, h, w)
    what = "max" if l.kind == "maxpool" else "mean"
    how = "" if l.stride == n and not l.same else f", stride {l.stride}{', same padding' if l.same else ''}"
    return (c, ho, wo), 0, 0, f"{what} of each {n}×{n} window{how}: {h}×{w} → {ho}×{wo}, no parameters"


def _gap_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    return (shape[0],), 0, 0, f"mean over {shape[1]}×{shape[2]} per channel, no parameters"


def _flatten_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    n = math.prod(shape)
    hwc = "×".join(map(str, shape[1:] + shape[:1])) if len(shape) == 3 else str(shape[0])
    return (n,), 0, 0, f"{hwc} = {_fmt(n)} values in a row, no parameters"


def _dropout_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    return shape, 0, 0, f"zeroes {l.rate:g} of the values while training, no parameters"


def _act_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    return shape, 0, 0, f"{l.act} of every value, no parameters"


def _bn_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    c = shape[0]
    return shape, 4 * c, 0, f"{c} × (γ, β trained + mean, variance tracked) = {_fmt(4 * c)}"


def _dense_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    n_in = shape[0]
    params = l.units * (n_in + l.bias)
    return (l.units,), params, n_in * l.units, f"{l.units} × ({_fmt(n_in)}{' + 1' if l.bias else ''}) = {_fmt(params)}"


_SHAPES = {"conv": _conv_shape, "res": _res_shape, "maxpool": _pool_shape, "avgpool": _pool_shape, "gap": _gap_shape,
           "flatten": _flatten_shape, "dropout": _dropout_shape, "act": _act_shape, "bn": _bn_shape,
           "dense": _dense_shape}


def _check_input(text: str, l: LayerSpec, shape: tuple[int, ...]) -> None:
    """A layer that needs an image-shaped (or a flat) input and gets the other: SpecError saying what to add."""
    spatial = len(shape) == 3
    if l.kind in ("conv", "res", "maxpool", "avgpool", "gap") and not spatial:
        raise fail(text, l.index, l.token, f"needs an image-shaped input (H×W×C) but gets a flat vector of "
                   f"{shape[0]}; move it before 'flatten'")
    if l.kind == "dense" and spatial:
        raise fail(text, l.index, l.token, f"needs a flat input but gets {shape_text(shape)}; "
                   "add 'flatten' (or 'gap') before it")


def _running_stats(l: LayerSpec, shape: tuple[int, ...]) -> int:
    """The parameters of a layer that batch norm tracks rather than trains (its mean and variance)."""
    if l.kind == "bn":
        return 2 * shape[0]
    return sum(s for _, _, s in residual.parts(shape[0], l.units, l.stride)) if l.kind == "res" else 0


def layer_infos(spec: str, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10,
                whole: bool = True) -> list[LayerInfo]:
    """Every layer with its output shape, parameter count and arithmetic; SpecError if one does not fit.
    whole=False: the start of a spec (no output layer needed yet)."""
    text = resolve(spec.strip(), num_classes)
    layers = parse_spec(text, whole)
    shape: tuple[int, ...] = tuple(input_shape)
    counters: dict[str, int] = {}
    infos, total = [], 0
    for l in layers:
        base, typ = _TYPES[l.kind]
        counters[base] = counters.get(base, 0) + 1
        _check_input(text, l, shape)
        if whole and l is layers[-1] and l.units != num_classes:
            raise fail(text, l.index, l.token, f"the output layer needs {num_classes} units, one per class")
        out, params, mult_adds, why = _SHAPES[l.kind](text, l, shape)
        total += params
        if total > MAX_PARAMS or math.prod(out) > MAX_VALUES:
            raise fail(text, l.index, l.token, f"too large: {math.prod(out):,} values out, {total:,} parameters so "
                       f"far (convlens builds at most {MAX_VALUES:,} values per layer and {MAX_PARAMS:,} parameters)")
        trainable = params - _running_stats(l, shape)
        pads = (window(l, *shape[1:])[2] if l.kind in ("conv", "maxpool", "avgpool") else
                (residual.PAD,) * 4 if l.kind == "res" else (0, 0, 0, 0))
        infos.append(LayerInfo(l, f"{base}_{counters[base]}", typ, shape, out, params, trainable, mult_adds, why,
                               pads))
        shape = out
    return infos


# ---------------------------------------------------------------------------
# The network

class ConvNet(nn.Module):
    """A sequential network built from a spec; one interface for every model.

    forward(x) takes float images (B, C, H, W) in [0, 1] and returns logits (B, classes).
    `layers[i]` is the torch module of spec layer i (None for parameter-free layers).
    """

    def __init__(self, spec: str, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10):
        super().__init__()
        self.spec = resolve(spec.strip(), num_classes)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.infos = layer_infos(self.spec, self.input_shape, num_classes)
        self.layers = nn.ModuleList(_module(info) for info in self.infos)
        # Fuse conv/dense → (monotonic act) → maxpool into pool-then-act for speed (see MONOTONIC).
        self._pool_first = {i for i, info in enumerate(self.infos[:-1])
                            if info.spec.kind == "conv" and info.spec.act in MONOTONIC
                            and self.infos[i + 1].spec.kind == "maxpool"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = -1
        for i, (info, module) in enumerate(zip(self.infos, self.layers)):
            if i == skip:
                continue
            if i in self._pool_first:
                x = _activate(_pool(module(x), self.infos[i + 1]), info.spec.act)
                skip = i + 1
            else:
                x = _apply(info, module, x)
        return x

    def mult_adds(self, upto: int | None = None) -> int:
        """Multiply-adds of one image through layers 0..upto (the whole network by default)."""
        return sum(info.mult_adds for info in self.infos[:None if upto is None else upto + 1])

    def layer_outputs(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Every layer's output in spec order (the seed's activation model), unfused; with `upto`, only
        those of layers 0..upto (the rest of the network is not run)."""
        outs = []
        for info, module in zip(self.infos[:None if upto is None else upto + 1], self.layers):
            x = _apply(info, module, x)
            outs.append(x)
        return outs


class _Identity(nn.Module):
    def forward(self, x):
        return x


class PaddedConv2d(nn.Conv2d):
    """A convolution padded unevenly (Keras's `same` with an even kernel or a stride): `pads` is
    (left, right, top, bottom) as F.pad takes them; the weights are an nn.Conv2d's."""

    def __init__(self, *args, pads: tuple[int, int, int, int], **kw):
        super().__init__(*args, **kw)
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))


def _module(info: LayerInfo) -> nn.Module:
    l, shape = info.spec, info.in_shape
    if l.kind == "conv":
        top, bottom, left, right = info.pads
        if (top, left) == (bottom, right):
            return nn.Conv2d(shape[0], l.units, l.kernel, stride=l.stride, padding=(top, left), bias=l.bias)
        return PaddedConv2d(shape[0], l.units, l.kernel, stride=l.stride, bias=l.bias, pads=(left, right, top, bottom))
    if l.kind == "res":
        return residual.ResidualBlock(shape[0], l.units, l.stride)
    if l.kind == "dense":
        return nn.Linear(shape[0], l.units, bias=l.bias)
    if l.kind == "bn":
        return nn.BatchNorm2d(shape[0], eps=l.eps) if len(shape) == 3 else nn.BatchNorm1d(shape[0], eps=l.eps)
    if l.kind == "dropout":
        return nn.Dropout(l.rate)
    return _Identity()


def _activate(x: torch.Tensor, act: str | None) -> torch.Tensor:
    f = ACTIVATIONS.get(act or "linear")
    return x if f is None else f(x)


def _pool(x: torch.Tensor, info: LayerInfo) -> torch.Tensor:
    """Max or average pooling; padding (Keras's `same`) never wins a max and is not counted in a mean."""
    l, (top, bottom, left, right) = info.spec, info.pads
    pads = (left, right, top, bottom)
    if l.kind == "maxpool":
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")) if any(pads) else x, l.units, l.stride)
    if not any(pads):
        return F.avg_pool2d(x, l.units, l.stride)
    count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pads), l.units, l.stride)     # share of real pixels
    return F.avg_pool2d(F.pad(x, pads), l.units, l.stride) / count


def _apply(info: LayerInfo, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    kind = info.spec.kind
    if kind in ("conv", "res", "dense", "act"):
        return _activate(module(x), info.spec.act)
    if kind in ("maxpool", "avgpool"):
        return _pool(x, info)
    if kind == "gap":
        return x.mean(dim=(2, 3))
    if kind == "flatten":
        # Keras flattens H, W, C (channels last); we flatten C, H, W as PyTorch does.
        return x.flatten(1)
    return module(x)


def conv_layers(model: ConvNet, blocks: bool = False) -> list[tuple[int, LayerInfo]]:
    """(index into model.infos, info) of every conv layer; blocks: residual blocks too (every layer whose
    output is a learned feature map: what Grad-CAM and the feature views look at; a block has no one kernel)."""
    kinds = ("conv", "res") if blocks else ("conv",)
    return [(i, info) for i, info in enumerate(model.infos) if info.spec.kind in kinds]


def not_one_convolution(info: LayerInfo) -> ConvlensError:
    """The error for asking a residual block what only a single convolution has (one kernel, one sum)."""
    return ConvlensError(f"{info.name} ({info.spec.token}) is a residual block, not a single convolution: two 3×3 "
                         "convolutions with batch norm plus a skip connection, so it has no one kernel and its output "
                         "pixel is not one sum of pixel × kernel; pick a conv layer")


def conv_layer(model: ConvNet, layer: int | str | None, default: int = 0,
               blocks: bool = False) -> tuple[int, LayerInfo]:
    """A conv layer (blocks: or residual block) by position among them (0-based), or by name; None:
    conv_layers[default]. A residual block asked for as a conv layer is an error that says why."""
    convs = conv_layers(model, blocks)
    what, whats = ("conv layer or residual block", "conv layers and residual blocks") if blocks else ("conv layer",
                                                                                                      "conv layers")
    if not convs:
        raise ConvlensError(f"model {model.spec!r} has no {what}")
    valid = ", ".join(f"{n} or {info.name}" for n, (_, info) in enumerate(convs))
    if isinstance(layer, str) and layer.strip().isdigit():    # "1" from a command line
        layer = int(layer)
    if layer is None:
        return convs[default]
    if isinstance(layer, int) and not isinstance(layer, bool) and 0 <= layer < len(convs):
        return convs[layer]
    for found in convs:
        if found[1].name == layer:
            return found
    for _, info in conv_layers(model, blocks=True):
        if info.name == layer:
            raise not_one_convolution(info)
    also = " or residual block of that name" if blocks else ""
    raise ConvlensError(f"no conv layer {layer!r}{also}: this model's {whats} are {valid}")


# ---------------------------------------------------------------------------
# Where in the input a layer looks

def _windows(info: LayerInfo) -> list[tuple[int, int, int, int]]:
    """(size, stride, top padding, left padding) of each window of a layer, from its output back to its input.
    A residual block is its two 3×3 convolutions, the second first (its 1×1 skip sees a subset of their box)."""
    l = info.spec
    if l.kind == "res":
        k, p = residual.KERNEL, residual.PAD
        return [(k, 1, p, p), (k, l.stride, p, p)]
    if l.kind in ("conv", "maxpool", "avgpool"):
        return [(l.kernel if l.kind == "conv" else l.units, l.stride, info.pads[0], info.pads[2])]
    return []


def input_box(infos: Sequence[LayerInfo], top: int, left: int, bottom: int, right: int) -> tuple[int, int, int, int]:
    """The input box (inclusive, unclipped) that the output box of the last of `infos` depends on. Walks
    back through the layers: a window of size k, stride s and padding p (top, or left) maps outputs
    a..b to inputs a·s−p .. b·s−p+k−1, convolutions and pools alike (a residual block: its two 3×3
    convolutions, 5×5 growth at stride 1); batch norm, dropout and activations map a pixel to itself."""
    for info in reversed(infos):
        for k, s, pt, pl in _windows(info):
            top, left, bottom, right = top * s - pt, left * s - pl, bottom * s - pt + k - 1, right * s - pl + k - 1
    return top, left, bottom, right


def _clip(model: ConvNet, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    _, h, w = model.input_shape
    top, left, bottom, right = box
    return max(0, top), max(0, left), min(h - 1, bottom), min(w - 1, right)


def receptive_field(model: ConvNet, layer: int | str, row: int, col: int, clip: bool = True) -> tuple[int, int, int, int]:
    """The input pixels output pixel (row, col) of a conv layer or residual block depends on: (top, left,
    bottom, right), inclusive, clipped to the image (clip=False: the whole window, which may reach past it)."""
    i, _ = conv_layer(model, layer, blocks=True)
    box = input_box(model.infos[:i + 1], row, col, row, col)
    return _clip(model, box) if clip else box


def seen_pixels(model: ConvNet) -> np.ndarray:
    """bool (H, W): the input pixels the model's output can depend on at all. Valid convolutions and
    pooling that drops a last odd row leave some unseen: the seed never sees rows and columns 26 and 27
    (its 5×5 pooled map covers 10 of conv2d_2's 11 rows), so every attribution there is 0, whatever
    the weights."""
    _, h, w = model.input_shape
    seen = np.zeros((h, w), dtype=bool)
    flat = next((i for i, info in enumerate(model.infos) if len(info.out_shape) == 1), 0)
    if flat == 0:
        seen[:] = True
        return seen
    _, oh, ow = model.infos[flat - 1].out_shape
    top, left, bottom, right = _clip(model, input_box(model.infos[:flat], 0, 0, oh - 1, ow - 1))
    seen[top:bottom + 1, left:right + 1] = True
    return seen


def build_model(model: str = "seed", input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> ConvNet:
    """Build a network from a preset name or spec string, for images of `input_shape` (C, H, W)."""
    return ConvNet(model, input_shape, num_classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
