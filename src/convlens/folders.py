"""Image folders: `--dataset folder:PATH`, one sub-folder per class (the ImageFolder layout).

    PATH/cat/0001.png, PATH/cat/0002.jpg, PATH/dog/…            split here, seeded
    PATH/train/cat/…, PATH/train/dog/…, PATH/test/cat/…, …        the folder's own split

Classes are the sub-folder names, sorted (as torchvision's ImageFolder and Keras's
image_dataset_from_directory number them). Files are read by content with the same
guards as every user image (images.read_image: PNG, JPEG, BMP, GIF, WebP; size and pixel
caps). A file that cannot be read is listed and skipped, with a count; hidden files
(.DS_Store, ._x.png) are passed over.

The rule that turns any image into the model's input (images.stretch_image):
1. EXIF orientation applied; transparency composited onto white; first frame of an animation;
2. converted to grayscale (`--channels 1`, Pillow's ITU-R 601 luma) or RGB (`--channels 3`);
3. resized to exactly `--image-size` (H×W) with Pillow's anti-aliased bilinear filter,
   aspect ratio not kept: Keras's image_dataset_from_directory rule.
Defaults: the most common size among the files, and 3 channels if any file is in colour
(palette images count as colour), else 1.

Small folders are decoded once into memory as uint8 like every other dataset. When the
decoded images would pass IN_MEMORY_BYTES (or with `--stream`), the images stay on disk and
are decoded batch by batch by DataLoader worker processes: memory then holds the file list
and a few batches in flight, not the dataset.
"""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .errors import DataError, ImageError
from .images import read_image, stretch_image
from .names import MAX_CLASSES, printable

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
TEST_SHARE = 0.2                 # no train/ and test/ sub-folders: this share of each class is the test set
SPLIT_SEED = 0                   # the test split does not change with --seed: every run is scored on the same images
IN_MEMORY_BYTES = 1 << 30        # decoded uint8 images up to 1 GiB are held in memory; more stream from disk
STREAM_BATCH = 256               # images a worker decodes per task
SUFFIX_LIST = " ".join(sorted(IMAGE_SUFFIXES))
COLOUR_MODES = {"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}


def workers() -> int:
    """Decoding processes: one per core, up to 8 (PNG decoding of small images is ~50 µs each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores))


# ---------------------------------------------------------------------------
# Finding the files

@dataclass
class Listing:
    """The files of an image folder, split, before any pixel is decoded."""
    root: Path
    classes: tuple[str, ...]
    train: list[tuple[str, int]]          # (path, label)
    test: list[tuple[str, int]]
    skipped: list[tuple[str, str]]        # (path, why)


def _inside(path: str | Path, root: str) -> bool:
    """True when `path`, links resolved, lies inside the folder `root` (itself resolved)."""
    return os.path.commonpath([os.path.realpath(path), root]) == root


def _class_dirs(folder: Path, root: str, skipped: list) -> list[Path]:
    """The visible sub-folders of `folder`, sorted; a link to a folder outside the dataset is skipped (a
    class folder linked to / would otherwise walk the whole file system)."""
    out = []
    for d in sorted(folder.iterdir(), key=lambda d: d.name):
        if d.name.startswith(".") or not d.is_dir():
            continue
        if d.is_symlink() and not _inside(d, root):
            skipped.append((str(d), "a link to a folder outside the dataset folder"))
        else:
            out.append(d)
    return out


def _files(class_dir: Path, label: int, skipped: list, root: str) -> list[tuple[str, int]]:
    """The image files under a class folder (links to files outside the dataset folder skipped;
    linked sub-folders are not followed, so no link can loop)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.startswith("."):
                continue
            if os.path.islink(path) and not _inside(path, root):
                skipped.append((path, "a link to a file outside the dataset folder"))
            elif Path(name).suffix.lower() in IMAGE_SUFFIXES:
                out.append((path, label))
            else:
                skipped.append((path, f"not an image file by its name ({SUFFIX_LIST})"))
    return out


def _classes_of(top: Path, root: str, skipped: list) -> list[Path]:
    class_dirs = _class_dirs(top, root, skipped)
    if len(class_dirs) < 2:
        raise DataError(f"folder:{top}: found {len(class_dirs)} class folder{'' if len(class_dirs) == 1 else 's'}; "
                        f"an image folder needs one sub-folder per class, at least two ({top}/cat/, {top}/dog/, …)")
    if len(class_dirs) > MAX_CLASSES:
        raise DataError(f"folder:{top}: {len(class_dirs):,} class folders; convlens takes at most {MAX_CLASSES:,}")
    return class_dirs


def list_folder(root: Path, test_share: float = TEST_SHARE) -> Listing:
    """Classes and files of `root`; its train/ and test/ sub-folders, or a stratified seeded split
    with `test_share` of each class in the test set (1.0: all of it, as `evaluate --dataset` reads it)."""
    if not root.is_dir():
        raise DataError(f"folder:{root}: no such folder")
    skipped: list[tuple[str, str]] = []
    real = os.path.realpath(root)
    own_split = (root / "train").is_dir() and (root / "test").is_dir()
    top = root / "train" if own_split else root
    class_dirs = _classes_of(top, real, skipped)
    names = [d.name for d in class_dirs]
    train, test = [], []
    for i, d in enumerate(class_dirs):
        files = _files(d, i, skipped, real)
        if not files and (own_split or test_share < 1):
            raise DataError(f"folder:{top}: class folder {printable(d.name)}/ has no image files ({SUFFIX_LIST}); "
                            f"a class with no images cannot be learned: add images or remove the folder")
        # Seeded per class by its name: adding images to one class leaves the others' splits as they were.
        random.Random(f"{SPLIT_SEED}:{d.name}").shuffle(files)
        n_test = 0 if own_split else round(len(files) * test_share)
        test += files[:n_test]
        train += files[n_test:]
    for d in _class_dirs(root / "test", real, skipped) if own_split else []:
        if d.name not in names:
            raise DataError(f"folder:{root}: test/{printable(d.name)} is not a class of train/ "
                            f"({', '.join(map(printable, names))})")
        test += _files(d, names.index(d.name), skipped, real)
    if not own_split:
        train.sort(), test.sort()
    return Listing(root, tuple(map(printable, names)), train, test, skipped)


# ---------------------------------------------------------------------------
# Decoding, in worker processes

class FolderFiles(torch.utils.data.Dataset):
    """Item i: (i, uint8 (C, H, W) tensor or None, error text) for file i; never raises."""

    def __init__(self, paths: Sequence[str], size: tuple[int, int] | None, channels: int | None):
        self.paths, self.size, self.channels = list(paths), size, channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            img = read_image(self.paths[i])
            if self.size is None:       # the listing pass: decoded (read_image loads it), size and colour kept
                return i, (img.height, img.width, img.mode in COLOUR_MODES), ""
            return i, torch.from_numpy(stretch_image(img, self.size, self.channels)), ""
        except ImageError as e:
            return i, None, str(e).removeprefix(self.paths[i] + ": ")
        except Exception as e:       # a decoder fault must not kill the worker: it is this file's fault
            return i, None, f"{type(e).__name__}: {e}"


def _as_list(batch):
    return batch


def _decode(files: FolderFiles, order: Sequence[Sequence[int]] | None = None) -> Iterator[list]:
    """Lists of (i, value, error) for the index lists in `order` (default: everything, in order)."""
    if order is None:
        order = [range(i, min(i + STREAM_BATCH, len(files))) for i in range(0, len(files), STREAM_BATCH)]
    n_workers = workers() if len(files) > STREAM_BATCH else 0
    loader = torch.utils.data.DataLoader(files, batch_sampler=order, num_workers=n_workers,
                                         collate_fn=_as_list, prefetch_factor=4 if n_workers else None,
                                         persistent_workers=False)
    yield from loader


def _header_pass(paths: list[str]) -> list[tuple[int, tuple | None, str]]:
    """(i, (height, width, colour) or None, error) per file: each decoded once, in the workers, to find
    the files that do not read (a truncated image shows only when decoded) and the defaults."""
    out = []
    for batch in _decode(FolderFiles(paths, None, None)):
        out += batch
    return out


class StreamedImages:
    """uint8 images (N, C, H, W) that stay on disk and are decoded when asked for.

    Indexing (`x[i]`, `x[3:9]`, `x[index_tensor]`, `x[i, 0]`) decodes in this process, for
    the few images a report or the explorer shows; `batches` decodes whole epochs in worker
    processes, a few batches ahead of the training loop.
    """

    def __init__(self, paths: Sequence[str], size: tuple[int, int], channels: int):
        self.paths, self.size, self.channels = list(paths), size, channels

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), self.channels, *self.size))

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: torch.Tensor | Sequence[int]) -> "StreamedImages":
        return StreamedImages([self.paths[int(i)] for i in index], self.size, self.channels)

    def _one(self, i: int) -> torch.Tensor:
        return self._checked([FolderFiles(self.paths, self.size, self.channels)[i]])[0]

    def _checked(self, batch: list) -> list[torch.Tensor]:
        """The images of a decoded batch of (i, image or None, error); DataError naming the first unread file."""
        bad = next(((i, err) for i, x, err in batch if x is None), None)
        if bad:
            raise DataError(f"{self.paths[bad[0]]}: {bad[1]} (it was readable when the folder was listed)")
        return [x for _, x, _ in batch]

    def __getitem__(self, key) -> torch.Tensor:
        rest = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)) or (isinstance(key, torch.Tensor) and key.ndim == 0):
            i = int(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"image {i} of {len(self)}")
            return self._one(i % len(self))[rest] if rest else self._one(i % len(self))
        index = range(len(self))[key] if isinstance(key, slice) else [int(i) for i in key]
        out = torch.empty((len(index), self.channels, *self.size), dtype=torch.uint8)
        for j, i in enumerate(index):
            out[j] = self._one(i)
        return out[(slice(None), *rest)] if rest else out

    def batches(self, order: Sequence[Sequence[int]]) -> Iterator[torch.Tensor]:
        """uint8 (B, C, H, W) for each index list in `order`, decoded by worker processes."""
        files = FolderFiles(self.paths, self.size, self.channels)
        for batch in _decode(files, order):
            yield torch.stack(self._checked(batch))

    def split(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Every image in order, `batch_size` at a time, as torch.Tensor.split gives a tensor's."""
        return self.batches([range(i, min(i + batch_size, len(self))) for i in range(0, len(self), batch_size)])

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """Up to n images, seeded, decoded into memory (for statistics such as the channel mean)."""
        pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return torch.cat(list(self.batches([pick[i:i + STREAM_BATCH].tolist()
                                            for i in range(0, len(pick), STREAM_BATCH)])))


# ---------------------------------------------------------------------------
# Loading

def _report_skipped(root: Path, skipped: list[tuple[str, str]], total: int) -> None:
    """Say which files were skipped and why: never silently (at most 10 named, then a count)."""
    if not skipped:
        return
    lines = [f"folder:{root}: skipped {len(skipped):,} of {total:,} files:"]
    lines += [f"  {os.path.relpath(p, root)}: {why}" for p, why in skipped[:10]]
    if len(skipped) > 10:
        lines.append(f"  … and {len(skipped) - 10:,} more")
    print("\n".join(lines), file=sys.stderr)


def load_folder(root: Path, image_size: tuple[int, int] | None = None, channels: int | None = None,
                stream: bool = False, test_share: float = TEST_SHARE):
    """(train_x, train_y, test_x, test_y, classes, skipped, files) of an image folder; x uint8 (N, C, H, W)
    tensors, or StreamedImages when the decoded images would pass IN_MEMORY_BYTES or stream is set;
    files: {"train": [[path relative to root, label], …], "test": […]} of the images kept.

    Every file is decoded once while loading (a truncated file shows only then): with
    --image-size and --channels given and the images fitting in memory, that one pass is
    the loading; otherwise a first pass finds the sizes and colours and which files read.
    """
    if channels not in (None, 1, 3):
        raise DataError(f"--channels must be 1 or 3, got {channels}")
    listing = list_folder(root, test_share)
    everything = listing.train + listing.test
    paths = [p for p, _ in everything]
    total = len(everything) + len(listing.skipped)
    skipped = list(listing.skipped)
    candidates = list(range(len(paths)))
    if image_size is None or channels is None or stream or \
            len(paths) * (channels or 3) * image_size[0] * image_size[1] > IN_MEMORY_BYTES:
        heads = _header_pass(paths)
        skipped += [(paths[i], err) for i, head, err in heads if head is None]
        candidates = [i for i, head, _ in heads if head is not None]
        if candidates and image_size is None:
            image_size = Counter(heads[i][1][:2] for i in candidates).most_common(1)[0][0]
        if candidates and channels is None:
            channels = 3 if any(heads[i][1][2] for i in candidates) else 1
    if not candidates:
        _report_skipped(root, skipped, total)
        raise DataError(f"folder:{root}: none of the {len(paths):,} image files could be read")
    keep = np.zeros(len(paths), dtype=bool)
    if stream or len(candidates) * channels * image_size[0] * image_size[1] > IN_MEMORY_BYTES:
        keep[candidates] = True
        images: torch.Tensor | StreamedImages = StreamedImages([paths[i] for i in candidates], image_size, channels)
    else:
        decoded = torch.empty((len(paths), channels, *image_size), dtype=torch.uint8)
        order = [candidates[i:i + STREAM_BATCH] for i in range(0, len(candidates), STREAM_BATCH)]
        for batch in _decode(FolderFiles(paths, image_size, channels), order):
            for i, x, err in batch:
                if x is None:
                    skipped.append((paths[i], err))
                else:
                    decoded[i], keep[i] = x, True
        images = decoded if keep.all() else decoded[torch.from_numpy(keep)]
    _report_skipped(root, skipped, total)
    labels = torch.tensor([y for (_, y), k in zip(everything, keep) if k], dtype=torch.int64)
    n_train = int(keep[:len(listing.train)].sum())
    if n_train == 0 and test_share < 1:
        raise DataError(f"folder:{root}: none of the training images could be read")
    if isinstance(images, StreamedImages):
        train_x, test_x = images.subset(range(n_train)), images.subset(range(n_train, len(labels)))
    else:
        train_x, test_x = images[:n_train], images[n_train:]
    kept = [[os.path.relpath(p, root), y] for (p, y), k in zip(everything, keep) if k]
    files = {"train": kept[:n_train], "test": kept[n_train:]}
    return train_x, labels[:n_train], test_x, labels[n_train:], listing.classes, skipped, files


def from_files(root: Path, files: dict, size: tuple[int, int], channels: int, num_classes: int):
    """(train_x, train_y, test_x, test_y) of the images a run was trained and tested on, as recorded in
    its files.json: streamed, so nothing is decoded until asked for, and nothing is listed again.
    Every entry must name a file inside root and a known class (the list may come with a run from elsewhere)."""
    out = []
    for part in ("train", "test"):
        try:
            entries = [(str(rel), int(y)) for rel, y in files[part]]
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"malformed list of files ({type(e).__name__}: {e})") from None
        for rel, y in entries:
            if os.path.isabs(rel) or ".." in Path(rel).parts:
                raise DataError(f"{rel!r} is not a file inside {root}")
            if not 0 <= y < num_classes:
                raise DataError(f"{rel}: label {y} is not one of the {num_classes} classes")
        out += [StreamedImages([str(root / rel) for rel, _ in entries], size, channels),
                torch.tensor([y for _, y in entries], dtype=torch.int64)]
    return tuple(out)
