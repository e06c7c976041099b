"""Why this prediction: gradient saliency, Grad-CAM and LayerCAM, and the top classes.

Maps are NumPy arrays in [0, 1] the size of the input image; figures.explanation draws them
over the image. Works on any spec through the one ConvNet interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .engine import eval_mode, model_input, to_numpy
from .errors import ConvlensError
from .models import ConvNet, conv_layer, conv_layers


def _normalise(m: torch.Tensor) -> torch.Tensor:
    """Scale a non-negative map to [0, 1] by its maximum; an all-zero map stays zero (no NaN)."""
    top = m.max()
    return m / top if top > 0 else torch.zeros_like(m)


def saliency(model: ConvNet, image: torch.Tensor, target: int | None = None) -> np.ndarray:
    """|d logit_target / d pixel|, max over channels, in [0, 1]: (H, W). target: default the predicted class."""
    x = model_input(model, image)[:1].requires_grad_(True)                  # (1, C, H, W)
    with eval_mode(model), torch.enable_grad():
        logits = model(x).float()                                         # (1, classes)
        target = _target(model, logits, target)
        (grad,) = torch.autograd.grad(logits[0, target], x)               # (1, C, H, W)
    return to_numpy(_normalise(grad[0].abs().amax(0)))                      # (H, W)


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
CAM_NAMES = {"layercam": "LayerCAM", "gradcam": "Grad-CAM"}      # what every view calls them


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
    i, info = conv_layer(model, layer, default=-1)
    x = model_input(model, image)[:1].requires_grad_(True)                  # (1, C, H, W)
    with eval_mode(model), torch.enable_grad():
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
    return GradCam(to_numpy(_normalise(cam.clamp_min(0))), info.name, target, prob, method)


def top_k(model: ConvNet, image: torch.Tensor, classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The k most likely (class name, probability) for one image, most likely first."""
    if len(classes) != model.num_classes:
        raise ConvlensError(f"{len(classes)} class names for a model with {model.num_classes} outputs")
    x = model_input(model, image)[:1]
    with eval_mode(model), torch.no_grad():
        probs = model(x).float().softmax(1)[0]                            # (classes,)
    top = probs.topk(max(1, min(k, len(classes))))
    return [(classes[j], float(p)) for p, j in zip(top.values.tolist(), top.indices.tolist())]
