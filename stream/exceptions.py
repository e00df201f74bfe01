"""Errors raised by the stream package, all under one root so a worker can catch them together."""

from __future__ import annotations

__all__ = ["ConfigurationError", "EventDecodeError", "EventEncodeError", "EventValidationError", "StreamError"]


class StreamError(Exception):
    """Root of every error the stream package raises on purpose."""


class EventDecodeError(StreamError, ValueError):
    """An incoming message could not be read as the expected Avro event.

    The worker does not stop: the raw message goes to the dead-letter topic and a counter goes up.
    Operators: look in the dead-letter topic; ``reason`` (a short stable code such as ``truncated``
    or ``unknown_schema_id``) says whether the producer, its schema ids or the framing is at fault.
    """

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message or reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class EventValidationError(EventDecodeError):
    """An event decoded but its values are impossible (empty id, negative amount, far-future time...).

    Handled like a decode error: dead letter, counter, the stream goes on. Operators: the producer
    sends bad data; ``reason`` and ``field`` in the dead-letter record say which check failed.
    """

    def __init__(self, reason: str, message: str = "", field: str | None = None) -> None:
        super().__init__(reason, message)
        self.args = (reason, message, field)  # so the error pickles with its field
        self.field = field


class EventEncodeError(StreamError, ValueError):
    """A record built by this service does not fit its own schema.

    This is a bug or a schema/code mismatch after an upgrade, not bad input: the message is not
    sent. Operators: check that the deployed schemas and code come from the same release.
    """


class ConfigurationError(StreamError, ValueError):
    """The service is configured so that it must not start (e.g. no HMAC key for card tokens outside demo mode).

    Operators: the message names the setting to fix; nothing has been read or written yet.
    """
