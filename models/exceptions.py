"""Errors raised by models/: one root, so a caller can catch everything the package raises."""


class ModelError(Exception):
    """Root of the errors raised by models/."""


class DatasetError(ModelError, ValueError):
    """A transaction file is missing, unreadable, or lacks the handbook's raw columns."""


__all__ = ["DatasetError", "ModelError"]
