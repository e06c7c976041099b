"""Datasets: the IDX reader, where the files are found, verified downloads, splits.

Images stay uint8 (N, C, H, W) tensors end to end; the engine scales them to
[0, 1] a batch at a time, so the user never reshapes or divides by 255 (the
seed's `reshape(-1, 28, 28, 1)` and `/ 255.`).
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); big-endian.
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
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(buf) != expected:
        what = "truncated" if len(buf) < expected else "has trailing bytes"
        raise DataError(f"{source}: {what}: header says {'×'.join(map(str, dims))} {dtype.name} "
                        f"= {expected:,} bytes, file has {len(buf):,}")
    # One copy: writable, native byte order (the buffer itself is read-only bytes).
    return np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it is gzip (by content, not name), capped at MAX_IDX_BYTES."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head != b"\x1f\x8b":
                data = f.read(MAX_IDX_BYTES + 1)
            else:
                with gzip.GzipFile(fileobj=f) as gz:
                    data = gz.read(MAX_IDX_BYTES + 1)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
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


# ---------------------------------------------------------------------------
# Dataset registry: files, checksums, mirrors

@dataclass(frozen=True)
class IdxFile:
    name: str        # file name in the official distribution (gzip)
    sha256_gz: str   # SHA-256 of the official .gz download
    sha256_raw: str  # SHA-256 of the decompressed IDX bytes: also holds for re-compressed copies (Debian's)
    size_gz: int     # bytes of the official .gz; a download larger than this is cut off


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    files: dict[str, IdxFile]      # role (train_images, train_labels, test_images, test_labels) -> file
    mirrors: tuple[str, ...]       # https base URLs, tried in order
    system_dirs: tuple[str, ...]   # read-only installs (distribution packages)


FASHION_MNIST = DatasetInfo(
    name="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    files={
        "train_images": IdxFile("train-images-idx3-ubyte.gz",
                                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 26421880),
        "train_labels": IdxFile("train-labels-idx1-ubyte.gz",
                                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 29515),
        "test_images": IdxFile("t10k-images-idx3-ubyte.gz",
                               "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                               "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 4422102),
        "test_labels": IdxFile("t10k-labels-idx1-ubyte.gz",
                               "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                               "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 5148),
    },
    mirrors=("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

DATASETS: dict[str, DatasetInfo] = {FASHION_MNIST.name: FASHION_MNIST}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for a dataset name, or a DataError listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def cache_dir(name: str) -> Path:
    """Where downloads of dataset `name` live: $XDG_CACHE_HOME/convlens/NAME (default ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "convlens" / name


@dataclass(frozen=True)
class Located:
    role: str
    path: Path | None   # None: not found anywhere (yet)
    source: str         # "--data-dir", "$CONVLENS_DATA", "cache", "system", "download", "missing"


def _find_in(folder: Path, f: IdxFile) -> Path | None:
    for candidate in (folder / f.name, folder / f.name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def locate(info: DatasetInfo, data_dir: str | os.PathLike | None = None) -> list[Located]:
    """Where each file of the dataset is, in lookup order: --data-dir, $CONVLENS_DATA, cache, system.

    An explicit --data-dir or $CONVLENS_DATA is authoritative: files missing there are
    reported missing rather than silently taken from elsewhere.
    """
    explicit = [(Path(data_dir), "--data-dir")] if data_dir else []
    if not explicit and os.environ.get("CONVLENS_DATA"):
        explicit = [(Path(os.environ["CONVLENS_DATA"]), "$CONVLENS_DATA")]
    places = explicit or [(cache_dir(info.name), "cache")] + [(Path(d), "system") for d in info.system_dirs]
    found = []
    for role, f in info.files.items():
        hit = next(((p, src) for folder, src in places if (p := _find_in(folder, f))), None)
        found.append(Located(role, hit[0], hit[1]) if hit else Located(role, None, "missing"))
    return found


def mirror_urls(info: DatasetInfo) -> tuple[str, ...]:
    """Mirrors to download from; $CONVLENS_MIRROR (one base URL) replaces the official list."""
    override = os.environ.get("CONVLENS_MIRROR")
    return (override,) if override else info.mirrors


def _check_url(url: str) -> None:
    """Only https, except plain http to this machine's loopback (a local test server)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme == "http" and parts.hostname:
        host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
    raise DataError(f"refusing to download from {url}: only https (or http to localhost) is allowed")


def download(url: str, dest: Path, sha256: str, max_bytes: int,
             timeout_s: float = 30.0, deadline_s: float = 600.0) -> Path:
    """Fetch `url` into `dest` atomically: a temporary file in dest's folder, SHA-256 checked, then renamed.

    A short, long, wrong, slow (no byte for `timeout_s`, or not done in `deadline_s`) or
    failed download leaves nothing behind and raises DataError.
    """
    _check_url(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest, size, start = hashlib.sha256(), 0, time.monotonic()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            if urllib.parse.urlsplit(resp.geturl()).scheme != urllib.parse.urlsplit(url).scheme:
                raise DataError(f"{url}: redirected to {resp.geturl()}; refusing a change of scheme")
            while chunk := resp.read(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise DataError(f"{url}: larger than the expected {max_bytes:,} bytes; discarded")
                if time.monotonic() - start > deadline_s:
                    raise DataError(f"{url}: not finished after {deadline_s:.0f} s; discarded")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise DataError(f"{url}: SHA-256 mismatch ({size:,} bytes, got {digest.hexdigest()[:16]}…, "
                            f"expected {sha256[:16]}…); discarded")
        os.replace(tmp, dest)
        return dest
    except DataError:
        raise
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: download failed: HTTP {e.code} {e.reason}") from None
    except (OSError, ValueError) as e:   # URLError, HTTPError, timeouts, resets are OSErrors
        raise DataError(f"{url}: download failed: {getattr(e, 'reason', None) or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch(info: DatasetInfo, data_dir: str | os.PathLike | None = None) -> list[Located]:
    """Locate every file, downloading the missing ones into the cache (verified); DataError if that fails."""
    found = locate(info, data_dir)
    missing = [loc for loc in found if loc.path is None]
    explicit = data_dir or os.environ.get("CONVLENS_DATA")
    if missing and explicit:
        names = ", ".join(info.files[m.role].name for m in missing)
        raise DataError(f"{explicit}: missing {names}")
    result = []
    for loc in found:
        if loc.path is not None:
            result.append(loc)
            continue
        f, errors = info.files[loc.role], []
        for base in mirror_urls(info):
            try:
                path = download(base.rstrip("/") + "/" + f.name, cache_dir(info.name) / f.name,
                                f.sha256_gz, max_bytes=f.size_gz)
                result.append(Located(loc.role, path, "download"))
                break
            except DataError as e:
                errors.append(str(e))
        else:
            raise DataError(f"{f.name} not found locally and not downloadable: {'; '.join(errors)} "
                            f"(install the Debian package dataset-{info.name} or pass --data-dir)")
    return result


def sha256_of(path: Path) -> tuple[str, str]:
    """(SHA-256 of the file as stored, SHA-256 of its decompressed content)."""
    stored = hashlib.sha256(path.read_bytes()).hexdigest()
    return stored, hashlib.sha256(read_bytes(path)).hexdigest()


def verify(info: DatasetInfo, data_dir: str | os.PathLike | None = None) -> list[tuple[Located, bool, str]]:
    """Check every located file against the recorded checksums: (location, ok, detail) per file."""
    rows = []
    for loc in locate(info, data_dir):
        if loc.path is None:
            rows.append((loc, False, "missing"))
            continue
        f = info.files[loc.role]
        try:
            stored, raw = sha256_of(loc.path)
        except DataError as e:
            rows.append((loc, False, str(e)))
            continue
        if stored == f.sha256_gz:
            rows.append((loc, True, "official .gz SHA-256 matches"))
        elif raw == f.sha256_raw:
            rows.append((loc, True, "content SHA-256 matches (re-compressed copy)"))
        else:
            rows.append((loc, False, f"SHA-256 mismatch: content {raw[:16]}…, expected {f.sha256_raw[:16]}…"))
    return rows


# ---------------------------------------------------------------------------
# The loaded dataset

@dataclass
class Dataset:
    """Images as uint8 (N, C, H, W) tensors, labels as int64 (N,); val is held out of train."""
    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _images_and_labels(images: np.ndarray, labels: np.ndarray, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{what}: expected uint8 images of shape N×H×W, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{what}: {len(images):,} images but labels of shape {labels.shape}")
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def split_train_val(n: int, val_split: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (train_idx, val_idx) with round(n × val_split) held out for validation."""
    if not 0.0 <= val_split < 1.0:
        raise DataError(f"--val-split must be in [0, 1), got {val_split}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(n * val_split)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def load_dataset(name: str = "fashion-mnist", data_dir: str | os.PathLike | None = None,
                 val_split: float = 0.1, seed: int = 0) -> Dataset:
    """Load a dataset with a seeded validation split: a registered one (finding or fetching its files)
    or your own, `idx:DIR` or `csv:PATH` (userdata.py)."""
    kind, sep, where = name.partition(":")
    if sep:
        from .userdata import load_csv, load_idx_dir
        if kind not in ("idx", "csv") or not where:
            raise DataError(f"dataset {name!r}: use a registered name ({', '.join(DATASETS)}), idx:FOLDER or csv:PATH")
        path = Path(where).expanduser()
        train_x, train_y, test_x, test_y, classes = load_idx_dir(path) if kind == "idx" else load_csv(path, seed)
    else:
        info = dataset_info(name)
        paths = {loc.role: loc.path for loc in fetch(info, data_dir)}
        arrays = {role: read_idx(path) for role, path in paths.items()}
        train_x, train_y = _images_and_labels(arrays["train_images"], arrays["train_labels"], f"{name} train")
        test_x, test_y = _images_and_labels(arrays["test_images"], arrays["test_labels"], f"{name} test")
        classes = info.classes
    for y, what in ((train_y, "train"), (test_y, "test")):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(f"{name} {what} labels outside 0..{len(classes) - 1}")
    train_idx, val_idx = split_train_val(len(train_y), val_split, seed)
    return Dataset(name, classes, train_x[train_idx], train_y[train_idx], train_x[val_idx], train_y[val_idx],
                   test_x, test_y)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, val_split: float = 0.1,
                       seed: int = 0) -> Dataset:
    """Fashion-MNIST: 60,000 training (less the validation split) and 10,000 test images, 28×28."""
    return load_dataset("fashion-mnist", data_dir, val_split, seed)
