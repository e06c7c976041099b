"""convlens in Jupyter: what the Python API returns shows itself when it is the last value of a cell.

    import convlens as cl
    from convlens import notebook as nb
    cl.summarize("seed")                   # the layer table, every parameter count explained
    run = cl.train(cl.TrainConfig())       # the run: its results, curves and where it came from
    cl.evaluate_run(run)                   # test metrics per class and the confusion matrix
    nb.activations(run, 0)                 # every layer's maps for test image 0
    nb.kernels(run)                        # the first conv layer's learned kernels
    nb.filter_across(run, 6)               # filter 6 on several images through the layers
    nb.explain(run, 0)                     # why the model says what it says about image 0
    nb.curves(run, other_run)              # loss and accuracy curves, overfitting marked

The types below the faces know nothing of notebooks: register() (run when convlens is imported
in IPython) tells IPython's display formatters how to draw each, and every picture comes from the
same views.py function the CLI, the report and the explorer draw it with.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from . import charts, figures, views
from .convolution import LabResult
from .datasets import Dataset
from .evaluate import Evaluation
from .inspect import FilterGrid, KernelSet, LayerMaps
from .models import shape_text
from .report import Html, esc, figure_html, img_tag, paragraph, pre, table_html
from .runs import Run
from .summary import Summary

# ---------------------------------------------------------------------------
# What each of convlens's types looks like in a notebook

def summary_html(s: Summary) -> str:
    """The Keras-style layer table, with the arithmetic behind each parameter count."""
    rows = [[l.name, l.type, l.spec.token, shape_text(l.out_shape), f"{l.params:,}", l.arithmetic]
            for l in s.layers]
    return (table_html(["layer", "type", "token", "output", "params", "why that many"], rows,
                       ["left", "left", "left", "left", "right", "left"])
            + paragraph(f"Model {s.name}: {s.total_params:,} parameters ({s.trainable_params:,} trainable), "
                        f"{s.mult_adds:,} multiply-adds per image, input {shape_text(s.input_shape)}."))


def run_html(run: Run) -> str:
    """A run: what it is, its test result, where it came from, its curves."""
    res = run.results
    head = (f"<h4>{esc(run.name)}</h4>" + paragraph(
        f"{run.model_info.spec} on {run.model_info.dataset} · {res.get('epochs_run', '?')} epochs · test accuracy "
        f"{res.get('test_accuracy', float('nan')):.2%}, loss {res.get('test_loss', float('nan')):.4f} · {run.path}"))
    lines = views.run_summary(run)[1:]                   # the table is summary_html's; these are the import notes
    body = Html("".join(paragraph(line) for line in lines))
    if res.get("overfitting"):
        body += paragraph("Note: " + res["overfitting"])
    if run.metrics:
        body += figure_html(views.curves_figure([run]), "Training (solid) and validation (dashed) curves.",
                            width=720)
    else:                                                # imported: no curves, so the model it brought
        body += summary_html(views.summary_of(run))
    return head + body


def evaluation_html(ev: Evaluation) -> str:
    """Test accuracy, precision and recall per class, and the confusion matrix."""
    rows = [[c, f"{p:.3f}", f"{r:.3f}", f"{int(n):,}"]
            for c, p, r, n in zip(ev.classes, ev.precision, ev.recall, ev.confusion.sum(1))]
    return (paragraph(f"{len(ev.labels):,} test images · loss {ev.loss:.4f} · accuracy {ev.accuracy:.2%}")
            + '<div style="display:flex;gap:2em;align-items:flex-start">'
            + table_html(["class", "precision", "recall", "images"], rows, ["left", "right", "right", "right"])
            + img_tag(charts.confusion_matrix(ev.confusion, ev.classes), "confusion matrix", width=520) + "</div>")


def dataset_html(data: Dataset) -> str:
    """A dataset's size and classes, and its first training images."""
    lines = views.data_table(data, data.name)
    n = min(16, len(data.train_y))
    captions = [data.classes[int(y)] for y in data.train_y[:n]]
    return pre("\n".join(lines)) + figure_html(
        figures.gallery(views.as_drawn(data.train_x[:n]), captions, f"the first {n} training images"),
        f"{data.name}: the first {n} training images.", width=720)


def layer_png(layer: LayerMaps) -> bytes | None:
    """One layer's output maps as a grid (flat layers are shown as their numbers instead)."""
    if layer.output.ndim != 3:
        return None
    return figures.feature_map_grid(layer.output, f"{layer.name} ({layer.type}) {layer.shape}")


RENDERERS = {"text/html": {Summary: summary_html, Run: run_html, Evaluation: evaluation_html, Dataset: dataset_html},
             "image/png": {LayerMaps: layer_png, KernelSet: views.kernels_png, FilterGrid: views.filter_png,
                           LabResult: views.lab_figure}}


def register(shell=None) -> bool:
    """Tell IPython (the running shell, or `shell`) how to draw convlens's types; False outside IPython."""
    if shell is None:
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return False
    for mime, renderers in RENDERERS.items():
        formatter = shell.display_formatter.formatters[mime]
        for cls, render in renderers.items():
            formatter.for_type(cls, render)
    return True


# ---------------------------------------------------------------------------
# The notebook's verbs: a run in, something that shows itself out

_data: dict[str, Dataset] = {}


def data_of(run: Run) -> Dataset:
    """The run's data, read once per notebook session."""
    key = str(run.path.resolve())
    if key not in _data:
        _data[key] = views.data_of(run)
    return _data[key]


class Layers(list):
    """Every layer's output for one image (LayerMaps, in spec order): shows each spatial layer's maps."""

    def __init__(self, layers: Sequence[LayerMaps], label: str):
        super().__init__(layers)
        self.label = label

    def _repr_html_(self) -> str:
        parts = [figure_html(png, f"{layer.name}: all {layer.output.shape[0]} maps for {self.label}", width=720)
                 for layer in self if (png := layer_png(layer)) is not None]
        flat = [f"{layer.name} {layer.shape}" for layer in self if layer.output.ndim != 3]
        return "".join(parts) + (paragraph("Flat layers: " + ", ".join(flat)) if flat else "")


@dataclass
class Explained:
    """One prediction explained (views.Explanation) with the image it is about."""
    explanation: views.Explanation
    looked: views.Looked
    classes: Sequence[str]

    def _repr_png_(self) -> bytes:
        return self.explanation.png(self.looked, self.classes)

    def __repr__(self) -> str:
        return "\n".join(self.explanation.text(self.looked.label, self.classes))


@dataclass
class Picture:
    """A figure with its caption."""
    png: bytes
    caption: str

    def _repr_png_(self) -> bytes:
        return self.png

    def __repr__(self) -> str:
        return self.caption


def _looked(run: Run, index: int, image) -> views.Looked:
    return views.user_image(run, image) if image is not None else views.test_image(data_of(run), index, "index")


def activations(run: Run, index: int = 0, image=None) -> Layers:
    """Every layer's output for test image `index` (or an image file): `convlens activations`."""
    looked = _looked(run, index, image)
    return Layers([layer for layer, _ in views.layer_figures(views.model_of(run, "cpu"), looked.image, looked.label)],
                  looked.label)


def kernels(run: Run, layer: int | str | None = None) -> KernelSet:
    """A conv layer's learned kernels and biases (default the first): `convlens filters`."""
    return views.kernel_figure(views.model_of(run, "cpu"), layer)[0]


def filter_across(run: Run, filter_index: int = 6, images: Sequence[int] = (0, 7, 26)) -> FilterGrid:
    """One filter on several test images through the conv and pooling layers: the study note's figure."""
    return views.filter_grid(views.model_of(run, "cpu"), data_of(run), images, filter_index)


def explain(run: Run, index: int = 0, image=None, method: str = "layercam") -> Explained:
    """Top classes, gradient saliency and a class activation map for one image: `convlens explain`."""
    looked = _looked(run, index, image)
    return Explained(views.explain(views.model_of(run, "cpu"), looked.image, run.classes, method), looked, run.classes)


def curves(*runs: Run) -> Picture:
    """Runs' loss and accuracy curves overlaid, overfitting and best epoch marked: `convlens compare`."""
    return Picture(views.curves_figure(runs), "loss and accuracy per epoch: " + ", ".join(r.name for r in runs))
