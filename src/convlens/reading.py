"""Reading a file that may not be what its name says: regular files only, never more than a cap.

A path handed to convlens can name a device (/dev/zero has no end), a FIFO (reading it waits for a
writer forever), a socket or a directory, directly or through a link. These functions look before
they open (merely opening some devices acts: a watchdog arms, a tape rewinds), open without blocking,
look again at what was opened (a FIFO swapped in meanwhile), and read at most a cap plus one byte.
Each caller names the error type its users see (DataError for datasets, RunError for run files,
ImageError for images) and what the file should be ("an image file").
"""

from __future__ import annotations

import os
import stat

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def _refuse_special(mode: int, path, error: type, what: str) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "a special file")
        raise error(f"{path}: is {kind}, not {what}")


def open_regular(path: str | os.PathLike, error: type, what: str = "a file"):
    """A binary file object for `path` if it is a regular file (links followed); `error` naming it else."""
    try:
        _refuse_special(os.stat(path).st_mode, path, error, what)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        _refuse_special(os.fstat(fd).st_mode, path, error, what)      # what was opened, whatever the path says now
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_regular(path: str | os.PathLike, limit: int, error: type, what: str = "a file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes (whatever size it reports: /proc files say 0);
    `error` for anything else."""
    with open_regular(path, error, what) as f:
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise error(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{path}: larger than the {limit:,} bytes {what} may have here; refusing to read it")
    return data
