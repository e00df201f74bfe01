"""Kafka connection security (TLS, SASL PLAIN and SCRAM) from :class:`stream.settings.Settings`.

One TLS context is built from the settings and handed to both client libraries: kafka-python (producer,
audit writer, topic creation) takes it as ``ssl_context``, and Faust passes it on to aiokafka through
``broker_credentials``. Passwords stay :class:`pydantic.SecretStr` until the moment a client needs them.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from stream.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


def uses_tls(settings: Settings) -> bool:
    """Whether connections to the brokers are encrypted."""
    return settings.security_protocol in ("SSL", "SASL_SSL")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client-side TLS context for the brokers, or None for unencrypted connections."""
    if not uses_tls(settings):
        return None
    context = ssl.create_default_context(purpose=ssl.Purpose.SERVER_AUTH, cafile=settings.ssl_cafile)
    context.check_hostname = settings.ssl_check_hostname
    if settings.ssl_certfile is not None:
        password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
        context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile, password)
    return context


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's ``KafkaProducer``, ``KafkaConsumer`` and ``KafkaAdminClient``."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL_"):
        assert settings.sasl_password is not None  # Settings refuses SASL without a password
        options |= {
            "sasl_mechanism": settings.sasl_mechanism,
            "sasl_plain_username": settings.sasl_username,
            "sasl_plain_password": settings.sasl_password.get_secret_value(),
        }
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` (for aiokafka), or None for plaintext connections."""
    from faust.auth import SASLCredentials, SSLCredentials  # here: producers and the audit writer need no Faust

    context = ssl_context(settings)
    if settings.security_protocol.startswith("SASL_"):
        assert settings.sasl_password is not None
        return SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None


__all__ = ["faust_credentials", "kafka_python_options", "ssl_context", "uses_tls"]
