"""The one error type a user sees: the CLI prints its message on one line and exits 2."""


class ConvlensError(Exception):
    """A problem the user can fix (bad input, missing file, wrong spec); never a bug."""


class DataError(ConvlensError):
    """A dataset file is missing, damaged, or not what its name says."""


class SpecError(ConvlensError):
    """A model spec string does not parse or does not fit the data."""
    token_index: int | None = None     # 1-based position of the bad token, when one is to blame


class RunError(ConvlensError):
    """A run directory is missing, incomplete, or does not match its model."""


class ImageError(ConvlensError):
    """A user image cannot be read."""
