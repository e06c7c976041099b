"""A dataset reference, parsed once: what `--dataset` names, and the image-folder options.

    fashion-mnist, mnist, kmnist, emnist-balanced    a registered dataset (registry.py)
    idx:FOLDER                                       four IDX files of your own
    csv:PATH                                         Kaggle's layout: label,pixel1,…
    folder:PATH                                      one sub-folder of images per class

Everything else asks the parsed value (`ref.kind`, `ref.path`, `ref.image_rule`), never the
string: no `startswith("folder:")` outside this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

OWN_KINDS = ("idx", "csv", "folder")


@dataclass(frozen=True)
class DatasetRef:
    kind: str          # "registered", or one of OWN_KINDS
    where: str         # the registered name, or the path as the user wrote it

    @classmethod
    def parse(cls, text: "str | DatasetRef") -> "DatasetRef":
        """`fashion-mnist` or `KIND:PATH`; DataError for a prefix that is not idx, csv or folder."""
        if isinstance(text, DatasetRef):
            return text
        kind, sep, where = str(text).partition(":")
        if not sep:
            if not kind.strip():
                raise DataError("empty dataset name; try fashion-mnist, or folder:PATH for your own images")
            return cls("registered", kind)
        if kind not in OWN_KINDS or not where:
            raise DataError(f"dataset {text!r}: use a registered name (fashion-mnist, mnist, …), "
                            f"idx:FOLDER, csv:PATH or folder:PATH")
        return cls(kind, where)

    def __str__(self) -> str:
        return self.where if self.kind == "registered" else f"{self.kind}:{self.where}"

    @property
    def path(self) -> Path:
        """Your own data's file or folder (~ expanded)."""
        return Path(self.where).expanduser()

    @property
    def is_folder(self) -> bool:
        return self.kind == "folder"

    @property
    def image_rule(self) -> str:
        """How a user's image is prepared for a model trained on this data (images.prepare_image):
        "folder" (photos as they are) for image folders, "object" (light object on black) otherwise."""
        return "folder" if self.is_folder else "object"


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """'64' -> (64, 64); '48x64' -> (48, 64) as height × width; None stays None."""
    if text is None:
        return None
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        if len(parts) > 2:
            raise ValueError
    except ValueError:
        raise DataError(f"--image-size {text!r}: use one number (64) or height×width (48x64)") from None
    if not (4 <= h <= 1024 and 4 <= w <= 1024):
        raise DataError(f"--image-size {text!r}: each side must be 4 to 1024 pixels")
    return h, w
