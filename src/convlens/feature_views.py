"""What each filter looks for, built once for `convlens features`, the report and the explorer: a
conv layer's top test crops beside its optimised inputs, and the class view. Text, plain values
and PNG bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import explain_figures, figures
from .datasets import Dataset
from .features import Ascent, Optimised, TopCrops, class_views, maximise_filters, top_crops
from .models import ConvNet, conv_layers


def as_pixels(a: np.ndarray) -> np.ndarray:
    """Images (..., C, H, W), uint8 or [0, 1] floats, as a figure draws them: (..., H, W) for one channel,
    (..., H, W, 3) for colour, floats in [0, 1]."""
    a = a.astype(np.float32) / 255 if a.dtype == np.uint8 else a.astype(np.float32)
    a = np.moveaxis(a, -3, -1)
    return a[..., 0] if a.shape[-1] == 1 else a


@dataclass
class LayerFeatures:
    """One conv layer: each filter's top test crops and its optimised input."""
    top: TopCrops
    optimised: Optimised

    @property
    def layer(self) -> str:
        return self.top.layer

    @property
    def at_least_best(self) -> np.ndarray:
        """bool per filter: its optimised input excites it at least as much as its best crop. To 1e-5: where the
        optimum is a pattern the test set holds (an all-white patch), the two are the same number summed in
        another order (the scan runs channels-last)."""
        return self.ratio >= 1 - 1e-5

    @property
    def ratio(self) -> np.ndarray:
        """Each filter's activation on its optimised input over that on its best crop (inf: never fires)."""
        best = self.top.values[:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(best > 0, self.optimised.values / np.where(best > 0, best, 1), np.inf)

    def text(self, n_images: int) -> list[str]:
        r, k = self.ratio, len(self.ratio)
        dead = int((self.top.values[:, 0] <= 0).sum())
        finite = r[np.isfinite(r)]
        ratio = f" (activation ratio min {finite.min():.2f}, median {np.median(finite):.2f})" if len(finite) else ""
        lines = [f"{self.layer}: {k} filters, each with its top {self.top.indices.shape[1]} of {n_images:,} test "
                 f"images (cropped to its {self._side()} receptive field) and an input optimised to excite it",
                 f"  the optimised input excites the filter at least as much as its best test crop for "
                 f"{int(self.at_least_best.sum())} of {k} filters{ratio}"]
        if dead:
            lines.append(f"  {dead} filter(s) never fire on the test images: "
                         + ", ".join(map(str, np.flatnonzero(self.top.values[:, 0] <= 0)[:20])))
        return lines

    def _side(self) -> str:
        top, left, bottom, right = self.optimised.box
        return f"{bottom - top + 1}×{right - left + 1}"

    def filter_lines(self, classes: Sequence[str], labels) -> list[str]:
        """One line per filter: its best test images with their classes, and the activations."""
        out = []
        for f in range(len(self.top.indices)):
            best = ", ".join(f"#{int(i)} {classes[int(labels[int(i)])]}" for i in self.top.indices[f][:3])
            out.append(f"  filter {f:3d}: best crop {self.top.values[f, 0]:.3f}, optimised input "
                       f"{self.optimised.values[f]:.3f}; top test images {best}, …")
        return out

    def png(self, title: str | None = None) -> bytes:
        labels = [f"{f}: {self.top.values[f, 0]:.2f} | {self.optimised.values[f]:.2f}"
                  for f in range(len(self.top.indices))]
        return explain_figures.feature_grid(
            as_pixels(self.top.crops), as_pixels(self.optimised.crops), labels,
            title or f"{self.layer}: what each filter looks for: its top {self.top.indices.shape[1]} test crops "
                     f"({self._side()} receptive field), and beside them an input optimised to excite it\n"
                     f"label: filter: activation on the best crop | on the optimised input")


def filter_dict(top: TopCrops, f: int, optimised: Optimised, classes: Sequence[str], labels) -> dict:
    """One filter for the explorer: its top crops (uint8, C×r×r) with their test images and classes, and the
    input optimised for it (`optimised` holds that filter: floats in [0, 1])."""
    j = optimised.filters.index(f)
    top_, left, bottom, right = optimised.box
    return {"layer": top.layer, "filter": f, "box_size": f"{bottom - top_ + 1}×{right - left + 1}",
            "crops": [{"index": int(i), "class": classes[int(labels[int(i)])], "activation": float(v),
                       "position": [int(p) for p in pos], "pixels": c.tolist()}
                      for i, v, pos, c in zip(top.indices[f], top.values[f], top.positions[f], top.crops[f])],
            "optimised": {"activation": float(optimised.values[j]), "pixels": optimised.crops[j].round(4).tolist()}}


def layer_features(model: ConvNet, data: Dataset, layer: int | str | None = None,
                   ascent: Ascent = Ascent()) -> LayerFeatures:
    """A conv layer's top test crops and optimised inputs, for every filter."""
    return LayerFeatures(top_crops(model, data.test_x, layer), maximise_filters(model, layer, ascent=ascent))


def all_layer_features(model: ConvNet, data: Dataset, ascent: Ascent = Ascent()) -> list[LayerFeatures]:
    """layer_features of every conv layer and residual block, in order."""
    return [layer_features(model, data, info.name, ascent) for _, info in conv_layers(model, blocks=True)]


# A class's logit over the whole image rewards high-frequency noise (every pixel can push it a little):
# the smoothness penalty stays on to the end (no polishing) and is 15× a filter's; ±2 px of jitter.
# 160 steps of 2 copies looked the same as 256 of 4 on the seed (the same classes at p ≥ 0.8), in 2.0 s
# instead of 5.9: the report builds it after every training.
CLASS_VIEW = Ascent(steps=160, copies=2, jitter=2, tv=0.3, polish=0.0)


def class_view(model: ConvNet, classes: Sequence[str], ascent: Ascent = CLASS_VIEW) -> tuple[list[str], bytes]:
    """An input optimised for each class's logit, as one gallery: (caption lines, PNG)."""
    images, probs = class_views(model, ascent)
    captions = [f"{c}\np = {p:.2f}" for c, p in zip(classes, probs)]
    return captions, figures.gallery(as_pixels(images), captions,
                                     "class views: an input optimised to raise each class's score "
                                     "(jitter, scale and a smoothness penalty; seeded)", cols=min(10, len(classes)))
