"""Errors raised by models/: one root, so a caller can catch everything the package raises."""


class ModelError(Exception):
    """Root of the errors raised by models/."""


class DatasetError(ModelError, ValueError):
    """A transaction file is missing, unreadable, or lacks the handbook's raw columns."""


class ModelNotFoundError(ModelError, LookupError):
    """The registry has no such model version, or no champion yet: train and save one first."""


class ModelIntegrityError(ModelError):
    """A saved model fails its checksums or is incomplete: it was tampered with or corrupted, and is refused.

    Do not score with it; restore the version from a trusted copy or promote another one.
    """


__all__ = ["DatasetError", "ModelError", "ModelIntegrityError", "ModelNotFoundError"]
