"""``riskstream demo``: the whole path on one machine, started and stopped by one command.

Embedded broker → simulated history → model trained on all but the last week → audit writer and a
``faust worker`` → the history and the new week replayed through Kafka (plus a few malformed messages)
→ a summary read back from the audit store with SQL.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack
from pathlib import Path

import click
import pandas as pd

from audit import query
from models.dataset import normalize
from models.registry import save_artifact
from models.replay import replay_features
from models.simulate import simulate, write_parquet
from models.features import DEFAULT_LABEL_DELAY_DAYS
from models.train import labels_known_by, train_from_frame
from stream.embedded import EmbeddedBroker, free_port
from stream.local import LocalServices
from stream.metrics import sample_total, scrape
from stream.producer import produce, replay_events, send_raw
from stream.settings import Settings
from stream.topics import create_topics

NEW_WEEK_DAYS = 7
#: Before the new week: a week whose chargebacks are not reported yet, a week of validation, a week of training and
#: the week of warm-up whose feature windows are still filling.
MIN_DAYS = NEW_WEEK_DAYS + 4 * 7
MALFORMED = (b"", b"\x00\x00\x00\x00\x09garbage", b"not avro at all", b"\x02a\x02")

EXAMPLE_SQL = """\
SELECT CAST(event_time AS DATE) AS day, count(*) AS decisions, count(*) FILTER (WHERE is_alert) AS alerts,
       round(avg(score), 4) AS mean_score
FROM decisions GROUP BY day ORDER BY day DESC LIMIT 7"""


def run_demo(workdir: Path, customers: int = 1000, days: int = 35, seed: int = 7) -> int:
    """Run the demo in ``workdir`` (emptied first); returns the process exit status."""
    if days < MIN_DAYS:
        raise click.BadParameter(f"the demo needs at least {MIN_DAYS} days, got {days}", param_hint="'--days'")
    started = time.monotonic()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    web_port = free_port()
    with ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker())
        overrides = {
            "broker_url": broker.url,
            "model_registry": workdir / "models",
            "audit_dir": workdir / "audit",
            "data_dir": workdir / "worker",
            "web_port": web_port,
            "partitions": 4,
            "audit_export_interval_s": 2.0,
            "session_timeout_s": 6.0,
            "rebalance_timeout_s": 4.0,
            "demo_mode": True,  # card tokens under the public demo key; a service needs RISKSTREAM_HMAC_KEY
        }
        settings = Settings(**overrides)
        click.echo(f"[1/5] embedded broker on {broker.url}")

        raw = simulate(n_customers=customers, n_terminals=2 * customers, n_days=days, seed=seed)
        write_parquet(raw, workdir / "transactions.parquet")
        frame = normalize(raw)
        new_week_start = frame["time"].max() - NEW_WEEK_DAYS * 86_400
        history = frame[frame["time"] < new_week_start].reset_index(drop=True)
        click.echo(f"[2/5] simulated {len(frame):,} transactions over {days} days ({int(frame['label'].sum()):,} frauds)")

        # Trained as on the new week's first day: its last week's frauds are not reported by then.
        known = history.assign(label=labels_known_by(history, new_week_start, DEFAULT_LABEL_DELAY_DAYS))
        artifact = train_from_frame(known, replay_features(history), valid_days=7)
        save_artifact(artifact, settings.model_registry)
        click.echo(
            f"[3/5] trained model {artifact.version} on {len(history):,} transactions "
            f"({artifact.trained_on}); validation AUC {artifact.metrics.get('auc', float('nan')):.3f}, "
            f"AP {artifact.metrics.get('ap', float('nan')):.3f}; alert threshold: logit {artifact.threshold_logit:.2f}, "
            f"probability {artifact.threshold:.10g} (1 % of validation transactions alert)"
        )

        create_topics(settings)
        services = stack.enter_context(LocalServices(overrides, workdir / "logs"))
        click.echo(f"[4/5] worker and audit writer started (logs in {services.logs})")

        total = len(frame) + int(frame["label"].sum())
        produce(replay_events(frame, settings), settings, total=total, progress=True)
        send_raw(settings, settings.transactions_topic, MALFORMED)
        with click.progressbar(length=len(frame), label="scoring") as bar:
            scored = services.wait_for_decisions(len(frame), timeout_s=420, on_progress=bar.update)
        click.echo(f"[5/5] {scored:,} of {len(frame):,} transactions scored")
        _summary(settings, new_week_start, raw, web_port)
        click.echo(f"demo finished in {time.monotonic() - started:.0f} s; everything it started is stopped")
    return 0 if scored >= len(frame) else 1


def _summary(settings: Settings, new_week_start: float, raw: pd.DataFrame, web_port: int) -> None:
    since = pd.Timestamp(new_week_start, unit="s").strftime("%Y-%m-%d %H:%M:%S")
    week = query(
        settings.audit_dir,
        f"SELECT count(*) AS decisions, count(*) FILTER (WHERE is_alert) AS alerts FROM decisions WHERE event_time >= TIMESTAMP '{since}'",
    ).to_pylist()[0]
    truth = dict(zip(raw["TRANSACTION_ID"].astype(str), raw["TX_FRAUD"]))
    alerted = query(settings.audit_dir, f"SELECT tx_id FROM alerts WHERE event_time >= TIMESTAMP '{since}'").column(0).to_pylist()
    frauds = sum(int(truth.get(tx_id, 0)) for tx_id in alerted)
    click.echo("")
    click.echo(f"new week: {week['decisions']:,} transactions scored, {week['alerts']:,} alerts, {frauds:,} of them true frauds "
               f"(precision {frauds / max(len(alerted), 1):.0%})")
    exposition = scrape(web_port)
    click.echo(
        f"dead letters (malformed input): {sample_total(exposition, 'riskstream_dead_letters_total'):.0f}; "
        f"fraud labels received: {sample_total(exposition, 'riskstream_events_total', topic=settings.feedback_topic):.0f}; worker metrics: http://127.0.0.1:{web_port}/metrics"
    )
    top = query(
        settings.audit_dir,
        f"SELECT tx_id, card_id, amount, score, score_logit, base_value FROM alerts WHERE event_time >= TIMESTAMP '{since}' "
        "ORDER BY score_logit DESC, tx_id LIMIT 3",
    ).to_pylist()
    click.echo("\nthe three most suspicious alerts (reasons in log-odds; base value + contributions = model logit):")
    for alert in top:
        # an alert whose explaining failed is sent flagged, without a base value or reasons
        how = "flagged: no reasons" if alert["base_value"] is None else f"= base {alert['base_value']:.2f} + reasons"
        click.echo(f"  tx {alert['tx_id']}  card {alert['card_id']}  amount {alert['amount']:.2f}  score {alert['score']:.4f}"
                   f" (logit {alert['score_logit']:.2f} {how})  (fraud: {'yes' if truth.get(alert['tx_id']) else 'no'})")
        reasons = query(
            settings.audit_dir,
            f"SELECT label, contribution FROM reasons WHERE tx_id = '{alert['tx_id']}' ORDER BY rank LIMIT 3",
        ).to_pylist()
        for reason in reasons:
            click.echo(f"      {reason['contribution']:+.3f}  {reason['label']}")
    click.echo(f"\nriskstream sql \"{' '.join(EXAMPLE_SQL.split())}\"")
    click.echo(query(settings.audit_dir, EXAMPLE_SQL).to_pandas().to_string(index=False))


__all__ = ["run_demo"]
