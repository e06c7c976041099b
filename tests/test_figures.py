"""Every figure is a valid, non-blank PNG for typical inputs (a real Fashion-MNIST image) and
for the edge cases (one channel, one image, constant arrays, a 3×3 result), without warnings."""

import ast
import io
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from convlens import charts, explain_figures, figures, plotting

# Divide-by-zero / invalid-value (RuntimeWarning), a missing glyph or identical axis limits
# (UserWarning) would mean a figure is quietly wrong: make them failures.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning", "error::UserWarning")

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)


def decode(png: bytes, min_side: int = 40) -> np.ndarray:
    """Check png is a real, non-blank PNG of a sensible size; its pixels as (H, W) gray floats."""
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(png))
    img.load()
    assert img.format == "PNG"
    w, h = img.size
    assert min_side <= w <= 5000 and min_side <= h <= 5000, img.size
    pixels = np.asarray(img.convert("L"), dtype=np.float64)
    assert pixels.std() > 3, "a blank, single-colour image"
    return pixels


def correlate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Valid cross-correlation: out[r, c] = sum(image[r:r+k, c:c+k] × kernel)."""
    return (sliding_window_view(image, kernel.shape) * kernel).sum(axis=(-2, -1))


def max_pool(a: np.ndarray, p: int = 2) -> np.ndarray:
    h, w = a.shape[0] // p, a.shape[1] // p
    return a[:h * p, :w * p].reshape(h, p, w, p).max(axis=(1, 3))


@pytest.fixture(scope="module")
def images(real_data) -> np.ndarray:
    """The first 16 Fashion-MNIST test images, uint8 (16, 28, 28)."""
    return real_data.test_x[:16, 0].numpy()


@pytest.fixture(scope="module")
def image(images) -> np.ndarray:
    return images[0]


def lab_inputs(image):
    x = image.astype(np.float64) / 255
    result = correlate(x, SOBEL_X)                                          # (26, 26)
    r, c = 12, 8
    text = (f"result[{r}, {c}] = sum(input[{r}:{r + 3}, {c}:{c + 3}] × kernel)\n"
            + " + ".join(f"{p:.2f}×{k:g}" for p, k in zip(x[r:r + 3, c:c + 3].ravel(), SOBEL_X.ravel()))
            + f"\n= {result[r, c]:.4f}")
    return x, result, max_pool(result), (r, c), text


def curve_series(n=20, label="seed", onset=7, best=6, val=True):
    e = np.arange(1, n + 1)
    low = best or 6                                     # the epoch where validation is best
    return {"label": label, "epochs": e.tolist(), "loss": (0.5 * 0.85 ** e).tolist(),
            "val_loss": (0.25 + 0.002 * (e - low) ** 2).tolist() if val else None,
            "accuracy": (0.98 - 0.14 * 0.8 ** e).tolist(), "val_accuracy": (0.91 - 0.0005 * (e - low) ** 2).tolist()
            if val else None, "onset": onset, "best": best}


# One typical call per public figure, all checked the same way below.
def _cases(image, images):
    x, result, pooled, pixel, text = lab_inputs(image)
    rng = np.random.default_rng(0)
    maps = np.maximum(correlate(x, SOBEL_X)[None] * rng.normal(size=(64, 1, 1)), 0)        # (64, 26, 26)
    confusion = np.diag(rng.integers(700, 950, 10)) + rng.integers(0, 30, (10, 10))
    return {
        "png_image": lambda: figures.png_image(image, scale=4),
        "convolution_lab": lambda: figures.convolution_lab(
            x, SOBEL_X, "vertical", result, pooled, "28×28 → 26×26 → 13×13", pixel=pixel, arithmetic_text=text),
        "feature_map_grid": lambda: figures.feature_map_grid(maps, "conv1 (relu)"),
        "filter_comparison": lambda: figures.filter_comparison(
            [[im / 255, correlate(im / 255, SOBEL_X), max_pool(correlate(im / 255, SOBEL_X))] for im in images[:3]],
            ["Ankle boot", "Pullover", "Trouser"], ["input", "conv", "pool"], "filter 6 across layers"),
        "kernel_grid": lambda: figures.kernel_grid(rng.normal(0, 0.2, (64, 1, 3, 3)), "conv1 kernels"),
        "explanation": lambda: figures.explanation(
            image, np.abs(rng.normal(size=(28, 28))), rng.random((11, 11)),
            [("Ankle boot", 0.8), ("Sneaker", 0.15), ("Sandal", 0.05)], true_label="Ankle boot", layer_name="conv2"),
        "confusion_matrix": lambda: charts.confusion_matrix(confusion, CLASSES),
        "per_class_bars": lambda: charts.per_class_bars(rng.random(10), CLASSES, "recall per class", "recall"),
        "gallery": lambda: figures.gallery(images, [f"true: {CLASSES[i % 10]}\npred: Shirt (0.9{i % 10})"
                                                    for i in range(len(images))], "misclassified"),
        "curves": lambda: charts.curves([curve_series()]),
        "ladder_curves": lambda: charts.ladder_curves(
            [{"label": "seed", "epochs": [1, 2, 3], "val_accuracy": [0.88, 0.9, 0.91], "time_s": [10, 20, 30]},
             {"label": "resnet", "epochs": [1, 2, 3], "val_accuracy": [0.9, 0.92, 0.93], "time_s": [60, 120, 180]}]),
        "deletion_curves": lambda: charts.deletion_curves(
            np.linspace(0, 1, 21), [("saliency", 0.9 * 0.9 ** np.arange(21), 0.21)], 0.9 - 0.04 * np.arange(21),
            "Sneaker"),
        "attribution_panel": lambda: explain_figures.attribution_panel(
            image, [("saliency", rng.random((28, 28))), ("flat", np.zeros((28, 28)))], [("Sneaker", 0.9)],
            "Sneaker", "baseline: mean"),
        "sanity_strip": lambda: explain_figures.sanity_strip(
            image, ["learned weights", "dense_2 random", "+ conv2d_1"],
            [("saliency", [rng.random((28, 28)) for _ in range(3)], [1.0, 0.5, 0.2], "depends on the weights", 0),
             ("edges", [np.abs(x - 0.5)] * 3, [1.0, 1.0, 1.0], "do not trust", 2)], "sanity check"),
        "feature_grid": lambda: explain_figures.feature_grid(
            rng.random((16, 9, 3, 3)), rng.random((16, 3, 3)), [f"{f}: 1.0 | 1.2" for f in range(16)], "conv1"),
    }


CASE_NAMES = ["png_image", "convolution_lab", "feature_map_grid", "filter_comparison", "kernel_grid",
              "explanation", "confusion_matrix", "per_class_bars", "gallery", "curves", "ladder_curves", "deletion_curves",
              "attribution_panel", "sanity_strip", "feature_grid"]


def test_every_public_figure_has_a_case():
    public = {n for module in (figures, charts, explain_figures) for n, f in vars(module).items()
              if callable(f) and not n.startswith("_") and getattr(f, "__module__", "") == module.__name__}
    assert public == set(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_typical_input_gives_a_readable_png(name, image, images):
    png = _cases(image, images)[name]()
    decode(png)
    if name != "png_image":
        w, h = Image.open(io.BytesIO(png)).size
        assert w >= 300 and h >= 200, "a figure should be large enough to read"
    assert png == _cases(image, images)[name](), "the same input must give the same bytes"


@pytest.mark.parametrize("module", [figures, charts, explain_figures, plotting])
def test_figures_module_needs_no_torch(module):
    """The pictures take plain arrays; importing torch there would break the one-way data flow."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "io", "math", "textwrap", "collections", "numpy", "matplotlib", "PIL",
                        "plotting"}


# --- png_image -------------------------------------------------------------------------

def test_png_image_is_the_exact_pixels_upscaled(image):
    pixels = np.asarray(Image.open(io.BytesIO(figures.png_image(image, scale=3))))
    assert pixels.shape == (84, 84)
    assert np.array_equal(pixels[::3, ::3], image) and np.array_equal(pixels[2::3, 2::3], image)


def test_png_image_colour_map_and_constant_input():
    rgb = Image.open(io.BytesIO(figures.png_image(np.linspace(-1, 1, 64).reshape(8, 8), cmap="RdBu_r")))
    assert rgb.mode == "RGB" and rgb.size == (32, 32)
    flat = Image.open(io.BytesIO(figures.png_image(np.zeros((5, 7)), scale=2)))
    assert flat.size == (14, 10)
    with pytest.raises(ValueError):
        figures.png_image(np.zeros((2, 2, 2)))


# --- convolution lab ---------------------------------------------------------------------

def test_convolution_lab_text_panel_adds_height(image):
    x, result, pooled, pixel, text = lab_inputs(image)
    plain = decode(figures.convolution_lab(x, SOBEL_X, "vertical", result, pooled, "shapes"))
    marked = decode(figures.convolution_lab(x, SOBEL_X, "vertical", result, pooled, "shapes",
                                            pixel=pixel, arithmetic_text=text))
    assert marked.shape[0] > plain.shape[0] + 30


def test_convolution_lab_edge_cases():
    # A 5×5 image gives a 3×3 result and a 1×1 pool; the pixel sits in the last corner.
    img = np.arange(25, dtype=np.float64).reshape(5, 5)
    res = correlate(img, SOBEL_X)
    decode(figures.convolution_lab(img, SOBEL_X, "vertical", res, max_pool(res), "5×5 → 3×3 → 1×1",
                                   pixel=(2, 2), arithmetic_text="corner"))
    # Everything constant, no pooling, a patch origin given explicitly, a uint8 image, 5×5 kernel.
    decode(figures.convolution_lab(np.zeros((28, 28), np.uint8), np.zeros((3, 3)), "zero",
                                   np.zeros((26, 26)), None, "", pixel=(0, 0), patch_origin=(0, 0)))
    decode(figures.convolution_lab(np.ones((9, 9)), np.full((5, 5), 1 / 25), "blur 5×5", np.ones((5, 5)), None, ""))


# --- feature maps, filter comparison, kernels ------------------------------------------

def test_feature_map_grid_layout_and_edges():
    rng = np.random.default_rng(1)
    square = decode(figures.feature_map_grid(rng.random((64, 26, 26)), "64 maps"))
    assert 0.7 < square.shape[0] / square.shape[1] < 1.4, "64 maps should make an 8×8 block"
    decode(figures.feature_map_grid(rng.random((1, 26, 26)), "one channel"))
    decode(figures.feature_map_grid(np.zeros((8, 5, 5)), "dead relu channels"))
    decode(figures.feature_map_grid(rng.random((64, 5, 5)), "shared scale", shared=True))
    decode(figures.feature_map_grid(np.zeros((4, 3, 3)), "constant, shared", shared=True))
    decode(figures.feature_map_grid(np.zeros((0, 5, 5)), "nothing"))


def test_filter_comparison_edges():
    decode(figures.filter_comparison([[np.ones((3, 3))]], ["one"], ["conv1"], "one constant map"))
    decode(figures.filter_comparison([[np.zeros((26, 26)), np.zeros((13, 13))], [np.ones((26, 26))]],
                                     ["a", "b"], ["conv1", "pool1"], "ragged rows"))


def test_kernel_grid_summaries_and_edges():
    rng = np.random.default_rng(2)
    deep = rng.normal(0, 0.05, (64, 64, 3, 3))
    per_input = decode(figures.kernel_grid(deep, "conv2"))
    mean = decode(figures.kernel_grid(deep, "conv2", summary="mean"))
    assert per_input.size > mean.size
    assert per_input.shape[0] < 2.5 * per_input.shape[1], "64 filters wrap into columns, not a ribbon"
    decode(figures.kernel_grid(rng.normal(size=(1, 1, 3, 3)), "one kernel"))
    decode(figures.kernel_grid(np.zeros((8, 3, 5, 5)), "all zero"))
    decode(figures.kernel_grid(rng.normal(size=(4, 2, 3, 3)), "two inputs"))
    with pytest.raises(ValueError, match="summary"):
        figures.kernel_grid(deep, "conv2", summary="max")


# --- explanation, evaluation figures ------------------------------------------------------

def test_explanation_edges(image):
    decode(figures.explanation(image, np.zeros((28, 28)), np.zeros((28, 28)), [("Bag", 1.0)]))
    decode(figures.explanation(np.zeros((28, 28)), np.ones((28, 28)), np.ones((1, 1)), []))


def test_confusion_matrix_counts_normalised_and_empty_rows():
    c = np.zeros((10, 10), int)
    c[np.arange(10), np.arange(10)] = 90
    c[6, 0] = 10
    c[3] = 0                                   # a class with no test images: its row is all 0
    decode(charts.confusion_matrix(c, CLASSES, normalize=True))
    decode(charts.confusion_matrix(np.zeros((10, 10), int), CLASSES))
    decode(charts.confusion_matrix(np.array([[5]]), ["only"]))
    with pytest.raises(ValueError):
        charts.confusion_matrix(np.zeros((3, 3)), CLASSES)


def test_per_class_bars_edges():
    decode(charts.per_class_bars(np.zeros(10), CLASSES, "all zero", "recall"))
    decode(charts.per_class_bars(np.array([-0.2, 0.5, 0.1]), ["a", "b", "c"], "signed", "change"))
    decode(charts.per_class_bars(np.array([1000, 12]), ["a", "b"], "counts", "images"))
    with pytest.raises(ValueError):
        charts.per_class_bars(np.zeros(3), CLASSES, "mismatch", "x")


def test_gallery_edges(images):
    decode(figures.gallery(images[:1], ["true: Ankle boot / pred: Sneaker (0.97), a long caption that wraps"],
                           "one image"))
    decode(figures.gallery(np.zeros((3, 28, 28), np.uint8), ["", "b", "c"], "constant"))
    decode(figures.gallery(np.zeros((0, 28, 28)), [], "none"))
    with pytest.raises(ValueError):
        figures.gallery(images[:2], ["one caption"], "mismatch")


def test_curves_one_run_several_runs_and_short_ones():
    one = decode(charts.curves([curve_series()]))
    several = decode(charts.curves([curve_series(), curve_series(10, "dense", None, 10),
                                     curve_series(5, "no validation", None, None, val=False)]))
    assert several.shape[0] >= one.shape[0]             # the legend grows, nothing is cut
    decode(charts.curves([curve_series(1, "one epoch", None, 1)]))
    decode(charts.curves([{"label": "bare", "epochs": [1, 2], "loss": [1.0, 0.5], "accuracy": [0.5, 0.7]}]))
    decode(charts.curves([]))
