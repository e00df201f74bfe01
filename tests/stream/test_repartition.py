"""Re-keying between the stages: the partition a record goes to, and what a message holds."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner
from kafka.partitioner import murmur2 as kafka_python_murmur2

from stream.pipeline import card_features_of, enriched_transaction, terminal_event, terminal_of
from stream.repartition import Repartition, partition_for


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
        events = cards.read([value])
        assert {partition_for(event["card_id"].encode(), 4) for event in events} == {partition}
        by_partition.setdefault(partition, []).extend(events)
    for partition, events in by_partition.items():  # each partition's records in the order they came
        expected = [record["tx_id"] for record in records if partition_for(record["card_id"].encode(), 4) == partition]
        assert [event["tx_id"] for event in events] == expected
    assert sorted(record["tx_id"] for record in cards.read(value for _, value in messages)) == sorted(r["tx_id"] for r in records)
    assert cards.messages([], key=lambda record: record["card_id"]) == []


def test_terminal_events_carry_labels_and_enriched_transactions() -> None:
    terminals = Repartition("TerminalEventBatch", partitions=8)
    label = {"tx_id": "t1", "is_fraud": True, "source": "analyst", "reported_at": 1000, "card_id": None, "terminal_id": "T"}
    transaction = {"tx_id": "t2", "event_time": 5, "card_id": "c", "terminal_id": "T", "amount": 2.5}
    enriched = enriched_transaction(transaction, [0.5, 1.0], [0.25])
    [(partition, value)] = terminals.messages([terminal_event(feedback=label)], key=terminal_of)
    [(same, other)] = terminals.messages([terminal_event(enriched)], key=terminal_of)
    assert partition == same == partition_for(b"T", 8)
    [read_label, read_enriched] = terminals.read([value, other])
    assert read_label == {"transaction": None, "feedback": label}
    assert read_enriched["feedback"] is None
    assert card_features_of(read_enriched["transaction"]) == (0.5, 1.0)
    assert read_enriched["transaction"]["transaction"]["tx_id"] == "t2"
