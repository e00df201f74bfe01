"""Keeping message contents out of the logs, at every log level.

At debug level the Kafka clients log whole messages: Faust and aiokafka each message sent (key and value),
aiokafka and kafka-python every request and response (fetched records included), kafka-python's producer
each record. Those carry raw card ids (the card stage's topic is keyed by card, feedback carries card ids)
and would put them in log files, which are kept and shipped far more widely than the topics. Those
loggers, and only those, stay at INFO when everything else logs at DEBUG.
"""

from __future__ import annotations

import logging

__all__ = ["PAYLOAD_LOGGERS", "keep_payloads_out_of_logs"]

#: Loggers whose debug lines print message keys, values or raw protocol frames.
PAYLOAD_LOGGERS = (
    "faust.topics",
    "faust.transport.drivers.aiokafka",
    "aiokafka.producer.producer",
    "aiokafka.conn",
    "kafka.producer.kafka",
    "kafka.protocol.parser",
    "kafka.net.connection",
)


def keep_payloads_out_of_logs() -> None:
    """Raise the message-printing loggers to INFO, whatever level the rest of the process logs at.

    >>> keep_payloads_out_of_logs()
    >>> logging.getLogger("aiokafka.conn").isEnabledFor(logging.DEBUG)
    False
    """
    for name in PAYLOAD_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:
            logger.setLevel(logging.INFO)
