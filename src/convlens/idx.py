"""IDX files, the MNIST family's format: a 4-byte magic (0, 0, type code, dimensions), big-endian
dimension sizes, then the values (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").

Read raw or gzip (recognised by content, not name), every header field and the exact length
checked, so a damaged or hostile file is one clear DataError naming the file and the fault.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from .errors import DataError
from .reading import open_regular

IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
MAX_IDX_BYTES = 1 << 30  # 1 GiB decompressed: EMNIST-byclass is ~0.6 GB; more is a bomb.


def parse_idx(buf: bytes, source: str) -> np.ndarray:
    """Parse IDX bytes into an array, checking magic, type code, dimensions and exact length."""
    if len(buf) < 4:
        raise DataError(f"{source}: not an IDX file: {len(buf)} bytes, shorter than the 4-byte header")
    if buf[0] != 0 or buf[1] != 0:
        raise DataError(f"{source}: not an IDX file: magic number starts {buf[0]:#04x} {buf[1]:#04x}, expected 0x00 0x00")
    type_code, ndim = buf[2], buf[3]
    if type_code not in IDX_DTYPES:
        raise DataError(f"{source}: unknown IDX type code {type_code:#04x} (expected one of "
                        + ", ".join(f"{c:#04x}" for c in IDX_DTYPES) + ")")
    if not 1 <= ndim <= 4:
        raise DataError(f"{source}: IDX header says {ndim} dimensions; convlens reads 1 to 4")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{source}: truncated IDX header: {len(buf)} bytes, the {ndim} dimension sizes need {header}")
    dims = tuple(int.from_bytes(buf[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[type_code]
    expected = header + math.prod(dims) * dtype.itemsize         # Python integers: no wrap-around to 0
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "has trailing bytes"
        raise DataError(f"{source}: {what}: header says {'×'.join(map(str, dims))} {dtype.name} "
                        f"= {expected:,} bytes, file has {len(buf):,}")
    # One copy: writable, native byte order (the buffer itself is read-only bytes).
    return np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by content, not name), capped at MAX_IDX_BYTES."""
    try:
        with open_regular(path, DataError, "a dataset file") as f:
            head = f.read(2)
            f.seek(0)
            if head != b"\x1f\x8b":
                data = f.read(MAX_IDX_BYTES + 1)
            else:
                with gzip.GzipFile(fileobj=f) as gz:
                    data = gz.read(MAX_IDX_BYTES + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: damaged gzip file ({e or 'ends early'})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_IDX_BYTES:
        raise DataError(f"{path}: larger than {MAX_IDX_BYTES >> 20} MiB decompressed; refusing to read it")
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip, into a NumPy array; a DataError names the file and the fault."""
    path = Path(path)
    return parse_idx(read_bytes(path), str(path))


def images_and_labels(images: np.ndarray, labels: np.ndarray, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """An IDX image array (N, H, W) uint8 and its labels (N,) as tensors: uint8 (N, 1, H, W), int64 (N,)."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{what}: expected uint8 images of shape N×H×W, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{what}: {len(images):,} images but labels of shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{what}: labels are {labels.dtype} numbers; labels are whole numbers (IDX type 0x08, "
                        f"0x09, 0x0B or 0x0C)")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
