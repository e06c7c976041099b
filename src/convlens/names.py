"""Names that come from outside: run names, and class names read from files, made safe to use.

A run name becomes a folder: one path component of letters, digits, '.', '_' and '-'. A class
name comes from a folder name, a classes.txt or a model.json someone handed over, and is printed
to terminals and drawn into pictures: characters that are not printable (an escape sequence
that would recolour or clear the user's terminal) are shown as escapes instead (`\\x1b`).
"""

from __future__ import annotations

import re

from .errors import RunError

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_CLASSES = 10_000          # far above any classifier convlens trains (EMNIST byclass: 62; ImageNet: 1,000)


def check_name(name: str) -> str:
    """A run name is one path component of letters, digits, '.', '_' and '-' (no '..', no '/')."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name) or name in (".", ".."):
        raise RunError(f"bad run name {str(name)[:60]!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    return name


def printable(name: str) -> str:
    """The name with every unprintable character written as an escape (\\x1b, \\u202e, …)."""
    if name.isprintable():
        return name
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in name)
