"""Evaluation and prediction: metrics on a test set, top-k for the user's own images.

Models run through the engine (engine.predict_logits), as in training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .engine import confusion_counts, device_of, pick_precision, predict_logits
from .images import load_image
from .models import ConvNet


@dataclass
class Evaluation:
    classes: list[str]
    loss: float
    accuracy: float
    confusion: np.ndarray        # (classes, classes) counts; rows = true class, columns = predicted
    probabilities: np.ndarray    # (N, classes) softmax outputs, float32
    labels: np.ndarray           # (N,) true classes

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @property
    def precision(self) -> np.ndarray:
        predicted = self.confusion.sum(0)
        return np.divide(np.diag(self.confusion), predicted, out=np.zeros(len(self.classes)), where=predicted > 0)

    @property
    def recall(self) -> np.ndarray:
        actual = self.confusion.sum(1)
        return np.divide(np.diag(self.confusion), actual, out=np.zeros(len(self.classes)), where=actual > 0)

    @property
    def f1(self) -> np.ndarray:
        p, r = self.precision, self.recall
        return np.divide(2 * p * r, p + r, out=np.zeros(len(self.classes)), where=(p + r) > 0)

    def most_confused(self, k: int = 5) -> list[tuple[str, str, int]]:
        """The k largest off-diagonal cells: (true class, predicted as, count)."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(off, axis=None)[::-1][:k]
        return [(self.classes[i], self.classes[j], int(off[i, j]))
                for i, j in zip(*np.unravel_index(order, off.shape)) if off[i, j] > 0]

    def to_dict(self) -> dict:
        return {"loss": self.loss, "accuracy": self.accuracy, "images": int(len(self.labels)),
                "classes": self.classes, "confusion": self.confusion.tolist(),
                "per_class": [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f),
                               "support": int(s)}
                              for c, p, r, f, s in zip(self.classes, self.precision, self.recall, self.f1,
                                                       self.confusion.sum(1))],
                "most_confused": [{"true": t, "predicted": p, "count": n} for t, p, n in self.most_confused()]}

    def text(self) -> str:
        """Loss, accuracy, per-class table, confusion matrix and most-confused pairs as plain text."""
        w = max(len(c) for c in self.classes)
        out = [f"Test images: {len(self.labels):,}   loss {self.loss:.4f}   accuracy {self.accuracy:.2%}", "",
               f"{'class':<{w}}  precision  recall     F1  support"]
        for c, p, r, f, s in zip(self.classes, self.precision, self.recall, self.f1, self.confusion.sum(1)):
            out.append(f"{c:<{w}}  {p:9.3f}  {r:6.3f}  {f:5.3f}  {s:7,}")
        short = [c[:5] for c in self.classes]
        out += ["", "Confusion matrix (rows: true class, columns: predicted)",
                " " * (w + 2) + " ".join(f"{s:>5}" for s in short)]
        for c, row in zip(self.classes, self.confusion):
            out.append(f"{c:<{w}}  " + " ".join(f"{v:5d}" for v in row))
        pairs = self.most_confused()
        if pairs:
            out += ["", "Most confused:"] + [f"  {t} → {p}: {n}" for t, p, n in pairs]
        return "\n".join(out)


def evaluate(model: ConvNet, x_u8: torch.Tensor, y: torch.Tensor, classes: list[str],
             precision: torch.dtype | None = None, batch_size: int | None = None, tta: bool = False) -> Evaluation:
    """Metrics of `model` on uint8 images `x_u8` (N, C, H, W) with labels `y`.

    tta: average each image's prediction with its mirror image's (flip test-time augmentation).
    """
    precision = precision or pick_precision("auto", device_of(model))
    logits = predict_logits(model, x_u8, batch_size, precision, tta=tta)
    y = y.to(logits.device)
    loss = F.cross_entropy(logits, y).item()
    pred = logits.argmax(1)
    return Evaluation(list(classes), loss, float((pred == y).float().mean()), confusion_counts(logits, y, len(classes)),
                      logits.softmax(1).cpu().numpy().astype(np.float32), y.cpu().numpy())


@dataclass
class Prediction:
    source: str
    top: list[tuple[str, float]]     # (class, probability), most likely first
    image: torch.Tensor              # the prepared uint8 input (C, H, W)


def predict(model: ConvNet, classes: list[str], images: list[str | os.PathLike], k: int = 3,
            invert: bool | None = None, rule: str = "object") -> list[Prediction]:
    """Top-k classes for each image file, prepared by `rule` (images.prepare_image); ImageError
    names the first unreadable one."""
    c, h, w = model.input_shape
    prepared = [load_image(p, (h, w), c, invert, rule=rule) for p in images]
    if not prepared:
        return []
    probs = predict_logits(model, torch.stack(prepared), precision=torch.float32).softmax(1)
    top = probs.topk(min(k, len(classes)), dim=1)
    return [Prediction(str(src), [(classes[j], float(p)) for p, j in zip(vals.tolist(), idx.tolist())], img)
            for src, vals, idx, img in zip(images, top.values, top.indices, prepared)]
