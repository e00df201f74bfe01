"""The Faust application: topics, tables and agents, wired from :class:`stream.settings.Settings`.

Run it with ``faust -A stream.app worker -l info``. Agents are thin: each takes a batch, calls
:mod:`stream.pipeline`, and sends what comes out. Every sink is idempotent by tx_id, so the worker runs
at-least-once (Faust's exactly-once needs three brokers and has open bugs).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from operator import itemgetter

import faust
import torch
from aiokafka.errors import KafkaError
from faust.types import Message
from threadpoolctl import threadpool_limits

from explain import ExplainError, Explainer
from models.exceptions import ModelError
from models.network import ModelArtifact, ModelInputs
from models.registry import load_artifact
from stream import metrics
from stream.batch_producer import BatchedTable, partition_count, send_batched
from stream.codec import AvroCodec, register_faust_codecs
from stream.consumer import WorkerApp
from stream.logs import keep_payloads_out_of_logs
from stream.pipeline import (
    Reject, ScoredBatch, Scorer, apply_card_stage, apply_terminal_stage, collect_cycles_less_often, decode_valid, terminal_event,
    terminal_of,
)
from stream.probes import add_probes
from stream.recovery import FetchedEndTableManager
from stream.repartition import Repartition, partition_for
from stream.rollout import Pointers, add_shadow_scores, read_pointers
from stream.security import faust_credentials
from stream.privacy import Tokenizer, load_tokenizer
from stream.settings import Settings
from stream.validation import validate_feedback, validate_transaction

logger = logging.getLogger(__name__)

METADATA_RETRY_S = 5.0  #: between two asks for a topic's partition count


def _one_thread() -> None:
    """One intra-op thread for torch and BLAS (the explainer's products) in the thread that runs the model.

    Batches are small, and a second thread fighting the event loop for two cores made scoring and SHAP several
    times slower here, not faster. Torch's setting is per thread under OpenMP, so each such thread sets it.
    """
    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")


class Serving:
    """The models the worker serves: loaded off the event loop, switched between batches.

    Scoring and explaining are CPU work of tens of milliseconds a batch, so they run in one dedicated thread
    (torch releases the GIL) while the loop keeps heartbeats, fetches and sends going. One thread keeps
    batches in order. :meth:`refresh` follows the registry's CHAMPION and SHADOW pointers: it loads and
    verifies new models in another thread while scoring goes on, and :meth:`score` swaps them in before the
    next batch, so no event is lost or scored twice and each decision names the model that made it.
    """

    def __init__(self, settings: Settings, tokenize: Tokenizer) -> None:
        self.settings = settings
        self.tokenize = tokenize
        self.ready = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, "riskstream-score", initializer=_one_thread)
        self._loader = ThreadPoolExecutor(1, "riskstream-load", initializer=_one_thread)
        self.scorer: Scorer | None = None
        self.shadow: ModelArtifact | None = None
        self.pointers: Pointers | None = None
        self._next: tuple[Pointers, Scorer, ModelArtifact | None] | None = None
        self._refused: Pointers | None = None

    def _scorer(self, version: str) -> Scorer:
        artifact = load_artifact(self.settings.model_registry, version)
        return Scorer(
            artifact,
            Explainer.for_artifact(artifact, tolerance=self.settings.explanation_tolerance),
            threshold=self.settings.threshold,
            threshold_logit=self.settings.threshold_logit,
            top_reasons=self.settings.top_reasons,
            tolerance=self.settings.explanation_tolerance,
            tokenize=self.tokenize,
        )

    def load(self, pointers: Pointers | None = None) -> tuple[Pointers, Scorer, ModelArtifact | None]:
        """Load (and verify) the models ``pointers`` name, reusing those already served."""
        pointers = pointers or read_pointers(self.settings.model_registry, self.settings.model_version)
        current = self.pointers
        scorer = self.scorer if current and self.scorer and current.champion == pointers.champion else self._scorer(pointers.champion)
        shadow = None
        if pointers.shadow is not None:
            same = current is not None and self.shadow is not None and current.shadow == pointers.shadow
            shadow = self.shadow if same else load_artifact(self.settings.model_registry, pointers.shadow)
        return pointers, scorer, shadow

    async def start(self) -> None:
        self.pointers, self.scorer, self.shadow = await asyncio.get_running_loop().run_in_executor(self._loader, self.load)
        logger.info("serving model %s%s", self.pointers.champion, f", shadow {self.pointers.shadow}" if self.pointers.shadow else "")
        self.ready.set()

    async def refresh(self) -> None:
        """Load the models the registry names now, if they changed; the next batch is scored with them.

        A model that fails to load (missing, or refused by its checksums) leaves the current ones serving; the
        failure is logged and counted once per change of the pointers.
        """
        if not self.ready.is_set():
            return
        loop = asyncio.get_running_loop()
        pointers = None
        try:
            pointers = await loop.run_in_executor(self._loader, read_pointers, self.settings.model_registry, self.settings.model_version)
            if pointers in (self.pointers, self._refused) or (self._next and self._next[0] == pointers):
                return
            self._next = await loop.run_in_executor(self._loader, self.load, pointers)
        except (ModelError, ExplainError, OSError) as error:
            if pointers is not None and pointers == self._refused:
                return
            self._refused = pointers
            role = "shadow" if pointers and self.pointers and pointers.champion == self.pointers.champion else "champion"
            metrics.MODEL_SWITCHES.labels(role, "refused").inc()
            logger.error("keeping %s: the registry's new %s model cannot be served: %s", self.pointers, role, error)

    def _swap(self) -> None:
        assert self._next is not None and self.pointers is not None
        pointers, self.scorer, self.shadow = self._next
        self._next = None
        for role, old, new in (("champion", self.pointers.champion, pointers.champion), ("shadow", self.pointers.shadow, pointers.shadow)):
            if old != new:
                metrics.MODEL_SWITCHES.labels(role, "switched").inc()
                logger.info("switched %s model from %s to %s between batches", role, old, new)
        self.pointers = pointers

    async def score(self, transactions: list[dict], inputs: ModelInputs) -> ScoredBatch:
        assert self.scorer is not None, "Serving.start() has not finished"
        if self._next is not None:
            self._swap()  # on the event loop, between two batches: none is being scored now
        return await asyncio.get_running_loop().run_in_executor(self._executor, _score, self.scorer, self.shadow, transactions, inputs)


def _score(scorer: Scorer, shadow: ModelArtifact | None, transactions: list[dict], inputs: ModelInputs) -> ScoredBatch:
    """One batch in the scoring thread: the champion's decisions and alerts, with the shadow's scores added."""
    batch = scorer.score(transactions, inputs)
    batch_id = random.getrandbits(63)  # names this model call, for replay (see models.rescore)
    for row, decision in enumerate(batch.decisions):
        decision.update(batch_id=batch_id, batch_row=row)
    if shadow is not None and batch.decisions:
        add_shadow_scores(batch.decisions, shadow, inputs)
    return batch


def _messages_by_partition(events: list[faust.EventT]) -> dict[int, list[Message]]:
    """A batch's messages by the partition they came from, each partition's in order."""
    messages: dict[int, list[Message]] = {}
    for event in events:
        messages.setdefault(event.message.partition, []).append(event.message)
    return messages


def create_app(settings: Settings) -> faust.App:
    """Build the worker's app: ingest → card stage → terminal stage (which scores), plus its operational pages.

    Refuses (ConfigurationError) when there is no key for card tokens outside demo mode.
    """
    tokenize = load_tokenizer(settings)
    app = WorkerApp(
        settings.app_id,
        fetch_wait_s=settings.fetch_wait_s,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings),
        store=settings.store_url,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        recovery_consistency_check=settings.recovery_consistency_check,
        # Recovery that applies every changelog record it reads, whatever end offset the broker lists (stream/recovery.py).
        TableManager=FetchedEndTableManager,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        web_port=settings.web_port,
        # Without a linger every message is its own produce request, which caps a worker at a few hundred
        # events a second; a short linger batches each stage's output.
        producer_linger=settings.producer_linger_s,
        producer_max_batch_size=settings.producer_batch_bytes,
        producer_max_request_size=settings.producer_max_request_bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    register_faust_codecs()  # "avro-transaction", "avro-decision", ... for topics that want Faust to decode
    app.on_worker_init.connect(lambda sender, **_: keep_payloads_out_of_logs())  # before the worker sets up logging
    app.on_worker_init.connect(lambda sender, **_: collect_cycles_less_often())
    serving = Serving(settings, tokenize)
    codecs = {name: AvroCodec(name) for name in ("Transaction", "Feedback", "Decision", "Alert")}

    def topic(name: str, internal: bool = False) -> faust.TopicT:
        return app.topic(name, partitions=settings.partitions, internal=internal, key_serializer="raw", value_serializer="raw")

    transactions = topic(settings.transactions_topic)
    feedback = topic(settings.feedback_topic)
    by_terminal = topic(f"{settings.app_id}-by-terminal", internal=True)
    by_card = topic(f"{settings.app_id}-by-card", internal=True)
    alerts = topic(settings.alerts_topic)
    dead_letters = topic(settings.dead_letter_topic)

    # use_partitioner: a table key's changelog partition follows the key (as the stage topics' partitions do,
    # stream.repartition), not the partition of whichever event in a batch happened to be current.
    # Keys are the card or terminal id's bytes; values are JSON state dicts.
    table_options = {"partitions": settings.partitions, "use_partitioner": True, "key_type": bytes}
    # Stages write through BatchedTable: each batch's changelog messages go out as record batches.
    terminal_states = BatchedTable(app.Table("terminal-state", **table_options))
    card_states = BatchedTable(app.Table("card-state", **table_options))

    def send_rejects(rejects: list[Reject], source: str, messages: list[Message]) -> None:
        """Each reject to the dead letters with why, and the key, partition and offset its message in the batch's
        ``messages`` came with, so that it can be found and sent again once fixed."""
        for reject in rejects:
            message = messages[reject.position]
            headers = {"reason": reject.reason.encode(), "error": reject.message[:1000].encode(), "source-topic": source.encode(),
                       "source-partition": str(message.partition).encode(), "source-offset": str(message.offset).encode()}
            if reject.field:
                headers["field"] = reject.field.encode()
            dead_letters.send_soon(key=message.key, value=reject.raw, headers=headers)
            metrics.DEAD_LETTERS.labels(reject.reason).inc()
        if rejects:
            logger.warning("%d message(s) from %s sent to %s", len(rejects), source, settings.dead_letter_topic)

    def accept(messages: list[Message], read: Callable[[Iterable[bytes]], tuple[list[dict], list[Reject]]], source: str) -> list[dict]:
        """The records ``read`` makes of the messages' values; the messages it rejects go to the dead letters."""
        records, rejects = read(message.value for message in messages)
        send_rejects(rejects, source, messages)
        return records

    def take(stream: faust.StreamT, size: int = settings.batch_size) -> faust.StreamT:
        """A stream's batches of events, each carrying its message (for the dead letters): at most ``size``,
        waiting at most ``batch_within_s``."""
        return stream.take_events(size, within=settings.batch_within_s)

    # Between the stages, one message holds a batch's records for one partition (stream.repartition): about
    # batch_size / partitions of them when keys spread evenly, so a stage takes `partitions` messages at a time.
    to_cards = Repartition("TransactionBatch", settings.partitions)
    to_terminals = Repartition("TerminalEventBatch", settings.partitions)


    def send_repartitioned(topic: faust.TopicT, messages: list[tuple[int, bytes]]) -> None:
        for partition, value in messages:
            topic.send_soon(key=None, value=value, partition=partition)

    async def card_stage(transactions: list[dict]) -> None:
        """Card features in each card's order, then each transaction re-keyed by terminal."""
        if not transactions:
            return
        started = time.perf_counter()
        enriched = apply_card_stage(transactions, card_states)
        await card_states.flush(app)
        send_repartitioned(by_terminal, to_terminals.messages(map(terminal_event, enriched), key=terminal_of))
        metrics.BATCH_SECONDS.labels("card").observe(time.perf_counter() - started)

    async def transactions_copartitioned() -> bool:
        """Whether the transactions topic has the stage topics' partition count (from the brokers' metadata).

        Until the brokers answer and the topic exists there is nothing to consume, so this waits for them.
        """
        while True:
            try:
                count = await partition_count(app, settings.transactions_topic)
                break
            except KafkaError as exc:
                logger.warning("no partition count for %s yet (%r); asking again in %g s",
                               settings.transactions_topic, exc, METADATA_RETRY_S)
                await asyncio.sleep(METADATA_RETRY_S)
        if count != settings.partitions:
            logger.warning("%s has %d partitions, not %d: every transaction is re-keyed by card first (one more hop)",
                           settings.transactions_topic, count, settings.partitions)
        return count == settings.partitions

    @app.agent(transactions, name="ingest-transactions")
    async def ingest_transactions(stream: faust.StreamT) -> None:
        """Decode and validate transactions (the rest to dead letters), then the card stage for those that are on
        their card's partition; the others are re-keyed by card first.

        riskstream's producer keys each transaction by its card, so on a transactions topic partitioned like the
        stage topics (as ``riskstream create-topics`` makes it) each transaction is on its card state's partition,
        which Faust assigns to the same worker (it assigns topics of equal partition counts together): re-keying
        would only copy it to the same partition of another topic. On a topic of another partition count no
        partition is sure to be co-assigned, so all are re-keyed. Which of the two holds is decided once, at start:
        a card whose transactions took both paths could see them out of order.
        """
        copartitioned = await transactions_copartitioned()
        await serving.ready.wait()
        async for events in take(stream):
            validate = partial(validate_transaction, now_ms=int(time.time() * 1000))
            read = partial(decode_valid, codec=codecs["Transaction"], validate=validate)
            at_home, away = [], []
            for partition, messages in _messages_by_partition(events).items():
                records = accept(messages, read, settings.transactions_topic)
                for record in records:
                    home = copartitioned and partition_for(record["card_id"].encode(), settings.partitions) == partition
                    (at_home if home else away).append(record)
                metrics.EVENTS.labels(settings.transactions_topic).inc(len(records))
            send_repartitioned(by_card, to_cards.messages(away, key=itemgetter("card_id")))
            await card_stage(at_home)

    @app.agent(feedback, name="ingest-feedback")
    async def ingest_feedback(stream: faust.StreamT) -> None:
        """Route fraud labels to their terminal's partition, where they update terminal risk."""
        await serving.ready.wait()
        async for events in take(stream):
            validate = partial(validate_feedback, now_ms=int(time.time() * 1000))
            read = partial(decode_valid, codec=codecs["Feedback"], validate=validate)
            records = accept([event.message for event in events], read, settings.feedback_topic)
            routable = [record for record in records if record.get("terminal_id")]
            metrics.LABELS.labels("unroutable").inc(len(records) - len(routable))
            labels = [terminal_event(feedback=record) for record in routable]
            send_repartitioned(by_terminal, to_terminals.messages(labels, key=terminal_of))
            metrics.EVENTS.labels(settings.feedback_topic).inc(len(records))

    @app.agent(by_card, name="card-stage")
    async def rekeyed_card_stage(stream: faust.StreamT) -> None:
        """The card stage for transactions that arrived on another partition than their card's."""
        await serving.ready.wait()
        async for events in take(stream, settings.partitions):
            await card_stage(accept([event.message for event in events], to_cards.read, by_card.get_topic_name()))

    @app.agent(by_terminal, name="terminal-stage")
    async def terminal_stage(stream: faust.StreamT) -> None:
        """Labels and terminal features, one model call per batch, reasons for the alerts; decisions out."""
        await serving.ready.wait()
        assert serving.scorer is not None
        label_delay_days = serving.scorer.artifact.label_delay_days
        async for events in take(stream, settings.partitions):
            started = time.perf_counter()
            events_in = accept([event.message for event in events], to_terminals.read, by_terminal.get_topic_name())
            outcome = apply_terminal_stage(events_in, terminal_states, label_delay_days)
            await terminal_states.flush(app)
            with metrics.SCORE_BATCH_SECONDS.time():
                batch = await serving.score(outcome.transactions, outcome.inputs)
            encode = codecs["Decision"].encode
            await send_batched(app, settings.decisions_topic, ((decision["tx_id"].encode(), encode(decision)) for decision in batch.decisions))
            for alert in batch.alerts:
                alerts.send_soon(key=alert["tx_id"].encode(), value=codecs["Alert"].encode(alert))
            metrics.LABELS.labels("applied").inc(outcome.labels_applied)
            metrics.LABELS.labels("pending").inc(outcome.labels_pending)
            metrics.LATE_TRANSACTIONS.inc(outcome.late)
            metrics.DECISIONS.inc(len(batch.decisions))
            metrics.ALERTS.inc(len(batch.alerts))
            metrics.EXPLANATION_GAPS.inc(batch.flagged)
            metrics.BATCH_SECONDS.labels("terminal").observe(time.perf_counter() - started)

    @app.task
    async def load_model() -> None:
        """Load the model and build its explainer; every agent waits for it before it takes an event.

        A stage that ran while the model loaded (seconds) would only pile its output up before the terminal
        stage, which must then catch up: decisions come no sooner, and the loading competes with it for CPU.
        """
        await serving.start()

    @app.timer(settings.model_poll_interval_s)
    async def follow_registry() -> None:
        """Switch to a newly promoted, rolled back or shadowed model without a restart."""
        await serving.refresh()

    add_probes(app, model_loaded=serving.ready.is_set)  # /health, /ready, /metrics
    return app


app = create_app(Settings())

__all__ = ["Serving", "app", "create_app"]
