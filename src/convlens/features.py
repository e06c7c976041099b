"""What does this filter look for? Two answers, shown side by side (Borowski et al., ICLR 2021:
people predict a unit's behaviour better from real examples than from synthetic images alone):

1. The dataset's answer: the test images that excite the filter most, each cropped to the
   receptive field of the position where it fires most (top_crops: one pass over the images,
   a running top 9 per filter).
2. The optimiser's answer: an input made to excite the filter (activation maximisation, Olah et
   al., Distill 2017), with their transformation robustness (each step sees randomly shifted and
   scaled copies), a total-variation regulariser against pixel noise, pixels kept in [0, 1] in
   the model's own channels (grayscale or RGB: nothing assumes three), seeded.

The class view is the same optimiser on a class's logit, over the whole image.
Lucid and Lucent assume RGB inputs (lucid #146, #175; lucent #29); nothing here does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .engine import device_of, eval_mode, step_threads, threads, to_input
from .models import ConvNet, conv_layer, input_box, receptive_field

TOP = 9                 # crops per filter: a 3×3 block, as in Olah et al.'s and Zeiler & Fergus's grids
BATCH = 512             # images per pass when scanning a test set


# ---------------------------------------------------------------------------
# 1. The dataset's answer: the top crops

@dataclass
class TopCrops:
    """The test images that excite each filter of a conv layer most, most exciting first."""
    layer: str
    indices: np.ndarray     # int64 (K, k): test images
    values: np.ndarray      # float32 (K, k): the filter's largest activation in that image
    positions: np.ndarray   # int64 (K, k, 2): where in the layer's map (row, col)
    boxes: np.ndarray       # int64 (K, k, 4): its receptive field in the image (top, left, bottom, right),
                            # unclipped: it may reach past the image's edge
    crops: np.ndarray       # uint8 (K, k, C, r, r): the image inside the box, 0 past the edge


def top_crops(model: ConvNet, images, layer: int | str | None = None, k: int = TOP, batch: int = BATCH) -> TopCrops:
    """The k images of `images` (uint8 (N, C, H, W), in memory or streamed) with the largest activation of
    each filter of a conv layer anywhere in its map; ties go to the lower image index. Runs the network
    only up to that layer, in float32 (bf16 would reorder near-ties)."""
    i, info = conv_layer(model, layer, blocks=True)
    n_filters = info.out_shape[0]
    device = device_of(model)
    scan = copy.deepcopy(model).to(memory_format=torch.channels_last)   # 1.7× faster over a test set here
    best_v = torch.empty(n_filters, 0)
    best_i = torch.empty(n_filters, 0, dtype=torch.long)
    best_p = torch.empty(n_filters, 0, dtype=torch.long)
    seen = 0
    with eval_mode(scan), torch.inference_mode():
        for chunk in images.split(batch):
            acts = scan.layer_outputs(to_input(chunk, device), upto=i)[i].flatten(2).cpu()    # (B, K, h·w)
            v, p = acts.max(2)                                                         # (B, K)
            b = len(v)
            cand_v, cand_p = torch.cat([best_v, v.T], 1), torch.cat([best_p, p.T], 1)
            cand_i = torch.cat([best_i, torch.arange(seen, seen + b).expand(n_filters, b)], 1)
            order = torch.sort(-cand_v, dim=1, stable=True).indices[:, :k]             # equal values: lower index
            best_v, best_i, best_p = cand_v.gather(1, order), cand_i.gather(1, order), cand_p.gather(1, order)
            seen += b
    w = info.out_shape[2]
    positions = torch.stack([best_p // w, best_p % w], -1).numpy()
    boxes = np.array([[receptive_field(model, info.name, int(r), int(c), clip=False) for r, c in row]
                      for row in positions]).reshape(*positions.shape[:2], 4)
    return TopCrops(info.name, best_i.numpy(), best_v.numpy(), positions, boxes, _crops(images, best_i.numpy(), boxes))


def crop(image, box) -> np.ndarray:
    """(C, r, r): image (C, H, W), a tensor or an array, inside box (top, left, bottom, right), zeros
    past its edge; of the image's own dtype."""
    arr = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    top, left, bottom, right = (int(v) for v in box)
    c, h, w = arr.shape
    out = np.zeros((c, bottom - top + 1, right - left + 1), dtype=arr.dtype)
    t, lf, b, r = max(0, top), max(0, left), min(h - 1, bottom), min(w - 1, right)
    if t <= b and lf <= r:
        out[:, t - top:b - top + 1, lf - left:r - left + 1] = arr[:, t:b + 1, lf:r + 1]
    return out


def _crops(images, indices: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    cache: dict[int, torch.Tensor] = {}
    rows = []
    for f in range(indices.shape[0]):
        row = []
        for j, n in enumerate(indices[f]):
            if int(n) not in cache:
                cache[int(n)] = images[int(n)]
            row.append(crop(cache[int(n)], boxes[f, j]))
        rows.append(row)
    return np.array(rows, dtype=np.uint8)


# ---------------------------------------------------------------------------
# 2. The optimiser's answer: activation maximisation

@dataclass(frozen=True)
class Ascent:
    """How an input is optimised (Olah et al. 2017's transformation robustness, on a 28×28 scale)."""
    steps: int = 192           # Adam steps
    lr: float = 0.05           # per step, in pixel units (pixels are 0..1)
    copies: int = 4            # transformed copies per step
    jitter: int = 1            # shift of each copy, up to ± this many pixels
    scale: float = 0.1         # and scale, by up to ± 10 %
    tv: float = 0.02           # total-variation weight, per unit of the objective's own size
    polish: float = 0.25       # the last quarter of the steps on the image itself, see ascend
    seed: int = 0


def _transformed(x: torch.Tensor, a: Ascent, gen: torch.Generator) -> torch.Tensor:
    """`a.copies` randomly shifted and scaled copies of each image of x (N, C, H, W): (N·copies, C, H, W)."""
    n, _, h, w = x.shape
    m = n * a.copies
    s = 1 + (torch.rand(m, generator=gen) * 2 - 1) * a.scale
    shift = torch.randint(-a.jitter, a.jitter + 1, (m, 2), generator=gen).float()
    theta = torch.zeros(m, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = 1 / s, 1 / s
    theta[:, 0, 2], theta[:, 1, 2] = shift[:, 0] * 2 / w, shift[:, 1] * 2 / h
    theta = theta.to(x)
    grid = F.affine_grid(theta, [m, *x.shape[1:]], align_corners=False)
    return F.grid_sample(x.repeat_interleave(a.copies, 0), grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per image of x (N, C, H, W): the mean squared difference between neighbouring pixels, (N,)."""
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean((1, 2, 3)) + ((x[..., 1:] - x[..., :-1]) ** 2).mean((1, 2, 3))


def ascend(objective, shape: tuple[int, ...], a: Ascent, device: torch.device, mult_adds: int = 0) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] that maximise objective(x) -> (N,) each: Adam from seeded noise around
    gray on transformed copies, regularised by total variation, for the first (1 − polish) of the steps;
    then on the image itself, unregularised, to reach the objective's own optimum. The pixels are
    clipped to [0, 1] after every step; only the image gets gradients (none for the weights).
    mult_adds: what objective costs for one image, which decides the threads (engine.step_threads)."""
    with threads(step_threads(mult_adds * shape[0] * a.copies)):
        return _ascend(objective, shape, a, device)


def _ascend(objective, shape: tuple[int, ...], a: Ascent, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(a.seed)
    x = (0.5 + 0.1 * torch.randn(shape, generator=gen)).clamp(0, 1).to(device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=a.lr)
    robust_steps = round(a.steps * (1 - a.polish))
    scale = None
    for step in range(a.steps):
        if step < robust_steps:
            value = objective(_transformed(x, a, gen)).view(shape[0], a.copies).mean(1)
            if scale is None:       # the objective's own size, so that one tv weight fits every filter
                scale = value.detach().abs().clamp_min(1e-3)
            loss = (-value / scale + a.tv * total_variation(x) * x[0].numel()).sum()
        else:
            if step == robust_steps:  # fresh moments: the robust phase's would damp the small last gradients
                opt = torch.optim.Adam([x], lr=a.lr)
            loss = -objective(x).sum()
        (x.grad,) = torch.autograd.grad(loss, [x])
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return x.detach()


@dataclass
class Optimised:
    """Inputs optimised to excite filters of a conv layer, one per filter."""
    layer: str
    filters: list[int]
    crops: np.ndarray         # float32 (F, C, r, r) in [0, 1]: the receptive field of the neuron optimised
    values: np.ndarray        # float32 (F,): the filter's largest activation on the optimised input, as it is
    box: tuple[int, int, int, int]   # that receptive field in the image (unclipped)


def _canvas(model: ConvNet, i: int, margin: int = 1) -> tuple[int, int, int, int]:
    """The input box that the neurons within `margin` of the centre of layer i's map see: (top, left,
    bottom, right), unclipped. Without padding up to layer i, running the layers on just this box gives
    exactly those neurons (the pooling grid starts at its corner); with padding, the whole image is used."""
    _, h, w = model.infos[i].out_shape
    cy, cx = h // 2, w // 2
    if any(any(info.pads) for info in model.infos[:i + 1]):      # `same` and residual blocks pad too
        _, ih, iw = model.input_shape
        return 0, 0, ih - 1, iw - 1
    m = min(margin, cy, cx, h - 1 - cy, w - 1 - cx)
    return input_box(model.infos[:i + 1], cy - m, cx - m, cy + m, cx + m)


def _canvas_mult_adds(model: ConvNet, i: int, shape: tuple[int, ...]) -> int:
    """About what layers 0..i cost on one canvas of `shape` (N, C, h, w): their cost on the whole image,
    scaled by the canvas's share of its pixels."""
    _, ih, iw = model.input_shape
    return model.mult_adds(upto=i) * shape[2] * shape[3] // (ih * iw)


def maximise_filters(model: ConvNet, layer: int | str | None = None, filters=None,
                     ascent: Ascent = Ascent()) -> Optimised:
    """For each filter, an input that excites the neuron at the centre of its map, all filters at once.

    The neuron sees only its receptive field, so that is optimised (with a margin of a neuron on each
    side for the jitter: a 5×5 canvas for conv2d_1 of the seed, 12×12 for conv2d_2, 20× and 5× less
    work than 28×28), and its crop is the answer. Its pre-activation is what is raised (a relu neuron
    that starts below zero has no gradient). It is compared with the dataset's crops by the filter's
    largest activation on the input as it is; the polishing steps without transformations let it
    reach the filter's optimum (on the seed every filter's input then excites it at least as much as
    its best test crop: benchmarks/explanations.py)."""
    i, info = conv_layer(model, layer, blocks=True)
    filters = list(range(info.out_shape[0])) if filters is None else [int(f) for f in filters]
    top, left, bottom, right = _canvas(model, i)
    shape = (len(filters), model.input_shape[0], bottom - top + 1, right - left + 1)
    idx = torch.tensor(filters, device=device_of(model))

    def pre_activation(x: torch.Tensor) -> torch.Tensor:                # (N·copies, K, h', w')
        return model.layers[i](x if i == 0 else model.layer_outputs(x, upto=i - 1)[-1])

    def objective(x: torch.Tensor) -> torch.Tensor:                     # (N·copies,), N = len(filters)
        acts = pre_activation(x)
        centre = acts[:, :, acts.shape[2] // 2, acts.shape[3] // 2]       # (N·copies, K)
        return centre.gather(1, idx.repeat_interleave(len(x) // len(filters))[:, None])[:, 0]

    with eval_mode(model), torch.enable_grad():
        x = ascend(objective, shape, ascent, device_of(model), _canvas_mult_adds(model, i, shape))
    with eval_mode(model), torch.no_grad():
        values = model.layer_outputs(x, upto=i)[i][torch.arange(len(filters)), idx].flatten(1).amax(1)
    _, h, w = info.out_shape
    box = receptive_field(model, info.name, h // 2, w // 2, clip=False)
    inside = (box[0] - top, box[1] - left, box[2] - top, box[3] - left)         # the box within the canvas
    crops = np.stack([crop(img, inside) for img in x.cpu().numpy()])
    return Optimised(info.name, filters, crops, values.cpu().numpy(), box)


def class_views(model: ConvNet, ascent: Ascent = Ascent(steps=256)) -> tuple[np.ndarray, np.ndarray]:
    """One input per class optimised to raise that class's logit, over the whole image:
    (images float32 (K, C, H, W) in [0, 1], the model's probability of the class on each)."""
    k = model.num_classes
    classes = torch.arange(k, device=device_of(model))

    def objective(x: torch.Tensor) -> torch.Tensor:
        return model(x).float().gather(1, classes.repeat_interleave(len(x) // k)[:, None])[:, 0]

    with eval_mode(model), torch.enable_grad():
        x = ascend(objective, (k, *model.input_shape), ascent, device_of(model), model.mult_adds())
    with eval_mode(model), torch.no_grad():
        probs = model(x).float().softmax(1)[classes, classes]
    return x.cpu().numpy(), probs.cpu().numpy()
