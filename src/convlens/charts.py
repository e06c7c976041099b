"""Charts of numbers: training curves, confusion matrices, per-class bars (plotting.py's look).

Drawn once here for the CLI, the report, TensorBoard and the explorer alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .plotting import COUNT_CMAP, LABEL, TITLE, as_array, empty, render, shape_label


def confusion_matrix(confusion, classes: Sequence[str], normalize: bool = False) -> bytes:
    """The K×K confusion matrix (rows: true class, columns: predicted), every cell annotated with
    its count, or with normalize=True its fraction of the row (the diagonal is then recall)."""
    counts = as_array(confusion, 2, "confusion")
    k = counts.shape[0]
    if counts.shape != (k, k) or len(classes) != k:
        raise ValueError(f"confusion_matrix: need a square K×K matrix and K class names, "
                         f"got {shape_label(counts)} and {len(classes)} names")
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
    return render(fig)


def per_class_bars(values, classes: Sequence[str], title: str, xlabel: str, fmt: str | None = None) -> bytes:
    """One horizontal bar per class with its value printed (fmt, default: integers plainly,
    otherwise 3 decimals); classes top to bottom in the given order."""
    v = as_array(values, 1, "values")
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
    return render(fig)


def curves(series: Sequence[dict], title: str | None = None) -> bytes:
    """Loss and accuracy against epoch for one run or several (one colour each): train solid,
    validation dashed, a dotted line at the overfitting onset and a star at the best epoch.

    Each series: {"label", "epochs", "loss", "val_loss", "accuracy", "val_accuracy", "onset", "best"};
    val_*, onset and best may be None or missing.
    """
    if not series:
        return empty(title or "training curves", "no runs")
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
    return render(fig)


def deletion_curves(fractions, curves: Sequence[tuple[str, np.ndarray, float]], random, class_name: str,
                    title: str = "deletion curves") -> bytes:
    """The explained class's probability as pixels are removed, most important first by each map (label,
    curve, score) and in random order (dashed); the score, the area between a curve and the random one,
    in the legend (> 0: it removes what the model uses faster than chance)."""
    x = as_array(fractions, 1, "fractions")
    fig = Figure(figsize=(7.2, 4.2), layout="constrained")
    ax = fig.add_subplot()
    palette = colormaps["tab10"].colors
    for i, (label, curve, score) in enumerate(curves):
        ax.plot(x, as_array(curve, 1, label), "-", color=palette[i % len(palette)], lw=1.8,
                label=f"{label}  (score {score:+.3f})")
    ax.plot(x, as_array(random, 1, "random"), "--", color="#555555", lw=1.8, label="random order")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("share of the pixels removed, most important first", fontsize=LABEL)
    ax.set_ylabel(f"probability of {class_name}", fontsize=LABEL)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="upper right")
    ax.set_title(title, fontsize=TITLE)
    return render(fig)


def ladder_curves(series: Sequence[dict], title: str = "the accuracy ladder") -> bytes:
    """Validation accuracy of each rung (one colour each) against epoch and against training time, overlaid.

    Each series: {"label", "epochs", "val_accuracy", "time_s"} (time_s: training time at the end of each epoch).
    """
    if not series:
        return empty(title, "no rung trained")
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    palette = colormaps["tab10"].colors
    for i, s in enumerate(series):
        acc = np.asarray(s["val_accuracy"], dtype=np.float64) * 100
        for ax, x in zip(axes, (s["epochs"], s["time_s"])):
            ax.plot(np.asarray(x, dtype=np.float64), acc, "-", marker="o" if len(acc) <= 30 else None, ms=3,
                    color=palette[i % len(palette)], label=s["label"] if ax is axes[0] else None)
    for ax, xlabel in zip(axes, ("epoch", "training time (s)")):
        ax.set_xlabel(xlabel, fontsize=LABEL)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("validation accuracy (%)", fontsize=LABEL)
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlim(0.5, max(max(s["epochs"]) for s in series) + 0.5)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=min(7, len(series)),
               fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=TITLE)
    return render(fig)
