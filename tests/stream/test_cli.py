"""The ``riskstream`` command on small data: simulate, train, list models, refuse a write through sql."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from audit import AuditStore
from models.registry import load_artifact
from stream.cli import main


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


def test_sql_answers_reads_and_refuses_writes(tmp_path: Path) -> None:
    AuditStore(tmp_path).close()
    runner = CliRunner()
    result = runner.invoke(main, ["sql", "--audit-dir", str(tmp_path), "--format", "csv", "SELECT count(*) AS n FROM decisions"])
    assert result.exit_code == 0 and result.output.splitlines() == ["n", "0"]
    result = runner.invoke(main, ["sql", "--audit-dir", str(tmp_path), "DELETE FROM decisions"])
    assert result.exit_code != 0 and "read-only" in result.output
