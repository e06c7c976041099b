"""What the web explorer keeps between requests: runs, models, datasets, evaluations and uploads,
each cache bounded, each entry made once.

An uploaded image is decoded once, when it arrives; the input a run's model takes is prepared
from it once per (image, run), so the hover arithmetic and a second inspection never decode
or prepare it again.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import torch
from fastapi import HTTPException
from PIL import Image

from . import views
from .convolution import lab_image
from .datasets import Dataset, load_dataset, mean_pixel
from .engine import device_of, unit_pixels
from .errors import RunError
from .evaluate import Evaluation, evaluate
from .features import Optimised, TopCrops, maximise_filters, top_crops
from .images import read_image
from .models import ConvNet
from .runs import Run, check_name, open_run

UPLOADS_KEPT = 32          # uploaded/drawn images kept for follow-up requests (hover arithmetic, the lab)
RUN_FILES = ("model.json", "config.json", "metrics.jsonl", "results.json", "model.safetensors")
class Cache:
    """A bounded least-recently-used map whose values are made once, outside the lock."""

    def __init__(self, size: int):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def put(self, key, value) -> None:
        self.get(key, lambda: value)

    def find(self, key):
        """The value kept under key, or None."""
        with self.lock:
            return self.items.get(key)

    def get(self, key, make: Callable):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class Explorer:
    """The server's state over one runs folder."""

    def __init__(self, runs_dir: Path, data_dir: str | None, device: torch.device = torch.device("cpu")):
        self.runs_dir, self.data_dir, self.device = Path(runs_dir), data_dir, device
        self.runs, self.models, self.evaluations = Cache(256), Cache(8), Cache(8)
        self.datasets, self.uploads, self.inputs = Cache(16), Cache(UPLOADS_KEPT), Cache(4 * UPLOADS_KEPT)
        self.features = Cache(256)           # top crops per layer, optimised inputs per filter
        # One inspection at a time: each is ~25 ms of forward and backward passes on a core; two at
        # once would take both cores of a small machine and make every quick prediction wait.
        self.heavy = threading.Semaphore(1)

    # runs ---------------------------------------------------------------
    def run(self, name: str) -> Run:
        """A run by name inside the runs folder; 404 for anything else (no '..', no paths), RunError
        (400) for a damaged one. Read again only when one of its files changed (a run still training)."""
        try:
            check_name(name)
        except RunError as e:
            raise HTTPException(404, str(e)) from None
        path = self.runs_dir / name
        try:
            stamp = tuple((path / f).stat().st_mtime_ns if (path / f).exists() else 0 for f in RUN_FILES)
        except OSError:
            stamp = None
        if not stamp or not stamp[0]:
            raise HTTPException(404, f"no run {name!r}")
        return self.runs.get((name, stamp), lambda: open_run(path))

    def finished(self, name: str) -> Run:
        run = self.run(name)
        if not (run.path / "model.safetensors").exists():
            raise HTTPException(409, f"run {name} has no trained weights yet (still training, or stopped in epoch 1)")
        return run

    def _key(self, run: Run) -> tuple:
        return run.name, (run.path / "model.safetensors").stat().st_mtime_ns

    def model(self, run: Run) -> ConvNet:
        return self.models.get(self._key(run), lambda: run.load_model(self.device))

    def dataset(self, run: Run) -> Dataset:
        """The run's data (all training images and the test split), loaded once."""
        return self.datasets.get(("run", run.name, run.config.dataset, run.config.data_dir),
                                 lambda: views.data_of(run, self.data_dir))

    def fashion_mnist(self) -> Dataset:
        """The embedded default, for the convolution lab's sample images."""
        return self.datasets.get(("fashion-mnist",), lambda: load_dataset("fashion-mnist", self.data_dir,
                                                                          val_split=0.0))

    def mean_pixel(self, run: Run) -> list[float]:
        """The run's training images' mean pixel per channel (the mean baseline), computed once."""
        return self.evaluations.get(("mean", *self._key(run)), lambda: mean_pixel(self.dataset(run)))

    def top_crops(self, run: Run, layer: str) -> TopCrops:
        """A conv layer's top test crops, every filter, found once (one pass over the test images)."""
        return self.features.get(("top", *self._key(run), layer),
                                 lambda: top_crops(self.model(run), self.dataset(run).test_x, layer))

    def optimised(self, run: Run, layer: str, f: int) -> Optimised:
        """The input optimised for one filter (seeded: the same every time), made once."""
        return self.features.get(("opt", *self._key(run), layer, f),
                                 lambda: maximise_filters(self.model(run), layer, [f]))

    def evaluation(self, run: Run) -> Evaluation:
        def make():
            data = self.dataset(run)
            model = self.model(run)       # in the precision of the run's recorded figures: the runs table's number
            return evaluate(model, data.test_x, data.test_y, run.classes, views.run_precision(run, device_of(model)))
        return self.evaluations.get(self._key(run), make)

    # images -------------------------------------------------------------
    def keep_upload(self, data: bytes, name: str) -> tuple[str, Image.Image]:
        """Decode an uploaded image (ImageError if it is not one) and keep it under a new id."""
        img = read_image(data, name)
        image_id = uuid.uuid4().hex[:16]
        self.uploads.put(image_id, (img, name))
        return image_id, img

    def upload(self, image_id: str) -> tuple[Image.Image, str]:
        kept = self.uploads.find(image_id)
        if kept is None:
            raise HTTPException(404, f"no uploaded image {image_id!r} (uploads are kept for the last "
                                     f"{UPLOADS_KEPT}; upload it again)")
        return kept

    def looked(self, run: Run, index: int | None, image_id: str | None, invert: str = "auto") -> views.Looked:
        """A test image or an upload, as the run's model takes it."""
        if (index is None) == (image_id is None):
            raise HTTPException(400, "give either index (a test image) or image_id (an upload)")
        if image_id is None:
            return views.test_image(self.dataset(run), index, "index")
        img, name = self.upload(image_id)
        key = (image_id, run.name, run.input_shape, run.image_rule, invert)
        return self.inputs.get(key, lambda: views.user_image(run, img, name, invert))

    def lab_input(self, index: int | None, image_id: str | None) -> tuple[torch.Tensor, str]:
        """The lab's image: an upload as it looks, or a Fashion-MNIST test image; (H, W) in [0, 1]."""
        if image_id is None:
            return views.lab_sample(self.fashion_mnist(), index or 0, "index")
        img, name = self.upload(image_id)
        return self.inputs.get((image_id, "lab"), lambda: (unit_pixels(lab_image(img, name)), name))
