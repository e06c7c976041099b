"""What each verb shows, built once: the CLI prints and writes it, the report embeds it, the
explorer serves it. A picture or a caption that appears in two places comes from here.

Nothing here parses arguments or speaks HTTP: functions take a run, a model, a dataset and
plain values, and give text, arrays and PNG bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import charts, figures
from .attribution import CAM_NAMES, GradCam, grad_cam, saliency, top_k
from .compare import curve_series
from .convolution import LabResult
from .datasets import Dataset, run_data
from .engine import display_image, pick_device, pick_precision, set_threads, unit_pixels
from .errors import ConvlensError
from .evaluate import Evaluation, evaluate
from .images import prepare_image, read_image
from .inspect import (
    FilterGrid,
    KernelSet,
    LayerMaps,
    activations,
    filter_across_images,
    kernels,
    most_confident_mistakes,
)
from .models import ConvNet, conv_layers
from .plotting import overlay_rgb, side_by_side
from .runs import Run
from .summary import Summary, summarize

INVERT = {"auto": None, "yes": True, "no": False}   # --invert / the explorer's choice: None decides by the border


# ---------------------------------------------------------------------------
# A run's model and data, and the image a verb looks at

def model_of(run: Run, device: str = "auto") -> ConvNet:
    """The run's trained network on `device` (auto: the GPU where there is one)."""
    return run.load_model(pick_device(device))


def data_of(run: Run, data_dir: str | None = None) -> Dataset:
    """The run's data: every training image and the test split (a folder run's recorded files)."""
    return run_data(run.config, run.input_shape, run.classes, run.path, data_dir)


@dataclass
class Looked:
    """An image a verb looks at, prepared as the model takes it."""
    image: torch.Tensor        # uint8 (C, H, W)
    label: str                 # "test image 3 (Dress)", or the file's name
    true: int | None = None    # the class of a test image


def test_image(data: Dataset, index: int, what: str = "--index") -> Looked:
    """Test image `index` of `data`; `what`: how the user named the index, for the error."""
    n = len(data.test_y)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise ConvlensError(f"{what} {index}: no test image {index}; the test set has {n:,} images (0 to {n - 1})")
    label = int(data.test_y[index])
    return Looked(data.test_x[index], f"test image {index} ({data.classes[label]})", label)


def user_image(run: Run, source: str | os.PathLike | Image.Image, name: str | None = None,
               invert: str = "auto") -> Looked:
    """A user's image file (or an image already decoded by images.read_image) prepared by the run's
    rule (images.prepare_image)."""
    c, h, w = run.input_shape
    img = source if isinstance(source, Image.Image) else read_image(source, name)
    prepared = prepare_image(img, (h, w), c, INVERT[invert], run.image_rule)
    return Looked(torch.from_numpy(prepared), name or Path(str(source)).name)


def evaluate_run(run: Run, data: Dataset | None = None, device: str = "auto", precision: str = "run",
                 data_dir: str | None = None, tta: bool = False) -> Evaluation:
    """Evaluate a run's model on its dataset's test split (or `data`'s); precision "run": the one its
    recorded test figures were computed in (Run.test_precision), else auto, fp32 or bf16."""
    dev = pick_device(device)
    set_threads()
    model = run.load_model(dev)
    data = data if data is not None else data_of(run, data_dir)
    return evaluate(model, data.test_x, data.test_y, run.classes, run_precision(run, dev, precision), tta=tta)


def run_precision(run: Run, device: torch.device, precision: str = "run") -> torch.dtype:
    """The dtype to evaluate a run's test set in: the one its recorded figures used, unless asked otherwise."""
    return pick_precision(run.test_precision if precision == "run" else precision, device)


def summary_of(run: Run) -> Summary:
    """A run's layer table: what `convlens summary RUN`, the report, the notebook and the explorer show."""
    return summarize(run.model_info.spec, run.input_shape, len(run.classes))


def run_summary(run: Run) -> list[str]:
    """`convlens summary RUN`: the model's table, and for an imported model where it came from."""
    lines = [summary_of(run).text()]
    imported = run.record.get("imported")
    if imported:
        lines.append(f"Imported from {imported.get('from')} (Keras {imported.get('keras_version')}, "
                     f"{imported.get('format')}, SHA-256 {str(imported.get('sha256'))[:16]}…); input: "
                     f"{imported.get('input')}")
        if imported.get("softmax_dropped"):
            lines.append("Final softmax dropped: the model gives logits; their softmax is the Keras model's output.")
    return lines


# ---------------------------------------------------------------------------
# Evaluation: the figures and the mistakes

def as_drawn(images_u8: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) as a gallery draws them: (N, H, W) grayscale or (N, H, W, 3) colour."""
    imgs = images_u8.permute(0, 2, 3, 1).numpy()
    return imgs[..., 0] if imgs.shape[-1] == 1 else imgs


def mistakes_gallery(ev: Evaluation, test_x, k: int = 24, model: ConvNet | None = None,
                     method: str = "layercam") -> bytes:
    """The k wrong predictions the model was surest of, in colour where the images are; with `model`,
    each beside its gradient saliency and class activation map (`method`) for the class it was
    taken for: where the model looked when it went wrong."""
    worst = most_confident_mistakes(ev.probabilities, ev.labels, k=k)
    captions = [f"#{i} true: {ev.classes[ev.labels[i]]}\npred: {ev.classes[ev.predictions[i]]} "
                f"({ev.probabilities[i].max():.2f})" for i in worst]
    images = as_drawn(test_x[torch.as_tensor(worst, dtype=torch.long)]) if len(worst) else np.zeros((0, 1, 1))
    if model is None or not len(worst):
        return figures.gallery(images, captions, "most confidently misclassified test images")
    tiles = [reasons(model, test_x[int(i)], int(ev.predictions[i]), method) for i in worst]
    what = f"saliency and {CAM_NAMES[method]}" if conv_layers(model, blocks=True) else "saliency"
    return figures.gallery(np.stack(tiles), captions, f"most confidently misclassified test images, each with the "
                           f"{what} of the class it was taken for", cols=4)


def reasons(model: ConvNet, image: torch.Tensor, target: int, method: str = "layercam") -> np.ndarray:
    """Why `image` was taken for `target`: the image, its gradient saliency and (with a conv layer) its
    class activation map for that class, side by side, RGB in [0, 1] — each mistake in the report, the
    CLI's gallery and the explorer's Evaluate view."""
    gray, shown = display_image(image), as_drawn(image[None])[0]
    plain = shown / 255.0 if shown.ndim == 3 else np.repeat(gray[..., None], 3, axis=2)
    tiles = [plain, overlay_rgb(gray, saliency(model, image, target))]
    if conv_layers(model, blocks=True):
        tiles.append(overlay_rgb(gray, grad_cam(model, image, target, method=method).cam))
    return side_by_side(tiles)


def evaluation_figures(ev: Evaluation, test_x, model: ConvNet | None = None) -> dict[str, bytes]:
    """file name -> PNG: the confusion matrix (counts, normalised), accuracy per class, the mistakes (with
    their saliency and LayerCAM when `model` is given)."""
    return {"confusion.png": charts.confusion_matrix(ev.confusion, ev.classes),
            "confusion-normalized.png": charts.confusion_matrix(ev.confusion, ev.classes, normalize=True),
            "per-class-accuracy.png": charts.per_class_bars(ev.recall, ev.classes, "accuracy per class", "recall"),
            "misclassified.png": mistakes_gallery(ev, test_x, model=model)}


def curves_figure(runs: Sequence[Run]) -> bytes:
    """Every run's loss and accuracy curves overlaid, onset of overfitting and best epoch marked."""
    return charts.curves([curve_series(r) for r in runs])


# ---------------------------------------------------------------------------
# Inside the model: feature maps, one filter across images, kernels

def layer_figures(model: ConvNet, image: torch.Tensor, label: str) -> list[tuple[LayerMaps, bytes | None]]:
    """Every layer's output for one image, with the grid of its maps for the spatial layers."""
    return [(layer, figures.feature_map_grid(layer.output, f"{layer.name} ({layer.type}) {layer.shape}: "
                                             f"all {layer.output.shape[0]} maps for {label}")
             if layer.output.ndim == 3 else None)
            for layer in activations(model, image)]


def filter_grid(model: ConvNet, data: Dataset, indices: Sequence[int], filter_index: int) -> FilterGrid:
    """One filter on several test images (rows, labelled "#3 Dress") through the conv and pooling layers."""
    bad = [i for i in indices if not 0 <= i < len(data.test_y)]
    if bad:
        raise ConvlensError(f"--images: no test image {bad[0]} (0 to {len(data.test_y) - 1})")
    grid = filter_across_images(model, data.test_x[list(indices)], filter_index)
    return replace(grid, row_labels=[f"#{i} {data.classes[int(data.test_y[i])]}" for i in indices])


def filter_png(grid: FilterGrid) -> bytes:
    """The study note's figure: the grid's rows are images, its columns layers."""
    return figures.filter_comparison(grid.maps, grid.row_labels, [c.split()[0] for c in grid.col_labels],
                                     f"filter {grid.filter_index} across layers (rows: test images)")


def filter_figure(model: ConvNet, data: Dataset, indices: Sequence[int], filter_index: int) -> tuple[list[str], bytes]:
    """filter_grid as a picture: the layers' labels and the PNG."""
    grid = filter_grid(model, data, indices, filter_index)
    return grid.col_labels, filter_png(grid)


def kernels_png(ks: KernelSet, summary: str = "per_input") -> bytes:
    """A conv layer's learned kernels as a picture, one tile per kernel (and input channel)."""
    o, i, k, _ = ks.weights.shape
    return figures.kernel_grid(ks.weights, f"{ks.layer}: {o} learned {k}×{k} kernels over {i} input channel(s)",
                               summary="per_input" if i == 1 else summary)


def kernel_figure(model: ConvNet, layer: int | str | None = None,
                  summary: str = "per_input") -> tuple[KernelSet, str, bytes]:
    """A conv layer's learned kernels: (the kernels, a one-line description, the picture)."""
    ks = kernels(model, layer)
    o, i, k, _ = ks.weights.shape
    caption = (f"{ks.layer}: {o} kernels of {k}×{k}×{i}, weights in [{ks.weights.min():.3f}, "
               f"{ks.weights.max():.3f}]")
    return ks, caption, kernels_png(ks, summary)


def all_kernel_figures(model: ConvNet) -> list[tuple[KernelSet, str, bytes]]:
    """kernel_figure of every conv layer, in order."""
    return [kernel_figure(model, n) for n in range(len(conv_layers(model)))]


# ---------------------------------------------------------------------------
# Why this prediction

@dataclass
class Explanation:
    """One prediction explained: the top classes, gradient saliency and a class activation map."""
    top: list[tuple[str, float]]
    saliency: np.ndarray          # (H, W) in [0, 1]
    cam: GradCam | None           # None: the model has no conv layer
    method: str                   # layercam | gradcam

    @property
    def cam_name(self) -> str:
        return CAM_NAMES[self.method]

    def text(self, label: str, classes: Sequence[str]) -> list[str]:
        lines = [f"{label}: " + ", ".join(f"{c} {p:.1%}" for c, p in self.top)]
        if self.cam is not None:
            lines.append(f"{self.cam_name} on {self.cam.layer} for {classes[self.cam.target]}; gradient saliency")
        return lines

    def png(self, looked: Looked, classes: Sequence[str]) -> bytes:
        cam = self.cam.cam if self.cam is not None else np.zeros_like(self.saliency)
        return figures.explanation(display_image(looked.image), self.saliency, cam, self.top,
                                   true_label=classes[looked.true] if looked.true is not None else None,
                                   layer_name=self.cam.layer if self.cam else "", cam_name=self.cam_name)


def explain(model: ConvNet, image: torch.Tensor, classes: Sequence[str], method: str = "layercam",
            k: int = 3, need_cam: bool = True) -> Explanation:
    """Top-k, saliency and the CAM (method: layercam or gradcam) of one image, on the last conv layer.
    need_cam: a model without a conv layer is an error (else its Explanation has no CAM)."""
    cam = grad_cam(model, image, method=method) if need_cam or conv_layers(model, blocks=True) else None
    return Explanation(top_k(model, image, classes, k), saliency(model, image), cam, method)


# ---------------------------------------------------------------------------
# The convolution lab

def lab_sample(data: Dataset, index: int, what: str = "--sample") -> tuple[np.ndarray, str]:
    """A test image as the lab takes it: grayscale (H, W) float32 in [0, 1], with its label."""
    looked = test_image(data, index, what)
    return unit_pixels(looked.image[0].numpy()), looked.label


def lab_figure(lab: LabResult) -> bytes:
    """The lab as one picture: input, kernel, result, pooled result, one pixel worked out."""
    px = lab.pixel
    return figures.convolution_lab(lab.image, lab.kernel, lab.kernel_name, lab.result, lab.pooled, lab.shapes,
                                   pixel=(px.row, px.col), patch_origin=(px.top, px.left), arithmetic_text=px.text())


# ---------------------------------------------------------------------------
# Your own data, class by class

def data_table(data: Dataset, reference: str) -> list[str]:
    """`convlens data --dataset folder:…|idx:…|csv:…`: what training would see, class by class."""
    c, h, w = data.input_shape
    held = "streamed from disk" if data.streamed else "held in memory"
    lines = [f"{reference}: {data.num_classes} classes, images {h}×{w}×{c} (height × width × channels), {held}",
             f"  {len(data.train_y):,} training and {len(data.test_y):,} test images"
             + (f"; {len(data.skipped):,} files skipped (listed above)" if data.skipped else "")]
    train_n = torch.bincount(data.train_y, minlength=data.num_classes).tolist()
    test_n = torch.bincount(data.test_y, minlength=data.num_classes).tolist()
    width = max(len("class"), *(len(name) for name in data.classes))
    lines.append(f"  {'class':{width}}  {'train':>8}  {'test':>7}")
    lines += [f"  {name:{width}}  {a:>8,}  {b:>7,}" for name, a, b in zip(data.classes, train_n, test_n)]
    return lines


def dataset_files(info, found) -> list[str]:
    """`convlens data`: a registered dataset's classes and where each of its files is (sources.Located)."""
    lines = [f"{info.name}: {len(info.classes)} classes ({', '.join(info.classes)})"]
    if info.archive and any(loc.path is None for loc in found):
        lines.append(f"  (the files come out of {info.archive.name}, {info.archive.size:,} bytes: downloaded, "
                     f"verified, and deleted once they are extracted)")
    lines += [f"  {info.files[loc.role].name:28} {loc.source:16} "
              f"{loc.path or '(not found: `convlens data fetch` downloads it)'}" for loc in found]
    return lines


def verified_files(info, rows) -> list[str]:
    """`convlens data verify`: one line per file, ok or BAD with why (sources.verify's rows)."""
    return [f"{'ok ' if ok else 'BAD'}  {info.files[loc.role].name:28} {detail}  ({loc.path or '-'})"
            for loc, ok, detail in rows]
