"""Looking inside a trained network: feature maps, kernels, saliency, Grad-CAM, the arithmetic
of one output pixel, and the mistakes worth looking at. Everything returns NumPy arrays;
figures.py draws them.

Works on any spec through the one ConvNet interface (`infos`, `layers`, `layer_outputs`).
Images come in as the dataset and `load_image` give them: uint8 (C, H, W), or a batch
(N, C, H, W); floats in [0, 1] are taken as they are.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConvlensError
from .models import ACTIVATIONS, ConvNet, LayerInfo
from .summary import shape_text


# ---------------------------------------------------------------------------
# Inputs

def _device(model: ConvNet) -> torch.device:
    return next(model.parameters()).device


def _as_batch(model: ConvNet, images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 or [0, 1] float images (H, W), (C, H, W) or (N, C, H, W) -> float32 (N, C, H, W) on the model's device."""
    x = torch.as_tensor(images)
    x = x.float() / 255 if x.dtype == torch.uint8 else x.to(torch.float32, copy=True)   # never the caller's tensor
    while x.dim() < 4:                       # (H, W) -> (1, H, W) -> (1, 1, H, W)
        x = x.unsqueeze(0)
    if tuple(x.shape[1:]) != tuple(model.input_shape):
        raise ConvlensError(f"the image is {shape_text(tuple(x.shape[1:]))} but the model takes "
                            f"{shape_text(model.input_shape)} (height × width × channels)")
    return x.to(_device(model))


@contextmanager
def _eval_mode(model: ConvNet):
    """Eval mode (dropout off, batch-norm running statistics) for the block, then back."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().float().cpu().numpy())


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
    x = _as_batch(model, image)[:1]                                       # (1, C, H, W)
    with _eval_mode(model), torch.no_grad():
        outs = model.layer_outputs(x)
    return [LayerMaps(i, info.name, info.type, info.spec.kind, shape_text(info.out_shape), _numpy(out[0]))
            for i, (info, out) in enumerate(zip(model.infos, outs))]


# ---------------------------------------------------------------------------
# 2. One filter across images and layers (the study note's grid)

def spatial_layers(model: ConvNet, kinds: Sequence[str] = ("conv", "maxpool", "avgpool")) -> list[tuple[int, LayerInfo]]:
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
        has = "filters" if info.spec.kind == "conv" else "channels"
        raise ConvlensError(f"{what} {channel} is out of range: {info.name} has {n} {has} (0–{n - 1})")


def filter_across_images(model: ConvNet, images: torch.Tensor, filter_index: int,
                         kinds: Sequence[str] = ("conv", "maxpool"),
                         labels: Sequence[str] | None = None) -> FilterGrid:
    """Channel `filter_index` of every conv/pool layer for each image: rows = images, columns = layers."""
    cols = spatial_layers(model, kinds)
    if not cols:
        raise ConvlensError(f"model {model.spec!r} has no {' or '.join(kinds)} layer to show")
    for _, info in cols:
        _check_channel(info, filter_index)
    x = _as_batch(model, images)                                          # (N, C, H, W)
    labels = list(labels) if labels is not None else [f"image {n + 1}" for n in range(len(x))]
    if len(labels) != len(x):
        raise ConvlensError(f"{len(labels)} row labels for {len(x)} images")
    with _eval_mode(model), torch.no_grad():
        outs = model.layer_outputs(x)
    per_col = [_numpy(outs[i][:, filter_index]) for i, _ in cols]           # each (N, H_i, W_i)
    maps = [[col[n] for col in per_col] for n in range(len(x))]
    return FilterGrid(filter_index, maps, labels, [f"{info.name} {shape_text(info.out_shape)}" for _, info in cols])


# ---------------------------------------------------------------------------
# 3. Learned kernels

def conv_layers(model: ConvNet) -> list[tuple[int, LayerInfo]]:
    """(index into model.infos, info) of every conv layer."""
    return spatial_layers(model, ("conv",))


def _conv_layer(model: ConvNet, layer: int | str | None, default: int = 0) -> tuple[int, LayerInfo]:
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


@dataclass
class KernelSet:
    layer: str               # conv2d_1
    index: int               # position in model.infos
    weights: np.ndarray      # float32 (out, in, k, k)
    bias: np.ndarray         # float32 (out,)


def kernels(model: ConvNet, layer: int | str | None = None) -> KernelSet:
    """The learned weights and biases of a conv layer (default: the first)."""
    i, info = _conv_layer(model, layer)
    conv = model.layers[i]
    return KernelSet(info.name, i, _numpy(conv.weight), _numpy(conv.bias))


# ---------------------------------------------------------------------------
# 4-6. Why this prediction: saliency, Grad-CAM, top-k

def _normalise(m: torch.Tensor) -> torch.Tensor:
    """Scale a non-negative map to [0, 1] by its maximum; an all-zero map stays zero (no NaN)."""
    top = m.max()
    return m / top if top > 0 else torch.zeros_like(m)


def saliency(model: ConvNet, image: torch.Tensor, target: int | None = None) -> np.ndarray:
    """|d logit_target / d pixel|, max over channels, in [0, 1]: (H, W). target: default the predicted class."""
    x = _as_batch(model, image)[:1].requires_grad_(True)                  # (1, C, H, W)
    with _eval_mode(model), torch.enable_grad():
        logits = model(x).float()                                         # (1, classes)
        target = _target(model, logits, target)
        (grad,) = torch.autograd.grad(logits[0, target], x)               # (1, C, H, W)
    return _numpy(_normalise(grad[0].abs().amax(0)))                      # (H, W)


def _target(model: ConvNet, logits: torch.Tensor, target: int | None) -> int:
    if target is None:
        return int(logits[0].argmax())
    if not 0 <= target < model.num_classes:
        raise ConvlensError(f"class {target} is out of range: the model has {model.num_classes} classes "
                            f"(0–{model.num_classes - 1})")
    return int(target)


@dataclass
class GradCam:
    cam: np.ndarray          # float32 (H, W) in [0, 1], the size of the input image
    layer: str               # the conv layer it looks at
    target: int              # class index explained
    probability: float       # the model's probability for that class
    method: str = "gradcam"  # gradcam | layercam


CAM_METHODS = ("gradcam", "layercam")


def grad_cam(model: ConvNet, image: torch.Tensor, target: int | None = None,
             layer: int | str | None = None, method: str = "gradcam") -> GradCam:
    """Grad-CAM (Selvaraju et al. 2017) on a conv layer (default: the last one).

    A = the layer's activated output (K, h, w); w_k = mean over h, w of d logit_target / d A_k;
    cam = relu(Σ_k w_k A_k), bilinearly upsampled to the input size and scaled to [0, 1].

    method="layercam" (Jiang et al. 2021) weighs each position by its own gradient instead:
    cam = Σ_k relu(d logit / d A_k) ⊙ A_k. Behind a flatten-dense head (the seed) the same
    filter counts for or against a class depending on where it fires, so one mean weight per
    filter mixes the two: on a trained seed, Grad-CAM lies on the empty background around
    sneakers while LayerCAM lies on the shoe (tests/test_inspect.py measures it).
    """
    if method not in CAM_METHODS:
        raise ConvlensError(f"unknown CAM method {method!r}; known: {', '.join(CAM_METHODS)}")
    if not conv_layers(model):
        raise ConvlensError(f"Grad-CAM needs a conv layer; {model.spec!r} has none")
    i, info = _conv_layer(model, layer, default=-1)
    x = _as_batch(model, image)[:1].requires_grad_(True)                  # (1, C, H, W)
    with _eval_mode(model), torch.enable_grad():
        outs = model.layer_outputs(x)       # unfused: outs[i] is the conv output after its activation
        acts, logits = outs[i], outs[-1].float()                          # (1, K, h, w), (1, classes)
        target = _target(model, logits, target)
        (grads,) = torch.autograd.grad(logits[0, target], acts)           # (1, K, h, w)
    if method == "gradcam":
        weights = grads.mean(dim=(2, 3), keepdim=True)                    # (1, K, 1, 1)
    else:
        weights = F.relu(grads)                                           # (1, K, h, w)
    cam = F.relu((weights * acts.detach()).sum(1, keepdim=True))          # (1, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[0, 0]  # (H, W)
    prob = float(logits.detach().softmax(1)[0, target])
    return GradCam(_numpy(_normalise(cam.clamp_min(0))), info.name, target, prob, method)


def top_k(model: ConvNet, image: torch.Tensor, classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The k most likely (class name, probability) for one image, most likely first."""
    if len(classes) != model.num_classes:
        raise ConvlensError(f"{len(classes)} class names for a model with {model.num_classes} outputs")
    x = _as_batch(model, image)[:1]
    with _eval_mode(model), torch.no_grad():
        probs = model(x).float().softmax(1)[0]                            # (classes,)
    top = probs.topk(max(1, min(k, len(classes))))
    return [(classes[j], float(p)) for p, j in zip(top.values.tolist(), top.indices.tolist())]


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
    padding: int
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
    i, info = _conv_layer(model, layer)
    _check_channel(info, channel)
    _, h_out, w_out = info.out_shape
    for what, v, n in (("row", row, h_out), ("column", col, w_out)):
        if not 0 <= v < n:
            raise ConvlensError(f"{what} {v} is out of range: {info.name}'s output is {h_out}×{w_out} "
                                f"({what}s 0–{n - 1})")
    x = _as_batch(model, image)[:1]
    with _eval_mode(model), torch.no_grad():
        layer_in = x if i == 0 else model.layer_outputs(x)[i - 1]         # (1, C_in, H, W)
    s, p, k = info.spec.stride, info.spec.padding, info.spec.kernel
    padded = _numpy(F.pad(layer_in[0], (p, p, p, p)))                      # (C_in, H + 2p, W + 2p)
    r0, c0 = row * s, col * s                                              # top-left in padded coordinates
    patch = padded[:, r0:r0 + k, c0:c0 + k]                                # (C_in, k, k)
    conv = model.layers[i]
    kernel, bias = _numpy(conv.weight[channel]), float(conv.bias[channel].detach())
    products = patch * kernel
    total = float(products.sum(dtype=np.float64))
    pre = total + bias
    act = info.spec.act or "linear"
    f = ACTIVATIONS[act]
    value = pre if f is None else float(f(torch.tensor(pre, dtype=torch.float64)))
    return ConvArithmetic(info.name, "input" if i == 0 else model.infos[i - 1].name, channel, row, col,
                          (r0 - p, c0 - p), s, p, patch, kernel, products, total, bias, pre, act, value)


def receptive_field(model: ConvNet, layer: int | str, row: int, col: int) -> tuple[int, int, int, int]:
    """The input pixels output pixel (row, col) of a conv layer depends on: (top, left, bottom, right),
    inclusive, clipped to the image. Walks back through the layers: a conv of kernel k, stride s,
    padding p maps outputs a..b to inputs a·s−p .. b·s−p+k−1; an n×n pool maps them to a·n .. b·n+n−1."""
    i, _ = _conv_layer(model, layer)
    top, left, bottom, right = row, col, row, col
    for info in reversed(model.infos[:i + 1]):
        l = info.spec
        if l.kind == "conv":
            k, s, p = l.kernel, l.stride, l.padding
        elif l.kind in ("maxpool", "avgpool"):
            k, s, p = l.units, l.units, 0
        else:                     # bn, dropout: pixel to pixel
            continue
        top, left, bottom, right = top * s - p, left * s - p, bottom * s - p + k - 1, right * s - p + k - 1
    _, h, w = model.input_shape
    return max(0, top), max(0, left), min(h - 1, bottom), min(w - 1, right)


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
