"""The service's configuration: one frozen object, read from ``RISKSTREAM_*`` environment variables once.

It is built at the entry points (the CLI and ``faust -A stream.app``) and passed down as plain arguments;
models/, explain/ and audit/ never read the environment themselves.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting, with the environment variable that sets it (prefix ``RISKSTREAM_``)."""

    # hide_input_in_errors: a rejected setting must not echo a password into a log or a traceback
    model_config = SettingsConfigDict(env_prefix="RISKSTREAM_", frozen=True, hide_input_in_errors=True)

    broker_url: str = Field("kafka://127.0.0.1:9092", description="RISKSTREAM_BROKER_URL: Kafka bootstrap servers, kafka://host:port[;host:port]")
    app_id: str = Field("riskstream", description="RISKSTREAM_APP_ID: Faust application id (consumer group, internal topic prefix)")
    partitions: int = Field(8, ge=1, description="RISKSTREAM_PARTITIONS: partitions of every topic riskstream creates")
    transactions_topic: str = Field("transactions", description="RISKSTREAM_TRANSACTIONS_TOPIC: producers' Avro transactions")
    feedback_topic: str = Field("feedback", description="RISKSTREAM_FEEDBACK_TOPIC: fraud labels (chargebacks, analyst verdicts)")
    decisions_topic: str = Field("decisions", description="RISKSTREAM_DECISIONS_TOPIC: one decision per transaction, keyed by tx_id")
    alerts_topic: str = Field("alerts", description="RISKSTREAM_ALERTS_TOPIC: explained alerts, keyed by tx_id")
    dead_letter_topic: str = Field("dead-letters", description="RISKSTREAM_DEAD_LETTER_TOPIC: rejected input with its reason in the headers")
    model_registry: Path = Field(Path("var/models"), description="RISKSTREAM_MODEL_REGISTRY: model registry folder; the champion is served")
    model_version: str | None = Field(None, description="RISKSTREAM_MODEL_VERSION: serve this version instead of the champion")
    model_poll_interval_s: float = Field(5.0, gt=0.0, description="RISKSTREAM_MODEL_POLL_INTERVAL_S: how often workers check the registry's CHAMPION and SHADOW pointers and switch models")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="RISKSTREAM_THRESHOLD: alert threshold on the probability; default: the model's recommended one")
    threshold_logit: float | None = Field(None, allow_inf_nan=False, description="RISKSTREAM_THRESHOLD_LOGIT: alert threshold on the logit instead, for a threshold among the scores that round to 1")
    top_reasons: int = Field(5, ge=1, description="RISKSTREAM_TOP_REASONS: reasons carried by an alert (the audit store keeps all)")
    explanation_tolerance: float = Field(1e-4, gt=0.0, description="RISKSTREAM_EXPLANATION_TOLERANCE: largest additivity gap an alert may carry unflagged, per unit of |logit| above 1")
    batch_size: int = Field(500, ge=1, description="RISKSTREAM_BATCH_SIZE: events scored per model call at most")
    batch_within_s: float = Field(0.05, gt=0.0, description="RISKSTREAM_BATCH_WITHIN_S: longest wait to fill a batch")
    producer_linger_s: float = Field(0.01, ge=0.0, description="RISKSTREAM_PRODUCER_LINGER_S: how long the worker's producer gathers messages into one request")
    fetch_wait_s: float = Field(1.5, gt=0.0, description="RISKSTREAM_FETCH_WAIT_S: longest wait of the worker's consumer for a fetch (Faust fixes 1.5 s; see stream/consumer.py)")
    producer_batch_bytes: int = Field(512 * 1024, ge=1024, description="RISKSTREAM_PRODUCER_BATCH_BYTES: largest producer batch per partition")
    producer_max_request_bytes: int = Field(1_000_000, ge=1_000_000, description="RISKSTREAM_PRODUCER_MAX_REQUEST_BYTES: largest request the worker's producer sends, so the largest state it can write to a changelog (raise the topics' max.message.bytes with it; not below Kafka's default 1,000,000, which the stages' 512 KiB messages need)")
    audit_dir: Path = Field(Path("var/audit"), description="RISKSTREAM_AUDIT_DIR: the DuckDB audit store's folder")
    audit_flush_interval_s: float = Field(2.0, gt=0.0, description="RISKSTREAM_AUDIT_FLUSH_INTERVAL_S: longest time the audit writer buffers")
    audit_export_interval_s: float = Field(10.0, gt=0.0, description="RISKSTREAM_AUDIT_EXPORT_INTERVAL_S: longest time between exports to analysts' views (their staleness adds the flush interval)")
    audit_retention_days: int | None = Field(None, ge=1, description="RISKSTREAM_AUDIT_RETENTION_DAYS: the audit writer deletes rows older than this many days (default: keep all)")
    hmac_key: SecretStr | None = Field(None, description="RISKSTREAM_HMAC_KEY: secret key of the card tokens (at least 16 bytes)")
    hmac_key_file: Path | None = Field(None, description="RISKSTREAM_HMAC_KEY_FILE: file holding that key instead (e.g. a mounted secret)")
    demo_mode: bool = Field(False, description="RISKSTREAM_DEMO_MODE: allow the public demo key when no key is set (demo and tests only)")
    store_url: str = Field("memory://", description="RISKSTREAM_STORE_URL: Faust table store (memory:// or rocksdb://)")
    data_dir: Path = Field(Path("var/worker"), description="RISKSTREAM_DATA_DIR: the worker's local data (table stores)")
    web_port: int = Field(6066, description="RISKSTREAM_WEB_PORT: the worker's web server port")
    session_timeout_s: float = Field(10.0, gt=0.0, description="RISKSTREAM_SESSION_TIMEOUT_S: consumer session timeout")
    rebalance_timeout_s: float = Field(10.0, gt=0.0, description="RISKSTREAM_REBALANCE_TIMEOUT_S: consumer group rebalance timeout")
    recovery_consistency_check: bool = Field(True, description="RISKSTREAM_RECOVERY_CONSISTENCY_CHECK: stop a worker whose table offset is past a changelog's end offset; off only on the embedded broker, whose end offsets lag (README)")
    # Kafka connection security (stream/security.py turns these into client options)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field("PLAINTEXT", description="RISKSTREAM_SECURITY_PROTOCOL: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field("PLAIN", description="RISKSTREAM_SASL_MECHANISM: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    sasl_username: str | None = Field(None, description="RISKSTREAM_SASL_USERNAME: SASL user")
    sasl_password: SecretStr | None = Field(None, description="RISKSTREAM_SASL_PASSWORD: SASL password (never logged)")
    ssl_cafile: Path | None = Field(None, description="RISKSTREAM_SSL_CAFILE: CA certificates (PEM) that sign the brokers' certificates; default: the system's")
    ssl_certfile: Path | None = Field(None, description="RISKSTREAM_SSL_CERTFILE: client certificate (PEM), when the brokers ask for one (mutual TLS)")
    ssl_keyfile: Path | None = Field(None, description="RISKSTREAM_SSL_KEYFILE: the client certificate's private key (PEM)")
    ssl_key_password: SecretStr | None = Field(None, description="RISKSTREAM_SSL_KEY_PASSWORD: the private key's password (never logged)")
    ssl_check_hostname: bool = Field(True, description="RISKSTREAM_SSL_CHECK_HOSTNAME: check that a broker's certificate names its host")

    @model_validator(mode="after")
    def _security_complete(self) -> Settings:
        if self.security_protocol.startswith("SASL_") and not (self.sasl_username and self.sasl_password):
            raise ValueError(f"RISKSTREAM_SECURITY_PROTOCOL={self.security_protocol} needs RISKSTREAM_SASL_USERNAME and RISKSTREAM_SASL_PASSWORD")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("RISKSTREAM_SSL_CERTFILE and RISKSTREAM_SSL_KEYFILE go together")
        return self

    @model_validator(mode="after")
    def _one_threshold(self) -> Settings:
        if self.threshold is not None and self.threshold_logit is not None:
            raise ValueError("set RISKSTREAM_THRESHOLD or RISKSTREAM_THRESHOLD_LOGIT, not both")
        return self

    @cached_property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` strings for kafka-python, from the Faust-style broker URL."""
        servers = []
        for part in self.broker_url.replace(",", ";").split(";"):
            servers.append(part.strip().removeprefix("kafka://"))
        return [server for server in servers if server]

    @property
    def source_topics(self) -> tuple[str, ...]:
        """Topics that producers write and riskstream reads or writes, created with explicit partitions."""
        return (self.transactions_topic, self.feedback_topic, self.decisions_topic, self.alerts_topic, self.dead_letter_topic)


__all__ = ["Settings"]
