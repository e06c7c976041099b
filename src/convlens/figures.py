"""Every picture convlens shows, drawn once: plain NumPy arrays in, PNG bytes out.

The CLI writes these bytes to files, the report embeds them as data: URLs and the web page
serves them, so one function per picture keeps the three identical. Nothing here knows about
torch or models: callers pass arrays and numbers. Matplotlib's object API (Figure +
FigureCanvasAgg) is used instead of pyplot: no global figure registry to leak into or close,
no GUI backend to pick, safe in a server thread.

The same colours mean the same thing in every picture:
    images        'gray'     0 = black, as the network sees it
    signed values 'RdBu_r'   centred on 0 (red +, blue -): kernels, raw convolution responses
    activations   'viridis'  feature maps after the activation
    importance    'jet'      saliency and Grad-CAM, drawn over the grayscale image
    counts        'Blues'    confusion matrix
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from PIL import Image

DPI = 110                     # a 28×28 image drawn 1 inch wide gets ~4 screen pixels per pixel
IMAGE_CMAP, SIGNED_CMAP, ACTIVATION_CMAP = "gray", "RdBu_r", "viridis"
HEAT_CMAP, COUNT_CMAP = "jet", "Blues"
HIGHLIGHT = "#ffd400"         # yellow with a black outline reads on gray, red, blue and white
TITLE, LABEL, SMALL = 11, 9, 7  # font sizes, points
OUTLINED = [patheffects.withStroke(linewidth=3.5, foreground="black")]


# ---------------------------------------------------------------------------
# Shared pieces

def _render(fig: Figure) -> bytes:
    """The figure as PNG bytes trimmed to its content; the same input gives the same bytes."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1,
                facecolor="white", metadata={"Software": None})
    fig.clear()  # the object API keeps no registry; clearing frees the artists at once
    return buf.getvalue()


def _array(a, ndim: int, name: str) -> np.ndarray:
    """a as float64 with exactly ndim dimensions; NaN and ±inf drawn as 0 rather than failing."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {arr.shape}")
    return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)


def _shape(a: np.ndarray) -> str:
    return "×".join(map(str, a.shape))


def _value_range(a: np.ndarray) -> tuple[float, float]:
    """(min, max) of a, widened to (v, v + 1) when constant so a colour map never divides by 0."""
    if a.size == 0:
        return 0.0, 1.0
    lo, hi = float(a.min()), float(a.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _image_range(original, a: np.ndarray) -> tuple[float, float]:
    """Display range of an image: 0..255 for uint8, 0..1 for values in [0, 1], else min..max."""
    if np.asarray(original).dtype == np.uint8:
        return 0.0, 255.0
    if a.size and a.min() >= 0.0 and a.max() <= 1.0:
        return 0.0, 1.0
    return _value_range(a)


def _symmetric_limit(*arrays) -> float:
    """max |value| over the arrays (1 when all are 0): the ± limit of a colour map centred on 0."""
    m = max((float(np.abs(a).max()) for a in arrays if a is not None and a.size), default=0.0)
    return m if m > 0 else 1.0


def _unit(a: np.ndarray) -> np.ndarray:
    """a scaled to [0, 1] by its own min..max (all zeros when constant)."""
    lo, hi = _value_range(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _mark(ax, row: float, col: float, height: float, width: float) -> None:
    """An outlined yellow box over cells [row, row + height) × [col, col + width)."""
    box = Rectangle((col - 0.5, row - 0.5), width, height, fill=False, edgecolor=HIGHLIGHT, linewidth=2)
    box.set_path_effects(OUTLINED)
    ax.add_patch(box)


def _empty(title: str, message: str) -> bytes:
    fig = Figure(figsize=(4, 1.2))
    fig.suptitle(title, fontsize=TITLE)
    fig.text(0.5, 0.4, message, ha="center", va="center", fontsize=LABEL, color="#555555")
    return _render(fig)


def _number(v: float) -> str:
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


def _tiles_figure(tiles: np.ndarray, cols: int, tile_in: float, cmap: str, vmin: float, vmax: float,
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


# ---------------------------------------------------------------------------
# The pictures

def png_image(arr, scale: int = 4, cmap: str = IMAGE_CMAP, vmin: float | None = None,
              vmax: float | None = None) -> bytes:
    """One 2-D array as a small PNG, each value a scale×scale block (nearest neighbour): thumbnails.
    Range: vmin/vmax, else 0..255 for uint8, 0..1 for values inside [0, 1], else min..max."""
    a = _array(arr, 2, "png_image")
    if a.size == 0 or scale < 1:
        raise ValueError(f"png_image: need a non-empty array and scale >= 1, got shape {a.shape}, scale {scale}")
    lo, hi = _image_range(arr, a)
    lo, hi = lo if vmin is None else vmin, hi if vmax is None else vmax
    unit = np.clip((a - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(a)
    if cmap == "gray":
        pixels = np.round(unit * 255).astype(np.uint8)                 # (H, W), PNG mode L
    else:
        pixels = colormaps[cmap](unit, bytes=True)[..., :3]            # (H, W, 3)
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _draw_kernel(ax, kernel: np.ndarray) -> None:
    """The kernel as a grid of its numbers on diverging colours centred on 0."""
    m = _symmetric_limit(kernel)
    ax.imshow(kernel, cmap=SIGNED_CMAP, vmin=-m, vmax=m, interpolation="nearest")
    _bare(ax)
    k = max(kernel.shape)
    if k <= 9:                                        # beyond 9×9 the numbers stop being readable
        size = {1: 16, 2: 14, 3: 13, 4: 11, 5: 10}.get(k, 7)
        for (r, c), v in np.ndenumerate(kernel):
            ax.text(c, r, _number(v), ha="center", va="center", fontsize=size,
                    color="white" if abs(v) > 0.6 * m else "black")


def convolution_lab(image, kernel, kernel_name: str, result, pooled=None, shapes_text: str = "",
                    pixel: tuple[int, int] | None = None, patch_origin: tuple[int, int] | None = None,
                    arithmetic_text: str | None = None, pool_size: int | None = None) -> bytes:
    """The convolution lab: input, kernel (numbers), signed result, max-pooled result.

    pixel (row, col) in result marks that pixel and the k×k input patch it came from (patch_origin,
    default = pixel: stride 1, no padding); arithmetic_text (e.g. the sum of products) goes in a
    monospace panel below. pool_size defaults to result height // pooled height.
    """
    img, ker, res = _array(image, 2, "image"), _array(kernel, 2, "kernel"), _array(result, 2, "result")
    pool = None if pooled is None else _array(pooled, 2, "pooled")
    panels = 3 if pool is None else 4
    lines = arithmetic_text.splitlines() if pixel is not None and arithmetic_text else []
    text_h = 0.25 + 0.17 * len(lines) if lines else 0.0
    fig = Figure(figsize=(2.9 * panels, 3.0 + text_h), layout="constrained")
    grid = fig.add_gridspec(2 if lines else 1, panels, height_ratios=[3.0, text_h] if lines else None)
    ax_img, ax_ker, ax_res, *ax_pool = [fig.add_subplot(grid[0, i]) for i in range(panels)]
    if shapes_text:
        fig.suptitle(shapes_text, fontsize=TITLE)

    lo, hi = _image_range(image, img)
    ax_img.imshow(img, cmap=IMAGE_CMAP, vmin=lo, vmax=hi, interpolation="nearest")
    ax_img.set_title(f"input {_shape(img)}", fontsize=LABEL)
    _bare(ax_img)
    _draw_kernel(ax_ker, ker)
    ax_ker.set_title(f"{_shape(ker)} kernel '{kernel_name}'", fontsize=LABEL)

    m = _symmetric_limit(res, pool)                   # result and pooled share one scale
    im = ax_res.imshow(res, cmap=SIGNED_CMAP, vmin=-m, vmax=m, interpolation="nearest")
    ax_res.set_title(f"result {_shape(res)}", fontsize=LABEL)
    _bare(ax_res)
    fig.colorbar(im, ax=ax_res, shrink=0.8)
    if pool is not None:
        ax_p = ax_pool[0]
        p = max(1, pool_size or (res.shape[0] // pool.shape[0] if pool.shape[0] else 2))
        im = ax_p.imshow(pool, cmap=SIGNED_CMAP, vmin=-m, vmax=m, interpolation="nearest")
        ax_p.set_title(f"{p}×{p} max pool {_shape(pool)}", fontsize=LABEL)
        _bare(ax_p)
        fig.colorbar(im, ax=ax_p, shrink=0.8)

    if pixel is not None:
        r, c = pixel
        r0, c0 = patch_origin if patch_origin is not None else pixel
        _mark(ax_img, r0, c0, *ker.shape)
        _mark(ax_res, r, c, 1, 1)
        ax_res.set_title(f"result {_shape(res)}, [{r}, {c}] = {res[r, c]:.3g}", fontsize=LABEL)
        if pool is not None and r // p < pool.shape[0] and c // p < pool.shape[1]:
            _mark(ax_pool[0], r // p, c // p, 1, 1)
    if lines:
        ax_txt = fig.add_subplot(grid[1, :])
        ax_txt.axis("off")
        ax_txt.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=8.5, ha="left", va="top",
                    transform=ax_txt.transAxes)
    return _render(fig)


def feature_map_grid(maps, title: str, cols: int = 8, shared: bool = False) -> bytes:
    """Every channel of maps (C, H, W) as a labelled tile ('viridis'). Each tile is scaled to its
    own min..max (the title says so), or, with shared=True, all to one range with a colour bar."""
    a = _array(maps, 3, "maps")
    n, h, w = a.shape
    if n == 0:
        return _empty(title, "no feature maps")
    if shared:
        lo, hi = _value_range(a)
        tiles, note, bar = a, "one colour scale for all", "activation"
    else:
        lo, hi = 0.0, 1.0
        tiles, note, bar = np.stack([_unit(t) for t in a]), "each map scaled to its own min..max", None
    heading = f"{title}\n{n} maps of {h}×{w}, {note}"
    # A constant map (a dead relu channel) would look like a dark tile of information: say so.
    labels = [f"{i}" if shared or t.min() < t.max() else f"{i}: all {t.flat[0]:.3g}" for i, t in enumerate(a)]
    fig, _, _ = _tiles_figure(tiles, cols, 1.0 if h >= 8 else 0.6, ACTIVATION_CMAP, lo, hi, heading, labels, bar)
    return _render(fig)


def filter_comparison(maps: Sequence[Sequence], row_labels: Sequence[str], col_labels: Sequence[str],
                      title: str) -> bytes:
    """A grid of 2-D maps: one row per image, one column per layer (sizes differ by column);
    each map scaled to its own range."""
    rows = [[_array(m, 2, f"maps[{i}][{j}]") for j, m in enumerate(row)] for i, row in enumerate(maps)]
    ncols = max((len(r) for r in rows), default=0)
    if not rows or ncols == 0:
        return _empty(title, "no maps")
    fig = Figure(figsize=(1.45 * ncols + 0.8, 1.45 * len(rows) + 0.9), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            _bare(ax)
            if j >= len(row):
                ax.axis("off")
                continue
            lo, hi = _value_range(row[j])
            ax.imshow(row[j], cmap=ACTIVATION_CMAP, vmin=lo, vmax=hi, interpolation="nearest")
            if row[j].size and row[j].min() == row[j].max():
                ax.text(0.5, 0.5, f"all {lo:.3g}", transform=ax.transAxes, ha="center", va="center",
                        fontsize=LABEL, color="white")
            if i == 0:
                label = col_labels[j] if j < len(col_labels) else f"column {j}"
                ax.set_title(f"{label}\n{_shape(row[j])}", fontsize=LABEL)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=LABEL)
    fig.suptitle(f"{title}\neach map scaled to its own min..max", fontsize=TITLE)
    return _render(fig)


def kernel_grid(kernels, title: str, summary: str = "per_input", max_inputs: int = 8) -> bytes:
    """Learned kernels (out, in, k, k) on diverging colours centred on 0, one shared colour bar.

    in == 1 (a first layer): one tile per filter. Deeper layers: summary="mean" averages each
    filter over its input channels; "per_input" draws filters × the first max_inputs channels.
    """
    a = _array(kernels, 4, "kernels")
    n_out, n_in, kh, kw = a.shape
    if summary not in ("per_input", "mean"):
        raise ValueError(f"kernel_grid: summary must be 'per_input' or 'mean', got {summary!r}")
    if a.size == 0:
        return _empty(title, "no kernels")
    head = f"{title}\n{n_out} filters × {n_in} input channel{'s' if n_in > 1 else ''}, {kh}×{kw}"
    if n_in == 1 or summary == "mean":
        tiles = a[:, 0] if n_in == 1 else a.mean(axis=1)
        note = "" if n_in == 1 else f": mean over the {n_in} input channels"
        m = _symmetric_limit(tiles)
        fig, _, _ = _tiles_figure(tiles, 8, 0.55, SIGNED_CMAP, -m, m, head + note,
                               [str(i) for i in range(n_out)], "weight")
        return _render(fig)
    # One strip per filter: its kernels on the first `shown` input channels, 1 blank pixel apart;
    # strips wrap into columns so 64 filters make a block, not a 3,000-pixel ribbon.
    shown = min(n_in, max_inputs)
    strips = np.full((n_out, kh, shown * (kw + 1) - 1), np.nan)
    for j in range(shown):
        strips[:, :, j * (kw + 1): j * (kw + 1) + kw] = a[:, j]
    m = _symmetric_limit(a[:, :shown])
    note = (f"\neach strip: one filter's kernels on input channels 0–{shown - 1}"
            + (f" (of {n_in})" if shown < n_in else ""))
    kernel_in = 0.3                                   # inches per drawn kernel
    fig, _, _ = _tiles_figure(strips, min(8, max(1, 32 // shown)), kernel_in * strips.shape[2] / max(kh, kw),
                              SIGNED_CMAP, -m, m, head + note, [f"filter {i}" for i in range(n_out)], "weight",
                              gap_in=0.3)
    return _render(fig)


def _overlay(ax, image: np.ndarray, image_range, heat: np.ndarray, smooth: bool) -> bool:
    """heat (scaled to 0..1) in HEAT_CMAP over the grayscale image; low values stay see-through,
    so the garment remains visible where the model does not look. False when heat is flat
    (nothing is drawn over the image then: a uniform tint would suggest a signal)."""
    h, w = image.shape
    ax.imshow(image, cmap=IMAGE_CMAP, vmin=image_range[0], vmax=image_range[1], interpolation="nearest")
    _bare(ax)
    if heat.size == 0 or heat.min() == heat.max():
        return False
    unit = _unit(heat)
    ax.imshow(unit, cmap=HEAT_CMAP, vmin=0.0, vmax=1.0, alpha=0.2 + 0.6 * unit,
              extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear" if smooth else "nearest")
    return True


def explanation(image, saliency, gradcam, top: Sequence[tuple[str, float]], true_label: str | None = None,
                layer_name: str = "", cam_name: str = "Grad-CAM") -> bytes:
    """Why the model predicted what it did: the image, its saliency and its Grad-CAM overlaid;
    the top classes (probabilities 0..1) and the true label in the title. gradcam may be
    smaller than the image (the layer's own size): it is stretched over it, smoothly."""
    img, sal, cam = _array(image, 2, "image"), _array(saliency, 2, "saliency"), _array(gradcam, 2, "gradcam")
    rng = _image_range(image, img)
    fig = Figure(figsize=(9.2, 3.7), layout="constrained")
    ax_img, ax_sal, ax_cam = fig.subplots(1, 3)
    ax_img.imshow(img, cmap=IMAGE_CMAP, vmin=rng[0], vmax=rng[1], interpolation="nearest")
    _bare(ax_img)
    ax_img.set_title(f"input {_shape(img)}", fontsize=LABEL)
    flat = "\n(flat: no signal to show)"
    drawn = _overlay(ax_sal, img, rng, sal, smooth=False)
    ax_sal.set_title("saliency |∂score/∂pixel|" + ("" if drawn else flat), fontsize=LABEL)
    drawn = _overlay(ax_cam, img, rng, cam, smooth=cam.shape != img.shape)
    where = f" at {layer_name}" if layer_name else ""
    ax_cam.set_title(f"{cam_name}{where} ({_shape(cam)})" + ("" if drawn else flat), fontsize=LABEL)
    scale = ScalarMappable(Normalize(0.0, 1.0), HEAT_CMAP)
    fig.colorbar(scale, ax=[ax_sal, ax_cam], shrink=0.8, label="relative importance (each map to 0..1)")
    guess = "  ·  ".join(f"{name} {p:.1%}" for name, p in list(top)[:3])
    heading = f"prediction: {guess}" if guess else "prediction: (none)"
    if true_label is not None:
        verdict = "correct" if top and top[0][0] == true_label else "wrong"
        heading += f"\ntrue class: {true_label} ({verdict})"
    fig.suptitle(heading, fontsize=TITLE)
    return _render(fig)


def confusion_matrix(confusion, classes: Sequence[str], normalize: bool = False) -> bytes:
    """The K×K confusion matrix (rows: true class, columns: predicted), every cell annotated with
    its count, or with normalize=True its fraction of the row (the diagonal is then recall)."""
    counts = _array(confusion, 2, "confusion")
    k = counts.shape[0]
    if counts.shape != (k, k) or len(classes) != k:
        raise ValueError(f"confusion_matrix: need a square K×K matrix and K class names, "
                         f"got {_shape(counts)} and {len(classes)} names")
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else 0.0
    if normalize:
        row = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, row, out=np.zeros_like(counts), where=row > 0)
        vmax, text, bar = 1.0, (lambda v: f"{v:.2f}"), "fraction of the true class"
    else:
        values = counts
        vmax, text, bar = max(1.0, float(counts.max(initial=0))), (lambda v: f"{v:.0f}"), "images"
    side = 0.62 * k + 2.2
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap=COUNT_CMAP, vmin=0, vmax=vmax, interpolation="nearest")
    if k <= 30:
        size = 8 if k <= 12 else 6
        for (r, c), v in np.ndenumerate(values):
            colour = "white" if v > 0.5 * vmax else ("#bbbbbb" if v == 0 else "black")
            ax.text(c, r, text(v), ha="center", va="center", fontsize=size, color=colour)
    ax.set_xticks(range(k), list(classes), rotation=45, ha="right", rotation_mode="anchor", fontsize=LABEL)
    ax.set_yticks(range(k), list(classes), fontsize=LABEL)
    ax.set_xlabel("predicted class", fontsize=LABEL + 1)
    ax.set_ylabel("true class", fontsize=LABEL + 1)
    ax.tick_params(length=0)
    heading = f"confusion matrix: {total:,.0f} images, accuracy {accuracy:.2%}"
    if normalize:
        heading += "\neach row divided by its total: the diagonal is each class's recall"
    ax.set_title(heading, fontsize=TITLE)
    fig.colorbar(im, ax=ax, shrink=0.8, label=bar)
    return _render(fig)


def per_class_bars(values, classes: Sequence[str], title: str, xlabel: str, fmt: str | None = None) -> bytes:
    """One horizontal bar per class with its value printed (fmt, default: integers plainly,
    otherwise 3 decimals); classes top to bottom in the given order."""
    v = _array(values, 1, "values")
    if len(v) != len(classes):
        raise ValueError(f"per_class_bars: {len(v)} values for {len(classes)} classes")
    if fmt is None:
        fmt = "{:,.0f}" if np.all(v == np.round(v)) else "{:.3f}"
    fig = Figure(figsize=(6.5, 0.3 * len(v) + 1.3), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(v))
    bars = ax.barh(y, v, color="#4c72b0", height=0.7)
    ax.bar_label(bars, labels=[fmt.format(x) for x in v], padding=3, fontsize=8)
    ax.set_yticks(y, list(classes), fontsize=LABEL)
    ax.invert_yaxis()
    lo, hi = min(0.0, float(v.min(initial=0))), max(0.0, float(v.max(initial=0)))
    span = (hi - lo) or 1.0
    ax.set_xlim(lo - (0.18 * span if lo < 0 else 0.0), hi + 0.18 * span)
    ax.set_xlabel(xlabel, fontsize=LABEL)
    ax.set_title(title, fontsize=TITLE)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return _render(fig)


def gallery(images, captions: Sequence[str], title: str, cols: int = 8) -> bytes:
    """Images (N, H, W), or colour (N, H, W, 3), in a grid with a caption under each, e.g.
    "true: Shirt\\npred: T-shirt (0.97)"; newlines in a caption are kept, long lines wrap."""
    colour = np.ndim(images) == 4 and np.shape(images)[-1] == 3
    a = _array(images, 4 if colour else 3, "images")
    n, h, w = a.shape[:3]
    if len(captions) != n:
        raise ValueError(f"gallery: {n} images but {len(captions)} captions")
    if n == 0:
        return _empty(title, "no images")
    wrapped = ["\n".join(textwrap.fill(line, 22, break_on_hyphens=False) for line in str(c).splitlines() or [""])
               for c in captions]
    n_lines = max(c.count("\n") + 1 for c in wrapped)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.35 * cols, (1.2 + 0.14 * n_lines) * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    lo, hi = _image_range(images, a)
    for i, ax in enumerate(axes.flat):
        _bare(ax)
        if i >= n:
            ax.axis("off")
            continue
        if colour:     # RGB is drawn as it is: scaled to 0..1, no colour map
            ax.imshow(np.clip((a[i] - lo) / max(hi - lo, 1e-12), 0, 1), interpolation="nearest")
        else:
            ax.imshow(a[i], cmap=IMAGE_CMAP, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_xlabel(wrapped[i], fontsize=SMALL)
    fig.suptitle(f"{title}\n{n} image{'s' if n != 1 else ''} of {h}×{w}", fontsize=TITLE)
    return _render(fig)


def curves(series: Sequence[dict], title: str | None = None) -> bytes:
    """Loss and accuracy against epoch for one run or several (one colour each): train solid,
    validation dashed, a dotted line at the overfitting onset and a star at the best epoch.

    Each series: {"label", "epochs", "loss", "val_loss", "accuracy", "val_accuracy", "onset", "best"};
    val_*, onset and best may be None or missing.
    """
    if not series:
        return _empty(title or "training curves", "no runs")
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    palette = colormaps["tab10"].colors
    several = len(series) > 1
    for i, s in enumerate(series):
        colour = palette[i % len(palette)]
        prefix = f"{s.get('label', i)}: " if several else ""
        epochs = np.asarray(s["epochs"], dtype=np.float64)
        marker = "o" if len(epochs) <= 30 else None    # a single epoch is a dot, not an invisible line
        best, onset = s.get("best"), s.get("onset")
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            first = ax is ax_loss                      # the legend comes from the loss panel
            train, val = s.get(key), s.get(f"val_{key}")
            if train is not None:
                ax.plot(epochs, np.asarray(train, dtype=np.float64), "-", color=colour, marker=marker, ms=3,
                        label=f"{prefix}train" if first else None)
            if val is not None:
                ax.plot(epochs, np.asarray(val, dtype=np.float64), "--", color=colour, marker=marker, ms=3,
                        label=f"{prefix}validation" if first else None)
            if onset is not None:
                ax.axvline(onset, color=colour, ls=":", lw=1.6,
                           label=f"{prefix}overfitting from epoch {onset}" if first else None)
            ys = np.asarray(val if val is not None else train if train is not None else [], dtype=np.float64)
            hits = np.flatnonzero(epochs == best) if best is not None and len(ys) == len(epochs) else []
            if len(hits) and np.isfinite(ys[hits[0]]):
                y = float(ys[hits[0]])
                ax.plot([best], [y], ls="none", marker="*", ms=14, color=colour, mec="black", mew=0.8,
                        label=f"{prefix}best epoch {best}" if first else None, zorder=5)
                if not several:
                    ax.annotate(f"best epoch {best}", (best, y), xytext=(7, 7 if key == "accuracy" else -14),
                                textcoords="offset points", fontsize=8)
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_title(name, fontsize=TITLE)
        ax.set_xlabel("epoch", fontsize=LABEL)
        ax.set_ylabel(name, fontsize=LABEL)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    handles, labels = ax_loss.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8,
                   frameon=False)
    default = "training curves" + (f": {series[0].get('label')}" if not several and series[0].get("label") else "")
    fig.suptitle(title or default, fontsize=TITLE)
    return _render(fig)
