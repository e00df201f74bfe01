"""Errors raised by explain/: one root, so a caller can catch everything the package raises."""


class ExplainError(Exception):
    """Root of the errors raised by explain/.

    Raised when a network cannot be explained exactly (an unsupported layer, a functional activation)
    or when inputs do not match the explainer. A scorer can still send the alert without reasons and
    log the error; the model should be fixed before it is promoted.
    """


__all__ = ["ExplainError"]
