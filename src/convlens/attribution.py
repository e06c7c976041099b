"""Why this prediction: gradient saliency, Grad-CAM and LayerCAM (written here, checked against
Captum's numbers in the tests), Integrated Gradients, SmoothGrad and Occlusion (Captum's), and the
top classes.

Maps are NumPy arrays in [0, 1] the size of the input image (the absolute attribution, the
largest channel of a colour image, scaled by its maximum); figures.py draws them over the image.
Works on any spec through the one ConvNet interface. Captum is imported when a method of its
is first used (it adds ~0.7 s to a start-up).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .baselines import DEFAULT_BASELINE, baseline_image
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
    signed: np.ndarray | None = None   # float32 (H, W) in [-1, 1]: Σ_k w_k A_k before the ReLU, over its
                                       # largest |value|: + evidence for the class, - against it


CAM_METHODS = ("gradcam", "layercam")
CAM_NAMES = {"layercam": "LayerCAM", "gradcam": "Grad-CAM"}      # what every view calls them


def grad_cam(model: ConvNet, image: torch.Tensor, target: int | None = None,
             layer: int | str | None = None, method: str = "gradcam") -> GradCam:
    """Grad-CAM (Selvaraju et al. 2017) on a conv layer or residual block (default: the last one).

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
    if not conv_layers(model, blocks=True):
        raise ConvlensError(f"Grad-CAM needs a conv layer; {model.spec!r} has none")
    i, info = conv_layer(model, layer, default=-1, blocks=True)
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
    raw = (weights * acts.detach()).sum(1, keepdim=True)                  # (1, 1, h, w), signed
    up = lambda m: F.interpolate(m, size=x.shape[2:], mode="bilinear", align_corners=False)[0, 0]  # noqa: E731 (H, W)
    cam, signed = up(F.relu(raw)), up(raw)
    signed = signed / signed.abs().max().clamp_min(1e-12)
    prob = float(logits.detach().softmax(1)[0, target])
    return GradCam(to_numpy(_normalise(cam.clamp_min(0))), info.name, target, prob, method, to_numpy(signed))


def top_k(model: ConvNet, image: torch.Tensor, classes: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
    """The k most likely (class name, probability) for one image, most likely first."""
    if len(classes) != model.num_classes:
        raise ConvlensError(f"{len(classes)} class names for a model with {model.num_classes} outputs")
    x = model_input(model, image)[:1]
    with eval_mode(model), torch.no_grad():
        probs = model(x).float().softmax(1)[0]                            # (classes,)
    top = probs.topk(max(1, min(k, len(classes))))
    return [(classes[j], float(p)) for p, j in zip(top.values.tolist(), top.indices.tolist())]


# ---------------------------------------------------------------------------
# Captum's methods: Integrated Gradients, SmoothGrad, Occlusion

METHODS = {"saliency": "gradient saliency", "gradcam": "Grad-CAM", "layercam": "LayerCAM",   # name -> what
           "ig": "Integrated Gradients", "smoothgrad": "SmoothGrad", "occlusion": "Occlusion"}  # views call it
def _forward(model: ConvNet) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: model(x).float()


def _map(attributions: torch.Tensor) -> np.ndarray:
    """Attributions (1, C, H, W) as a map: |a|, the largest channel, scaled to [0, 1]: (H, W)."""
    return to_numpy(_normalise(attributions.detach()[0].abs().amax(0)))


def _predicted(model: ConvNet, x: torch.Tensor, target: int | None) -> int:
    with eval_mode(model), torch.no_grad():
        return _target(model, model(x).float(), target)


@dataclass
class IntegratedGradients:
    map: np.ndarray            # (H, W) in [0, 1]: |attribution|, largest channel, scaled
    attributions: np.ndarray   # float32 (C, H, W), signed, in logit units
    target: int
    baseline: str
    steps: int                 # of the path integral, doubled until it is complete
    output: float              # f(x): the target's logit
    baseline_output: float     # f(baseline)

    @property
    def completeness_error(self) -> float:
        """|Σ attributions − (f(x) − f(baseline))| / |f(x) − f(baseline)|: 0 for the exact integral."""
        gap = self.output - self.baseline_output
        return abs(float(self.attributions.sum(dtype=np.float64)) - gap) / max(abs(gap), 1e-6)


def integrated_gradients(model: ConvNet, image: torch.Tensor, target: int | None = None,
                         baseline: str = DEFAULT_BASELINE, mean: Sequence[float] | None = None, steps: int = 32,
                         tolerance: float = 0.01, max_steps: int = 1024) -> IntegratedGradients:
    """Integrated Gradients (Sundararajan et al. 2017) with Captum, on the target's logit.

    Completeness says Σ attributions = f(x) − f(baseline); the Gauss-Legendre steps double from
    `steps` until the sum is within `tolerance` of that, or `max_steps` is reached. The tolerance is
    relative to the gap, but never finer than `tolerance` × 0.1 logit: a network with random weights
    (the sanity check's) can have a gap of 0.004, and chasing 1 % of that took 1,024 steps. On the
    trained seed 1 % of the gap took 32 to 512 steps (test image 9 and 20 more, every baseline)."""
    from captum.attr import IntegratedGradients as CaptumIG
    x = model_input(model, image)[:1]
    ref = baseline_image(x, baseline, mean)
    with eval_mode(model), torch.no_grad():
        logits = model(torch.cat([x, ref])).float()                         # (2, classes)
    target = _target(model, logits[:1], target)
    ig, n = CaptumIG(_forward(model)), steps
    while True:
        with eval_mode(model), torch.enable_grad():
            attr = ig.attribute(x, ref, target=target, n_steps=n, method="gausslegendre", internal_batch_size=256)
        result = IntegratedGradients(_map(attr), to_numpy(attr[0]), target, baseline, n,
                                     float(logits[0, target]), float(logits[1, target]))
        gap = abs(result.output - result.baseline_output)
        if result.completeness_error * max(gap, 1e-6) <= tolerance * max(gap, 0.1) or n >= max_steps:
            return result
        n *= 2


def smoothgrad(model: ConvNet, image: torch.Tensor, target: int | None = None, samples: int = 32,
               noise: float = 0.15, seed: int = 0) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017) with Captum: |gradient| averaged over `samples` copies of the image
    with Gaussian noise of sigma = `noise` × the pixel range (15 %, inside the paper's 10–20 %); seeded."""
    from captum.attr import NoiseTunnel, Saliency
    x = model_input(model, image)[:1]
    target = _predicted(model, x, target)
    devices = [x.device.index or 0] if x.is_cuda else []
    with eval_mode(model), torch.enable_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        attr = NoiseTunnel(Saliency(_forward(model))).attribute(
            x, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=samples, stdevs=noise,
            target=target, abs=True)
    return _map(attr)


def occlusion(model: ConvNet, image: torch.Tensor, target: int | None = None, baseline: str = DEFAULT_BASELINE,
              mean: Sequence[float] | None = None, window: int | None = None) -> np.ndarray:
    """Occlusion (Zeiler & Fergus 2014) with Captum: how much the target's logit changes when a square
    patch is replaced by the baseline; the patch is 1/7 of the image's side (4 px of 28), moved by half
    of it, and each pixel gets the mean change of the patches over it."""
    from captum.attr import Occlusion
    x = model_input(model, image)[:1]
    target = _predicted(model, x, target)
    c, h, w = x.shape[1:]
    window = window or max(1, round(min(h, w) / 7))
    stride = max(1, window // 2)
    with eval_mode(model), torch.no_grad():
        attr = Occlusion(_forward(model)).attribute(
            x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
            baselines=baseline_image(x, baseline, mean), target=target, perturbations_per_eval=64)
    return _map(attr)


def methods_for(model: ConvNet, text: str = "all") -> list[str]:
    """The methods named in `text` ("all", or names joined by commas), in METHODS's order; the CAMs are
    left out of "all" for a model without a conv layer."""
    if text == "all":
        return [m for m in METHODS if m not in CAM_METHODS or conv_layers(model, blocks=True)]
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ConvlensError(f"unknown attribution method {(unknown or [text])[0]!r}; known: all, {', '.join(METHODS)}")
    return [m for m in METHODS if m in names]


def attribution_map(model: ConvNet, image: torch.Tensor, method: str, target: int | None = None,
                    baseline: str = DEFAULT_BASELINE, mean: Sequence[float] | None = None) -> np.ndarray:
    """One method's map (METHODS) for one image: (H, W) in [0, 1]."""
    if method == "saliency":
        return saliency(model, image, target)
    if method in CAM_METHODS:
        return grad_cam(model, image, target, method=method).cam
    if method == "ig":
        return integrated_gradients(model, image, target, baseline, mean).map
    if method == "smoothgrad":
        return smoothgrad(model, image, target)
    if method == "occlusion":
        return occlusion(model, image, target, baseline, mean)
    raise ConvlensError(f"unknown attribution method {method!r}; known: {', '.join(METHODS)}")
