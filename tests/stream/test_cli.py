"""The ``riskstream`` command on small data: simulate, train, list models, refuse a write through sql."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from audit import AuditStore
from models.registry import load_artifact
from stream.cli import main
from stream.embedded import EmbeddedBroker


def test_simulate_train_and_list(tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "tx.parquet"
    result = runner.invoke(main, ["simulate", "--out", str(data), "--customers", "200", "--terminals", "400", "--days", "21", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert data.exists() and "transactions" in result.output

    registry = tmp_path / "models"
    result = runner.invoke(main, ["train", "--data", str(data), "--valid-days", "3", "--epochs", "3", "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    artifact = load_artifact(registry)
    assert artifact.version in result.output

    result = runner.invoke(main, ["models", "list", "--registry", str(registry)])
    assert result.exit_code == 0 and f"* {artifact.version}" in result.output

    # As on 2018-04-20: the frauds of its last 7 days are not reported yet, so no label from them is learnt.
    args = ["train", "--data", str(data), "--until", "2018-04-20", "--valid-days", "3", "--epochs", "2", "--no-promote"]
    result = runner.invoke(main, [*args, "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    [until] = re.findall(r"model (\S+) →", result.output)
    assert load_artifact(registry, until).data_range["end"] < "2018-04-13T00:00:01"


def test_sql_answers_reads_and_refuses_writes(tmp_path: Path) -> None:
    AuditStore(tmp_path).close()
    runner = CliRunner()
    result = runner.invoke(main, ["sql", "--audit-dir", str(tmp_path), "--format", "csv", "SELECT count(*) AS n FROM decisions"])
    assert result.exit_code == 0 and result.output.splitlines() == ["n", "0"]
    result = runner.invoke(main, ["sql", "--audit-dir", str(tmp_path), "DELETE FROM decisions"])
    assert result.exit_code != 0 and "read-only" in result.output


def test_audit_prune_deletes_old_rows_and_refuses_beside_a_running_writer(tmp_path: Path) -> None:
    old = {"tx_id": "old", "is_fraud": True, "source": "chargeback", "reported_at": 1_767_225_600_000}  # 2026-01-01
    with AuditStore(tmp_path, export_interval_s=0) as store:
        store.add_labels([old])
    runner = CliRunner()
    with AuditStore(tmp_path):
        result = runner.invoke(main, ["audit", "prune", "--days", "1", "--audit-dir", str(tmp_path)])
        assert result.exit_code != 0 and "RISKSTREAM_AUDIT_RETENTION_DAYS" in result.output
    result = runner.invoke(main, ["audit", "prune", "--audit-dir", str(tmp_path)], env={"RISKSTREAM_AUDIT_RETENTION_DAYS": "1"})
    assert result.exit_code == 0 and "1 labels" in result.output, result.output
    result = runner.invoke(main, ["sql", "--audit-dir", str(tmp_path), "--format", "csv", "SELECT count(*) AS n FROM label_history"])
    assert result.output.splitlines() == ["n", "0"]


def test_the_interactive_default_keeps_kafka_client_chatter_off_the_terminal(broker: EmbeddedBroker) -> None:
    """Regression: the payload loggers' own INFO level (kept for the services' logs) let kafka-python's
    connection lines through at the interactive default, between the demo's progress lines."""
    env = {**os.environ, "RISKSTREAM_BROKER_URL": broker.url, "RISKSTREAM_APP_ID": "quiet", "RISKSTREAM_DEMO_MODE": "true",
           **{f"RISKSTREAM_{name.upper()}_TOPIC": f"quiet-{name}" for name in ("transactions", "feedback", "decisions", "alerts")}}
    run = subprocess.run([sys.executable, "-m", "stream", "create-topics"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "created: quiet-transactions" in run.stdout
    assert " INFO " not in run.stderr, run.stderr


def test_a_refusal_ends_the_command_with_its_reason_not_a_traceback(tmp_path: Path) -> None:
    """The stream's own errors (here: no key for card tokens outside demo mode) are a message and exit status 1."""
    env = {"RISKSTREAM_DEMO_MODE": "false", "RISKSTREAM_HMAC_KEY": None, "RISKSTREAM_HMAC_KEY_FILE": None,
           "RISKSTREAM_AUDIT_DIR": str(tmp_path)}
    result = CliRunner().invoke(main, ["audit-writer"], env=env)

    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ") and "RISKSTREAM_HMAC_KEY" in result.output
    assert "Traceback" not in result.output


def test_the_demo_runs_every_stage_and_stops_everything_it_started(tmp_path: Path) -> None:
    """The README's first command, on fewer cards: every transaction scored, every label received, the malformed
    messages dead-lettered, alerts explained, and the analyst's query answered."""
    run = subprocess.run([sys.executable, "-m", "stream", "demo", "--workdir", str(tmp_path / "demo"), "--customers", "200"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    [(transactions, frauds)] = re.findall(r"simulated ([\d,]+) transactions over 35 days \(([\d,]+) frauds\)", run.stdout)
    assert f"{transactions} of {transactions} transactions scored" in run.stdout
    assert f"dead letters (malformed input): 4; fraud labels received: {int(frauds.replace(',', ''))};" in run.stdout
    [alerts] = re.findall(r"new week: [\d,]+ transactions scored, ([\d,]+) alerts", run.stdout)
    assert int(alerts.replace(",", "")) > 0 and "base value + contributions = model logit" in run.stdout
    assert "mean_score" in run.stdout and "everything it started is stopped" in run.stdout


def test_the_demo_refuses_too_few_days_to_train_as_on_the_new_weeks_first_day() -> None:
    result = CliRunner().invoke(main, ["demo", "--days", "28"])
    assert result.exit_code == 2 and "the demo needs at least 35 days, got 28" in result.output
