"""Your own data, named by a prefix: `--dataset idx:DIR` and `--dataset csv:PATH`.

    idx:DIR     four IDX files in DIR, raw or gzip: train-images*, train-labels*, and
                t10k-images*/test-images*, t10k-labels*/test-labels* (the MNIST family's names)
    csv:PATH    Kaggle's layout, one image a row: label,pixel1,…,pixelN (N a square: 784 = 28×28),
                with or without a header row. PATH is a folder holding one *train*.csv and one
                *test*.csv, or a single file, of which a seeded fifth is held out as the test set.

Class names come from a classes.txt beside the data (one name a line, in label order), else
the labels themselves ("0", "1", …). Images arrive as uint8 (N, 1, H, W) like everything else.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .idx import images_and_labels, read_idx
from .names import MAX_CLASSES, printable
from .reading import open_regular, read_regular

CSV_TEST_SHARE = 0.2          # a single CSV file: this share, seeded, becomes the test set
CSV_SPLIT_SEED = 0


def _one(folder: Path, patterns: tuple[str, ...], what: str) -> Path:
    found = sorted({p for pat in patterns for p in folder.glob(pat) if p.is_file()})
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) if found else "none"
        raise DataError(f"{folder}: expected exactly one {what} file ({' or '.join(patterns)}), found {listed}")
    return found[0]


def class_names(folder: Path, labels: list[torch.Tensor]) -> tuple[str, ...]:
    """classes.txt in `folder` (one name a line, unprintable characters escaped), else "0" … "K-1" for
    the largest label K-1; at most MAX_CLASSES (a label of 2³¹ − 1 is damage, not two billion classes)."""
    if not any(len(y) for y in labels):
        raise DataError(f"{folder}: no images")
    k = max(int(y.max()) + 1 for y in labels if len(y))
    if k > MAX_CLASSES:
        raise DataError(f"{folder}: a label of {k - 1:,}; convlens takes labels 0 to {MAX_CLASSES - 1:,} "
                        f"(at most {MAX_CLASSES:,} classes)")
    names_file = folder / "classes.txt"
    if names_file.is_file():
        try:
            text = read_regular(names_file, 1 << 20, DataError, "a class list").decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{names_file}: not UTF-8 text") from None
        names = tuple(printable(n.strip()) for n in text.splitlines() if n.strip())
        if len(names) < k:
            raise DataError(f"{names_file}: {len(names)} class names, but the labels go up to {k - 1}")
        return names
    return tuple(str(i) for i in range(k))


def load_idx_dir(folder: Path):
    """(train_x, train_y, test_x, test_y, classes) from the four IDX files of a folder."""
    if not folder.is_dir():
        raise DataError(f"idx:{folder}: no such folder")
    files = {role: _one(folder, pats, role.replace("_", " ")) for role, pats in (
        ("train_images", ("train-images*",)), ("train_labels", ("train-labels*",)),
        ("test_images", ("t10k-images*", "test-images*")), ("test_labels", ("t10k-labels*", "test-labels*")))}
    arrays = {role: read_idx(path) for role, path in files.items()}
    train_x, train_y = images_and_labels(arrays["train_images"], arrays["train_labels"], f"{folder} train")
    test_x, test_y = images_and_labels(arrays["test_images"], arrays["test_labels"], f"{folder} test")
    for y, role in ((train_y, "train_labels"), (test_y, "test_labels")):
        if len(y) and int(y.min()) < 0:
            raise DataError(f"{files[role]}: negative label {int(y.min())}")
    return train_x, train_y, test_x, test_y, class_names(folder, [train_y, test_y])


_RAGGED = re.compile(r"number of columns changed from (\d+) to (\d+) at row (\d+)")
MAX_CSV_BYTES = 4 << 30       # Fashion-MNIST's training CSV is 133 MB


def _table(path: Path, text) -> tuple[np.ndarray, bool]:
    """The whole numbers of a CSV opened as text, and whether its first line was a header."""
    first = text.readline()
    header = not first.split(",")[0].strip().lstrip("-").isdigit()     # "label,pixel1,…" or a first label
    text.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)                 # "input contained no data": said below
            return np.loadtxt(text, delimiter=",", dtype=np.int64, skiprows=int(header), ndmin=2), header
    except ValueError as e:
        m = _RAGGED.search(str(e))
        if m:
            cols, got, row = m.groups()
            raise DataError(f"{path}: line {int(row) + int(header)} has {got} values, the lines before it "
                            f"{cols} (label and pixels)") from None
        raise DataError(f"{path}: not a table of whole numbers ({str(e).splitlines()[0][:120]})") from None


def read_csv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One Kaggle-layout CSV as uint8 images (N, 1, S, S) and int64 labels (N,)."""
    with open_regular(path, DataError, "a CSV file") as raw:
        if os.fstat(raw.fileno()).st_size > MAX_CSV_BYTES:
            raise DataError(f"{path}: larger than {MAX_CSV_BYTES >> 30} GiB; refusing to read it")
        try:
            table, header = _table(path, io.TextIOWrapper(raw, encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read as text: {e}") from None
    if table.size == 0:
        raise DataError(f"{path}: no rows")
    pixels = table.shape[1] - 1
    side = int(round(pixels ** 0.5))
    if pixels < 1 or side * side != pixels:
        raise DataError(f"{path}: {pixels} pixel columns is not a square image (784 = 28×28 is)")
    labels, images = table[:, 0], table[:, 1:]
    bad = np.argwhere((images < 0) | (images > 255))
    if len(bad):
        r, c = bad[0]
        raise DataError(f"{path}: line {r + 1 + int(header)}, pixel {c + 1} is {images[r, c]}; pixels are 0 to 255")
    if labels.min() < 0:
        r = int(np.argmin(labels))
        raise DataError(f"{path}: line {r + 1 + int(header)} has label {labels[r]}; labels are 0, 1, 2, …")
    return (torch.from_numpy(images.astype(np.uint8).reshape(-1, 1, side, side)),
            torch.from_numpy(labels.astype(np.int64)))


def load_csv(path: Path, test_share: float = CSV_TEST_SHARE):
    """(train_x, train_y, test_x, test_y, classes) from a folder with train and test CSVs, or one CSV.

    One CSV: a seeded fifth (`test_share`; 1.0 for `evaluate --dataset`, which tests on all of it) is
    the test set, the same for every run (not --seed's), so that `evaluate` and runs with other seeds
    score the same images.
    """
    if path.is_dir():
        train_x, train_y = read_csv(_one(path, ("*train*.csv",), "training CSV"))
        test_x, test_y = read_csv(_one(path, ("*test*.csv",), "test CSV"))
        folder = path
    else:
        x, y = read_csv(path)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(CSV_SPLIT_SEED))
        n_test = round(len(y) * test_share)
        test_idx, train_idx = perm[:n_test].sort().values, perm[n_test:].sort().values
        train_x, train_y, test_x, test_y = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        folder = path.parent
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"{path}: training images are {tuple(train_x.shape[2:])}, test images {tuple(test_x.shape[2:])}")
    return train_x, train_y, test_x, test_y, class_names(folder, [train_y, test_y])
