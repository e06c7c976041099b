"""Looking inside a trained network: feature maps, kernels, the arithmetic of one output pixel,
and the mistakes worth looking at. Everything returns NumPy arrays; figures.py draws them.
Why a prediction was made (saliency, Grad-CAM) is attribution.py.

Works on any spec through the one ConvNet interface (`infos`, `layers`, `layer_outputs`).
Images come in as the dataset and `load_image` give them: uint8 (C, H, W), or a batch
(N, C, H, W); floats in [0, 1] are taken as they are.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .engine import eval_mode, model_input, to_numpy
from .errors import ConvlensError
from .models import ACTIVATIONS, ConvNet, LayerInfo, conv_layer, shape_text


def feature_maps(model: ConvNet, images: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(layer name, output) for every layer, for images (B, C, H, W), (C, H, W) or (H, W): floats in [0, 1] or uint8."""
    x = model_input(model, images)
    with eval_mode(model), torch.no_grad():
        outs = model.layer_outputs(x)
    return [(info.name, out) for info, out in zip(model.infos, outs)]


# ---------------------------------------------------------------------------
# 1. Every layer's output for one image (the seed's activation model)

@dataclass
class LayerMaps:
    index: int              # position in model.infos
    name: str               # conv2d_1, max_pooling2d_1, ...
    type: str               # Conv2D, MaxPooling2D, ...
    kind: str               # conv, maxpool, avgpool, gap, bn, dropout, flatten, dense
    shape: str              # Keras-style text: "26×26×64", "1600"
    output: np.ndarray      # float32 (C, H, W) for spatial layers, (N,) for flat ones


def activations(model: ConvNet, image: torch.Tensor) -> list[LayerMaps]:
    """Every layer's output for one image, in spec order; a conv layer's after its activation."""
    x = model_input(model, image)[:1]                                       # (1, C, H, W)
    with eval_mode(model), torch.no_grad():
        outs = model.layer_outputs(x)
    return [LayerMaps(i, info.name, info.type, info.spec.kind, shape_text(info.out_shape), to_numpy(out[0]))
            for i, (info, out) in enumerate(zip(model.infos, outs))]


def encode_maps(a: np.ndarray) -> dict:
    """A float array (C, H, W) as per-channel min/max and base64 uint8 — a tenth of the JSON of floats."""
    a = np.asarray(a, dtype=np.float32)
    flat = a.reshape(a.shape[0], -1)
    lo, hi = flat.min(1), flat.max(1)
    scaled = (flat - lo[:, None]) / np.where(hi > lo, hi - lo, 1)[:, None]
    data = np.round(scaled * 255).astype(np.uint8)
    return {"shape": list(a.shape), "min": lo.tolist(), "max": hi.tolist(),
            "data": base64.b64encode(data.tobytes()).decode()}


# ---------------------------------------------------------------------------
# 2. One filter across images and layers (the study note's grid)

def spatial_layers(model: ConvNet,
                   kinds: Sequence[str] = ("conv", "res", "maxpool", "avgpool")) -> list[tuple[int, LayerInfo]]:
    """(index, info) of the layers of the given kinds, in spec order."""
    return [(i, info) for i, info in enumerate(model.infos) if info.spec.kind in kinds]


@dataclass
class FilterGrid:
    filter_index: int
    maps: list[list[np.ndarray]]   # maps[row][col]: (H, W) of that layer, sizes differ by column
    row_labels: list[str]          # one per image
    col_labels: list[str]          # "conv2d_1 26×26×64", one per layer


def _check_channel(info: LayerInfo, channel: int, what: str = "filter") -> None:
    n = info.out_shape[0]
    if not 0 <= channel < n:
        has = "filters" if info.spec.kind in ("conv", "res") else "channels"
        raise ConvlensError(f"{what} {channel} is out of range: {info.name} has {n} {has} (0–{n - 1})")


def filter_across_images(model: ConvNet, images: torch.Tensor, filter_index: int,
                         kinds: Sequence[str] = ("conv", "res", "maxpool"),
                         labels: Sequence[str] | None = None) -> FilterGrid:
    """Channel `filter_index` of every conv/residual/pool layer for each image: rows = images, columns = layers."""
    cols = spatial_layers(model, kinds)
    if not cols:
        block = " or residual block" if "res" in kinds else ""
        raise ConvlensError(f"model {model.spec!r} has no {' or '.join(k for k in kinds if k != 'res')} layer{block} "
                            "to show")
    for _, info in cols:
        _check_channel(info, filter_index)
    x = model_input(model, images)                                          # (N, C, H, W)
    labels = list(labels) if labels is not None else [f"image {n + 1}" for n in range(len(x))]
    if len(labels) != len(x):
        raise ConvlensError(f"{len(labels)} row labels for {len(x)} images")
    with eval_mode(model), torch.no_grad():
        outs = model.layer_outputs(x)
    per_col = [to_numpy(outs[i][:, filter_index]) for i, _ in cols]           # each (N, H_i, W_i)
    maps = [[col[n] for col in per_col] for n in range(len(x))]
    return FilterGrid(filter_index, maps, labels, [f"{info.name} {shape_text(info.out_shape)}" for _, info in cols])


# ---------------------------------------------------------------------------
# 3. Learned kernels

@dataclass
class KernelSet:
    layer: str               # conv2d_1
    index: int               # position in model.infos
    weights: np.ndarray      # float32 (out, in, k, k)
    bias: np.ndarray         # float32 (out,)


def kernels(model: ConvNet, layer: int | str | None = None) -> KernelSet:
    """The learned weights and biases of a conv layer (default: the first)."""
    i, info = conv_layer(model, layer)
    conv = model.layers[i]
    bias = to_numpy(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels, np.float32)
    return KernelSet(info.name, i, to_numpy(conv.weight), bias)


# ---------------------------------------------------------------------------
# 7. One output pixel of a conv layer, as the sum the seed writes: Σ pixel × filter + bias

@dataclass
class ConvArithmetic:
    layer: str                 # conv2d_2
    input_from: str            # "input" or the layer feeding it, e.g. max_pooling2d_1
    channel: int               # the filter
    row: int                   # the output pixel
    col: int
    top_left: tuple[int, int]  # patch position in the layer input (negative: inside the zero padding)
    stride: int
    padding: tuple[int, int, int, int]   # zeros added top, bottom, left, right
    patch: np.ndarray          # float32 (C_in, k, k), zero padding included
    kernel: np.ndarray         # float32 (C_in, k, k)
    products: np.ndarray       # float32 (C_in, k, k) = patch × kernel
    total: float               # Σ products
    bias: float
    pre_activation: float      # total + bias
    activation: str            # relu, tanh, ... (linear: none)
    value: float               # activation(pre_activation): the feature map's value there


def conv_arithmetic_at(model: ConvNet, image: torch.Tensor, layer: int | str, channel: int,
                       row: int, col: int) -> ConvArithmetic:
    """How output pixel (row, col) of filter `channel` in a conv layer is computed, number by number."""
    i, info = conv_layer(model, layer)
    _check_channel(info, channel)
    _, h_out, w_out = info.out_shape
    for what, v, n in (("row", row, h_out), ("column", col, w_out)):
        if not 0 <= v < n:
            raise ConvlensError(f"{what} {v} is out of range: {info.name}'s output is {h_out}×{w_out} "
                                f"({what}s 0–{n - 1})")
    x = model_input(model, image)[:1]
    with eval_mode(model), torch.no_grad():
        layer_in = x if i == 0 else model.layer_outputs(x)[i - 1]         # (1, C_in, H, W)
    s, k = info.spec.stride, info.spec.kernel
    top, bottom, left, right = info.pads
    padded = to_numpy(F.pad(layer_in[0], (left, right, top, bottom)))      # (C_in, H + pads, W + pads)
    r0, c0 = row * s, col * s                                              # top-left in padded coordinates
    patch = padded[:, r0:r0 + k, c0:c0 + k]                                # (C_in, k, k)
    conv = model.layers[i]
    kernel = to_numpy(conv.weight[channel])
    bias = float(conv.bias[channel].detach()) if conv.bias is not None else 0.0
    products = patch * kernel
    total = float(products.sum(dtype=np.float64))
    pre = total + bias
    act = info.spec.act or "linear"
    f = ACTIVATIONS[act]
    value = pre if f is None else float(f(torch.tensor(pre, dtype=torch.float64)))
    return ConvArithmetic(info.name, "input" if i == 0 else model.infos[i - 1].name, channel, row, col,
                          (r0 - top, c0 - left), s, info.pads, patch, kernel, products, total, bias, pre, act, value)


@dataclass
class PoolWinners:
    layer: str                 # max_pooling2d_1
    input_from: str            # the layer whose map is pooled
    channel: int
    size: int                  # the window, size × size, moved by stride
    stride: int
    before: np.ndarray         # float32 (H, W): the pooled map
    after: np.ndarray          # float32 (h, w): the pooling layer's map
    winners: np.ndarray        # int (h, w, 2): the (row, col) in `before` that each window's max came from


def pool_winners(model: ConvNet, image: torch.Tensor, layer: str, channel: int) -> PoolWinners:
    """Which pixel of each window won a max-pooling layer's map `channel` (ties: the first, as torch)."""
    found = [(i, info) for i, info in enumerate(model.infos) if info.name == layer]
    if not found or found[0][1].spec.kind != "maxpool":
        pools = [info.name for info in model.infos if info.spec.kind == "maxpool"]
        raise ConvlensError(f"{layer!r} is not a max-pooling layer; the model's are: {', '.join(pools) or 'none'}")
    i, info = found[0]
    _check_channel(info, channel, "map")
    x = model_input(model, image)[:1]
    with eval_mode(model), torch.no_grad():
        outs = model.layer_outputs(x)
    before = (x if i == 0 else outs[i - 1])[0, channel]                     # (H, W)
    top, bottom, left, right = info.pads
    padded = F.pad(before[None, None], (left, right, top, bottom), value=float("-inf"))
    after, where = F.max_pool2d(padded, info.spec.units, info.spec.stride, return_indices=True)
    width = padded.shape[-1]
    winners = torch.stack((where[0, 0] // width - top, where[0, 0] % width - left), dim=-1)
    return PoolWinners(info.name, "input" if i == 0 else model.infos[i - 1].name, channel, info.spec.units,
                       info.spec.stride, to_numpy(before), to_numpy(after[0, 0]), winners.cpu().numpy())


# ---------------------------------------------------------------------------
# 8. Mistakes worth looking at

def _predictions(probabilities, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities (N, K), labels (N,), predicted (N,)) as NumPy, shapes checked."""
    probs, labels = np.asarray(probabilities), np.asarray(labels)
    if probs.ndim != 2 or labels.ndim != 1 or len(probs) != len(labels):
        raise ConvlensError(f"expected probabilities (N, classes) and labels (N,), got {probs.shape} and {labels.shape}")
    return probs, labels, probs.argmax(1)


def _by_confidence(probs: np.ndarray, predicted: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """idx sorted by the probability of the predicted class, highest first (ties: lower index first)."""
    confidence = probs[idx, predicted[idx]]
    return idx[np.argsort(-confidence, kind="stable")]


def most_confident_mistakes(probabilities, labels, k: int = 16) -> np.ndarray:
    """Indices of the k wrong predictions the model was surest of, surest first."""
    probs, labels, predicted = _predictions(probabilities, labels)
    wrong = np.flatnonzero(predicted != labels)
    return _by_confidence(probs, predicted, wrong)[:max(0, k)]


def misclassified(probabilities, labels, true_class: int, predicted_class: int) -> np.ndarray:
    """Indices of the images of `true_class` predicted as `predicted_class` (one confusion-matrix cell),
    surest first. true_class == predicted_class gives the correctly classified ones."""
    probs, labels, predicted = _predictions(probabilities, labels)
    cell = np.flatnonzero((labels == true_class) & (predicted == predicted_class))
    return _by_confidence(probs, predicted, cell)
