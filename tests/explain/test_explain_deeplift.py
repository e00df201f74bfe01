"""The closed-form DeepLIFT values against shap's own DeepExplainer, the reference they must equal."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import shap
import torch
from torch import nn

from explain import Background, DeepLift, ExplainError, summarise
from models.network import build_network

EXACT = 1e-10


@pytest.fixture(scope="module", autouse=True)
def seeded():
    torch.manual_seed(3)


MIXED = (
    lambda: nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.Tanh(), nn.Linear(16, 8),
                          nn.LeakyReLU(0.1), nn.Linear(8, 8), nn.Softplus(), nn.Linear(8, 1)),
    lambda: nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1)),
    lambda: build_network(12, (16, 8), [(-0.5, 0.0, 0.7), (), (0.2,)]),  # the model's head with a knot encoding
    lambda: nn.Sequential(nn.Linear(12, 1)),
)


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    background, x = rng.normal(size=(24, 12)), rng.normal(size=(40, 12)) * 3.0
    x[0] = background[0]  # every unit's input equal to the reference's: shap's slope fallback
    x[1, :6] = background[1, :6]
    return background, x


def shap_reference(model: nn.Module, background: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """shap's values and base value, on a float64 copy of the model in eval mode (shap cannot hook in-place ops)."""
    model = copy.deepcopy(model).double().eval()
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    explainer = shap.DeepExplainer(model, torch.from_numpy(background))
    with warnings.catch_warnings():  # a Linear subclass: shap passes its gradient through unchanged, as it should
        warnings.filterwarnings("ignore", message="unrecognized nn.Module: FrozenLinear")
        values = np.asarray(explainer.shap_values(torch.from_numpy(x), check_additivity=False)).reshape(x.shape)
    return values, float(np.asarray(explainer.expected_value).reshape(-1)[0])


@pytest.mark.parametrize("build", MIXED, ids=["mixed-activations", "relu-dropout", "knot-encoded", "linear"])
def test_values_equal_shap_deep_explainer(build, rows):
    background, x = rows
    model = build()
    deeplift = DeepLift(model, Background.uniform(background))
    values, base_value = shap_reference(model, background, x)
    np.testing.assert_allclose(deeplift.values(x), values, rtol=0, atol=EXACT)
    assert deeplift.base_value == pytest.approx(base_value, abs=EXACT)


def test_a_weighted_background_equals_its_rows_repeated(rows):
    background, x = rows
    counts = np.arange(1, len(background) + 1) % 4 + 1
    model = MIXED[0]()
    deeplift = DeepLift(model, Background(background, counts))
    values, base_value = shap_reference(model, np.repeat(background, counts, axis=0), x)
    np.testing.assert_allclose(deeplift.values(x), values, rtol=0, atol=EXACT)
    assert deeplift.base_value == pytest.approx(base_value, abs=EXACT)


def test_values_add_up_to_the_output_in_log_odds(rows):
    background, x = rows
    model = MIXED[1]()
    with torch.no_grad():
        model[-1].weight.mul_(30.0)  # a confident model: logits far from the base value
    deeplift = DeepLift(model, summarise(np.vstack([background, x]), size=8))
    outputs = deeplift.outputs(x)
    gaps = np.abs(deeplift.values(x).sum(axis=1) + deeplift.base_value - outputs)
    assert np.ptp(outputs) > 10.0
    assert gaps.max() <= 1e-4
    assert gaps.max() < 1e-9, "float64 keeps the gap at rounding level"


def test_the_callers_network_is_left_as_it_was(rows):
    background, x = rows
    model = nn.Sequential(nn.Linear(12, 8), nn.ReLU(inplace=True), nn.Linear(8, 1))
    model.train()
    reference, _ = shap_reference(model, background, x)
    deeplift = DeepLift(model, Background.uniform(background))
    bias = model[0].bias.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)  # a later change to the caller's network does not reach the copy
    np.testing.assert_allclose(deeplift.values(x), reference, rtol=0, atol=EXACT)
    assert model.training and model[1].inplace
    assert all(parameter.dtype == torch.float32 and parameter.requires_grad for parameter in model.parameters())
    assert torch.equal(bias, model[0].bias)
    assert not any(module._forward_hooks or module._backward_hooks for module in model.modules())


class FunctionalReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.out = nn.Linear(12, 8), nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (FunctionalReLU(), "nn.Sequential"),
        (nn.Sequential(nn.Linear(12, 4), nn.Softmax(dim=1), nn.Linear(4, 1)), "Softmax"),
        (nn.Sequential(nn.Linear(12, 2)), r"\(N, 1\) logits"),
        (nn.Sequential(nn.ReLU(), nn.Linear(12, 1)), "start and end"),
        (nn.Sequential(nn.Linear(10, 1)), "10"),
    ],
)
def test_networks_it_cannot_explain_exactly_are_refused(model, message, rows):
    with pytest.raises(ExplainError, match=message):
        DeepLift(model, Background.uniform(rows[0]))


def test_rows_of_the_wrong_shape_are_refused(rows):
    deeplift = DeepLift(MIXED[2](), Background.uniform(rows[0]))
    with pytest.raises(ExplainError, match="expected"):
        deeplift.values(np.zeros((2, 3)))
    assert deeplift.values(rows[1][0]).shape == (1, 12)


@pytest.mark.parametrize(
    ("rows_", "weights"),
    [(np.zeros((0, 3)), np.zeros(0)), (np.zeros((2, 3)), np.ones(3)), (np.zeros((2, 3)), np.array([1.0, -1.0])),
     (np.full((1, 3), np.nan), np.ones(1))],
)
def test_a_bad_background_is_refused(rows_, weights):
    with pytest.raises(ExplainError):
        Background(rows_, weights)


def test_summarise_is_deterministic_and_keeps_a_few_weighted_rows():
    sample = np.random.default_rng(1).normal(size=(300, 6))
    first, again = summarise(sample, size=32), summarise(sample, size=32)
    assert first.rows.shape == (32, 6)
    assert np.array_equal(first.rows, again.rows) and np.array_equal(first.weights, again.weights)
    assert first.weights.sum() == pytest.approx(1.0)
    # the weighted centres keep the sample's mean
    np.testing.assert_allclose(first.weights @ first.rows, sample.mean(axis=0), atol=0.15)
