"""Where a registered dataset's files are: found in the lookup order, downloaded, verified.

Looked up in order: --data-dir, $CONVLENS_DATA, the user cache, the distribution package's
folder (Debian's dataset-fashion-mnist), then a download from the registry's mirrors,
https only, SHA-256 checked in a temporary file and renamed into the cache only when right.
registry.py says what the files are; this module finds them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .idx import MAX_IDX_BYTES, read_bytes
from .registry import DatasetInfo, IdxFile


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


def _download_from_mirrors(info: DatasetInfo, name: str, sha256: str, max_bytes: int) -> Path:
    """Download the dataset's file `name` into its cache folder from the first mirror that has it, verified."""
    errors = []
    deadline_s = max(600.0, max_bytes / 250e3)   # at least 250 kB/s: EMNIST's 562 MB zip may take 37 minutes
    for base in mirror_urls(info):
        try:
            return download(base.rstrip("/") + "/" + name, cache_dir(info.name) / name, sha256,
                            max_bytes=max_bytes, deadline_s=deadline_s)
        except DataError as e:
            errors.append(str(e))
    hint = (f"install the Debian package dataset-{info.name} or " if info.system_dirs else
            f"save {name} from a browser into {cache_dir(info.name)} or " if info.archive else "")
    raise DataError(f"{name} not found locally and not downloadable: {'; '.join(errors)} ({hint}pass --data-dir)")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _member(zf: zipfile.ZipFile, name: str, archive: Path, max_bytes: int) -> zipfile.ZipInfo:
    try:
        member = zf.getinfo(name)
    except KeyError:
        raise DataError(f"{archive}: has no {name}") from None
    if member.flag_bits & 0x1:
        raise DataError(f"{archive}: {name} is encrypted")
    if member.file_size > max_bytes:
        raise DataError(f"{archive}: {name} is {member.file_size:,} bytes, more than the {max_bytes:,} allowed")
    return member


def _check_mapping(zf: zipfile.ZipFile, name: str, classes: tuple[str, ...], archive: Path) -> None:
    """The archive's "label ASCII-code" listing must name the registry's classes, in order."""
    text = zf.read(_member(zf, name, archive, 1 << 16)).decode("ascii", errors="replace")
    try:
        rows = [tuple(map(int, line.split())) for line in text.splitlines() if line.strip()]
        listed = tuple(chr(code) for _, code in rows)
    except (ValueError, OverflowError):   # not two integers per line, or not a character code
        raise DataError(f"{archive}: {name} is not a list of 'label ASCII-code' lines") from None
    if listed != classes or [label for label, _ in rows] != list(range(len(rows))):
        raise DataError(f"{archive}: {name} lists the classes {''.join(listed)!r}, expected {''.join(classes)!r}")


def extract_members(archive: Path, info: DatasetInfo, roles: list[str]) -> dict[str, Path]:
    """Copy the files of `roles` out of the dataset's (verified) archive into its cache folder, all or none.

    Only the registry's member names are read, and each is written under the registry's own file name,
    so no name in the archive can point outside the cache; a member larger than MAX_IDX_BYTES, or not
    matching its SHA-256 or the zip's CRC-32, is refused.
    """
    a, dest, parts = info.archive, cache_dir(info.name), {}
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            if a.mapping:
                _check_mapping(zf, a.folder + a.mapping, info.classes, archive)
            for role in roles:
                f = info.files[role]
                member = _member(zf, a.folder + f.name, archive, MAX_IDX_BYTES)
                fd, parts[role] = tempfile.mkstemp(prefix=f".{f.name}.", suffix=".part", dir=dest)
                digest, size = hashlib.sha256(), 0
                with os.fdopen(fd, "wb") as out, zf.open(member) as src:   # zipfile checks the CRC-32 at the end
                    while chunk := src.read(1 << 20):
                        size += len(chunk)
                        if size > member.file_size:
                            raise DataError(f"{archive}: {member.filename} runs past its stated size")
                        digest.update(chunk)
                        out.write(chunk)
                if (got := digest.hexdigest()) != f.sha256_gz:
                    raise DataError(f"{archive}: {member.filename}: SHA-256 mismatch (got {got[:16]}…, "
                                    f"expected {f.sha256_gz[:16]}…)")
        paths = {role: dest / info.files[role].name for role in parts}
        for role, part in parts.items():
            os.replace(part, paths[role])
        return paths
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:   # zipfile's "Bad CRC-32" is a BadZipFile
        raise DataError(f"{archive}: damaged zip archive ({e})") from None
    except OSError as e:
        raise DataError(f"{archive}: cannot extract into {dest}: {e.strerror or e}") from None
    finally:
        for part in parts.values():
            if os.path.exists(part):
                os.unlink(part)


def _fetch_from_archive(info: DatasetInfo, roles: list[str]) -> dict[str, Path]:
    """The missing files of an archived dataset: the archive is downloaded (or found in the cache, saved
    there by hand), verified, the files extracted, and the archive deleted."""
    a = info.archive
    archive = cache_dir(info.name) / a.name
    if archive.is_file():
        if (got := _sha256_file(archive)) != a.sha256:
            raise DataError(f"{archive}: SHA-256 mismatch (got {got[:16]}…, expected {a.sha256[:16]}…); "
                            f"delete it to download it again")
    else:
        _download_from_mirrors(info, a.name, a.sha256, a.size)
    paths = extract_members(archive, info, roles)
    archive.unlink()
    return paths


def fetch(info: DatasetInfo, data_dir: str | os.PathLike | None = None) -> list[Located]:
    """Locate every file, downloading the missing ones into the cache (verified); DataError if that fails."""
    found = locate(info, data_dir)
    missing = [loc.role for loc in found if loc.path is None]
    explicit = data_dir or os.environ.get("CONVLENS_DATA")
    if missing and explicit:
        names = ", ".join(info.files[role].name for role in missing)
        raise DataError(f"{explicit}: missing {names}")
    if missing and info.archive:
        paths = _fetch_from_archive(info, missing)
    else:
        paths = {role: _download_from_mirrors(info, info.files[role].name, info.files[role].sha256_gz,
                                              info.files[role].size_gz) for role in missing}
    return [Located(loc.role, paths[loc.role], "download") if loc.path is None else loc for loc in found]


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
        elif f.sha256_raw and raw == f.sha256_raw:
            rows.append((loc, True, "content SHA-256 matches (re-compressed copy)"))
        elif f.sha256_raw:
            rows.append((loc, False, f"SHA-256 mismatch: content {raw[:16]}…, expected {f.sha256_raw[:16]}…"))
        else:   # no published content checksum: only the official .gz itself can be checked
            rows.append((loc, False, f"SHA-256 mismatch: file {stored[:16]}…, expected the official .gz's "
                                     f"{f.sha256_gz[:16]}… (no content checksum is recorded for other copies)"))
    return rows
