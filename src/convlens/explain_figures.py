"""Pictures of checked explanations and of what filters look for: arrays in, PNG bytes out
(plotting.py's look, figures.py's heat overlay). No torch here.

- attribution_panel: one image's maps by every method, side by side
- sanity_strip: the randomisation check, a row per method, a column per step, ρ on every tile
- feature_grid: per filter, its top dataset crops as a 3×3 block beside the optimised input
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .plotting import HEAT_CMAP, IMAGE_CMAP, LABEL, SMALL, TITLE, as_array, bare, empty, image_range, overlay, render

VERDICT_COLOURS = ("#067647", "#b54708", "#b42318")      # passed, partly, failed


def _heading(top: Sequence[tuple[str, float]], true_label: str | None) -> str:
    guess = "  ·  ".join(f"{name} {p:.1%}" for name, p in list(top)[:3])
    heading = f"prediction: {guess}" if guess else "prediction: (none)"
    if true_label is not None:
        heading += f"\ntrue class: {true_label} ({'correct' if top and top[0][0] == true_label else 'wrong'})"
    return heading


def attribution_panel(image, maps: Sequence[tuple[str, np.ndarray]], top: Sequence[tuple[str, float]],
                      true_label: str | None = None, note: str = "") -> bytes:
    """The image, then each (title, map in [0, 1]) drawn over it; the top classes in the heading and a
    note (the baseline, IG's completeness) under it."""
    img = as_array(image, 2, "image")
    rng = image_range(image, img)
    n = len(maps) + 1
    fig = Figure(figsize=(2.05 * n + 0.9, 2.9 + (0.25 if note else 0)), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    axes[0].imshow(img, cmap=IMAGE_CMAP, vmin=rng[0], vmax=rng[1], interpolation="nearest")
    axes[0].set_title("input", fontsize=LABEL)
    bare(axes[0])
    for ax, (title, heat) in zip(axes[1:], maps):
        heat = as_array(heat, 2, title)
        drawn = overlay(ax, img, rng, heat, smooth=False)
        ax.set_title(title + ("" if drawn else "\n(flat: no signal)"), fontsize=LABEL)
    fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), HEAT_CMAP), ax=list(axes[1:]) or axes[0], shrink=0.75,
                 label="|attribution|, each map to 0..1")
    fig.suptitle(_heading(top, true_label), fontsize=TITLE)
    if note:
        fig.supxlabel(note, fontsize=SMALL)
    return render(fig)


def sanity_strip(image, titles: Sequence[str],
                 rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[float], str, int]], title: str) -> bytes:
    """A randomisation check: a row per (method, maps per step, ρ per step, verdict, tier), a column per
    step titled by `titles` (the learned weights first), the verdict last, coloured by its tier: 0 passed
    (green), 1 partly (amber), 2 failed (red)."""
    img = as_array(image, 2, "image")
    rng = image_range(image, img)
    if not rows or not titles:
        return empty(title, "no maps")
    cols = len(titles)
    fig = Figure(figsize=(1.45 * cols + 3.2, 1.5 * len(rows) + 1.0), layout="constrained")
    grid = fig.add_gridspec(len(rows), cols + 1, width_ratios=[1] * cols + [2.0])
    for r, (name, maps, rho, verdict, tier) in enumerate(rows):
        for c in range(cols):
            ax = fig.add_subplot(grid[r, c])
            overlay(ax, img, rng, as_array(maps[c], 2, name), smooth=False)
            ax.set_title(("" if r else "\n".join(_wrap(titles[c], 18)) + "\n")
                         + (name if c == 0 else f"ρ {rho[c]:.2f}"), fontsize=SMALL)
        ax = fig.add_subplot(grid[r, cols])
        ax.axis("off")
        ax.text(0.0, 0.5, "\n".join(_wrap(verdict, 30)), fontsize=LABEL, va="center", ha="left",
                color=VERDICT_COLOURS[tier], fontweight="bold" if tier else "normal")
    fig.suptitle(title, fontsize=TITLE)
    return render(fig)


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def _cell(crops: np.ndarray, best: np.ndarray, gap: int) -> np.ndarray:
    """One filter's cell: k crops (k, h, w, ch) as a square block, the optimised crop (h, w, ch) beside it,
    enlarged to the block's height; NaN between them (drawn white)."""
    k, h, w, ch = crops.shape
    side = math.ceil(math.sqrt(k))
    block = np.full((side * (h + gap) - gap, side * (w + gap) - gap, ch), np.nan)
    for j, c in enumerate(crops):
        r0, c0 = (j // side) * (h + gap), (j % side) * (w + gap)
        block[r0:r0 + h, c0:c0 + w] = c
    big = np.kron(best, np.ones((side, side, 1)))                          # (side·h, side·w, ch)
    pad = np.full((block.shape[0], big.shape[1], ch), np.nan)
    pad[:big.shape[0]] = big[:block.shape[0]]
    return np.concatenate([block, np.full((block.shape[0], 2 * gap, ch), np.nan), pad], axis=1)


def feature_grid(crops, optimised, labels: Sequence[str], title: str, cols: int = 8) -> bytes:
    """What each filter of a layer looks for: per filter, its top dataset crops (K, k, h, w) or colour
    (K, k, h, w, 3) in [0, 1] as a block, and beside it (enlarged) the optimised input (K, h, w[, 3]);
    a label above each cell. One image for all cells (fast at 64 filters)."""
    colour = np.ndim(crops) == 5
    c = as_array(crops, 5 if colour else 4, "crops")
    o = as_array(optimised, 4 if colour else 3, "optimised")
    if not colour:
        c, o = c[..., None], o[..., None]
    if len(c) == 0:
        return empty(title, "no filters")
    h = c.shape[2]
    gap = max(1, h // 8)
    cells = [_cell(c[f], o[f], gap) for f in range(len(c))]
    ch_, cw = cells[0].shape[:2]
    cols = max(1, min(cols, len(cells)))
    rows = math.ceil(len(cells) / cols)
    label_h, sep = max(2, round(ch_ * 0.28)), max(2, round(cw * 0.08))
    mosaic = np.full((rows * (ch_ + label_h), cols * (cw + sep) - sep, c.shape[-1]), np.nan)
    corners = []
    for i, cell in enumerate(cells):
        r0, c0 = (i // cols) * (ch_ + label_h) + label_h, (i % cols) * (cw + sep)
        mosaic[r0:r0 + ch_, c0:c0 + cw] = cell
        corners.append((r0, c0))
    px_in = 1.6 / cw                                                       # a cell is 1.6 inches wide
    fig = Figure(figsize=(mosaic.shape[1] * px_in + 0.2, mosaic.shape[0] * px_in + 0.8), layout="constrained")
    ax = fig.add_subplot()
    if colour:
        ax.imshow(np.where(np.isnan(mosaic), 1.0, np.clip(mosaic, 0, 1)), interpolation="nearest")
    else:
        ax.imshow(mosaic[..., 0], cmap=colormaps[IMAGE_CMAP].with_extremes(bad="white"), vmin=0, vmax=1,
                  interpolation="nearest")
    ax.axis("off")
    ax.set_title(title, fontsize=TITLE)
    for label, (r0, c0) in zip(labels, corners):
        ax.text(c0 - 0.5, r0 - 0.5 - 0.02 / px_in, label, fontsize=SMALL, ha="left", va="bottom", color="#333333")
    return render(fig)
