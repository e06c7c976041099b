"""Model specs: a one-line grammar, the preset registry, and the network built from them.

A spec reads like the seed's layer list, tokens joined by '-':

    conv64-pool-conv64-pool-flatten-dense128-dense10      (the seed, preset `seed`)

    conv<C>[k<K>][s<S>][p<P>][_<act>]  2-D convolution, C filters of K×K (default 3), stride S
                                      (default 1), zero padding P (default 0), act default relu
    pool[<N>] / avgpool[<N>]          N×N max / average pooling with stride N (default 2)
    gap                               global average pooling (one value per channel)
    bn                                batch normalisation
    dropout<P>                        dropout with rate P in [0, 1), e.g. dropout0.25
    flatten                           (C, H, W) -> C·H·W
    dense<N>[_<act>]                  fully connected, N units; act default relu, except the
                                      last layer, whose N must equal the number of classes and
                                      which gives logits (softmax is applied to them, as Keras's
                                      `activation="softmax"` does)

activations: relu, tanh, sigmoid, gelu, elu, leaky, linear.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConvlensError, SpecError

ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "gelu": F.gelu,
               "elu": F.elu, "leaky": F.leaky_relu, "linear": None}
# Non-decreasing activations commute with max pooling: max(f(x)) = f(max(x)), so the
# engine pools first and activates 4× fewer values (gelu dips below zero: not monotonic).
MONOTONIC = {"relu", "tanh", "sigmoid", "elu", "leaky", "linear"}

PRESETS: dict[str, tuple[str, str]] = {}   # name -> (spec, one-line description)


def register_preset(name: str, spec: str, description: str) -> None:
    """Add a named model to the registry (`convlens summary NAME`, `--model NAME`)."""
    PRESETS[name] = (spec, description)


register_preset("seed", "conv64-pool-conv64-pool-flatten-dense128-dense10",
                "the study note's CNN: two 3×3 conv layers of 64 filters, 2×2 max pooling, dense 128")
register_preset("dense", "flatten-dense128-dense10",
                "the fully connected baseline the seed builds on: flatten, dense 128, dense 10")


@dataclass(frozen=True)
class LayerSpec:
    kind: str              # conv, maxpool, avgpool, gap, bn, dropout, flatten, dense
    token: str             # the text it came from
    index: int             # 1-based position of the token in the spec
    units: int = 0         # conv filters / dense units / pool size
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    rate: float = 0.0      # dropout
    act: str | None = None


_ACT = r"(?:_(?P<act>[a-z]+))?"
_PATTERNS = [
    ("conv", re.compile(r"conv(?P<units>\d+)(?:k(?P<kernel>\d+))?(?:s(?P<stride>\d+))?(?:p(?P<padding>\d+))?" + _ACT)),
    ("maxpool", re.compile(r"(?:max)?pool(?P<units>\d+)?")),
    ("avgpool", re.compile(r"avgpool(?P<units>\d+)?")),
    ("gap", re.compile(r"gap")),
    ("bn", re.compile(r"bn")),
    ("dropout", re.compile(r"dropout(?P<rate>0?\.\d+|0)")),
    ("flatten", re.compile(r"flatten")),
    ("dense", re.compile(r"dense(?P<units>\d+)" + _ACT)),
]
_HINTS = {"conv": "conv needs a filter count, e.g. conv64 or conv32k5", "dense": "dense needs a width, e.g. dense128",
          "dropout": "dropout needs a rate in [0, 1), e.g. dropout0.25"}


def resolve(model: str, num_classes: int | None = None) -> str:
    """A preset name becomes its spec, its output layer sized to `num_classes` when given (a preset
    fits any dataset); anything else is taken as a spec, exactly as written."""
    if model not in PRESETS:
        return model
    spec = PRESETS[model][0]
    return re.sub(r"dense\d+$", f"dense{num_classes}", spec) if num_classes else spec


# Bounds on what a spec may ask for, far above any small CNN, so that a typo or a hostile model.json
# is one clear error instead of gigabytes allocated (or a crash inside the framework).
MAX_SPEC_CHARS = 4000     # a 100-layer spec is ~1,000 characters
MAX_LAYERS = 200
MAX_WIDTH = 65_536        # filters of a conv layer, units of a dense one
MAX_WINDOW = 64           # kernel, stride, padding and pool sizes
MAX_PARAMS = 1 << 30      # 1,073,741,824 parameters: 4 GiB of fp32 weights
MAX_VALUES = 1 << 28      # values one layer outputs for one image


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _fail(spec: str, index: int, token: str, why: str) -> SpecError:
    error = SpecError(f"model spec {_short(spec)!r}, token {index} {_short(token, 40)!r}: {why}")
    error.token_index = index
    return error


def parse_spec(spec: str) -> list[LayerSpec]:
    """Parse a spec string (or preset name) into layers; SpecError names the bad token."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty model spec; try 'seed' or 'conv64-pool-flatten-dense10'")
    if len(spec) > MAX_SPEC_CHARS:
        raise SpecError(f"model spec of {len(spec):,} characters; convlens reads specs of at most {MAX_SPEC_CHARS:,}")
    text = resolve(spec.strip())
    tokens = text.split("-")
    if len(tokens) > MAX_LAYERS:
        raise SpecError(f"model spec of {len(tokens):,} layers; convlens builds at most {MAX_LAYERS}")
    layers = [_parse_token(text, i, token) for i, token in enumerate(tokens, start=1)]
    last = layers[-1]
    if last.kind != "dense":
        raise _fail(text, last.index, last.token, "a model must end with a dense layer giving one output per class, e.g. dense10")
    # Default activations: relu everywhere except the output layer (logits).
    return [l if l.act is not None else _with_act(l, "linear" if l is last else "relu")
            for l in layers]


def _parse_token(text: str, i: int, token: str) -> LayerSpec:
    """Token i of the spec as a layer, its sizes within bounds; SpecError naming the token."""
    tok = token.strip().lower()
    for kind, pattern in _PATTERNS:
        if m := pattern.fullmatch(tok):
            break
    else:
        stem = re.match(r"[a-z]*", tok).group()
        if stem in _HINTS:
            raise _fail(text, i, token, _HINTS[stem])
        known = "conv<C>, pool, avgpool, gap, bn, dropout<P>, flatten, dense<N>"
        raise _fail(text, i, token, f"unknown layer (known: {known}; or a preset: {', '.join(PRESETS)})")
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    act = g.get("act")
    if act is not None and act not in ACTIVATIONS:
        raise _fail(text, i, token, f"unknown activation {act!r} (known: {', '.join(ACTIVATIONS)})")
    layer = LayerSpec(kind=kind, token=token, index=i, units=int(g.get("units", 2 if "pool" in kind else 0)),
                      kernel=int(g.get("kernel", 3)) if kind == "conv" else 0,
                      stride=int(g.get("stride", 1)), padding=int(g.get("padding", 0)),
                      rate=float(g.get("rate", 0.0)), act=act)
    if kind in ("conv", "dense", "maxpool", "avgpool") and layer.units < 1:
        raise _fail(text, i, token, "size must be at least 1")
    if kind == "conv" and (layer.kernel < 1 or layer.stride < 1):
        raise _fail(text, i, token, "kernel and stride must be at least 1")
    if kind in ("conv", "dense") and layer.units > MAX_WIDTH:
        what = "filters" if kind == "conv" else "units"
        raise _fail(text, i, token, f"{layer.units:,} {what}; at most {MAX_WIDTH:,}")
    if max(layer.kernel, layer.stride, layer.padding, layer.units if "pool" in kind else 0) > MAX_WINDOW:
        raise _fail(text, i, token, f"kernel, stride, padding and pool sizes go up to {MAX_WINDOW}")
    return layer


def _with_act(layer: LayerSpec, act: str) -> LayerSpec:
    if layer.kind not in ("conv", "dense"):
        return layer
    return LayerSpec(**{**layer.__dict__, "act": act})


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


_TYPES = {"conv": ("conv2d", "Conv2D"), "maxpool": ("max_pooling2d", "MaxPooling2D"),
          "avgpool": ("average_pooling2d", "AveragePooling2D"), "gap": ("global_average_pooling2d", "GlobalAveragePooling2D"),
          "bn": ("batch_normalization", "BatchNormalization"), "dropout": ("dropout", "Dropout"),
          "flatten": ("flatten", "Flatten"), "dense": ("dense", "Dense")}


def _fmt(n: int) -> str:
    return f"{n:,}"


def shape_text(shape: tuple[int, ...]) -> str:
    """(64, 26, 26) -> '26×26×64' (height × width × channels, as Keras prints it); (1600,) -> '1600'."""
    if len(shape) == 3:
        c, h, w = shape
        return f"{h}×{w}×{c}"
    return "×".join(str(d) for d in shape)


# Each layer kind's shape rule: (spec text, layer, input shape) -> (output shape, parameters,
# multiply-adds per image, why that many parameters).

def _conv_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    c, h, w = shape
    k, s, p = l.kernel, l.stride, l.padding
    ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    if ho < 1 or wo < 1:
        raise _fail(text, l.index, l.token, f"a {k}×{k} kernel does not fit the {h}×{w} input"
                    + (f" with padding {p}" if p else ""))
    params = l.units * (k * k * c + 1)
    return (l.units, ho, wo), params, ho * wo * l.units * k * k * c, f"{l.units} × ({k}×{k}×{c} + 1) = {_fmt(params)}"


def _pool_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    c, h, w = shape
    n = l.units
    if h < n or w < n:
        raise _fail(text, l.index, l.token, f"a {n}×{n} pool does not fit the {h}×{w} input")
    what = "max" if l.kind == "maxpool" else "mean"
    return (c, h // n, w // n), 0, 0, f"{what} of each {n}×{n} window: {h}×{w} → {h // n}×{w // n}, no parameters"


def _gap_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    return (shape[0],), 0, 0, f"mean over {shape[1]}×{shape[2]} per channel, no parameters"


def _flatten_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    n = math.prod(shape)
    hwc = "×".join(map(str, shape[1:] + shape[:1])) if len(shape) == 3 else str(shape[0])
    return (n,), 0, 0, f"{hwc} = {_fmt(n)} values in a row, no parameters"


def _dropout_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    return shape, 0, 0, f"zeroes {l.rate:g} of the values while training, no parameters"


def _bn_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    c = shape[0]
    return shape, 4 * c, 0, f"{c} × (γ, β trained + mean, variance tracked) = {_fmt(4 * c)}"


def _dense_shape(text: str, l: LayerSpec, shape: tuple[int, ...]):
    n_in = shape[0]
    params = l.units * (n_in + 1)
    return (l.units,), params, n_in * l.units, f"{l.units} × ({_fmt(n_in)} + 1) = {_fmt(params)}"


_SHAPES = {"conv": _conv_shape, "maxpool": _pool_shape, "avgpool": _pool_shape, "gap": _gap_shape,
           "flatten": _flatten_shape, "dropout": _dropout_shape, "bn": _bn_shape, "dense": _dense_shape}


def _check_input(text: str, l: LayerSpec, shape: tuple[int, ...]) -> None:
    """A layer that needs an image-shaped (or a flat) input and gets the other: SpecError saying what to add."""
    spatial = len(shape) == 3
    if l.kind in ("conv", "maxpool", "avgpool", "gap") and not spatial:
        raise _fail(text, l.index, l.token, f"needs an image-shaped input (C×H×W) but gets a flat vector of "
                    f"{shape[0]}; move it before 'flatten'")
    if l.kind == "dense" and spatial:
        raise _fail(text, l.index, l.token, f"needs a flat input but gets {'×'.join(map(str, shape))}; "
                    "add 'flatten' (or 'gap') before it")


def layer_infos(spec: str, input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> list[LayerInfo]:
    """Every layer with its output shape, parameter count and arithmetic; SpecError if one does not fit."""
    text = resolve(spec.strip(), num_classes)
    layers = parse_spec(text)
    shape: tuple[int, ...] = tuple(input_shape)
    counters: dict[str, int] = {}
    infos, total = [], 0
    for l in layers:
        base, typ = _TYPES[l.kind]
        counters[base] = counters.get(base, 0) + 1
        _check_input(text, l, shape)
        if l is layers[-1] and l.units != num_classes:
            raise _fail(text, l.index, l.token, f"the output layer needs {num_classes} units, one per class")
        out, params, mult_adds, why = _SHAPES[l.kind](text, l, shape)
        total += params
        if total > MAX_PARAMS or math.prod(out) > MAX_VALUES:
            raise _fail(text, l.index, l.token, f"too large: {math.prod(out):,} values out, {total:,} parameters so "
                        f"far (convlens builds at most {MAX_VALUES:,} values per layer and {MAX_PARAMS:,} parameters)")
        trainable = params // 2 if l.kind == "bn" else params
        infos.append(LayerInfo(l, f"{base}_{counters[base]}", typ, shape, out, params, trainable, mult_adds, why))
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
                x = _activate(_pool(module(x), self.infos[i + 1].spec), info.spec.act)
                skip = i + 1
            else:
                x = _apply(info, module, x)
        return x

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


def _module(info: LayerInfo) -> nn.Module:
    l, shape = info.spec, info.in_shape
    if l.kind == "conv":
        return nn.Conv2d(shape[0], l.units, l.kernel, stride=l.stride, padding=l.padding)
    if l.kind == "dense":
        return nn.Linear(shape[0], l.units)
    if l.kind == "bn":
        return nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])
    if l.kind == "dropout":
        return nn.Dropout(l.rate)
    return _Identity()


def _activate(x: torch.Tensor, act: str | None) -> torch.Tensor:
    f = ACTIVATIONS.get(act or "linear")
    return x if f is None else f(x)


def _pool(x: torch.Tensor, l: LayerSpec) -> torch.Tensor:
    return F.max_pool2d(x, l.units) if l.kind == "maxpool" else F.avg_pool2d(x, l.units)


def _apply(info: LayerInfo, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    kind = info.spec.kind
    if kind in ("conv", "dense"):
        return _activate(module(x), info.spec.act)
    if kind in ("maxpool", "avgpool"):
        return _pool(x, info.spec)
    if kind == "gap":
        return x.mean(dim=(2, 3))
    if kind == "flatten":
        # Keras flattens H, W, C (channels last); we flatten C, H, W as PyTorch does.
        return x.flatten(1)
    return module(x)


def conv_layers(model: ConvNet) -> list[tuple[int, LayerInfo]]:
    """(index into model.infos, info) of every conv layer."""
    return [(i, info) for i, info in enumerate(model.infos) if info.spec.kind == "conv"]


def conv_layer(model: ConvNet, layer: int | str | None, default: int = 0) -> tuple[int, LayerInfo]:
    """A conv layer by position among the conv layers (0-based), or by name; None: conv_layers[default]."""
    convs = conv_layers(model)
    if not convs:
        raise ConvlensError(f"model {model.spec!r} has no conv layer")
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
    raise ConvlensError(f"no conv layer {layer!r}: this model's conv layers are {valid}")


def build_model(model: str = "seed", input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10) -> ConvNet:
    """Build a network from a preset name or spec string, for images of `input_shape` (C, H, W)."""
    return ConvNet(model, input_shape, num_classes)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
