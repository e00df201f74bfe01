"""Creating riskstream's topics with explicit partition counts (Faust creates only its internal ones)."""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from stream.exceptions import StreamError
from stream.security import kafka_python_options
from stream.settings import Settings

logger = logging.getLogger(__name__)


def create_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the producer-facing topics that do not exist yet; returns the names created.

    Retries while the broker is still starting, up to ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=settings.bootstrap_servers, client_id=f"{settings.app_id}-admin", **kafka_python_options(settings)
            )
            break
        except KafkaError as error:
            if time.monotonic() > deadline:
                raise StreamError(f"cannot reach the broker at {settings.broker_url}: {error}") from error
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = [name for name in settings.source_topics if name not in existing]
        created = []
        for name in wanted:
            try:
                admin.create_topics([NewTopic(name, num_partitions=settings.partitions, replication_factor=1)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        if created:
            logger.info("created topics %s with %d partitions", ", ".join(created), settings.partitions)
        return created
    finally:
        admin.close()


__all__ = ["create_topics"]
