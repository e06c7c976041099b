"""The loaded dataset, and the one way to load any of them.

A dataset reference (dataref.py) names a loader in LOADERS: a registered dataset found or
fetched by sources.py, or your own IDX files, CSV or image folder. Every loader gives uint8
images (N, C, H, W) and int64 labels; the validation split is held out of the training images
here, seeded, so that every dataset gets the same protocol. Images stay uint8 end to end:
the engine scales them to [0, 1] a batch at a time, so the user never reshapes or divides by
255 (the seed's `reshape(-1, 28, 28, 1)` and `/ 255.`).

Images in memory are plain tensors; a large image folder's are StreamedImages (folders.py),
which index like tensors and decode from disk when asked. The few things that differ (a lazy
subset, decoding an epoch in worker processes, moving to the GPU) are the functions below, so
nothing outside the data layer asks which kind it holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .config import TrainConfig
from .dataref import DatasetRef, parse_image_size
from .engine import channel_stats
from .errors import DataError, RunError
from .files import read_json
from .folders import TEST_SHARE, StreamedImages, from_files, load_folder
from .idx import images_and_labels, read_idx
from .names import MAX_CLASSES
from .registry import dataset_info
from .sources import fetch
from .userdata import CSV_TEST_SHARE, load_csv, load_idx_dir

Images = torch.Tensor | StreamedImages


@dataclass
class Dataset:
    """Images as uint8 (N, C, H, W), labels as int64 (N,); val is held out of train."""
    name: str
    classes: tuple[str, ...]
    train_x: Images
    train_y: torch.Tensor
    val_x: Images
    val_y: torch.Tensor
    test_x: Images
    test_y: torch.Tensor
    skipped: tuple[tuple[str, str], ...] = ()     # image folders: (file, why) of each file left out
    files: dict | None = None                     # image folders: the files kept (folders.load_folder)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def streamed(self) -> bool:
        """True when the images stay on disk and are decoded as they are used."""
        return isinstance(self.train_x, StreamedImages)


# ---------------------------------------------------------------------------
# What differs between images in memory and streamed images, said once

def take(x: Images, index: torch.Tensor) -> Images:
    """x[index]: a gather for tensors, a lazy subset for streamed images."""
    return x.subset(index) if isinstance(x, StreamedImages) else x[index]


def batches(x: Images, order: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
    """x[idx] for each idx in `order`: a gather for tensors, decoding in worker processes for streamed images."""
    if isinstance(x, StreamedImages):
        return x.batches([idx.tolist() for idx in order])
    return (x[idx] for idx in order)


def on_device(x: Images, device: torch.device) -> Images:
    """Images where training reads them: tensors moved to `device`, streamed ones left on disk."""
    return x if isinstance(x, StreamedImages) else x.to(device)


def stats_sample(x: Images, n: int, seed: int) -> torch.Tensor:
    """Images to compute normalisation statistics on: all of a tensor, n seeded ones of a streamed set."""
    return x.sample(n, seed) if isinstance(x, StreamedImages) else x


MEAN_IMAGES = 10_000     # the mean pixel is taken over at most this many training images (seeded)


def mean_pixel(data: Dataset) -> list[float]:
    """The training images' mean pixel per channel, in [0, 1] (Integrated Gradients' mean baseline)."""
    return channel_stats(stats_sample(data.train_x, MEAN_IMAGES, 0))[0].tolist()


# ---------------------------------------------------------------------------
# Loaders, one per kind of reference: (train_x, train_y, test_x, test_y, classes, skipped, files)

@dataclass(frozen=True)
class LoadOptions:
    image_size: tuple[int, int] | None = None   # image folders: resize to (height, width)
    channels: int | None = None                  # image folders: 1 or 3
    stream: bool = False                         # image folders: decode from disk as they are used
    all_test: bool = False                       # own data without its own split: every image is test data


def _registered(ref: DatasetRef, data_dir, o: LoadOptions):
    info = dataset_info(ref.where)
    paths = {loc.role: loc.path for loc in fetch(info, data_dir)}
    arrays = {role: read_idx(path) for role, path in paths.items()}
    train_x, train_y = images_and_labels(arrays["train_images"], arrays["train_labels"], f"{info.name} train")
    test_x, test_y = images_and_labels(arrays["test_images"], arrays["test_labels"], f"{info.name} test")
    if info.transposed:   # stored (N, 1, W, H), column by column; swap to (N, 1, H, W) so letters stand upright
        train_x, test_x = train_x.transpose(2, 3).contiguous(), test_x.transpose(2, 3).contiguous()
    return train_x, train_y, test_x, test_y, info.classes, (), None


def _idx(ref: DatasetRef, data_dir, o: LoadOptions):
    return (*load_idx_dir(ref.path), (), None)


def _csv(ref: DatasetRef, data_dir, o: LoadOptions):
    return (*load_csv(ref.path, 1.0 if o.all_test else CSV_TEST_SHARE), (), None)


def _folder(ref: DatasetRef, data_dir, o: LoadOptions):
    return load_folder(ref.path, o.image_size, o.channels, o.stream, 1.0 if o.all_test else TEST_SHARE)


LOADERS: dict[str, Callable] = {"registered": _registered, "idx": _idx, "csv": _csv, "folder": _folder}


def split_train_val(n: int, val_split: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train_idx, val_idx) with round(n × val_split) held out for validation."""
    if not 0.0 <= val_split < 1.0:
        raise DataError(f"--val-split must be in [0, 1), got {val_split}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_split)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _check_loaded(ref: DatasetRef, train_x, train_y, test_x, test_y, classes) -> None:
    """What every loader's output must be, whatever the files said."""
    if not classes or len(classes) > MAX_CLASSES:
        raise DataError(f"{ref}: {len(classes):,} classes; convlens takes 1 to {MAX_CLASSES:,}")
    for y, what in ((train_y, "train"), (test_y, "test")):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(f"{ref} {what} labels outside 0..{len(classes) - 1}")
    if len(train_y) and len(test_y) and tuple(train_x.shape[1:]) != tuple(test_x.shape[1:]):
        c, h, w = train_x.shape[1:]
        tc, th, tw = test_x.shape[1:]
        raise DataError(f"{ref}: the training images are {h}×{w}×{c} but the test images {th}×{tw}×{tc}; "
                        "a model takes one size")


def load_dataset(name: str | DatasetRef = "fashion-mnist", data_dir: str | os.PathLike | None = None,
                 val_split: float = 0.1, seed: int = 0, image_size: tuple[int, int] | None = None,
                 channels: int | None = None, stream: bool = False, all_test: bool = False) -> Dataset:
    """Load a dataset with a seeded validation split: a registered one (finding or fetching its files)
    or your own, `idx:DIR`, `csv:PATH` or `folder:DIR` (image_size, channels and stream apply to
    image folders only; all_test: a single CSV or a folder without train/ and test/ is all test data)."""
    ref = DatasetRef.parse(name)
    if (image_size or channels or stream) and not ref.is_folder:
        raise DataError("--image-size, --channels and --stream apply to image folders (--dataset folder:PATH)")
    loaded = LOADERS[ref.kind](ref, data_dir, LoadOptions(image_size, channels, stream, all_test))
    train_x, train_y, test_x, test_y, classes, skipped, files = loaded
    _check_loaded(ref, train_x, train_y, test_x, test_y, classes)
    train_idx, val_idx = split_train_val(len(train_y), val_split, seed)
    if len(train_y) and not len(train_idx):
        raise DataError(f"--val-split {val_split} leaves no training images (of {len(train_y):,})")
    return Dataset(str(ref), tuple(classes), take(train_x, train_idx), train_y[train_idx], take(train_x, val_idx),
                   train_y[val_idx], test_x, test_y, tuple(skipped), files)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, val_split: float = 0.1,
                       seed: int = 0) -> Dataset:
    """Fashion-MNIST: 60,000 training (less the validation split) and 10,000 test images, 28×28."""
    return load_dataset("fashion-mnist", data_dir, val_split, seed)


def training_data(config: TrainConfig) -> Dataset:
    """The dataset a training config trains on, with its validation split (and, with --limit N, only the first N
    of its training images: the split is drawn from all of them first, so validation is the same)."""
    data = load_dataset(config.dataset_ref, config.data_dir, val_split=config.settings.val_split, seed=config.seed,
                        image_size=parse_image_size(config.image_size), channels=config.channels,
                        stream=config.stream)
    if config.limit and config.limit < len(data.train_y):
        keep = torch.arange(config.limit)
        data = replace(data, train_x=take(data.train_x, keep), train_y=data.train_y[keep])
    return data


# ---------------------------------------------------------------------------
# A trained model's data: for evaluating and inspecting it

def model_data(ref: DatasetRef | str, input_shape: Sequence[int], data_dir: str | None = None,
               stream: bool = False, all_test: bool = False) -> Dataset:
    """A dataset's every training image and its test split, its images the size and channels of a
    model's input (image folders are resized to it). all_test: files handed over to be scored (`evaluate
    --dataset`), a single CSV or a folder without its own split is all test data."""
    ref = DatasetRef.parse(ref)
    c, h, w = input_shape
    options = {"image_size": (h, w), "channels": c, "stream": stream} if ref.is_folder else {}
    return load_dataset(ref, data_dir, val_split=0.0, all_test=all_test, **options)


def run_data(config: TrainConfig, input_shape: Sequence[int], classes: Sequence[str], run_dir: Path,
             data_dir: str | None = None) -> Dataset:
    """The data a run trained on: every training image and the test split.

    An image folder's run reads the files its files.json lists, streamed: nothing is listed or
    decoded again until an image is asked for (a 100,000-image folder takes a minute to list).
    """
    ref, listed = config.dataset_ref, run_dir / "files.json"
    if not (ref.is_folder and listed.is_file()):
        return model_data(ref, input_shape, data_dir or config.data_dir, stream=config.stream)
    c, h, w = input_shape
    try:
        train_x, train_y, test_x, test_y = from_files(ref.path, read_json(listed), (h, w), c, len(classes))
    except DataError as e:
        raise RunError(f"{listed}: {e}") from None
    return Dataset(str(ref), tuple(classes), train_x, train_y, train_x.subset([]), train_y[:0], test_x, test_y)
