"""Checked explanations, built once for `convlens explain`, the report and the explorer: every
attribution method side by side, the randomisation sanity check with its verdicts, and the
deletion curves with a faithfulness score per method. Text, plain values and PNG bytes; nothing
here parses arguments or speaks HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from . import charts, explain_figures
from .attribution import METHODS, IntegratedGradients, attribution_map, integrated_gradients, top_k
from .baselines import BASELINES, DEFAULT_BASELINE
from .engine import display_image
from .faithfulness import DELETION_FILL, DeletionCurves, deletion_curves
from .models import ConvNet
from .sanity import (
    CONTROL,
    TRUSTED_BELOW,
    Explainer,
    RandomisationCheck,
    cascading_randomisation,
)

SANITY_ABOUT = ("A map that explains the model must change when the weights it explains are destroyed (Adebayo et al. "
                "2018). The check proves only that: a map that passes depends on the learned weights; it does not "
                "prove the map shows what the model uses (the deletion curves measure that) or that a reader "
                "sees it rightly. The edge detector is a control that ignores the weights: it must fail, and does.")


class Looked(Protocol):
    """The image a verb looks at (views.Looked, which this floor's views need not import)."""
    image: torch.Tensor        # uint8 (C, H, W)
    label: str                 # "test image 9 (Sneaker)", or a file's name
    true: int | None           # the class of a test image


def _what(looked: Looked, classes: Sequence[str], target: int) -> str:
    return f"{looked.label}, explaining {classes[target]}"


# ---------------------------------------------------------------------------
# Every method, side by side

@dataclass
class MethodMaps:
    """Each method's map of one image, for one class."""
    top: list[tuple[str, float]]
    target: int
    maps: dict[str, np.ndarray]          # method -> (H, W) in [0, 1]
    ig: IntegratedGradients | None       # Integrated Gradients' own numbers, where it was asked for
    baseline: str

    def text(self, looked: Looked, classes: Sequence[str]) -> list[str]:
        lines = [f"{looked.label}: " + ", ".join(f"{c} {p:.1%}" for c, p in self.top),
                 f"{len(self.maps)} maps of {classes[self.target]}: " + ", ".join(METHODS[m] for m in self.maps)]
        if self.ig is not None:
            lines.append(self.ig_line())
        return lines

    def ig_line(self) -> str:
        ig = self.ig
        return (f"Integrated Gradients from the {ig.baseline} baseline ({BASELINES[ig.baseline].split(':')[0]}): "
                f"Σ attributions {ig.attributions.sum():.3f} = f(x) − f(baseline) {ig.output - ig.baseline_output:.3f}"
                f" within {ig.completeness_error:.2%} ({ig.steps} steps)")

    def png(self, looked: Looked, classes: Sequence[str]) -> bytes:
        note = f"baseline for Integrated Gradients and Occlusion: {self.baseline}"
        if self.ig is not None:
            note += f"  ·  IG completeness within {self.ig.completeness_error:.2%}"
        return explain_figures.attribution_panel(
            display_image(looked.image), [(METHODS[m], a) for m, a in self.maps.items()], self.top,
            classes[looked.true] if looked.true is not None else None, note)


def method_maps(model: ConvNet, looked: Looked, classes: Sequence[str], methods: Sequence[str],
                baseline: str = DEFAULT_BASELINE, mean: Sequence[float] | None = None,
                target: int | None = None) -> MethodMaps:
    """Every method's map of the image, for the predicted class (or `target`)."""
    top = top_k(model, looked.image, classes, 3)
    target = classes.index(top[0][0]) if target is None else target
    ig = integrated_gradients(model, looked.image, target, baseline, mean) if "ig" in methods else None
    maps = {m: ig.map if m == "ig" else attribution_map(model, looked.image, m, target, baseline, mean)
            for m in methods}
    return MethodMaps(top, target, maps, ig, baseline)


# ---------------------------------------------------------------------------
# The sanity check

@dataclass
class CheckView:
    check: RandomisationCheck
    label: str

    def text(self, classes: Sequence[str]) -> list[str]:
        c = self.check
        how = (f"as the layers are re-drawn from the top (mean of {c.draws} draws)" if c.kind.startswith("cascading")
               else f"against the map from the same network {c.titles[-1]}")
        width, cols = max(len(m.name) for m in c.methods), c.titles[1:]
        wide = [max(6, len(h)) for h in cols]
        lines = [f"Sanity check of {self.label}: {c.kind} (Adebayo et al. 2018).",
                 f"Spearman ρ of each map with its map from the learned weights, {how}; below {TRUSTED_BELOW} at "
                 f"the end: it depends on the weights.",
                 f"  {'map':{width}}  " + "  ".join(f"{h:>{n}}" for h, n in zip(cols, wide)) + "  verdict"]
        for m in c.methods:
            rho = "  ".join(f"{r:>{n}.2f}" for r, n in zip(m.rho[1:], wide))
            lines.append(f"  {m.name:{width}}  {rho}  {m.verdict}")
        return lines

    def png(self, image) -> bytes:
        c = self.check
        rows = [(m.name, m.maps, m.rho, m.verdict, m.tier) for m in c.methods]
        how = f"mean of {c.draws} random draws" if c.draws > 1 else c.kind
        return explain_figures.sanity_strip(display_image(image), c.titles, rows,
                                            f"sanity check: {self.label}\nρ = Spearman rank correlation with the "
                                            f"map from the learned weights ({how})")

    def to_dict(self) -> dict:
        c = self.check
        return {"kind": c.kind, "target": c.target, "steps": c.steps, "titles": c.titles, "draws": c.draws,
                "trusted_below": TRUSTED_BELOW,
                "methods": [{"method": m.method, "name": m.name, "rho": [round(r, 4) for r in m.rho],
                             "verdict": m.verdict, "passed": m.passed, "tier": m.tier,
                             "control": m.method == CONTROL}
                            for m in c.methods]}


def explainers(image: torch.Tensor, methods: Sequence[str], baseline: str = DEFAULT_BASELINE,
               mean: Sequence[float] | None = None) -> dict[str, Explainer]:
    """attribution's methods, by name, as the sanity check's map makers for one image."""
    def explainer(method: str) -> Explainer:
        return lambda model, target: attribution_map(model, image, method, target, baseline, mean)
    return {m: explainer(m) for m in methods}


def randomisation_check(model: ConvNet, image: torch.Tensor, methods: Sequence[str], target: int | None = None,
                        baseline: str = DEFAULT_BASELINE, mean: Sequence[float] | None = None, seed: int = 0,
                        draws: int = 3) -> RandomisationCheck:
    """The cascading randomisation check (sanity.py) of attribution's methods named in `methods`, with the
    edge-detector control."""
    return cascading_randomisation(model, image, explainers(image, methods, baseline, mean), target, seed, draws,
                                   names=METHODS)


def sanity_check(model: ConvNet, looked: Looked, classes: Sequence[str], methods: Sequence[str],
                 baseline: str = DEFAULT_BASELINE, mean: Sequence[float] | None = None, seed: int = 0,
                 target: int | None = None) -> CheckView:
    """The cascading randomisation check of each method's map of the image, with the edge-detector control."""
    check = randomisation_check(model, looked.image, methods, target, baseline, mean, seed)
    return CheckView(check, _what(looked, classes, check.target))


# ---------------------------------------------------------------------------
# Faithfulness: deletion curves

@dataclass
class DeletionView:
    curves: DeletionCurves
    label: str

    def text(self) -> list[str]:
        scores = sorted(self.curves.scores.items(), key=lambda kv: -kv[1])
        width = max(len(METHODS[m]) for m, _ in scores)
        return [f"Deletion curves of {self.label}: pixels removed most important first (replaced by the "
                f"{self.curves.fill} baseline), against random orders; score = area between the random curve "
                f"and the map's (> 0: the map finds what the model uses faster than chance)."] + \
               [f"  {METHODS[m]:{width}}  {s:+.3f}" for m, s in scores]

    def png(self, classes: Sequence[str]) -> bytes:
        d = self.curves
        scores = d.scores
        return charts.deletion_curves(d.fractions, [(METHODS[m], c, scores[m]) for m, c in d.curves.items()],
                                      d.random, classes[d.target], f"deletion curves: {self.label}")

    def to_dict(self) -> dict:
        d = self.curves
        return {"fill": d.fill, "target": d.target, "fractions": d.fractions.round(4).tolist(),
                "random": d.random.round(4).tolist(),
                "methods": [{"method": m, "name": METHODS[m], "curve": c.round(4).tolist(),
                             "score": round(d.scores[m], 4)} for m, c in d.curves.items()]}


def deletion(model: ConvNet, looked: Looked, classes: Sequence[str], maps: MethodMaps,
             fill: str = DELETION_FILL, mean: Sequence[float] | None = None) -> DeletionView:
    """The deletion curve of each map in `maps`, for the class they explain."""
    curves = deletion_curves(model, looked.image, maps.maps, maps.target, fill, mean)
    return DeletionView(curves, _what(looked, classes, maps.target))


# ---------------------------------------------------------------------------
# All three for one image: what the report and the explorer show

@dataclass
class Checked:
    maps: MethodMaps
    check: CheckView
    deletion: DeletionView


def checked(model: ConvNet, looked: Looked, classes: Sequence[str], methods: Sequence[str],
            baseline: str = DEFAULT_BASELINE, mean: Sequence[float] | None = None) -> Checked:
    """The methods' maps of one image, their sanity check and their deletion curves."""
    maps = method_maps(model, looked, classes, methods, baseline, mean)
    return Checked(maps, sanity_check(model, looked, classes, methods, baseline, mean, target=maps.target),
                   deletion(model, looked, classes, maps, mean=mean))

