"""The HTML report: one self-contained page that works offline.

Images are embedded as data: URLs, the CSS is inline, there is no script, and a
Content-Security-Policy forbids the page from loading anything else, so the file can be
mailed, archived or opened on a machine without network and look the same.

Bodies are assembled from the helpers below. Each returns `Html`, a str that is already safe;
`esc` escapes any other value, so text that came from a user, a file name or a class name is
always escaped exactly once.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from . import explanations, feature_views, views
from .attribution import METHODS, methods_for
from .convolution import convolution_lab
from .datasets import mean_pixel
from .engine import device_of
from .evaluate import Evaluation, evaluate
from .files import write_atomic
from .models import ConvNet, conv_layers, shape_text
from .runs import Run

# No network, no script: images only from data: URLs, styles only from the <style> element.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: #1f2328;
       font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "DejaVu Sans", Arial,
             sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
h1 { font-size: 1.9rem; line-height: 1.2; margin: 0 0 .3rem; }
.subtitle { color: #57606a; margin: 0 0 1.75rem; }
nav.toc { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: .8rem 1.25rem;
          margin: 0 0 2rem; }
nav.toc h2 { font-size: 1rem; margin: 0 0 .4rem; }
nav.toc ol { margin: 0; padding-left: 1.5rem; columns: 2 18rem; }
section { margin: 2.75rem 0 0; scroll-margin-top: 1rem; }
section > h2 { font-size: 1.4rem; margin: 0 0 .8rem; padding-bottom: .3rem; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
p { margin: .6rem 0; max-width: 75ch; }
a { color: #0969da; }
img { max-width: 100%; height: auto; }
figure { margin: 1rem 0 1.5rem; }
figcaption { color: #57606a; font-size: .9rem; margin-top: .3rem; max-width: 75ch; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; display: block;
        overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #d0d7de; padding: .3rem .65rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
.right { text-align: right; } .center { text-align: center; }
pre { background: #f6f8fa; border-radius: 6px; padding: .8rem 1rem; overflow-x: auto;
      font: 13px/1.45 ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
.back { font-size: .85rem; margin-top: 1rem; }
footer { color: #57606a; font-size: .85rem; margin-top: 4rem; border-top: 1px solid #d0d7de; padding-top: .75rem; }
@media print { nav.toc { break-after: page; } figure, table { break-inside: avoid; } .back { display: none; } }
""".strip()


class Html(str):
    """A string of HTML that is already safe: `esc` passes it through unchanged."""


@dataclass(frozen=True)
class Section:
    """One titled part of the report. body is HTML built with the helpers here (trusted as is);
    id is the anchor the table of contents links to, derived from the title when empty."""
    title: str
    body: str
    id: str = ""


def esc(text) -> Html:
    """text as HTML-escaped text (quotes too, so it is safe in attributes); Html stays as is."""
    return text if isinstance(text, Html) else Html(escape(str(text), quote=True))


def img_tag(png: bytes, alt: str, width: int | None = None) -> Html:
    """An <img> with the PNG embedded as a data: URL; width in CSS pixels (it still shrinks to fit)."""
    data = base64.b64encode(png).decode("ascii")
    size = f' width="{int(width)}"' if width is not None else ""
    return Html(f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}"{size}>')


def figure_html(png: bytes, caption: str, alt: str | None = None, width: int | None = None) -> Html:
    """An embedded image with a caption under it."""
    return Html(f"<figure>{img_tag(png, alt or caption, width)}<figcaption>{esc(caption)}</figcaption></figure>")


def table_html(head: Sequence[str], rows: Sequence[Sequence], align: Sequence[str] | None = None) -> Html:
    """A table; cells are escaped unless they are Html (e.g. an img_tag thumbnail).
    align: one of "left", "right", "center" per column (numbers read best right-aligned)."""
    def cls(j: int) -> str:
        a = align[j] if align and j < len(align) else "left"
        if a not in ("left", "right", "center"):
            raise ValueError(f"table_html: align must be left, right or center, got {a!r}")
        return "" if a == "left" else f' class="{a}"'
    th = "".join(f"<th{cls(j)}>{esc(h)}</th>" for j, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls(j)}>{esc(c)}</td>" for j, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return Html(f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")


def pre(text: str) -> Html:
    """Preformatted monospace text (a summary table, a config), escaped."""
    return Html(f"<pre>{esc(text)}</pre>")


def paragraph(text: str) -> Html:
    """A paragraph of escaped text."""
    return Html(f"<p>{esc(text)}</p>")


def _anchor(text: str) -> str:
    """A readable id: lower case letters, digits and hyphens ('Confusion matrix' -> 'confusion-matrix')."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def render_report(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole report as one HTML5 document: header, table of contents, sections, footer."""
    taken = {"top", "contents"}
    ids = []
    for s in sections:
        base = _anchor(s.id or s.title)
        anchor, n = base, 2
        while anchor in taken:                      # two sections called "conv2" get conv2, conv2-2
            anchor, n = f"{base}-{n}", n + 1
        taken.add(anchor)
        ids.append(anchor)
    toc = "".join(f'<li><a href="#{a}">{esc(s.title)}</a></li>' for a, s in zip(ids, sections))
    body = "\n".join(f'<section id="{a}">\n<h2>{esc(s.title)}</h2>\n{s.body}\n'
                     f'<p class="back"><a href="#top">back to top</a></p>\n</section>'
                     for a, s in zip(ids, sections))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="generator" content="convlens">
<title>{esc(title)}</title>
<style>
{CSS}
</style>
</head>
<body>
<main>
<header id="top">
<h1>{esc(title)}</h1>
<p class="subtitle">{esc(subtitle)}</p>
</header>
<nav class="toc" id="contents" aria-label="Contents">
<h2>Contents</h2>
<ol>{toc}</ol>
</nav>
{body}
<footer>Made by convlens. Everything is in this one file: it works offline.</footer>
</main>
</body>
</html>
"""


# ---------------------------------------------------------------------------
# A run's report: everything convlens knows about it, on one offline page, built from views.py

def _model_section(run: Run) -> Section:
    """The model, with the arithmetic behind every parameter count."""
    s = views.summary_of(run)
    rows = [[l.name, l.type, l.spec.token, shape_text(l.out_shape), f"{l.params:,}", l.arithmetic, f"{l.mult_adds:,}"]
            for l in s.layers]
    body = table_html(["layer", "type", "token", "output", "params", "why that many", "mult-adds"], rows,
                      ["left", "left", "left", "left", "right", "left", "right"])
    body += paragraph(f"Spec {s.spec} · total {s.total_params:,} parameters ({s.trainable_params:,} trainable) · "
                      f"{s.mult_adds:,} multiply-adds per image. Pooling and flatten layers have no parameters.")
    for line in views.run_summary(run)[1:]:           # an imported model: where it came from
        body += paragraph(line)
    return Section("Model", body)


def _curves_section(run: Run) -> Section:
    """Curves, with the overfitting onset and best epoch marked."""
    if not run.metrics:
        return Section("Training curves", paragraph("No epochs: this model was imported, not trained here."
                                                    if run.record.get("imported") else "No epoch has finished."))
    body = figure_html(views.curves_figure([run]),
                       "Training (solid) and validation (dashed) loss and accuracy per epoch.")
    if run.results.get("overfitting"):
        body += paragraph("Note: " + run.results["overfitting"])
    elif run.metrics and all("val_loss" in e for e in run.metrics):
        body += paragraph("No overfitting in these epochs: validation loss did not rise while training loss fell.")
    return Section("Training curves", body)


def _results_sections(run: Run, model: ConvNet, ev: Evaluation, data) -> list[Section]:
    """Test metrics, per class and as confusion matrices; the most confident mistakes, with their maps."""
    res, pngs = run.results, views.evaluation_figures(ev, data.test_x, model)
    per_class = [[c, f"{p:.3f}", f"{r:.3f}", f"{f:.3f}", f"{int(n):,}"]
                 for c, p, r, f, n in zip(ev.classes, ev.precision, ev.recall, ev.f1, ev.confusion.sum(1))]
    body = paragraph(f"{len(ev.labels):,} test images · loss {ev.loss:.4f} · accuracy {ev.accuracy:.2%}"
                     + (f" · with flip test-time augmentation {res['test_accuracy_tta']:.2%}"
                        if "test_accuracy_tta" in res else ""))
    body += table_html(["class", "precision", "recall", "F1", "images"], per_class,
                       ["left", "right", "right", "right", "right"])
    body += figure_html(pngs["per-class-accuracy.png"], "Share of each class's test images classified correctly.")
    body += figure_html(pngs["confusion.png"], "Confusion matrix, counts.")
    body += figure_html(pngs["confusion-normalized.png"], "Confusion matrix, each row divided by its class's images.")
    pairs = ev.most_confused()
    if pairs:
        body += paragraph("Most confused: " + "; ".join(f"{t} → {p} ({n})" for t, p, n in pairs))
    sections = [Section("Test results", body)]
    if (ev.predictions != ev.labels).any():
        sections.append(Section("Misclassified", figure_html(
            pngs["misclassified.png"], "Wrong predictions the model was surest of, each beside its gradient "
            "saliency and LayerCAM for the class it was taken for: where the model looked when it went wrong.")))
    return sections


def _checked_section(run: Run, model: ConvNet, data, index: int) -> Section:
    """Every attribution method on one test image, the sanity check of each, and the deletion curves."""
    looked = views.test_image(data, index, "inspect_index")
    methods = methods_for(model)
    c = explanations.checked(model, looked, run.classes, methods, mean=mean_pixel(data))
    body = figure_html(c.maps.png(looked, run.classes), " ".join(c.maps.text(looked, run.classes)[1:]))
    body += paragraph(f"Can these maps be trusted? {explanations.SANITY_ABOUT}")
    body += figure_html(c.check.png(looked.image), "The sanity check: each map redrawn as the layers' weights are "
                        "re-drawn at random, from the output layer down; ρ is the Spearman rank correlation with "
                        "the map from the learned weights (the mean of 3 random draws).")
    chk = c.check.check
    body += table_html(["map", *chk.titles[1:], "verdict"],
                       [[m.name, *(f"{r:.2f}" for r in m.rho[1:]), m.verdict] for m in chk.methods],
                       ["left"] + ["right"] * (len(chk.steps) - 1) + ["left"])
    scores = c.deletion.curves.scores
    body += figure_html(c.deletion.png(run.classes), c.deletion.text()[0])
    body += table_html(["map", "deletion score"], [[METHODS[m], f"{v:+.3f}"] for m, v in
                                                   sorted(scores.items(), key=lambda kv: -kv[1])], ["left", "right"])
    return Section("Explanations, checked", body)


def _features_section(run: Run, model: ConvNet, data) -> Section:
    """What each filter of every conv layer (and the first residual block) looks for, and the class views."""
    body = Html("")
    blocks = [info.name for _, info in conv_layers(model, blocks=True) if info.spec.kind == "res"]
    for layer in [info.name for _, info in conv_layers(model)] + blocks[:1]:
        lf = feature_views.layer_features(model, data, layer)
        lines = lf.text(len(data.test_y))
        body += figure_html(lf.png(), " ".join(line.strip() for line in lines) + ".")
    if len(blocks) > 1:     # each deeper block optimises an input per filter through more layers: minutes on a CPU
        body += paragraph(f"The deeper residual blocks ({', '.join(blocks[1:])}) are left out of this page: each "
                          f"takes a minute or more on a CPU. `convlens features {run.name} --layer {blocks[-1]}` "
                          "draws one, and the explorer shows any filter's when you click its map.")
    _, png = feature_views.class_view(model, run.classes)
    body += figure_html(png, "Class views: an input optimised to raise each class's score, with its probability. "
                        "Real examples (the crops above) tell more about a unit than such pictures do (Borowski "
                        "et al. 2021); both are shown.")
    return Section("What each filter looks for", body)


def _kernels_section(model: ConvNet) -> Section | None:
    """The learned numbers inside the filters of every conv layer."""
    figs = views.all_kernel_figures(model)
    if not figs:
        return None
    body = Html("")
    for ks, _, png in figs:
        body += figure_html(png, f"{ks.layer}: the learned numbers inside the filters, one tile per kernel"
                            + (" and input channel (first 8 inputs)" if ks.weights.shape[1] > 1 else "") + ".")
    return Section("Kernels", body)


def _feature_maps_section(run: Run, model: ConvNet, data, index: int, compare_images, filter_index: int) -> Section:
    """Every layer's maps for one test image, one filter across images and layers, and an explanation."""
    looked = views.test_image(data, index, "inspect_index")
    ex = views.explain(model, looked.image, run.classes, need_cam=False)
    body = paragraph(f"Test image {index} ({run.classes[looked.true]}); predicted: "
                     + ", ".join(f"{c} {p:.1%}" for c, p in ex.top))
    for layer, png in views.layer_figures(model, looked.image, looked.label):
        if png is not None:
            body += figure_html(png, f"{layer.name}: all {layer.output.shape[0]} output maps.")
    if ex.cam is not None:
        chans = min(l.out_shape[0] for l in model.infos if l.spec.kind in ("conv", "res", "maxpool"))
        f_idx = filter_index if filter_index < chans else 0
        chosen = [i for i in compare_images if i < len(data.test_y)]
        _, png = views.filter_figure(model, data, chosen, f_idx)
        body += figure_html(png, f"The study note's figure: filter {f_idx} on several test images (rows) "
                                 "through the conv and pooling layers (columns).")
        body += figure_html(ex.png(looked, run.classes),
                            "Where the prediction comes from: gradient saliency, and LayerCAM (Grad-CAM with a "
                            "weight per position) on the last conv layer. Plain Grad-CAM's one weight per filter "
                            "lands on the background behind this flatten-dense head: `convlens explain --cam gradcam`.")
    return Section("Feature maps", body)


def _lab_section(data, index: int) -> Section:
    """The convolution lab on a sample: sum(pixel × kernel), then max pooling."""
    image, label = views.lab_sample(data, index, "lab_index")
    body = Html("")
    for kernel in ("vertical", "horizontal"):
        lab = convolution_lab(image, kernel)
        body += figure_html(views.lab_figure(lab), f"The {kernel}-edge kernel on {label}: {lab.shapes}; the "
                            f"reference sum equals torch's conv2d to {lab.torch_max_diff:.1e}.")
    return Section("Convolution lab", body)


def build_run_report(run: Run, data, lab_index: int = 0, inspect_index: int = 0, compare_images=(0, 7, 26),
                     filter_index: int = 6, device="cpu") -> str:
    """The HTML of a run's report: model, curves, test metrics, mistakes, kernels, feature maps, checked
    explanations, what the filters look for, lab."""
    model = run.load_model(device)
    ev = evaluate(model, data.test_x, data.test_y, run.classes, views.run_precision(run, device_of(model)))
    has_conv = bool(conv_layers(model, blocks=True))
    sections = [_model_section(run), _curves_section(run), *_results_sections(run, model, ev, data),
                _kernels_section(model),
                _feature_maps_section(run, model, data, inspect_index, compare_images, filter_index),
                _checked_section(run, model, data, inspect_index),
                _features_section(run, model, data) if has_conv else None,
                _lab_section(data, lab_index)]
    res = run.results
    subtitle = (f"{run.config.model} · {run.model_info.dataset} · {res.get('epochs_run', '?')} epochs · "
                f"test accuracy {res.get('test_accuracy', float('nan')):.2%} · recipe {run.config.recipe}")
    return render_report(f"convlens report: {run.name}", subtitle, [s for s in sections if s is not None])


def write_run_report(run: Run, out=None, data=None, data_dir=None, device="cpu") -> Path:
    """Write RUN/report.html (or `out`) atomically; returns its path."""
    if data is None:
        data = views.data_of(run, data_dir)
    path = Path(out) if out else run.path / "report.html"
    write_atomic(path, build_run_report(run, data, device=device).encode())
    return path
