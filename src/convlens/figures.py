"""Pictures of images, maps and kernels: arrays in, PNG bytes out (plotting.py's look).

The CLI writes these bytes to files, the report embeds them as data: URLs, TensorBoard logs
them as images and the explorer serves them, so one function per picture keeps all four the
same. Charts of numbers (curves, confusion matrices, bars) are in charts.py.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from .plotting import (
    ACTIVATION_CMAP,
    HEAT_CMAP,
    IMAGE_CMAP,
    LABEL,
    SIGNED_CMAP,
    SMALL,
    TITLE,
    as_array,
    bare,
    empty,
    image_range,
    mark,
    number,
    overlay,
    render,
    shape_label,
    symmetric_limit,
    tiles_figure,
    unit,
    value_range,
)


def png_image(arr, scale: int = 4, cmap: str = IMAGE_CMAP, vmin: float | None = None,
              vmax: float | None = None) -> bytes:
    """One 2-D array as a small PNG, each value a scale×scale block (nearest neighbour): thumbnails.
    Range: vmin/vmax, else 0..255 for uint8, 0..1 for values inside [0, 1], else min..max."""
    a = as_array(arr, 2, "png_image")
    if a.size == 0 or scale < 1:
        raise ValueError(f"png_image: need a non-empty array and scale >= 1, got shape {a.shape}, scale {scale}")
    lo, hi = image_range(arr, a)
    lo, hi = lo if vmin is None else vmin, hi if vmax is None else vmax
    scaled = np.clip((a - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros_like(a)
    if cmap == "gray":
        pixels = np.round(scaled * 255).astype(np.uint8)               # (H, W), PNG mode L
    else:
        pixels = colormaps[cmap](scaled, bytes=True)[..., :3]          # (H, W, 3)
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _draw_kernel(ax, kernel: np.ndarray) -> None:
    """The kernel as a grid of its numbers on diverging colours centred on 0."""
    m = symmetric_limit(kernel)
    ax.imshow(kernel, cmap=SIGNED_CMAP, vmin=-m, vmax=m, interpolation="nearest")
    bare(ax)
    k = max(kernel.shape)
    if k <= 9:                                        # beyond 9×9 the numbers stop being readable
        size = {1: 16, 2: 14, 3: 13, 4: 11, 5: 10}.get(k, 7)
        for (r, c), v in np.ndenumerate(kernel):
            ax.text(c, r, number(v), ha="center", va="center", fontsize=size,
                    color="white" if abs(v) > 0.6 * m else "black")


def convolution_lab(image, kernel, kernel_name: str, result, pooled=None, shapes_text: str = "",
                    pixel: tuple[int, int] | None = None, patch_origin: tuple[int, int] | None = None,
                    arithmetic_text: str | None = None, pool_size: int | None = None) -> bytes:
    """The convolution lab: input, kernel (numbers), signed result, max-pooled result.

    pixel (row, col) in result marks that pixel and the k×k input patch it came from (patch_origin,
    default = pixel: stride 1, no padding); arithmetic_text (e.g. the sum of products) goes in a
    monospace panel below. pool_size defaults to result height // pooled height.
    """
    img, ker, res = as_array(image, 2, "image"), as_array(kernel, 2, "kernel"), as_array(result, 2, "result")
    pool = None if pooled is None else as_array(pooled, 2, "pooled")
    panels = 3 if pool is None else 4
    lines = arithmetic_text.splitlines() if pixel is not None and arithmetic_text else []
    text_h = 0.25 + 0.17 * len(lines) if lines else 0.0
    fig = Figure(figsize=(2.9 * panels, 3.0 + text_h), layout="constrained")
    grid = fig.add_gridspec(2 if lines else 1, panels, height_ratios=[3.0, text_h] if lines else None)
    ax_img, ax_ker, ax_res, *ax_pool = [fig.add_subplot(grid[0, i]) for i in range(panels)]
    if shapes_text:
        fig.suptitle(shapes_text, fontsize=TITLE)

    lo, hi = image_range(image, img)
    ax_img.imshow(img, cmap=IMAGE_CMAP, vmin=lo, vmax=hi, interpolation="nearest")
    ax_img.set_title(f"input {shape_label(img)}", fontsize=LABEL)
    bare(ax_img)
    _draw_kernel(ax_ker, ker)
    ax_ker.set_title(f"{shape_label(ker)} kernel '{kernel_name}'", fontsize=LABEL)

    m = symmetric_limit(res, pool)                   # result and pooled share one scale
    im = ax_res.imshow(res, cmap=SIGNED_CMAP, vmin=-m, vmax=m, interpolation="nearest")
    ax_res.set_title(f"result {shape_label(res)}", fontsize=LABEL)
    bare(ax_res)
    fig.colorbar(im, ax=ax_res, shrink=0.8)
    if pool is not None:
        ax_p = ax_pool[0]
        p = max(1, pool_size or (res.shape[0] // pool.shape[0] if pool.shape[0] else 2))
        im = ax_p.imshow(pool, cmap=SIGNED_CMAP, vmin=-m, vmax=m, interpolation="nearest")
        ax_p.set_title(f"{p}×{p} max pool {shape_label(pool)}", fontsize=LABEL)
        bare(ax_p)
        fig.colorbar(im, ax=ax_p, shrink=0.8)

    if pixel is not None:
        r, c = pixel
        r0, c0 = patch_origin if patch_origin is not None else pixel
        mark(ax_img, r0, c0, *ker.shape)
        mark(ax_res, r, c, 1, 1)
        ax_res.set_title(f"result {shape_label(res)}, [{r}, {c}] = {res[r, c]:.3g}", fontsize=LABEL)
        if pool is not None and r // p < pool.shape[0] and c // p < pool.shape[1]:
            mark(ax_pool[0], r // p, c // p, 1, 1)
    if lines:
        ax_txt = fig.add_subplot(grid[1, :])
        ax_txt.axis("off")
        ax_txt.text(0.0, 1.0, "\n".join(lines), family="monospace", fontsize=8.5, ha="left", va="top",
                    transform=ax_txt.transAxes)
    return render(fig)


def feature_map_grid(maps, title: str, cols: int = 8, shared: bool = False) -> bytes:
    """Every channel of maps (C, H, W) as a labelled tile ('viridis'). Each tile is scaled to its
    own min..max (the title says so), or, with shared=True, all to one range with a colour bar."""
    a = as_array(maps, 3, "maps")
    n, h, w = a.shape
    if n == 0:
        return empty(title, "no feature maps")
    if shared:
        lo, hi = value_range(a)
        tiles, note, bar = a, "one colour scale for all", "activation"
    else:
        lo, hi = 0.0, 1.0
        tiles, note, bar = np.stack([unit(t) for t in a]), "each map scaled to its own min..max", None
    heading = f"{title}\n{n} maps of {h}×{w}, {note}"
    # A constant map (a dead relu channel) would look like a dark tile of information: say so.
    labels = [f"{i}" if shared or t.min() < t.max() else f"{i}: all {t.flat[0]:.3g}" for i, t in enumerate(a)]
    fig, _, _ = tiles_figure(tiles, cols, 1.0 if h >= 8 else 0.6, ACTIVATION_CMAP, lo, hi, heading, labels, bar)
    return render(fig)


def filter_comparison(maps: Sequence[Sequence], row_labels: Sequence[str], col_labels: Sequence[str],
                      title: str) -> bytes:
    """A grid of 2-D maps: one row per image, one column per layer (sizes differ by column);
    each map scaled to its own range."""
    rows = [[as_array(m, 2, f"maps[{i}][{j}]") for j, m in enumerate(row)] for i, row in enumerate(maps)]
    ncols = max((len(r) for r in rows), default=0)
    if not rows or ncols == 0:
        return empty(title, "no maps")
    fig = Figure(figsize=(1.45 * ncols + 0.8, 1.45 * len(rows) + 0.9), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            bare(ax)
            if j >= len(row):
                ax.axis("off")
                continue
            lo, hi = value_range(row[j])
            ax.imshow(row[j], cmap=ACTIVATION_CMAP, vmin=lo, vmax=hi, interpolation="nearest")
            if row[j].size and row[j].min() == row[j].max():
                ax.text(0.5, 0.5, f"all {lo:.3g}", transform=ax.transAxes, ha="center", va="center",
                        fontsize=LABEL, color="white")
            if i == 0:
                label = col_labels[j] if j < len(col_labels) else f"column {j}"
                ax.set_title(f"{label}\n{shape_label(row[j])}", fontsize=LABEL)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=LABEL)
    fig.suptitle(f"{title}\neach map scaled to its own min..max", fontsize=TITLE)
    return render(fig)


def kernel_grid(kernels, title: str, summary: str = "per_input", max_inputs: int = 8) -> bytes:
    """Learned kernels (out, in, k, k) on diverging colours centred on 0, one shared colour bar.

    in == 1 (a first layer): one tile per filter. Deeper layers: summary="mean" averages each
    filter over its input channels; "per_input" draws filters × the first max_inputs channels.
    """
    a = as_array(kernels, 4, "kernels")
    n_out, n_in, kh, kw = a.shape
    if summary not in ("per_input", "mean"):
        raise ValueError(f"kernel_grid: summary must be 'per_input' or 'mean', got {summary!r}")
    if a.size == 0:
        return empty(title, "no kernels")
    head = f"{title}\n{n_out} filters × {n_in} input channel{'s' if n_in > 1 else ''}, {kh}×{kw}"
    if n_in == 1 or summary == "mean":
        tiles = a[:, 0] if n_in == 1 else a.mean(axis=1)
        note = "" if n_in == 1 else f": mean over the {n_in} input channels"
        m = symmetric_limit(tiles)
        fig, _, _ = tiles_figure(tiles, 8, 0.55, SIGNED_CMAP, -m, m, head + note,
                               [str(i) for i in range(n_out)], "weight")
        return render(fig)
    # One strip per filter: its kernels on the first `shown` input channels, 1 blank pixel apart;
    # strips wrap into columns so 64 filters make a block, not a 3,000-pixel ribbon.
    shown = min(n_in, max_inputs)
    strips = np.full((n_out, kh, shown * (kw + 1) - 1), np.nan)
    for j in range(shown):
        strips[:, :, j * (kw + 1): j * (kw + 1) + kw] = a[:, j]
    m = symmetric_limit(a[:, :shown])
    note = (f"\neach strip: one filter's kernels on input channels 0–{shown - 1}"
            + (f" (of {n_in})" if shown < n_in else ""))
    kernel_in = 0.3                                   # inches per drawn kernel
    fig, _, _ = tiles_figure(strips, min(8, max(1, 32 // shown)), kernel_in * strips.shape[2] / max(kh, kw),
                              SIGNED_CMAP, -m, m, head + note, [f"filter {i}" for i in range(n_out)], "weight",
                              gap_in=0.3)
    return render(fig)


def explanation(image, saliency, gradcam, top: Sequence[tuple[str, float]], true_label: str | None = None,
                layer_name: str = "", cam_name: str = "Grad-CAM") -> bytes:
    """Why the model predicted what it did: the image, its saliency and its Grad-CAM overlaid;
    the top classes (probabilities 0..1) and the true label in the title. gradcam may be
    smaller than the image (the layer's own size): it is stretched over it, smoothly."""
    img, sal, cam = as_array(image, 2, "image"), as_array(saliency, 2, "saliency"), as_array(gradcam, 2, "gradcam")
    rng = image_range(image, img)
    fig = Figure(figsize=(9.2, 3.7), layout="constrained")
    ax_img, ax_sal, ax_cam = fig.subplots(1, 3)
    ax_img.imshow(img, cmap=IMAGE_CMAP, vmin=rng[0], vmax=rng[1], interpolation="nearest")
    bare(ax_img)
    ax_img.set_title(f"input {shape_label(img)}", fontsize=LABEL)
    flat = "\n(flat: no signal to show)"
    drawn = overlay(ax_sal, img, rng, sal, smooth=False)
    ax_sal.set_title("saliency |∂score/∂pixel|" + ("" if drawn else flat), fontsize=LABEL)
    drawn = overlay(ax_cam, img, rng, cam, smooth=cam.shape != img.shape)
    where = f" at {layer_name}" if layer_name else ""
    ax_cam.set_title(f"{cam_name}{where} ({shape_label(cam)})" + ("" if drawn else flat), fontsize=LABEL)
    scale = ScalarMappable(Normalize(0.0, 1.0), HEAT_CMAP)
    fig.colorbar(scale, ax=[ax_sal, ax_cam], shrink=0.8, label="relative importance (each map to 0..1)")
    guess = "  ·  ".join(f"{name} {p:.1%}" for name, p in list(top)[:3])
    heading = f"prediction: {guess}" if guess else "prediction: (none)"
    if true_label is not None:
        verdict = "correct" if top and top[0][0] == true_label else "wrong"
        heading += f"\ntrue class: {true_label} ({verdict})"
    fig.suptitle(heading, fontsize=TITLE)
    return render(fig)


def gallery(images, captions: Sequence[str], title: str, cols: int = 8) -> bytes:
    """Images (N, H, W), or colour (N, H, W, 3), in a grid with a caption under each, e.g.
    "true: Shirt\\npred: T-shirt (0.97)"; newlines in a caption are kept, long lines wrap."""
    colour = np.ndim(images) == 4 and np.shape(images)[-1] == 3
    a = as_array(images, 4 if colour else 3, "images")
    n, h, w = a.shape[:3]
    if len(captions) != n:
        raise ValueError(f"gallery: {n} images but {len(captions)} captions")
    if n == 0:
        return empty(title, "no images")
    wrapped = ["\n".join(textwrap.fill(line, 22, break_on_hyphens=False) for line in str(c).splitlines() or [""])
               for c in captions]
    n_lines = max(c.count("\n") + 1 for c in wrapped)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    col_in = 1.35 * max(1.0, 0.9 * w / h)            # wide tiles (an image with its maps) get wider columns
    fig = Figure(figsize=(col_in * cols, (1.2 + 0.14 * n_lines) * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    lo, hi = image_range(images, a)
    for i, ax in enumerate(axes.flat):
        bare(ax)
        if i >= n:
            ax.axis("off")
            continue
        if colour:     # RGB is drawn as it is: scaled to 0..1, no colour map
            ax.imshow(np.clip((a[i] - lo) / max(hi - lo, 1e-12), 0, 1), interpolation="nearest")
        else:
            ax.imshow(a[i], cmap=IMAGE_CMAP, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_xlabel(wrapped[i], fontsize=SMALL)
    fig.suptitle(f"{title}\n{n} image{'s' if n != 1 else ''} of {h}×{w}", fontsize=TITLE)
    return render(fig)
