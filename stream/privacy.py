"""Keyed tokens for card and customer identifiers, applied before anything reaches the audit store or alerts.

A token is HMAC-SHA256 of the identifier under a secret key, truncated to 128 bits: the same card always gets
the same token (so analysts can still group and join by card), and without the key a token cannot be linked
back to a card, even by trying every card number. The key comes from ``RISKSTREAM_HMAC_KEY`` or the file named
by ``RISKSTREAM_HMAC_KEY_FILE``; outside demo mode the service refuses to start without one. Rotating the key
changes every token from then on: tokens issued under different keys do not join.
"""

from __future__ import annotations

import hmac
import logging

from stream.exceptions import ConfigurationError
from stream.settings import Settings

__all__ = ["DEMO_KEY", "MIN_KEY_BYTES", "Tokenizer", "load_tokenizer"]

logger = logging.getLogger(__name__)

#: The fixed key of demo mode: public, so demo tokens protect nothing.
DEMO_KEY = b"riskstream-demo-key-not-a-secret"
MIN_KEY_BYTES = 16
_TOKEN_HEX = 32


class Tokenizer:
    """Replaces an identifier by its keyed token; callable, so the Scorer takes it as a plain function.

    >>> tokenize = Tokenizer(b"0123456789abcdef")
    >>> tokenize("card-42") == tokenize("card-42"), tokenize("card-42") == tokenize("card-43"), len(tokenize("x"))
    (True, False, 32)
    >>> Tokenizer(b"short")
    Traceback (most recent call last):
    ...
    stream.exceptions.ConfigurationError: the HMAC key has 5 bytes; use at least 16 random bytes
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ConfigurationError(f"the HMAC key has {len(key)} bytes; use at least {MIN_KEY_BYTES} random bytes")
        self._key = key

    def __call__(self, identifier: str) -> str:
        return hmac.digest(self._key, identifier.encode(), "sha256").hex()[:_TOKEN_HEX]

    def __repr__(self) -> str:
        return "Tokenizer(key=**********)"


def load_tokenizer(settings: Settings) -> Tokenizer:
    """The tokenizer of the configured key; ConfigurationError when there is none outside demo mode.

    >>> load_tokenizer(Settings(hmac_key="0123456789abcdef"))("card-42")[:8]
    'b1e1de67'
    >>> load_tokenizer(Settings(hmac_key=None, hmac_key_file=None, demo_mode=False))
    Traceback (most recent call last):
    ...
    stream.exceptions.ConfigurationError: no HMAC key for card tokens: set RISKSTREAM_HMAC_KEY or RISKSTREAM_HMAC_KEY_FILE (or RISKSTREAM_DEMO_MODE=true for a demo)
    """
    if settings.hmac_key is not None and settings.hmac_key_file is not None:
        raise ConfigurationError("set RISKSTREAM_HMAC_KEY or RISKSTREAM_HMAC_KEY_FILE, not both")
    if settings.hmac_key is not None:
        return Tokenizer(settings.hmac_key.get_secret_value().encode())
    if settings.hmac_key_file is not None:
        try:
            key = settings.hmac_key_file.read_bytes().strip()
        except OSError as error:
            raise ConfigurationError(f"cannot read RISKSTREAM_HMAC_KEY_FILE {settings.hmac_key_file}: {error}") from error
        return Tokenizer(key)
    if settings.demo_mode:
        logger.warning("demo mode: card tokens use the public demo key and protect nothing")
        return Tokenizer(DEMO_KEY)
    raise ConfigurationError(
        "no HMAC key for card tokens: set RISKSTREAM_HMAC_KEY or RISKSTREAM_HMAC_KEY_FILE"
        " (or RISKSTREAM_DEMO_MODE=true for a demo)"
    )
