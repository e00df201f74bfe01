"""The stream's processing functions on plain records and dict tables, without a broker."""

from __future__ import annotations

import copy
import dataclasses
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from explain import Explainer
from models.features import DEFAULT_LABEL_DELAY_DAYS, FEATURE_NAMES
from models.network import ModelInputs
from models.replay import replay_features
from models.train import TrainConfig, train_from_frame
from stream.codec import AvroCodec
from stream.pipeline import Scorer, apply_card_stage, apply_terminal_stage, decode_valid, enriched_transaction, terminal_event, terminal_of
from stream.privacy import DEMO_KEY, Tokenizer
from stream.repartition import Repartition
from stream.producer import replay_events, transaction_record
from stream.settings import Settings
from stream.validation import validate_transaction

TOKENIZE = Tokenizer(DEMO_KEY)


def stream_features(frame: pd.DataFrame, batch: int = 97, feedback_lag: int = 0) -> tuple[list[str], ModelInputs]:
    """Model inputs as the worker computes them: the producer's events through both stages, in batches,
    through the messages of the repartition topics (grouped by partition, so interleaved differently).

    The terminal stage sees the card stage's output one batch late, and labels ahead of it, as a worker
    whose feedback ingest runs ahead of its transactions would; or, with ``feedback_lag``, that many batches
    late, as one whose feedback ingest runs behind would.
    """
    settings = Settings()
    codecs = {settings.transactions_topic: AvroCodec("Transaction"), settings.feedback_topic: AvroCodec("Feedback")}
    to_cards = Repartition("TransactionBatch", settings.partitions)
    to_terminals = Repartition("TerminalEventBatch", settings.partitions)
    card_table: dict = {}
    terminal_table: dict = {}
    tx_ids: list[str] = []
    rows = []
    events = list(replay_events(frame, settings))
    delayed: list = []
    lagging: list[list] = []
    for start in range(0, len(events) + batch, batch):
        transactions, labels = [], []
        for event in events[start : start + batch]:
            record = codecs[event.topic].decode(event.value)
            (transactions if event.topic == settings.transactions_topic else labels).append(record)
        lagging.append(labels)
        labels = lagging.pop(0) if len(lagging) > feedback_lag else []
        events_in = [terminal_event(feedback=label) for label in labels] + [terminal_event(item) for item in delayed]
        terminal_events = to_terminals.read(value for _, value in to_terminals.messages(events_in, key=terminal_of))[0]
        delayed = apply_card_stage(to_cards.read(value for _, value in to_cards.messages(transactions, key=lambda tx: tx["card_id"]))[0], card_table)
        outcome = apply_terminal_stage(terminal_events, terminal_table, DEFAULT_LABEL_DELAY_DAYS)
        rows.append(outcome.inputs)
        tx_ids.extend(transaction["tx_id"] for transaction in outcome.transactions)
    return tx_ids, ModelInputs.concat(rows)


@pytest.mark.parametrize("feedback_lag", [0, 30])
def test_stream_features_equal_offline_replay(small_frame: pd.DataFrame, feedback_lag: int) -> None:
    """Also when labels reach the terminal stage 30 batches (five and a half days of event time) behind transactions:
    a replay sends each label with its transaction, and its reported time decides from when it counts."""
    tx_ids, inputs = stream_features(small_frame, feedback_lag=feedback_lag)
    assert sorted(tx_ids) == sorted(small_frame["tx_id"])
    row_of = {tx_id: row for row, tx_id in enumerate(tx_ids)}
    in_offline_order = [row_of[tx_id] for tx_id in small_frame["tx_id"]]
    offline = replay_features(small_frame)
    np.testing.assert_array_equal(inputs.features[in_offline_order], offline.features)
    np.testing.assert_array_equal(inputs.sequences[in_offline_order], offline.sequences)


class CountingTable(dict):
    """A dict table that counts writes: each one is a changelog message in the worker."""

    writes = 0

    def __setitem__(self, key: bytes, value: object) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def test_each_key_is_written_once_per_batch(small_frame: pd.DataFrame) -> None:
    batch = small_frame.head(400)
    transactions = [transaction_record(row) for row in batch.to_dict("records")]
    cards, terminals = CountingTable(), CountingTable()
    enriched = apply_card_stage(transactions, cards)
    apply_terminal_stage([{"transaction": item, "feedback": None} for item in enriched], terminals, DEFAULT_LABEL_DELAY_DAYS)
    assert cards.writes == batch["card_id"].nunique() < len(batch)
    assert terminals.writes == batch["terminal_id"].nunique()
    assert sum(len(state["tx_ids"]) for state in cards.values()) == len(batch)


def test_terminal_events_encode_as_plain_records() -> None:
    codec = AvroCodec("TerminalEvent")
    enriched = enriched_transaction(transaction_record(pd.Series({"tx_id": "t1", "time": 0.0, "card_id": "c", "terminal_id": "T", "amount": 5.0})),
                                    [0.5] * 14, [0.25] * 32)
    label = {"tx_id": "t1", "is_fraud": True, "source": "analyst", "reported_at": 1000, "card_id": None, "terminal_id": "T"}
    for named, plain in ((terminal_event(enriched), {"transaction": enriched, "feedback": None}),
                         (terminal_event(feedback=label), {"transaction": None, "feedback": label})):
        assert codec.encode(named) == codec.encode(plain)
        assert codec.decode(codec.encode(named)) == plain


def test_labels_reach_terminal_state_and_early_ones_wait_for_their_transaction() -> None:
    table: dict = {}
    transaction = {"tx_id": "t1", "event_time": 0, "card_id": "c", "terminal_id": "T", "amount": 5.0}
    enriched = enriched_transaction(transaction, [0.0] * 14, [0.0] * 32)
    apply_terminal_stage([{"transaction": enriched, "feedback": None}], table, 7)
    feedback = {"tx_id": "t1", "is_fraud": True, "terminal_id": "T", "reported_at": 1000}
    early = {"tx_id": "t2", "is_fraud": True, "terminal_id": "T", "reported_at": 2000}
    outcome = apply_terminal_stage([{"transaction": None, "feedback": feedback}, {"transaction": None, "feedback": early}], table, 7)
    assert (outcome.labels_applied, outcome.labels_pending) == (1, 1)
    assert table[b"T"]["labels"] == [[0.0, 1.0, "t1", True, 5.0, 0.0, None]]  # with its amount and z-score, not superseded
    assert table[b"T"]["pending"] == [["t2", True, 2.0]]

    # t2 arrives: its waiting label is applied, and counted so
    late = enriched_transaction(transaction | {"tx_id": "t2", "event_time": 3000}, [0.0] * 14, [0.0] * 32)
    outcome = apply_terminal_stage([{"transaction": late, "feedback": None}], table, 7)
    assert (outcome.labels_applied, outcome.labels_pending, outcome.late) == (1, 0, 0) and table[b"T"]["pending"] == []


def test_a_transaction_more_than_a_label_delay_older_than_its_terminals_newest_is_counted_late() -> None:
    """Its terminal already scored transactions whose windows should have held it: their features missed it."""
    table: dict = {}

    def event(tx_id: str, day: float) -> dict:
        record = {"tx_id": tx_id, "event_time": int(day * 86_400_000), "card_id": "c", "terminal_id": "T", "amount": 5.0}
        return {"transaction": enriched_transaction(record, [0.0] * 14, [0.0] * 32), "feedback": None}

    outcome = apply_terminal_stage([event("t1", 10.0), event("t2", 4.0), event("t3", 2.9)], table, label_delay_days=7)
    assert outcome.late == 1  # t3, 7.1 days older than t1; t2 is 6 days older, within the label delay's slack
    assert apply_terminal_stage([event("t3", 2.9)], table, label_delay_days=7).late == 0  # redelivered: not late again


def test_bad_messages_become_rejects_and_good_ones_pass() -> None:
    codec = AvroCodec("Transaction")
    good = {"tx_id": "a", "event_time": 1_600_000_000_000, "card_id": "c", "terminal_id": "t", "amount": 3.0, "currency": "EUR"}
    raws = [codec.encode(good), b"junk", None, codec.encode(good | {"amount": -1.0})]
    valid, rejects = decode_valid(raws, codec, validate_transaction)
    assert [record["tx_id"] for record in valid] == ["a"]
    assert [reject.reason for reject in rejects] == ["truncated", "empty", "negative_amount"]
    assert rejects[0].raw == b"junk"


def test_a_redelivered_batch_changes_no_state_and_gets_the_same_features(small_frame: pd.DataFrame) -> None:
    settings = Settings()
    codec = AvroCodec("Transaction")
    transactions = [codec.decode(event.value) for event in replay_events(small_frame.head(400), settings, None)]
    card_table: dict = {}
    terminal_table: dict = {}
    first = apply_card_stage(transactions, card_table)
    apply_terminal_stage([{"transaction": item, "feedback": None} for item in first], terminal_table, DEFAULT_LABEL_DELAY_DAYS)
    cards, terminals = copy.deepcopy(card_table), copy.deepcopy(terminal_table)

    again = apply_card_stage(transactions[100:300], card_table)
    apply_terminal_stage([{"transaction": item, "feedback": None} for item in again], terminal_table, DEFAULT_LABEL_DELAY_DAYS)
    assert [item["card_features"] for item in again] == [item["card_features"] for item in first[100:300]]
    assert [item["card_sequence"] for item in again] == [item["card_sequence"] for item in first[100:300]]
    assert card_table == cards and terminal_table == terminals


class ShiftedExplainer(Explainer):
    """A deliberately broken explainer: every base value off by 0.01, so no explanation adds up."""

    def explain(self, inputs, data, logits=None):  # type: ignore[no-untyped-def]
        return [dataclasses.replace(e, base_value=e.base_value + 0.01) for e in super().explain(inputs, data, logits)]


class FailingExplainer(Explainer):
    """An explainer that fails outright, as a model it cannot handle would."""

    def explain(self, inputs, data, logits=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("explainer exploded")


@pytest.fixture(scope="module")
def scored(small_frame: pd.DataFrame) -> tuple:
    frame = small_frame[small_frame["time"] < small_frame["time"].min() + 14 * 86_400].reset_index(drop=True)
    features = replay_features(frame)
    artifact = train_from_frame(frame, features, valid_days=3, config=TrainConfig(epochs=2))
    transactions = [transaction_record(row) for row in frame.head(40).to_dict("records")]
    return artifact, transactions, features[:40]


def encoded_round_trip(batch) -> None:
    """Every decision and alert is a valid Avro record of its schema."""
    for name, records in (("Decision", batch.decisions), ("Alert", batch.alerts)):
        codec = AvroCodec(name)
        for record in records:
            assert codec.decode(codec.encode(record))["tx_id"] == record["tx_id"]


def test_alerts_whose_reasons_do_not_add_up_are_flagged_and_still_sent(scored) -> None:
    artifact, transactions, features = scored
    honest = Scorer(artifact, Explainer.for_artifact(artifact), threshold=0.0, tokenize=TOKENIZE).score(transactions, features)
    broken = Scorer(artifact, ShiftedExplainer.for_artifact(artifact), threshold=0.0, tokenize=TOKENIZE).score(transactions, features)
    assert (honest.flagged, len(honest.alerts)) == (0, 40)
    assert (broken.flagged, len(broken.alerts)) == (40, 40)
    assert all(alert["additivity_gap"] > 1e-4 and alert["explanation_flagged"] for alert in broken.alerts)
    assert not any(alert["explanation_flagged"] for alert in honest.alerts)
    # every feature is a reason of its own, and the sequence summary's columns are one more
    assert all(len(alert["reasons"]) == 5 and len(decision["reasons"]) == len(FEATURE_NAMES) + 1
               for alert, decision in zip(honest.alerts, honest.decisions))
    assert all(sum(reason["feature"] == "recent_spending_pattern" for reason in decision["reasons"]) == 1
               for decision in honest.decisions)
    # no raw card id leaves the Scorer: decisions and alerts carry the keyed token instead
    tokens = [TOKENIZE(transaction["card_id"]) for transaction in transactions]
    assert [decision["card_id"] for decision in honest.decisions] == tokens
    assert [alert["card_id"] for alert in honest.alerts] == tokens
    assert not {transaction["card_id"] for transaction in transactions} & set(tokens)
    encoded_round_trip(honest)
    encoded_round_trip(broken)


def test_alerts_are_exactly_the_scores_at_or_above_the_threshold(scored) -> None:
    artifact, transactions, features = scored
    scores = artifact.predict_proba(features)
    # a threshold a hair above one score: float32 rounding would put that score on the threshold
    threshold = float(np.nextafter(np.sort(scores)[-3], 1.0))
    batch = Scorer(artifact, Explainer.for_artifact(artifact), threshold=threshold, tokenize=TOKENIZE).score(transactions, features)
    assert [decision["score"] >= threshold for decision in batch.decisions] == [bool(s >= threshold) for s in scores]
    assert {alert["tx_id"] for alert in batch.alerts} == {d["tx_id"] for d in batch.decisions if d["score"] >= threshold}
    assert len(batch.alerts) == 2


def test_alerts_follow_the_logit_where_every_score_rounds_to_1(scored) -> None:
    """A model whose surest transactions all score exactly 1 in float64 can still alert on a few of them."""
    artifact, transactions, features = scored
    sure = copy.deepcopy(artifact)
    with torch.no_grad():
        sure.network.head[-1].bias += 60.0  # every logit far above 36.7, where float64 expit gives 1
    logits = sure.predict_logit(features)
    sure.threshold_logit = float(np.sort(logits)[-5])
    assert (sure.predict_proba(features) == 1.0).all()

    batch = Scorer(sure, Explainer.for_artifact(sure), tokenize=TOKENIZE).score(transactions, features)

    assert [decision["is_alert"] for decision in batch.decisions] == (logits >= sure.threshold_logit).tolist()
    assert len(batch.alerts) == 5
    assert all(record["threshold"] == 1.0 and record["threshold_logit"] == sure.threshold_logit
               for record in batch.decisions + batch.alerts)
    encoded_round_trip(batch)


def test_a_threshold_is_given_as_a_probability_or_a_logit_not_both(scored) -> None:
    artifact, transactions, features = scored
    explainer = Explainer.for_artifact(artifact)
    with pytest.raises(ValueError, match="not both"):
        Scorer(artifact, explainer, threshold=0.5, threshold_logit=0.0, tokenize=TOKENIZE)
    limit = float(np.sort(artifact.predict_logit(features))[-3])
    batch = Scorer(artifact, explainer, threshold_logit=limit, tokenize=TOKENIZE).score(transactions, features)
    assert len(batch.alerts) == 3 and batch.decisions[0]["threshold_logit"] == limit


def test_a_failing_explainer_flags_its_alerts_and_the_batch_is_still_scored(scored, caplog) -> None:
    artifact, transactions, features = scored
    threshold = float(np.sort(artifact.predict_proba(features))[-4])
    with caplog.at_level(logging.ERROR, logger="stream.pipeline"):
        batch = Scorer(artifact, FailingExplainer.for_artifact(artifact), threshold=threshold, tokenize=TOKENIZE).score(transactions, features)
    assert (batch.flagged, len(batch.alerts), len(batch.decisions)) == (4, 4, 40)
    assert all(alert["explanation_flagged"] and alert["reasons"] == [] and alert["base_value"] is None for alert in batch.alerts)
    assert sum(decision["explanation_flagged"] for decision in batch.decisions) == 4
    assert "explaining 4 alert(s) failed" in caplog.text and "explainer exploded" in caplog.text
    encoded_round_trip(batch)
