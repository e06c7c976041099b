"""What produced a run: convlens's own version (from the installed package's metadata), the
libraries', the machine's, and the git revision of the source, recorded in every config.json."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import torch


def convlens_version() -> str:
    try:
        return metadata.version("convlens")
    except metadata.PackageNotFoundError:     # run from a source tree that was never installed
        return "unknown"


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    return {"convlens": convlens_version(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "processor": platform.processor(),
            "git": git_revision()}
