"""Re-keying between the stages: the partition a record goes to, and what a message holds."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from kafka.partitioner import murmur2 as kafka_python_murmur2

from stream.pipeline import card_features_of, enriched_transaction, terminal_event, terminal_of
from stream.repartition import MAX_MESSAGE_BYTES, Repartition, partition_for
from stream.settings import Settings


def test_partition_is_the_one_the_producers_and_the_tables_pick() -> None:
    """kafka-python (riskstream's producer) and aiokafka (Faust's, and so the tables' changelogs) agree with it."""
    faust_picks = DefaultPartitioner()
    for index in range(2_000):
        key = f"card-{index}-{random.random()}".encode()
        for partitions in (1, 3, 8, 16):
            every = list(range(partitions))
            assert partition_for(key, partitions) == faust_picks(key, every, every)
            assert partition_for(key, partitions) == (kafka_python_murmur2(key) & 0x7FFFFFFF) % partitions


def test_messages_hold_one_partitions_records_in_order_and_read_back_whole() -> None:
    cards = Repartition("TransactionBatch", partitions=4, max_records=7)
    records = [{"tx_id": f"t{index}", "event_time": index, "card_id": f"card-{index % 11}", "terminal_id": "x", "amount": 1.0}
               for index in range(100)]
    messages = cards.messages(records, key=lambda record: record["card_id"])

    assert all(len(cards.codec.decode(value)["events"]) <= 7 for _, value in messages)
    by_partition: dict[int, list[dict]] = {}
    for partition, value in messages:
        events, _ = cards.read([value])
        assert {partition_for(event["card_id"].encode(), 4) for event in events} == {partition}
        by_partition.setdefault(partition, []).extend(events)
    for partition, events in by_partition.items():  # each partition's records in the order they came
        expected = [record["tx_id"] for record in records if partition_for(record["card_id"].encode(), 4) == partition]
        assert [event["tx_id"] for event in events] == expected
    assert sorted(record["tx_id"] for record in cards.read(value for _, value in messages)[0]) == sorted(r["tx_id"] for r in records)
    assert cards.messages([], key=lambda record: record["card_id"]) == []


def test_terminal_events_carry_labels_and_enriched_transactions() -> None:
    terminals = Repartition("TerminalEventBatch", partitions=8)
    label = {"tx_id": "t1", "is_fraud": True, "source": "analyst", "reported_at": 1000, "card_id": None, "terminal_id": "T"}
    transaction = {"tx_id": "t2", "event_time": 5, "card_id": "c", "terminal_id": "T", "amount": 2.5}
    enriched = enriched_transaction(transaction, [0.5, 1.0], [0.25])
    [(partition, value)] = terminals.messages([terminal_event(feedback=label)], key=terminal_of)
    [(same, other)] = terminals.messages([terminal_event(enriched)], key=terminal_of)
    assert partition == same == partition_for(b"T", 8)
    [read_label, read_enriched], _ = terminals.read([value, other])
    assert read_label == {"transaction": None, "feedback": label}
    assert read_enriched["feedback"] is None
    assert card_features_of(read_enriched["transaction"]) == (0.5, 1.0)
    assert read_enriched["transaction"]["transaction"]["tx_id"] == "t2"


def test_a_message_that_does_not_decode_is_returned_apart_and_the_rest_is_read() -> None:
    """One message left over from an older version must not take its batch's other messages with it."""
    cards = Repartition("TransactionBatch", partitions=1)
    [(_, value)] = cards.messages([{"tx_id": "t1", "event_time": 0, "card_id": "c", "terminal_id": "x", "amount": 1.0}],
                                  key=lambda record: record["card_id"])
    retired = b"\x00\x00\x00\x00\x05" + value[5:]  # the same body under a retired internal schema id

    records, rejects = cards.read([retired, value, None])

    assert [record["tx_id"] for record in records] == ["t1"]
    assert [(reject.raw, reject.reason) for reject in rejects] == [(retired, "unknown_schema_id"), (b"", "empty")]


def test_a_message_is_split_below_the_byte_limit_whatever_its_records_hold() -> None:
    """500 valid transactions with every optional field at its longest would make a 1.5 MB message, larger
    than a producer sends: they go in several, in order."""
    cards = Repartition("TransactionBatch", partitions=1)
    longest = "€" * 256
    records = [{"tx_id": f"t{index}", "event_time": 0, "card_id": "c", "terminal_id": "x", "amount": 1.0, "currency": "EUR",
                "merchant_category": longest, "channel": longest, "country": longest, "device_id": longest}
               for index in range(500)]

    messages = cards.messages(records, key=lambda record: record["card_id"])

    assert len(messages) > 1 and all(len(value) <= MAX_MESSAGE_BYTES for _, value in messages)
    assert [record["tx_id"] for record in cards.read(value for _, value in messages)[0]] == [f"t{index}" for index in range(500)]


def test_the_smallest_producer_request_allowed_carries_a_stage_message_at_its_limit() -> None:
    """An operator may raise the producer's request size for busy terminals, never lower it below the stages' need."""
    smallest = next(bound.ge for bound in Settings.model_fields["producer_max_request_bytes"].metadata if hasattr(bound, "ge"))
    assert smallest >= MAX_MESSAGE_BYTES + 64 * 1024  # room for the record batch's and the request's headers
