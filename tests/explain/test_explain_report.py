"""``riskstream explain`` on a real audit store filled by the real Scorer: text, plots, and nothing written to it."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from audit import AuditStore, query
from explain import Explainer
from models.features import FEATURE_NAMES
from models.network import BehaviourModel, ModelArtifact, default_log_features, new_version
from models.replay import replay_features
from stream.cli import main
from stream.producer import transaction_record
from stream.pipeline import Scorer
from stream.privacy import DEMO_KEY, Tokenizer

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(small_frame: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, list[dict]]:
    """The decisions of 600 transactions (10% alerts) scored by an untrained model, in a closed store."""
    frame = small_frame.head(600)
    features = replay_features(frame)
    torch.manual_seed(0)
    network = BehaviourModel(len(FEATURE_NAMES), (16,), sequence_dim=4, summary_size=4)
    artifact = ModelArtifact(new_version(network, datetime(2026, 1, 1, tzinfo=timezone.utc)), FEATURE_NAMES, network,
                             np.zeros(len(FEATURE_NAMES)), np.ones(len(FEATURE_NAMES)), features[:200], 0.5, 7.0,
                             log_features=default_log_features(FEATURE_NAMES))
    transformed = artifact.transform(features.features)
    artifact.scaler_mean, artifact.scaler_scale = transformed.mean(axis=0), transformed.std(axis=0) + 1e-9
    threshold = float(np.quantile(artifact.predict_proba(features), 0.9))
    transactions = [transaction_record(row) for row in frame.to_dict("records")]
    batch = Scorer(artifact, Explainer.for_artifact(artifact), threshold=threshold, tokenize=Tokenizer(DEMO_KEY)).score(transactions, features)
    root = tmp_path_factory.mktemp("explain") / "audit"
    with AuditStore(root, export_interval_s=0) as audit:
        audit.add_decisions(batch.decisions)
        audit.flush()
    return root, artifact.version, batch.alerts


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["explain", *args])
    return result.exit_code, result.output


def store_files(root: Path) -> dict[str, float]:
    return {str(path): path.stat().st_mtime_ns for path in sorted(root.rglob("*")) if path.is_file()}


def test_an_alert_prints_every_reason_adding_up_to_its_logit_and_plots_a_waterfall(store, tmp_path):
    root, version, alerts = store
    alert = max(alerts, key=lambda a: a["score"])
    before = store_files(root)
    code, output = run(alert["tx_id"], "--audit-dir", str(root), "--out", str(tmp_path / "alert.png"))
    assert code == 0, output
    assert f"transaction {alert['tx_id']}" in output and f"model {version}" in output
    assert f"score {alert['score']:.4f} (probability" in output
    reasons = [line for line in output.splitlines() if line.rstrip().endswith("]")]
    assert len(reasons) == len(FEATURE_NAMES) + 1  # every feature and the recent spending pattern
    assert alert["reasons"][0]["label"] in reasons[0], "rank 1 is the alert's top reason"
    total = sum(float(line.split()[1]) for line in reasons)
    assert alert["base_value"] + total == pytest.approx(alert["score_logit"], abs=1e-3)  # printed to 4 decimals
    assert (tmp_path / "alert.png").read_bytes()[:8] == PNG
    assert store_files(root) == before, "explain reads the store only"


@pytest.mark.filterwarnings("error::RuntimeWarning")  # e.g. numpy's "All-NaN slice" for a reason with no value
def test_a_model_summary_ranks_reasons_by_mean_absolute_contribution_and_plots_them(store, tmp_path):
    root, version, alerts = store
    code, output = run("--model", version, "--days", "1", "--audit-dir", str(root), "--out", str(tmp_path / "summary"))
    assert code == 0, output
    assert f"model {version}: {len(alerts)} explained alert(s)" in output
    expected = query(root, "SELECT feature, avg(abs(contribution)) AS size FROM reasons GROUP BY ALL ORDER BY size DESC")
    printed = [line.split() for line in output.splitlines()[2:] if not line.startswith("plot")]
    sizes = [float(row[0]) for row in printed]
    assert sizes == sorted(sizes, reverse=True)
    expected_sizes = dict(zip(expected.column("feature").to_pylist(), expected.column("size").to_pylist()))
    assert {row[-1]: float(row[0]) for row in printed} == pytest.approx(expected_sizes, abs=1e-4)
    assert sum(int(row[1]) for row in printed) == len(alerts), "each alert is led by one reason"
    for name in ("summary.png", "mean_abs_shap.png"):
        assert (tmp_path / "summary" / name).read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("args", "message"),
    [(["no-such-tx"], "no decision for transaction 'no-such-tx'"), (["--model", "v0"], "no decisions of model 'v0'"),
     ([], "either TX_ID or --model"), (["tx", "--model", "v0"], "either TX_ID or --model")],
)
def test_what_the_store_does_not_hold_is_a_one_line_error(store, args, message):
    code, output = run(*args, "--audit-dir", str(store[0]))
    assert code != 0
    assert message in output and "Traceback" not in output


def test_a_decision_without_reasons_says_so(store, tmp_path):
    root, _, alerts = store
    tx_ids = {alert["tx_id"] for alert in alerts}
    quiet = next(tx for tx in query(root, "SELECT tx_id FROM decisions").column("tx_id").to_pylist() if tx not in tx_ids)
    code, output = run(quiet, "--audit-dir", str(root), "--out", str(tmp_path / "none.png"))
    assert code == 0, output
    assert "no reasons stored" in output and "alert: False" in output
    assert not (tmp_path / "none.png").exists()
