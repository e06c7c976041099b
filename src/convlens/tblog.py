"""TensorBoard logging (`convlens train --tensorboard`), for people who already live there.

    RUN/tensorboard/   event files: `tensorboard --logdir runs` shows every run side by side

Per epoch: loss, accuracy, validation loss and accuracy, learning rate, epoch time (scalars)
and every weight and bias (histograms). At the end: test loss and accuracy, the confusion
matrix (counts and row-normalised) and every conv layer's feature maps for test image 0 as
images, drawn by figures.py and charts.py like everywhere else. Needs the optional `tensorboard` package.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from . import charts, figures
from .errors import ConvlensError
from .inspect import activations


def _image(png: bytes) -> np.ndarray:
    """A figure's PNG as (3, H, W) uint8, the layout SummaryWriter.add_image takes by default."""
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).transpose(2, 0, 1).copy()


class TensorBoardLog:
    """A SummaryWriter for one run. first_epoch: on resume, the epoch training goes on from; events a
    killed process wrote for it and later are marked discarded (TensorBoard's purge_step)."""

    @staticmethod
    def check_installed() -> None:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise ConvlensError("--tensorboard needs the tensorboard package: pip install 'convlens[tensorboard]'") from None

    def __init__(self, run_dir: Path, first_epoch: int = 1):
        self.check_installed()
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=first_epoch if first_epoch > 1 else None)

    def epoch(self, record: dict, model: torch.nn.Module) -> None:
        e = record["epoch"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "time_s"):
            if key in record:
                self.writer.add_scalar(f"epoch/{key}", record[key], e)
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                self.writer.add_histogram(f"weights/{name}", value.detach().float().cpu(), e)
        self.writer.flush()

    def final(self, epoch: int, test_loss: float, test_accuracy: float, confusion: np.ndarray, model, data) -> None:
        """Test metrics, confusion matrices (the counts the run's test pass made) and feature maps,
        logged at the last epoch."""
        self.writer.add_scalar("test/loss", test_loss, epoch)
        self.writer.add_scalar("test/accuracy", test_accuracy, epoch)
        classes = list(data.classes)
        self.writer.add_image("confusion_matrix/counts", _image(charts.confusion_matrix(confusion, classes)), epoch)
        self.writer.add_image("confusion_matrix/normalized",
                              _image(charts.confusion_matrix(confusion, classes, normalize=True)), epoch)
        if len(data.test_y):
            label = data.classes[int(data.test_y[0])]
            for layer in activations(model, data.test_x[0]):
                if layer.kind in ("conv", "res"):
                    png = figures.feature_map_grid(layer.output, f"{layer.name} {layer.shape}: test image 0 ({label})")
                    self.writer.add_image(f"feature_maps/{layer.name}", _image(png), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
