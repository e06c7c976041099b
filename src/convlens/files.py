"""Files that must never be torn or trusted: atomic writes, and safe reads of JSON and safetensors.

Every file convlens writes lands whole or not at all (a temporary file, fsynced, renamed into
place, the folder fsynced). Every file it reads back is data: JSON, or safetensors, whose
reader refuses a pickle (torch.save, .pt, .pth) before any parser sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import RunError
from .reading import read_regular

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


# ---------------------------------------------------------------------------
# safetensors: checked before any parser runs, checksummed so that damage never loads quietly

MAX_WEIGHTS_BYTES = 16 << 30       # a checkpoint of the largest model convlens builds, with Adam's moments
MAX_JSON_BYTES = 64 << 20          # a run's JSON files; files.json of 100,000 images is ~5 MB
DIGEST_KEY = "sha256"              # safetensors metadata: the digest of the tensors, written with them


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{str(t.dtype)}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                     keep_previous: Path | None = None) -> None:
    """Write tensors atomically as safetensors, with their digest in the metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    write_atomic(path, st_save(tensors, metadata={**metadata, DIGEST_KEY: tensors_digest(tensors)}),
                 keep_previous=keep_previous)


def _safetensors_header(data: bytes) -> dict | None:
    """The JSON header of safetensors bytes (8-byte little-endian length, then a JSON object), or None
    when the bytes are not laid out that way."""
    if len(data) < 10:
        return None
    n = int.from_bytes(data[:8], "little")
    if n < 2 or 8 + n > len(data) or data[8:9] != b"{":
        return None
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def read_safetensors(path: Path, limit: int = MAX_WEIGHTS_BYTES) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; RunError for a pickle, damage, or anything malformed.

    A file is taken for a pickle (torch.save, .pt, .pth) only when it is not laid out as safetensors
    and starts like one; it is refused before any parser sees it: unpickling runs whatever code the
    file names. (A safetensors file starts with its header's length, whose first byte is 0x80 for
    one header length in 32: that is no pickle.) A digest written with the tensors must match them.
    """
    data = read_regular(path, limit, RunError, "a safetensors file")
    header = _safetensors_header(data)
    if header is None:
        if data.startswith(PICKLE_MAGIC):
            raise RunError(f"{path}: this is a pickle (torch.save/.pt/.pth), which can run code when loaded; "
                           "convlens loads only safetensors")
        raise RunError(f"{path}: not a valid safetensors file (no safetensors header)")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError, TypeError, MemoryError, AttributeError) as e:
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise RunError(f"{path}: not a valid safetensors file ({why})") from None
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise RunError(f"{path}: not a valid safetensors file (malformed metadata)")
    recorded = metadata.get(DIGEST_KEY)
    if recorded is not None and recorded != tensors_digest(tensors):
        raise RunError(f"{path}: damaged: its tensors no longer match the checksum written with them")
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


def read_json(path: Path, limit: int = MAX_JSON_BYTES) -> dict:
    """A run's JSON file as a dict; RunError for anything else (damage, a bomb of nesting or digits)."""
    data = read_regular(path, limit, RunError, "a JSON file")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:   # ValueError: JSON, and 5,000-digit integers
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0][:120]
        raise RunError(f"{path}: not readable JSON ({why})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object")
    return obj
