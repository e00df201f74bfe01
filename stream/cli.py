"""``riskstream``: the command line for producers, operators and analysts.

Every command reads :class:`stream.settings.Settings` (``RISKSTREAM_*`` variables) once; options given
here override them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from models.exceptions import ModelError
from stream.exceptions import StreamError
from stream.logs import PAYLOAD_LOGGERS, keep_payloads_out_of_logs
from stream.settings import Settings

if TYPE_CHECKING:
    import pandas as pd


def _settings(**overrides: object) -> Settings:
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


class _Commands(click.Group):
    """The command group: an error the stream or models package raises on purpose (a broker out of reach, a
    schema mismatch, too little labelled data to train on) ends the command with its message and exit status 1,
    not a traceback. The audit and explain commands catch their packages' errors themselves: importing those
    packages here would slow every command's start."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (StreamError, ModelError) as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=_Commands)
@click.option("-l", "--log-level", default="warning", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]))
def main(log_level: str) -> None:
    """Real-time fraud scoring on Kafka, with explained alerts and a DuckDB audit store."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    keep_payloads_out_of_logs()
    if log_level == "warning":
        # At the interactive default, kafka-python's warnings about its own I/O loop's timing under load only
        # clutter progress output; services run with -l info and keep them in their logs. Its payload loggers
        # have their own level (INFO, above), so they are raised too, or their INFO lines would still print.
        for name in ("kafka", *(name for name in PAYLOAD_LOGGERS if name.startswith("kafka."))):
            logging.getLogger(name).setLevel(logging.ERROR)


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Parquet file to write.")
@click.option("--customers", default=5000, show_default=True)
@click.option("--terminals", default=10000, show_default=True)
@click.option("--days", default=183, show_default=True)
@click.option("--start", default="2018-04-01", show_default=True, help="First simulated day.")
@click.option("--seed", default=0, show_default=True)
def simulate(out: Path, customers: int, terminals: int, days: int, start: str, seed: int) -> None:
    """Simulate card transactions (the handbook's generative process) into a Parquet file."""
    from models.simulate import simulate as run_simulation
    from models.simulate import write_parquet

    frame = run_simulation(n_customers=customers, n_terminals=terminals, n_days=days, start_date=start, seed=seed)
    write_parquet(frame, out)
    click.echo(f"{len(frame):,} transactions, {int(frame['TX_FRAUD'].sum()):,} frauds → {out}")


def _load(data: Path, since: str | None = None, until: str | None = None) -> pd.DataFrame:
    from models.dataset import load_transactions

    frame = load_transactions(data)
    if since:
        frame = frame[frame["time"] >= _epoch(since)]
    if until:
        frame = frame[frame["time"] < _epoch(until)]
    return frame.reset_index(drop=True)


def _epoch(day: str) -> float:
    import pandas as pd

    return pd.Timestamp(day, tz="UTC").timestamp()


@main.command()
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Events per second (default: as fast as possible).")
@click.option("--labels/--no-labels", default=True, show_default=True,
              help="Also send each fraud's label, reported --label-delay-days after it (sent right after it; counts from then). "
                   "Labels not reported by now are left out.")
@click.option("--label-delay-days", type=click.FloatRange(min=0), default=7.0, show_default=True,
              help="Days from a fraud to its label's report (a chargeback's typical delay).")
@click.option("--since", default=None, help="First day to send (YYYY-MM-DD).")
@click.option("--until", default=None, help="Day to stop before (YYYY-MM-DD).")
@click.option("--broker", default=None, help="Broker URL (default: RISKSTREAM_BROKER_URL).")
def produce(data: Path, rate: float | None, labels: bool, label_delay_days: float, since: str | None, until: str | None, broker: str | None) -> None:
    """Replay a transaction file (handbook raw layout) into the transactions topic as Avro."""
    from stream.producer import produce as send
    from stream.producer import replay_events, reported_labels
    from stream.topics import create_topics

    settings = _settings(broker_url=broker)
    frame = _load(data, since, until)
    create_topics(settings)
    label_delay = label_delay_days if labels else None
    total = len(frame) + sum(reported_labels(frame, label_delay))
    events = replay_events(frame, settings, label_delay)
    sent = send(events, settings, total=total, rate=rate)
    click.echo(f"sent {sent:,} events")


@main.command()
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--until", default=None,
              help="Train as on this day (YYYY-MM-DD): on the transactions before it, with the labels known then "
                   "(none for its last label-delay days, whose frauds are not all reported yet).")
@click.option("--valid-days", default=7, show_default=True, help="Last days held out for early stopping and the threshold.")
@click.option("--epochs", default=None, type=int, help="Most epochs (default: the training default).")
@click.option("--seed", default=0, show_default=True)
@click.option("--registry", type=click.Path(file_okay=False, path_type=Path), default=None, help="Model registry (default: RISKSTREAM_MODEL_REGISTRY).")
@click.option("--promote/--no-promote", default=True, show_default=True, help="Make the new model the champion.")
def train(data: Path, until: str | None, valid_days: int, epochs: int | None, seed: int, registry: Path | None, promote: bool) -> None:
    """Train the behaviour model (CUDA when present) and save a versioned artifact."""
    from dataclasses import replace

    from models.registry import save_artifact
    from models.replay import replay_features
    from models.features import DEFAULT_LABEL_DELAY_DAYS
    from models.train import TrainConfig, labels_known_by, train_from_frame

    settings = _settings(model_registry=registry)
    frame = _load(data, until=until)
    features = replay_features(frame, progress=True)  # features read only labels reported by then, whatever --until
    if until:
        frame = frame.assign(label=labels_known_by(frame, _epoch(until), DEFAULT_LABEL_DELAY_DAYS))
    config = replace(TrainConfig(), seed=seed, **({"epochs": epochs} if epochs else {}))
    artifact = train_from_frame(frame, features, valid_days=valid_days, config=config, progress=True)
    path = save_artifact(artifact, settings.model_registry, promote=promote)
    click.echo(f"model {artifact.version} → {path}")
    summary = {"metrics": artifact.metrics, "threshold": artifact.threshold, "threshold_logit": artifact.threshold_logit, "device": artifact.trained_on}
    click.echo(json.dumps(summary, indent=2, default=str))


@main.command()
@click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--protocol", type=click.Choice(["prequential", "baseline"]), default="prequential", show_default=True)
@click.option("--fold-starts", default=None, help="Comma-separated training start days (default: the handbook's test folds).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the summary JSON here.")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("var/evaluation"), show_default=True)
@click.option("--seed", default=0, show_default=True)
def evaluate(data: Path, protocol: str, fold_starts: str | None, json_out: Path | None, report_dir: Path, seed: int) -> None:
    """Run the handbook's protocol on a raw transaction file and write the report (JSON, Markdown, plots)."""
    from dataclasses import replace

    from models.evaluate import protocol_folds, run_folds
    from models.replay import replay_features
    from models.report import write_report
    from models.train import TrainConfig

    frame = _load(data)
    features = replay_features(frame, progress=True)
    starts = [day.strip() for day in fold_starts.split(",")] if fold_starts else None
    folds = protocol_folds(frame, protocol, starts)  # type: ignore[arg-type]
    results = run_folds(frame, features, folds, replace(TrainConfig(), seed=seed), progress=True)
    summary = write_report(results, frame, report_dir, name=f"riskstream behaviour model, {protocol}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(summary, indent=2))
    click.echo((report_dir / "evaluation.md").read_text())
    click.echo(f"report in {report_dir}")


@main.command()
@click.argument("query")
@click.option("--audit-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Audit store (default: RISKSTREAM_AUDIT_DIR).")
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def sql(query: str, audit_dir: Path | None, output: str) -> None:
    """Answer an analyst's read-only SQL query over the audit store (safe while the writer runs)."""
    import duckdb

    from audit import AuditError
    from audit import query as run_query

    settings = _settings(audit_dir=audit_dir)
    try:
        table = run_query(settings.audit_dir, query).to_pandas()
    except (AuditError, duckdb.Error) as error:
        raise click.ClickException(str(error)) from error
    if output == "csv":
        click.echo(table.to_csv(index=False), nl=False)
    elif output == "json":
        click.echo(table.to_json(orient="records", date_format="iso"))
    else:
        click.echo(table.to_string(index=False, max_rows=200))


@main.command("explain")
@click.argument("tx_id", required=False)
@click.option("--model", "version", default=None, help="Summarise this model version's alerts instead of one transaction.")
@click.option("--days", default=30.0, show_default=True, help="With --model: days of decisions up to the model's latest one.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Waterfall PNG for TX_ID (default explain-TX_ID.png); folder for --model (default explain-VERSION).")
@click.option("--audit-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Audit store (default: RISKSTREAM_AUDIT_DIR).")
def explain_command(tx_id: str | None, version: str | None, days: float, out: Path | None, audit_dir: Path | None) -> None:
    """Print an alert's full explanation and plot its waterfall, or a model's global summary (--model).

    Reads the audit store only, so it is safe while the writer runs.
    """
    from audit import AuditError
    from explain import ExplainError
    from explain.report import alert_report, model_summary, plot_summary, plot_waterfall

    if (tx_id is None) == (version is None):
        raise click.UsageError("give either TX_ID or --model VERSION")
    store = _settings(audit_dir=audit_dir).audit_dir
    try:
        if tx_id is not None:
            report = alert_report(store, tx_id)
            click.echo(report.text())
            if not report.reasons.empty:
                click.echo(f"waterfall → {plot_waterfall(report, out or Path(f'explain-{tx_id}.png'))}")
        else:
            summary = model_summary(store, version, days)  # type: ignore[arg-type]
            click.echo(summary.text())
            for path in plot_summary(summary, out or Path(f"explain-{version}")):
                click.echo(f"plot → {path}")
    except (AuditError, ExplainError) as error:
        raise click.ClickException(str(error)) from error


@main.command("audit-writer")
def audit_writer() -> None:
    """Run the single audit writer: decisions and feedback into DuckDB."""
    from stream.audit_writer import run_audit_writer

    run_audit_writer(Settings())


@main.group()
def audit() -> None:
    """The audit store."""


@audit.command("prune")
@click.option("--days", type=click.IntRange(min=1), default=None, help="Delete rows older than this (default: RISKSTREAM_AUDIT_RETENTION_DAYS).")
@click.option("--audit-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Audit store (default: RISKSTREAM_AUDIT_DIR).")
def audit_prune(days: int | None, audit_dir: Path | None) -> None:
    """Delete audit rows older than N days (decisions by event time, labels by report time) now.

    The store has one writer: while ``riskstream audit-writer`` runs, it applies RISKSTREAM_AUDIT_RETENTION_DAYS
    itself every hour, and this command refuses.
    """
    from audit import AuditError, AuditStore, StoreLockedError

    settings = _settings(audit_dir=audit_dir, audit_retention_days=days)
    if settings.audit_retention_days is None:
        raise click.UsageError("give --days or set RISKSTREAM_AUDIT_RETENTION_DAYS")
    try:
        with AuditStore(settings.audit_dir, export_interval_s=settings.audit_export_interval_s) as store:
            result = store.prune(settings.audit_retention_days)
    except StoreLockedError as error:
        raise click.ClickException(f"{error}; the running writer prunes by RISKSTREAM_AUDIT_RETENTION_DAYS") from error
    except AuditError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"deleted {result.decisions:,} decisions, {result.reasons:,} reasons, {result.labels:,} labels "
               f"older than {settings.audit_retention_days} days; rewrote {result.segments_rewritten} segment file(s)")


@main.command("create-topics")
def create_topics_command() -> None:
    """Create riskstream's topics with RISKSTREAM_PARTITIONS partitions each."""
    from stream.topics import create_topics

    created = create_topics(Settings())
    click.echo("created: " + (", ".join(created) if created else "nothing (all exist)"))


@main.command()
@click.option("--port", default=9092, show_default=True)
def broker(port: int) -> None:
    """Run the embedded in-memory broker in the foreground (development only)."""
    import signal
    import threading

    from stream.embedded import EmbeddedBroker

    with EmbeddedBroker(port) as running:
        click.echo(f"embedded broker on {running.url}; Ctrl-C stops it")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


@main.group()
def models() -> None:
    """The model registry."""


_REGISTRY_OPTION = click.option("--registry", type=click.Path(file_okay=False, path_type=Path), default=None,
                                help="Model registry (default: RISKSTREAM_MODEL_REGISTRY).")
_AUDIT_OPTION = click.option("--audit-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                             help="Audit store (default: RISKSTREAM_AUDIT_DIR).")


@models.command("list")
@_REGISTRY_OPTION
def models_list(registry: Path | None) -> None:
    """List the registered model versions: * the champion, ~ the shadow challenger."""
    from models.registry import list_versions

    for entry in list_versions(_settings(model_registry=registry).model_registry):
        mark = "*" if entry.get("champion") else "~" if entry.get("shadow") else " "
        click.echo(f"{mark} {entry['version']}  {entry.get('created_at', '')}  {json.dumps(entry.get('metrics', {}), default=str)}")
        challenge = entry.get("challenge")
        if challenge:
            click.echo(f"    challenged {challenge['champion']} as of {challenge['as_of']}: "
                       f"champion {json.dumps(challenge['champion_metrics'])}, challenger {json.dumps(challenge['challenger_metrics'])}")


def _registry_change(change: Callable[..., object], registry: Path | None, *args: object) -> object:
    """Run a registry change, turning a missing version into a clean error; running workers follow within
    RISKSTREAM_MODEL_POLL_INTERVAL_S."""

    try:
        return change(_settings(model_registry=registry).model_registry, *args)
    except ModelError as error:
        raise click.ClickException(str(error)) from error


@models.command("promote")
@click.argument("version")
@_REGISTRY_OPTION
def models_promote(version: str, registry: Path | None) -> None:
    """Make VERSION the champion; running workers switch to it between two batches."""
    from models.registry import set_champion

    _registry_change(set_champion, registry, version)
    click.echo(f"champion: {version}")


@models.command("rollback")
@_REGISTRY_OPTION
def models_rollback(registry: Path | None) -> None:
    """Make the previous champion the champion again."""
    from models.registry import rollback

    click.echo(f"champion: {_registry_change(rollback, registry)}")


@models.command("shadow")
@click.argument("version", required=False)
@click.option("--clear", is_flag=True, help="Stop shadow scoring.")
@_REGISTRY_OPTION
def models_shadow(version: str | None, clear: bool, registry: Path | None) -> None:
    """Score every event with VERSION too, without alerting (its scores go to the audit store)."""
    from models.registry import set_shadow

    if clear == (version is not None):
        raise click.UsageError("give either VERSION or --clear")
    _registry_change(set_shadow, registry, version)
    click.echo(f"shadow: {version or 'none'}")


def _moment(text: str) -> datetime:
    """An ISO 8601 time or day; UTC unless it names another zone."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time (e.g. 2018-09-01 or 2018-09-01T12:00:00Z)") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@main.command()
@click.option("--as-of", "as_of", required=True, help="Cut-off (ISO 8601, UTC): only decisions and labels known by then are used.")
@click.option("--label-clock", type=click.Choice(["received", "reported"]), default="received", show_default=True,
              help="When a label counts as known: when the store received it, or when it was reported (for replayed history).")
@click.option("--eval-days", default=7, show_default=True, help="Latest labelled days on which challenger and champion are compared.")
@click.option("--valid-days", default=7, show_default=True, help="Days before those for early stopping and the threshold.")
@click.option("--warmup-days", default=7, show_default=True, help="First stored days left out (the features' windows were filling).")
@click.option("--epochs", default=None, type=int, help="Most epochs (default: the training default).")
@click.option("--seed", default=0, show_default=True)
@_AUDIT_OPTION
@_REGISTRY_OPTION
def retrain(as_of: str, label_clock: str, eval_days: int, valid_days: int, warmup_days: int, epochs: int | None, seed: int,
            audit_dir: Path | None, registry: Path | None) -> None:
    """Train a challenger from the audit store, point in time, and evaluate it against the champion (not promoted)."""
    from dataclasses import replace

    from audit import AuditError
    from models.train import TrainConfig
    from stream.learning import retrain as run_retrain

    settings = _settings(audit_dir=audit_dir, model_registry=registry)
    config = replace(TrainConfig(), seed=seed, **({"epochs": epochs} if epochs else {}))
    try:
        version, record = run_retrain(settings.audit_dir, settings.model_registry, _moment(as_of), label_clock=label_clock,  # type: ignore[arg-type]
                                      eval_days=eval_days, valid_days=valid_days, warmup_days=warmup_days, config=config)
    except (AuditError, ModelError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(record, indent=2, default=str))
    click.echo(f"challenger {version} saved, not promoted: riskstream models shadow {version} | riskstream models promote {version}")


@main.command()
@click.option("--from", "since", required=True, help="First event time to replay (ISO 8601, UTC).")
@click.option("--to", "until", required=True, help="Last event time to replay (ISO 8601, UTC).")
@click.option("--model", default=None, help="Registry version, or 'champion' (default: each decision's own model).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_AUDIT_OPTION
@_REGISTRY_OPTION
def replay(since: str, until: str, model: str | None, as_json: bool, audit_dir: Path | None, registry: Path | None) -> None:
    """Re-score stored decisions offline from their stored inputs and count those that would change."""
    from audit import AuditError
    from stream.learning import replay as run_replay

    settings = _settings(audit_dir=audit_dir, model_registry=registry)
    try:
        report = run_replay(settings.audit_dir, settings.model_registry, _moment(since), _moment(until), model)
    except (AuditError, ModelError) as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"replayed with: {report.model}; {report.matched:.4%} unchanged; largest log-odds gap {report.max_logit_gap:.3g}"
               + (f"; {report.skipped:,} decisions stored without their sequence skipped" if report.skipped else ""))
    header = ("model_version", "decisions", "changed", "scores_changed", "alerts_changed", "new_alerts", "dropped_alerts")
    rows = [[version, *counts.values()] for version, counts in report.by_version.items()]
    rows.append(["total", report.decisions, report.changed, report.scores_changed, report.alerts_changed, report.new_alerts, report.dropped_alerts])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(value).rjust(width) for value, width in zip(row, widths)))


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("var/demo"), show_default=True)
@click.option("--customers", default=1000, show_default=True)
@click.option("--days", default=35, show_default=True, help="Simulated days (at least 35); the last 7 are the new week.")
@click.option("--seed", default=7, show_default=True)
def demo(workdir: Path, customers: int, days: int, seed: int) -> None:
    """Broker, data, model, worker, alerts and SQL, end to end on this machine."""
    from stream.demo import run_demo

    sys.exit(run_demo(workdir, customers=customers, days=days, seed=seed))


__all__ = ["main"]
