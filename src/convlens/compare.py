"""Runs side by side, and the seed's warning made measurable: the dense baseline vs the seed CNN,
5 vs 20 epochs, one recipe vs another; the epoch from which a run overfits.

Takes runs as runs.open_run reads them (metrics, results, model_info, config).
"""

from __future__ import annotations

import numpy as np

from .models import layer_infos


def overfitting_onset(epochs: list[dict]) -> int | None:
    """The epoch (1-based) from which validation loss rose while training loss kept falling:
    the one after the lowest validation loss, when at least two epochs followed it and the
    last validation loss is >2 % above the lowest. None when the curves show no such thing."""
    vals = [e.get("val_loss") for e in epochs]
    if len(epochs) < 3 or any(v is None for v in vals):
        return None
    best, last = int(np.argmin(vals)), len(epochs) - 1
    if best >= last - 1 or epochs[last]["loss"] >= epochs[best]["loss"] or vals[last] <= vals[best] * 1.02:
        return None
    return best + 2


def overfitting_note(epochs: list[dict], suggest: bool = True) -> str | None:
    """The seed's 20-epoch observation, said with this run's numbers (None when it does not apply).
    suggest: end with the --early-stopping hint (not when early stopping already ran)."""
    onset = overfitting_onset(epochs)
    if onset is None:
        return None
    best, last = epochs[onset - 2], epochs[-1]
    return (f"overfitting: validation loss has been rising since epoch {onset} "
            f"(lowest {best['val_loss']:.4f} at epoch {onset - 1}, now {last['val_loss']:.4f}) while training loss "
            f"kept falling ({best['loss']:.4f} → {last['loss']:.4f})"
            + (f"; --early-stopping 2 would have kept epoch {onset - 1}'s weights" if suggest else ""))


def curve_series(run, label: str | None = None) -> dict:
    """A run's per-epoch curves in the form charts.curves takes, with onset and best epoch marked."""
    m = run.metrics
    has_val = bool(m) and all("val_loss" in e for e in m)
    best = run.results.get("best_epoch") or None
    return {"label": label or run.name, "epochs": [e["epoch"] for e in m],
            "loss": [e["loss"] for e in m], "accuracy": [e["accuracy"] for e in m],
            "val_loss": [e["val_loss"] for e in m] if has_val else None,
            "val_accuracy": [e["val_accuracy"] for e in m] if has_val else None,
            "onset": overfitting_onset(m), "best": best if has_val else None}


COMPARISON_HEAD = ["run", "model", "params", "epochs", "best epoch", "overfits from", "test accuracy", "test loss",
                   "training time"]


def comparison_rows(runs: list) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row of metrics per run, as text (the CLI, the report and the explorer show these)."""
    rows = []
    for r in runs:
        info = r.model_info
        params = sum(l.params for l in layer_infos(info.spec, info.input_shape, len(info.classes)))
        res = r.results
        rows.append([r.name, r.config.model, f"{params:,}", str(res.get("epochs_run", len(r.metrics))),
                     str(res.get("best_epoch") or "–"), str(overfitting_onset(r.metrics) or "–"),
                     f"{res['test_accuracy']:.2%}" if "test_accuracy" in res else "–",
                     f"{res['test_loss']:.4f}" if "test_loss" in res else "–",
                     f"{res['train_time_s']:.1f} s" if "train_time_s" in res else "–"])
    return list(COMPARISON_HEAD), rows


def comparison_text(runs: list) -> str:
    head, rows = comparison_rows(runs)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["─" * w for w in widths])] + [line(r) for r in rows])
