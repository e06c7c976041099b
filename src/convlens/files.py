"""Files that must never be torn or trusted: atomic writes, and safe reads of JSON and safetensors.

Every file convlens writes lands whole or not at all (a temporary file, fsynced, renamed into
place, the folder fsynced). Every file it reads back is data: JSON, or safetensors, whose
reader refuses a pickle (torch.save, .pt, .pth) before any parser sees it.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from .errors import RunError

_UMASK = os.umask(0o022)
os.umask(_UMASK)
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")   # pickle protocol 2+ / torch.save's zip archive


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable: without this a power cut can forget it (ext4, XFS)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_as(path: Path, previous: Path) -> None:
    """Make `previous` hold what `path` holds, with `path` never missing meanwhile: a hard link
    renamed into place (file systems without hard links: a plain rename, briefly leaving no `path`)."""
    link = previous.with_name(f".{previous.name}.{os.getpid()}.link.tmp")
    try:
        if os.path.lexists(link):
            os.unlink(link)
        os.link(path, link)
    except OSError:
        os.replace(path, previous)
        return
    try:
        os.replace(link, previous)
    except OSError:
        os.unlink(link)
        raise


def write_atomic(path: Path, data: bytes, keep_previous: Path | None = None) -> None:
    """Write bytes so that `path` is either the old file or the whole new one, never a torn mix.

    A temporary file in the same folder is written, flushed and fsynced, then renamed over
    `path`, and the folder is fsynced. keep_previous: the file `path` held is moved there
    first, once the new bytes are safely on disk. Any failure (disk full, read-only folder)
    leaves every existing file as it was and raises RunError naming the file.
    """
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)      # mkstemp makes 0600; a run is as readable as any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            _keep_as(path, keep_previous)
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, obj) -> None:
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; RunError for a pickle or anything malformed.

    A pickle (torch.save, .pt, .pth) is recognised by its first bytes and refused before
    any parser sees it: unpickling runs whatever code the file names.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: no such file") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read: {e.strerror or e}") from None
    if data.startswith(PICKLE_MAGIC):
        raise RunError(f"{path}: this is a pickle (torch.save/.pt/.pth), which can run code when loaded; "
                       "convlens loads only safetensors")
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, RuntimeError, OverflowError, TypeError, MemoryError,
            AttributeError) as e:
        raise RunError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})") from None
    return tensors, metadata


def check_state(path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """RunError unless `state` has exactly the names, dtypes and shapes of `expected`, all finite."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise RunError(f"{path}: weights do not match {what}"
                       + (f"; missing {', '.join(missing[:3])}" if missing else "")
                       + (f"; unexpected {', '.join(extra[:3])}" if extra else ""))
    for key, want in expected.items():
        got = state[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise RunError(f"{path}: {key} is {got.dtype} {tuple(got.shape)}, {what} needs "
                           f"{want.dtype} {tuple(want.shape)}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise RunError(f"{path}: {key} holds NaN or infinite values")


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: no such file (an incomplete run?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object")
    return obj
