"""Training on small simulated data: reproducible, learns something, and survives the registry round trip."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from explain import summarise
from models.dataset import normalize
from models.exceptions import ModelError
from models.features import DAY, FEATURE_NAMES, SEQUENCE_STEP
from models.network import BehaviourModel, FrozenLinear, ModelInputs
from models.reference import population_stability
from models.registry import load_artifact, reference_of, save_artifact
from models.replay import replay_features
from models.simulate import FRAUD_AMOUNT_THRESHOLD, simulate
from models.train import TrainConfig, alert_threshold, fit, train_from_frame

FAST = TrainConfig(hidden=(16, 8), epochs=4, batch_size=512)


@pytest.fixture(scope="module")
def history() -> tuple[pd.DataFrame, np.ndarray]:
    frame = normalize(simulate(n_customers=200, n_terminals=400, n_days=40, seed=3))
    return frame, replay_features(frame)


@pytest.fixture(scope="module")
def artifact(history):
    frame, features = history
    return train_from_frame(frame, features, valid_days=7, config=FAST)


def test_train_from_frame_validates_on_the_last_days(history, artifact):
    frame, _ = history
    days = np.floor(frame["time"].to_numpy() / DAY)
    valid = days > days.max() - 7
    train = ~valid & (days >= days.min() + 7)
    assert artifact.params["n_valid"] == valid.sum() and artifact.params["n_train"] == train.sum()
    assert artifact.data_range["start"].startswith("2018-04-08")
    assert artifact.data_range["end"].startswith("2018-05-10")
    assert set(artifact.metrics) == {"auc", "ap", "cp_at_100"}
    assert artifact.metrics["auc"] > 0.75  # well above chance on the simulator's frauds
    assert artifact.feature_names == FEATURE_NAMES and artifact.trained_on == "cpu"
    assert len(artifact.background) == 200
    assert re.fullmatch(r"\d{8}T\d{6}-[0-9a-f]{8}", artifact.version)


def test_threshold_gives_the_alert_rate_on_validation(history, artifact):
    frame, features = history
    days = np.floor(frame["time"].to_numpy() / DAY)
    logits = artifact.predict_logit(features[days > days.max() - 7])
    share = np.mean(artifact.alerts(logits))
    assert FAST.alert_rate <= share < FAST.alert_rate + 0.005


def test_train_days_limits_the_training_window(history, artifact):
    frame, features = history
    short = train_from_frame(frame, features, valid_days=7, train_days=3, config=FAST)
    assert short.params["n_train"] < artifact.params["n_train"] / 5
    assert short.data_range["start"].startswith("2018-05-01")  # three days before the validation week 05-04 … 05-10


def test_saved_and_loaded_model_scores_identically(tmp_path, history, artifact):
    _, features = history
    save_artifact(artifact, tmp_path)
    loaded = load_artifact(tmp_path)
    assert np.array_equal(loaded.predict_proba(features[:500]), artifact.predict_proba(features[:500]))
    assert loaded.threshold_logit == artifact.threshold_logit and loaded.metrics == artifact.metrics


def test_the_manifest_carries_the_training_rows_reference_profile(tmp_path, history, artifact):
    _, features = history
    save_artifact(artifact, tmp_path)
    reference = reference_of(tmp_path, artifact.version)
    assert reference == artifact.reference and reference["feature_names"] == list(FEATURE_NAMES)
    for entry in [reference["score"], *reference["features"].values()]:
        assert len(entry["expected"]) == len(entry["edges"]) + 1 and sum(entry["expected"]) == pytest.approx(1.0)
    # the whole file's amounts are stable against the training rows' ones; amounts doubled are not
    amounts = features.features[:, FEATURE_NAMES.index("amount")]
    assert population_stability(reference["features"]["amount"], amounts) < 0.05
    assert population_stability(reference["features"]["amount"], 2 * amounts) > 0.25


def test_the_explainers_background_is_summarised_at_training_so_serving_needs_no_shap(tmp_path, artifact):
    rows, weights = artifact.explanation_background
    summary = summarise(artifact.head_inputs(artifact.background))
    assert np.array_equal(rows, summary.rows) and np.array_equal(weights, summary.weights)
    save_artifact(artifact, tmp_path)
    # what a worker does at start, in a fresh interpreter: shap (and the sklearn it imports) cost seconds there
    serve = ("import sys; from models.registry import load_artifact; from explain import Explainer; "
             "Explainer.for_artifact(load_artifact(sys.argv[1])); print(sorted({'shap', 'sklearn'} & set(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", serve, str(tmp_path)], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_the_same_seed_gives_the_same_model(history):
    frame, features = history
    y = frame["label"].to_numpy()
    train, valid = slice(3000, 9000), slice(9000, 12000)
    fits = [fit(features[train], y[train], features[valid], y[valid], FEATURE_NAMES, TrainConfig(hidden=(8,), epochs=2, seed=seed))
            for seed in (7, 7, 8)]
    same, again, other = (model.predict_logit(features[:1000]) for model in fits)
    assert np.array_equal(same, again)
    assert fits[0].version.rpartition("-")[2] == fits[1].version.rpartition("-")[2]
    assert not np.allclose(same, other)


def test_the_head_gets_the_training_weeks_sharpest_thresholds_as_steps(history, artifact):
    frame, features = history
    column = FEATURE_NAMES.index("amount")
    knots = np.array(artifact.network.knots[column]) * artifact.scaler_scale[column] + artifact.scaler_mean[column]
    # the simulator makes every amount above 220 a fraud: a knot falls between the last genuine amount and it
    amounts, labels = frame["amount"].to_numpy(), frame["label"].to_numpy()
    below = amounts[(amounts <= FRAUD_AMOUNT_THRESHOLD) & (labels == 0)].max()
    above = amounts[amounts > FRAUD_AMOUNT_THRESHOLD].min()
    assert np.any((knots > below) & (knots < above))
    assert len(knots) <= FAST.knots_per_feature
    unlisted = [index for index, name in enumerate(FEATURE_NAMES) if name not in FAST.knot_features]
    assert all(artifact.network.knots[index] == () for index in unlisted)


def test_the_knot_encoding_is_fixed_and_keeps_full_precision_under_autocast(history, artifact):
    frame, features = history
    encoding = [layer for layer in artifact.head if isinstance(layer, FrozenLinear)]
    assert len(encoding) == 2 and not any(parameter.requires_grad for layer in encoding for parameter in layer.parameters())
    # training left them as built: the same knots give the same layers
    rebuilt = BehaviourModel(len(FEATURE_NAMES), FAST.hidden, len(SEQUENCE_STEP), FAST.summary_size, artifact.network.knots)
    for trained, built in zip(encoding, [layer for layer in rebuilt.head if isinstance(layer, FrozenLinear)]):
        assert torch.equal(trained.weight, built.weight) and torch.equal(trained.bias, built.bias)
    inputs = torch.from_numpy(artifact.head_inputs(features[:500]))
    exact = nn.Sequential(*artifact.head[:3])(inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = nn.Sequential(*artifact.head[:3])(inputs)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, exact)


def test_scale_log_transforms_counts_amount_ratios_and_gaps_only(artifact):
    row = np.arange(1.0, len(FEATURE_NAMES) + 1)[None, :]
    scaled = artifact.scale(row)
    assert scaled.dtype == np.float32 and scaled.shape == (1, len(FEATURE_NAMES))
    logged = [any(marker in name for marker in ("count", "avg_amount", "_vs_", "hours_since")) for name in FEATURE_NAMES]
    assert not logged[FEATURE_NAMES.index("amount")] and logged[FEATURE_NAMES.index("card_amount_vs_mean")]
    expected = np.where(logged, np.log1p(row), row)
    np.testing.assert_allclose(scaled, (expected - artifact.scaler_mean) / artifact.scaler_scale, rtol=1e-5)
    with pytest.raises(ModelError, match=f"expects {len(FEATURE_NAMES)} features"):
        artifact.scale(row[:, :3])


def test_the_artifact_records_how_it_was_trained(artifact):
    assert artifact.params["code_version"] and artifact.params["pos_weight"] == FAST.pos_weight
    assert artifact.params["summary_size"] == FAST.summary_size and tuple(artifact.params["hidden"]) == FAST.hidden
    assert artifact.input_names[: len(FEATURE_NAMES)] == FEATURE_NAMES
    assert len(artifact.input_names) == len(FEATURE_NAMES) + FAST.summary_size
    assert artifact.head_inputs(artifact.background[:5]).shape == (5, len(artifact.input_names))


def test_fit_refuses_data_without_both_classes(history):
    _, features = history
    with pytest.raises(ModelError, match="both"):
        fit(features[:100], np.zeros(100), features[:100], np.r_[np.zeros(99), 1], FEATURE_NAMES, FAST)
    with pytest.raises(ModelError, match="expected"):
        narrow = ModelInputs(features.features[:100, :3], features.sequences[:100])
        fit(narrow, np.r_[np.zeros(99), 1], features[:100], np.r_[np.zeros(99), 1], FEATURE_NAMES, FAST)


def test_alert_threshold_always_alerts_at_least_once():
    assert alert_threshold(np.array([0.2, 0.1, 0.3]), 0.0001) == 0.3
    assert alert_threshold(np.linspace(0, 1, 1001), 0.01) == pytest.approx(0.99)
