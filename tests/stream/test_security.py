"""Kafka connection security: settings → client options, and TLS for real through a terminating proxy.

The embedded broker cannot serve TLS itself, so a TLS proxy (certificates from ``trustme``) sits in front
of a broker that advertises the proxy's address: every client connection, bootstrap and data alike, is
encrypted and verified. SASL cannot be exercised end to end here (the embedded broker creates users only
while authentication is off), so its mapping is checked through Faust's own translation to aiokafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaConsumer, KafkaProducer
from pydantic import ValidationError

from stream.embedded import EmbeddedBroker, free_port
from stream.security import faust_credentials, kafka_python_options, ssl_context
from stream.settings import Settings
from stream.topics import create_topics

SECRET = "correct-horse-battery-staple"


# -- settings → options ---------------------------------------------------------------------------------


def test_plaintext_needs_no_options() -> None:
    settings = Settings()
    assert kafka_python_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None
    assert ssl_context(settings) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_tls_reaches_both_clients(mechanism: str) -> None:
    settings = Settings(security_protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username="scorer", sasl_password=SECRET)
    options = kafka_python_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (mechanism, "scorer", SECRET)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    # Faust hands its credentials to aiokafka through this function; what comes out is what aiokafka gets.
    aiokafka = credentials_to_aiokafka_auth(faust_credentials(settings))
    assert aiokafka["security_protocol"] == "SASL_SSL"
    assert (aiokafka["sasl_mechanism"], aiokafka["sasl_plain_username"], aiokafka["sasl_plain_password"]) == (mechanism, "scorer", SECRET)
    assert aiokafka["ssl_context"].check_hostname


def test_sasl_without_tls_has_no_tls_context() -> None:
    settings = Settings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="scorer", sasl_password=SECRET)
    assert "ssl_context" not in kafka_python_options(settings)
    aiokafka = credentials_to_aiokafka_auth(faust_credentials(settings))
    assert (aiokafka["security_protocol"], aiokafka["ssl_context"]) == ("SASL_PLAINTEXT", None)


def test_settings_read_security_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    monkeypatch.setenv("RISKSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("RISKSTREAM_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("RISKSTREAM_SASL_USERNAME", "scorer")
    monkeypatch.setenv("RISKSTREAM_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("RISKSTREAM_SSL_CAFILE", str(tmp_path / "ca.pem"))
    settings = Settings()
    assert settings.sasl_password is not None and settings.sasl_password.get_secret_value() == SECRET
    assert kafka_python_options(settings)["ssl_context"].cert_store_stats()["x509_ca"] == 1


def test_secrets_stay_out_of_reprs_dumps_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(security_protocol="SASL_SSL", sasl_username="scorer", sasl_password=SECRET, ssl_key_password=SECRET)
    assert SECRET not in repr(settings)
    assert SECRET not in settings.model_dump_json()
    assert SECRET not in repr(faust_credentials(settings))
    with pytest.raises(ValidationError) as missing_user:
        Settings(security_protocol="SASL_SSL", sasl_password=SECRET)
    assert "RISKSTREAM_SASL_USERNAME" in str(missing_user.value)
    assert SECRET not in str(missing_user.value)
    with pytest.raises(ValidationError) as bad_mechanism:
        Settings(sasl_mechanism=SECRET)
    assert SECRET not in str(bad_mechanism.value)
    assert SECRET not in caplog.text


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="go together"):
        Settings(security_protocol="SSL", ssl_certfile=tmp_path / "client.pem")


def test_mutual_tls_loads_the_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    client = ca.issue_cert("riskstream-worker")
    client.cert_chain_pems[0].write_to_path(tmp_path / "client.pem")
    client.private_key_pem.write_to_path(tmp_path / "client.key")
    settings = Settings(security_protocol="SSL", ssl_certfile=tmp_path / "client.pem", ssl_keyfile=tmp_path / "client.key")
    assert ssl_context(settings) is not None  # load_cert_chain would raise on a certificate without its key
    wrong = tmp_path / "other.key"
    ca.issue_cert("someone-else").private_key_pem.write_to_path(wrong)
    with pytest.raises(ssl.SSLError):
        ssl_context(Settings(security_protocol="SSL", ssl_certfile=tmp_path / "client.pem", ssl_keyfile=wrong))


# -- TLS for real ----------------------------------------------------------------------------------------


class TlsProxy:
    """Terminates TLS on ``port`` and relays the plaintext bytes to ``target_port``, in a background thread."""

    def __init__(self, port: int, target_port: int, context: ssl.SSLContext) -> None:
        self.port, self.target_port, self.context = port, target_port, context
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._relay(client_reader, broker_writer), self._relay(broker_reader, client_writer))

    def __enter__(self) -> TlsProxy:
        self.thread.start()
        start = asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.context)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A broker reachable only through TLS: yields its bootstrap address and the CA file that signs it."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(folder / "ca.pem")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    tls_port = free_port()
    with EmbeddedBroker(advertised_port=tls_port) as broker, TlsProxy(tls_port, broker.port, server):
        yield f"127.0.0.1:{tls_port}", folder / "ca.pem"


def tls_settings(tls_broker: tuple[str, Path], **overrides: object) -> Settings:
    address, cafile = tls_broker
    options = {"broker_url": f"kafka://{address}", "security_protocol": "SSL", "ssl_cafile": cafile, "app_id": "tls", "partitions": 2}
    return Settings(**(options | overrides))


def test_kafka_python_clients_work_over_tls(tls_broker: tuple[str, Path]) -> None:
    settings = tls_settings(tls_broker, transactions_topic="tls-transactions")
    assert settings.transactions_topic in create_topics(settings)
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, **kafka_python_options(settings))
    for index in range(10):
        producer.send(settings.transactions_topic, key=b"card", value=f"event {index}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(settings.transactions_topic, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000, **kafka_python_options(settings))
    values = [message.value for message in consumer]
    consumer.close()
    assert values == [f"event {index}".encode() for index in range(10)]


def test_aiokafka_works_over_tls_with_fausts_credentials(tls_broker: tuple[str, Path]) -> None:
    """The worker's path: Faust's credentials, translated by Faust, given to aiokafka."""
    settings = tls_settings(tls_broker, alerts_topic="tls-alerts")
    create_topics(settings)
    auth = credentials_to_aiokafka_auth(faust_credentials(settings))

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **auth)
        await producer.start()
        try:
            await producer.send_and_wait(settings.alerts_topic, b"alert", key=b"tx-1", partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(settings.alerts_topic, bootstrap_servers=settings.bootstrap_servers, auto_offset_reset="earliest", **auth)
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=5000)
        finally:
            await consumer.stop()
        return [message.value for messages in batches.values() for message in messages]

    assert asyncio.run(round_trip()) == [b"alert"]


async def aiokafka_start(settings: Settings, **auth: object) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=5000, **auth)
    try:
        await producer.start()
    finally:
        await producer.stop()


def test_tls_refuses_an_unknown_certificate_authority(tls_broker: tuple[str, Path], tmp_path: Path) -> None:
    trustme.CA().cert_pem.write_to_path(tmp_path / "other-ca.pem")
    settings = tls_settings(tls_broker, ssl_cafile=tmp_path / "other-ca.pem")
    with pytest.raises(KafkaConnectionError):
        asyncio.run(aiokafka_start(settings, **credentials_to_aiokafka_auth(faust_credentials(settings))))
    asyncio.run(aiokafka_start(tls_settings(tls_broker), **credentials_to_aiokafka_auth(faust_credentials(tls_settings(tls_broker)))))


def test_a_plaintext_client_cannot_talk_to_the_tls_listener(tls_broker: tuple[str, Path]) -> None:
    with pytest.raises(KafkaConnectionError):
        asyncio.run(aiokafka_start(tls_settings(tls_broker, security_protocol="PLAINTEXT")))
