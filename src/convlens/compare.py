"""Runs side by side: the dense baseline vs the seed CNN, 5 vs 20 epochs, one recipe vs another."""

from __future__ import annotations

from .models import layer_infos
from .runs import Run
from .train import overfitting_onset


def curve_series(run: Run, label: str | None = None) -> dict:
    """A run's per-epoch curves in the form figures.curves takes, with onset and best epoch marked."""
    m = run.metrics
    has_val = bool(m) and all("val_loss" in e for e in m)
    best = run.results.get("best_epoch") or None
    return {"label": label or run.name, "epochs": [e["epoch"] for e in m],
            "loss": [e["loss"] for e in m], "accuracy": [e["accuracy"] for e in m],
            "val_loss": [e["val_loss"] for e in m] if has_val else None,
            "val_accuracy": [e["val_accuracy"] for e in m] if has_val else None,
            "onset": overfitting_onset(m), "best": best if has_val else None}


def comparison_rows(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row of metrics per run."""
    head = ["run", "model", "params", "epochs", "best epoch", "overfits from", "test accuracy", "test loss",
            "training time"]
    rows = []
    for r in runs:
        info = r.model_info
        params = sum(l.params for l in layer_infos(info["spec"], tuple(info["input_shape"]), len(info["classes"])))
        res = r.results
        rows.append([r.name, r.config.get("model", info["spec"]), f"{params:,}", str(res.get("epochs_run", len(r.metrics))),
                     str(res.get("best_epoch") or "–"), str(overfitting_onset(r.metrics) or "–"),
                     f"{res['test_accuracy']:.2%}" if "test_accuracy" in res else "–",
                     f"{res['test_loss']:.4f}" if "test_loss" in res else "–",
                     f"{res['train_time_s']:.1f} s" if "train_time_s" in res else "–"])
    return head, rows


def comparison_text(runs: list[Run]) -> str:
    head, rows = comparison_rows(runs)
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["─" * w for w in widths])] + [line(r) for r in rows])
