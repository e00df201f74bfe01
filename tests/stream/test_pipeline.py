"""The stream's processing functions on plain records and dict tables, without a broker."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd

from explain import Explainer
from models.features import DEFAULT_LABEL_DELAY_DAYS
from models.replay import replay_features
from models.train import TrainConfig, train_from_frame
from stream.codec import AvroCodec
from stream.pipeline import Scorer, apply_card_stage, apply_terminal_stage, decode_valid
from stream.privacy import DEMO_KEY, Tokenizer
from stream.producer import replay_events, transaction_record
from stream.settings import Settings
from stream.validation import validate_transaction


def stream_features(frame: pd.DataFrame, batch: int = 97) -> tuple[list[str], np.ndarray]:
    """Feature rows as the worker computes them: the producer's events through both stages, in batches.

    The terminal stage sees the card stage's output one batch late, and labels ahead of it, as a worker
    whose feedback ingest runs ahead of its transactions would.
    """
    settings = Settings()
    codecs = {settings.transactions_topic: AvroCodec("Transaction"), settings.feedback_topic: AvroCodec("Feedback")}
    card_table: dict = {}
    terminal_table: dict = {}
    tx_ids: list[str] = []
    rows = []
    events = list(replay_events(frame, settings))
    delayed: list = []
    for start in range(0, len(events) + batch, batch):
        transactions, labels = [], []
        for event in events[start : start + batch]:
            record = codecs[event.topic].decode(event.value)
            (transactions if event.topic == settings.transactions_topic else labels).append(record)
        terminal_events = [{"transaction": None, "feedback": label} for label in labels]
        terminal_events += [{"transaction": item, "feedback": None} for item in delayed]
        delayed = apply_card_stage(transactions, card_table)
        outcome = apply_terminal_stage(terminal_events, terminal_table, DEFAULT_LABEL_DELAY_DAYS)
        rows.append(outcome.matrix)
        tx_ids.extend(transaction["tx_id"] for transaction in outcome.transactions)
    return tx_ids, np.vstack(rows)


def test_stream_features_equal_offline_replay(small_frame: pd.DataFrame) -> None:
    tx_ids, features = stream_features(small_frame)
    assert tx_ids == small_frame["tx_id"].tolist()
    np.testing.assert_array_equal(features, replay_features(small_frame))


def test_labels_reach_terminal_state_and_early_ones_wait_for_their_transaction() -> None:
    table: dict = {}
    transaction = {"tx_id": "t1", "event_time": 0, "card_id": "c", "terminal_id": "T", "amount": 5.0}
    apply_terminal_stage([{"transaction": {"transaction": transaction, "card_features": [0.0] * 6}, "feedback": None}], table, 7)
    feedback = {"tx_id": "t1", "is_fraud": True, "terminal_id": "T", "reported_at": 1000}
    early = {"tx_id": "t2", "is_fraud": True, "terminal_id": "T", "reported_at": 2000}
    outcome = apply_terminal_stage([{"transaction": None, "feedback": feedback}, {"transaction": None, "feedback": early}], table, 7)
    assert (outcome.labels_applied, outcome.labels_pending) == (1, 1)
    assert table[b"T"]["labels"] == [[0.0, 1.0, "t1", True]]
    assert table[b"T"]["pending"] == [["t2", True, 2.0]]


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
    assert card_table == cards and terminal_table == terminals


class ShiftedExplainer(Explainer):
    """A deliberately broken explainer: every base value off by 0.01, so no explanation adds up."""

    def explain(self, x_raw, x_scaled, logits=None):  # type: ignore[no-untyped-def]
        return [dataclasses.replace(e, base_value=e.base_value + 0.01) for e in super().explain(x_raw, x_scaled, logits)]


def test_alerts_whose_reasons_do_not_add_up_are_flagged_and_still_sent(small_frame: pd.DataFrame) -> None:
    frame = small_frame[small_frame["time"] < small_frame["time"].min() + 14 * 86_400].reset_index(drop=True)
    features = replay_features(frame)
    artifact = train_from_frame(frame, features, valid_days=3, config=TrainConfig(epochs=2))
    transactions = [transaction_record(row) for row in frame.head(40).to_dict("records")]
    honest = Scorer(artifact, Explainer.for_artifact(artifact), threshold=0.0, tokenize=Tokenizer(DEMO_KEY)).score(transactions, features[:40])
    broken = Scorer(artifact, ShiftedExplainer.for_artifact(artifact), threshold=0.0, tokenize=Tokenizer(DEMO_KEY)).score(transactions, features[:40])
    assert (honest.flagged, len(honest.alerts)) == (0, 40)
    assert (broken.flagged, len(broken.alerts)) == (40, 40)
    assert all(alert["additivity_gap"] > 1e-4 for alert in broken.alerts)
    # no raw card id leaves the Scorer: decisions and alerts carry the keyed token instead
    tokens = [Tokenizer(DEMO_KEY)(transaction["card_id"]) for transaction in transactions]
    assert [decision["card_id"] for decision in honest.decisions] == tokens
    assert [alert["card_id"] for alert in honest.alerts] == tokens
    assert not {transaction["card_id"] for transaction in transactions} & set(tokens)
