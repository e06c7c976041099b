"""What every picture shares: one look, one renderer, plain NumPy arrays in and PNG bytes out.

Matplotlib's object API (Figure + FigureCanvasAgg) is used instead of pyplot: no global figure
registry to leak into or close, no GUI backend to pick, safe in a server thread. figures.py
(pictures of images, maps and kernels) and charts.py (curves, confusion matrices, bars) draw
with these pieces; nothing here knows about torch or models.

The same colours mean the same thing in every picture:
    images        'gray'     0 = black, as the network sees it
    signed values 'RdBu_r'   centred on 0 (red +, blue -): kernels, raw convolution responses
    activations   'viridis'  feature maps after the activation
    importance    'jet'      saliency and Grad-CAM, drawn over the grayscale image
    counts        'Blues'    confusion matrix
The explorer's page draws its interactive maps with the same colour maps (COLORMAPS, served
as lookup tables by the server).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

DPI = 110                     # a 28×28 image drawn 1 inch wide gets ~4 screen pixels per pixel
IMAGE_CMAP, SIGNED_CMAP, ACTIVATION_CMAP = "gray", "RdBu_r", "viridis"
HEAT_CMAP, COUNT_CMAP = "jet", "Blues"
HIGHLIGHT = "#ffd400"         # yellow with a black outline reads on gray, red, blue and white
TITLE, LABEL, SMALL = 11, 9, 7  # font sizes, points
OUTLINED = [patheffects.withStroke(linewidth=3.5, foreground="black")]
COLORMAPS = {"image": IMAGE_CMAP, "signed": SIGNED_CMAP, "activation": ACTIVATION_CMAP, "heat": HEAT_CMAP,
             "counts": COUNT_CMAP}


# ---------------------------------------------------------------------------
# Shared pieces

def render(fig: Figure) -> bytes:
    """The figure as PNG bytes trimmed to its content; the same input gives the same bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1,
                facecolor="white", metadata={"Software": None})
    fig.clear()  # the object API keeps no registry; clearing frees the artists at once
    return buf.getvalue()


def as_array(a, ndim: int, name: str) -> np.ndarray:
    """a as float64 with exactly ndim dimensions; NaN and ±inf drawn as 0 rather than failing."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)


def shape_label(a: np.ndarray) -> str:
    return "×".join(map(str, a.shape))


def value_range(a: np.ndarray) -> tuple[float, float]:
    """(min, max) of a, widened to (v, v + 1) when constant so a colour map never divides by 0."""
    if a.size == 0:
        return 0.0, 1.0
    lo, hi = float(a.min()), float(a.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def image_range(original, a: np.ndarray) -> tuple[float, float]:
    """Display range of an image: 0..255 for uint8, 0..1 for values in [0, 1], else min..max."""
    if np.asarray(original).dtype == np.uint8:
        return 0.0, 255.0
    if a.size and a.min() >= 0.0 and a.max() <= 1.0:
        return 0.0, 1.0
    return value_range(a)


def symmetric_limit(*arrays) -> float:
    """max |value| over the arrays (1 when all are 0): the ± limit of a colour map centred on 0."""
    m = max((float(np.abs(a).max()) for a in arrays if a is not None and a.size), default=0.0)
    return m if m > 0 else 1.0


def unit(a: np.ndarray) -> np.ndarray:
    """a scaled to [0, 1] by its own min..max (all zeros when constant)."""
    lo, hi = value_range(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def mark(ax, row: float, col: float, height: float, width: float) -> None:
    """An outlined yellow box over cells [row, row + height) × [col, col + width)."""
    box = Rectangle((col - 0.5, row - 0.5), width, height, fill=False, edgecolor=HIGHLIGHT, linewidth=2)
    box.set_path_effects(OUTLINED)
    ax.add_patch(box)


def empty(title: str, message: str) -> bytes:
    fig = Figure(figsize=(4, 1.2))
    fig.suptitle(title, fontsize=TITLE)
    fig.text(0.5, 0.4, message, ha="center", va="center", fontsize=LABEL, color="#555555")
    return render(fig)


def number(v: float) -> str:
    """Kernel weights as the seed writes them: integers plainly, others to 2 decimals."""
    return str(int(v)) if float(v).is_integer() else f"{v:.2f}"


def _mosaic(tiles: np.ndarray, cols: int, gap: int, top: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Tiles (N, h, w) laid out `cols` per row on a NaN background (drawn blank), `gap` pixels
    apart with `top` pixels above each row for labels; also the (row, col) of each tile's corner."""
    n, h, w = tiles.shape
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + top), cols * (w + gap) - gap), np.nan)
    corners = []
    for i, tile in enumerate(tiles):
        r0, c0 = (i // cols) * (h + top) + top, (i % cols) * (w + gap)
        out[r0:r0 + h, c0:c0 + w] = tile
        corners.append((r0, c0))
    return out, corners


def tiles_figure(tiles: np.ndarray, cols: int, tile_in: float, cmap: str, vmin: float, vmax: float,
                  title: str, labels: Sequence[str] | None, colorbar: str | None, gap_in: float = 0.08):
    """One image of all tiles (one imshow is ~50× faster than an axes per tile at 512 tiles);
    labels go in the strip above each tile. Returns (figure, axes, each tile's top-left corner)."""
    n, h, w = tiles.shape
    cols = max(1, min(cols, n))
    px_in = tile_in / max(h, w)                       # inches per array pixel
    gap = max(1, math.ceil(gap_in / px_in))
    top = max(1, math.ceil(0.17 / px_in)) if labels else gap
    mosaic, corners = _mosaic(tiles, cols, gap, top)
    fig = Figure(figsize=(mosaic.shape[1] * px_in + (1.0 if colorbar else 0.2), mosaic.shape[0] * px_in + 0.9),
                 layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(mosaic, cmap=colormaps[cmap].with_extremes(bad="white"), vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    ax.axis("off")
    ax.set_title(title, fontsize=TITLE)
    for label, (r0, c0) in zip(labels or (), corners):
        ax.text(c0 - 0.5, r0 - 0.5 - 0.02 / px_in, label, fontsize=SMALL, ha="left", va="bottom", color="#333333")
    if colorbar:
        fig.colorbar(im, ax=ax, shrink=min(0.8, max(0.3, 3.0 / max(1.0, mosaic.shape[0] * px_in))),
                     label=colorbar)
    return fig, ax, corners


def overlay(ax, image: np.ndarray, image_range, heat: np.ndarray, smooth: bool) -> bool:
    """heat (scaled to 0..1) in HEAT_CMAP over the grayscale image; low values stay see-through,
    so the garment remains visible where the model does not look. False when heat is flat
    (nothing is drawn over the image then: a uniform tint would suggest a signal)."""
    h, w = image.shape
    ax.imshow(image, cmap=IMAGE_CMAP, vmin=image_range[0], vmax=image_range[1], interpolation="nearest")
    bare(ax)
    if heat.size == 0 or heat.min() == heat.max():
        return False
    scaled = unit(heat)
    ax.imshow(scaled, cmap=HEAT_CMAP, vmin=0.0, vmax=1.0, alpha=0.2 + 0.6 * scaled,
              extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear" if smooth else "nearest")
    return True


def overlay_rgb(image, heat) -> np.ndarray:
    """float (H, W, 3) in [0, 1]: heat (scaled to 0..1) in the heat colour map over the grayscale image,
    low values see-through, as figures.overlay draws it (for galleries, which show plain pixels)."""
    img, h = as_array(image, 2, "image"), as_array(heat, 2, "heat")
    lo, hi = image_range(image, img)
    gray = np.repeat(np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1)[..., None], 3, axis=2)
    if h.size == 0 or h.min() == h.max():
        return gray
    s = unit(h)
    alpha = (0.2 + 0.6 * s)[..., None]
    return (1 - alpha) * gray + alpha * colormaps[HEAT_CMAP](s)[..., :3]


def side_by_side(tiles: Sequence[np.ndarray], gap: int = 1) -> np.ndarray:
    """RGB tiles (H, W, 3) of one height in a row, `gap` white pixels apart."""
    h = tiles[0].shape[0]
    white = np.ones((h, gap, 3))
    parts = [p for t in tiles for p in (t, white)][:-1]
    return np.concatenate(parts, axis=1)


def colormap_table(name: str) -> np.ndarray:
    """A colour map as a (256, 3) uint8 lookup table: the page colours its canvases with it."""
    return colormaps[name](np.linspace(0.0, 1.0, 256), bytes=True)[:, :3]
