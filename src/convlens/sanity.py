"""Can I trust this map? The sanity checks of Adebayo et al. (2018, "Sanity Checks for Saliency
Maps", arXiv 1810.03292), on any convlens model.

Cascading model-parameter randomisation: re-initialise the layers one at a time from the top
(the output layer first) and draw the map again after each, for the same image and class. A map
that explains the model must change as the weights it explains are destroyed; the Spearman rank
correlation of each map with the original says how much is left. Adebayo et al. found plain
gradients and Grad-CAM change, while Guided Backprop and Guided Grad-CAM barely do: they show
the image's edges whatever the weights. The check includes such a map as a control (an edge
detector applied to the input, which ignores the weights), so every check shows it can fail.

The paper's second test, data randomisation (the network retrained on shuffled labels), is not
here: retrained briefly (2 epochs of 10,000 images, with the fast recipe or the seed's own) the
seed collapsed to a constant output, every relu dead, so every map was flat and ρ = 0 said
nothing; it needs the network to memorise the shuffled labels, which takes far longer.

What it proves and does not: a map that passes depends on the learned weights; it does not follow
that it shows what the model uses (the deletion curves of faithfulness.py measure that), nor that
a human reads it rightly. A map that fails would look much the same on an untrained network.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .engine import display_image, eval_mode, model_input, step_threads, threads
from .errors import ConvlensError
from .models import ConvNet, seen_pixels

Explainer = Callable[[ConvNet, int], np.ndarray]
"""A map maker under check: (a model, the class to explain) -> its (H, W) map in [0, 1] of the image
checked. Any function will do (attribution.attribution_map with its image bound, or a user's own)."""

CONTROL = "edges"                 # the control map: Sobel edges of the input, no weights at all
CONTROL_NAME = "edge detector (control)"
TRUSTED_BELOW, DISTRUSTED_FROM = 0.5, 0.8   # Spearman ρ with the original once every layer is random
VERDICTS = ("depends on the learned weights",
            "changes only partly when the weights are random: look with care",
            "barely changes when the weights are random: do not trust")


def verdict(rho: float) -> str:
    """The plain verdict for a map whose rank correlation with the original is `rho` after the
    weights of every layer were re-drawn."""
    return VERDICTS[0] if rho < TRUSTED_BELOW else VERDICTS[1] if rho < DISTRUSTED_FROM else VERDICTS[2]


def ranks(a: np.ndarray) -> np.ndarray:
    """The ranks of a's values (0 = smallest), ties given their average rank (as scipy's rankdata)."""
    _, inverse, counts = np.unique(np.ravel(a), return_inverse=True, return_counts=True)
    end = np.cumsum(counts)
    return ((end - counts + end - 1) / 2)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps of the same shape; 0 where one is constant (a map that
    became flat shares no ordering with the other)."""
    if np.shape(a) != np.shape(b):
        raise ConvlensError(f"maps of shapes {np.shape(a)} and {np.shape(b)} cannot be compared")
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def edge_map(image: torch.Tensor) -> np.ndarray:
    """The control: the Sobel gradient magnitude of the image (grayscale), scaled to [0, 1]: (H, W).
    It never looks at a weight, so randomising them cannot change it."""
    g = torch.from_numpy(display_image(image))[None, None].double()            # (1, 1, H, W)
    sx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=g.dtype)
    padded = F.pad(g, (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(padded, sx[None, None]), F.conv2d(padded, sx.T[None, None])
    m = (gx ** 2 + gy ** 2).sqrt()[0, 0]
    return (m / m.max() if m.max() > 0 else m).float().numpy()


@dataclass
class MethodCheck:
    """One method through the cascade: its map at every step and how much each resembles the first."""
    method: str                    # the explainer's key (attribution.METHODS's), or CONTROL
    maps: list[np.ndarray]         # (H, W) in [0, 1] per step: the learned weights first
    rho: list[float]               # Spearman ρ of each map with the first (1.0 first)
    name: str = ""                 # what the views call it ("gradient saliency")

    def __post_init__(self):
        self.name = self.name or self.method

    @property
    def final(self) -> float:
        """ρ once every layer is random."""
        return self.rho[-1]

    @property
    def verdict(self) -> str:
        return verdict(self.final)

    @property
    def passed(self) -> bool:
        return self.final < TRUSTED_BELOW

    @property
    def tier(self) -> int:
        """0: depends on the weights, 1: partly, 2: do not trust (VERDICTS's order)."""
        return VERDICTS.index(self.verdict)


@dataclass
class RandomisationCheck:
    """The cascading randomisation of one image's maps (Adebayo et al. 2018, section 3.1)."""
    target: int                          # the class explained, the model's prediction with learned weights
    steps: list[str]                     # "learned weights", then the layer re-drawn at each step
    methods: list[MethodCheck]
    seed: int = 0
    draws: int = 3                       # random draws of the weights that each ρ is the mean of
    kind: str = "cascading model-parameter randomisation"
    titles: list[str] = field(default_factory=list)    # what each step's column is called

    def __post_init__(self):
        if not self.titles:      # the cascade: "dense_2 random", then "+ dense_1", …
            self.titles = [s if n == 0 else f"{s} random" if n == 1 else f"+ {s}" for n, s in enumerate(self.steps)]

    def method(self, name: str) -> MethodCheck:
        return next(m for m in self.methods if m.method == name)


def parameter_layers(model: ConvNet) -> list[int]:
    """Indices (into model.infos) of the layers with weights, output layer first."""
    return [i for i in reversed(range(len(model.infos))) if any(True for _ in model.layers[i].parameters())]


def randomised(model: ConvNet, layers: Sequence[int], seed: int = 0) -> ConvNet:
    """A copy of `model` whose `layers` are re-initialised as PyTorch initialises a new layer (Kaiming
    uniform weights and biases; batch norm to 1, 0 and fresh statistics), seeded by layer."""
    copied = copy.deepcopy(model)
    device = next(model.parameters()).device
    for i in layers:
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
            torch.manual_seed(seed * 1000 + i)     # per layer: a layer re-drawn at step n stays so after
            copied.layers[i].reset_parameters()
    return copied.eval()


# The images one map sends through the model at once, about: SmoothGrad's 32 noisy copies, Occlusion's 64
# windows, Integrated Gradients' path steps. With resnet-cpu's 66 M multiply-adds that is a big step: the
# check of all six methods took 8.8 s on 2 threads against 11.7 s on 1 (idle 2-core EPYC); the seed's 1.3 s
# is the same on either, and stays on 1.
MAP_BATCH = 32


def _maps(model: ConvNet, explainers: Mapping[str, Explainer], target: int) -> dict[str, np.ndarray]:
    return {m: explain(model, target) for m, explain in explainers.items()}


def predicted_class(model: ConvNet, image: torch.Tensor) -> int:
    with eval_mode(model), torch.no_grad():
        return int(model(model_input(model, image)[:1]).argmax(1))


def cascading_randomisation(model: ConvNet, image: torch.Tensor, explainers: Mapping[str, Explainer],
                            target: int | None = None, seed: int = 0, draws: int = 3, control: bool = True,
                            names: Mapping[str, str] | None = None) -> RandomisationCheck:
    """Re-draw each explainer's map of `image` as the layers with weights are randomised from the top, one
    more at each step, for the class the learned model predicts (or `target`). control: add the edge
    detector, which ignores the weights (it must fail). names: what each explainer is called.

    ρ at each step is the mean over `draws` random draws of the weights (one draw's ρ wanders by ±0.3
    for Grad-CAM on the seed); the maps kept are the first draw's. Pixels the model cannot see at all
    (models.seen_pixels) are left out of ρ: they are 0 in every gradient map of every network of that
    shape, and would make any two maps agree (on the seed they lift saliency's ρ from 0.3 to 0.55)."""
    explainers = dict(explainers)
    if control:
        explainers.setdefault(CONTROL, lambda _model, _target: edge_map(image))
    named = {**(names or {}), CONTROL: CONTROL_NAME}
    target = predicted_class(model, image) if target is None else target
    layers, seen = parameter_layers(model), seen_pixels(model)
    with threads(step_threads(MAP_BATCH * model.mult_adds())):   # engine.step_threads
        first = _maps(model, explainers, target)
        maps, rho = {m: [first[m]] for m in explainers}, {m: [1.0] for m in explainers}
        for n in range(1, len(layers) + 1):
            drawn = [_maps(randomised(model, layers[:n], seed + d), explainers, target) for d in range(draws)]
            for m in explainers:
                maps[m].append(drawn[0][m])
                rho[m].append(float(np.mean([spearman(first[m][seen], d[m][seen]) for d in drawn])))
    steps = ["learned weights"] + [model.infos[i].name for i in layers]
    checks = [MethodCheck(m, maps[m], rho[m], named.get(m, m)) for m in explainers]
    return RandomisationCheck(target, steps, checks, seed, draws)
