"""The result type on its own: the gap it computes, the order of its reasons, its plain form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from explain import ExplainError, Explanation, Reason, check_additivity

NAMES = ("amount", "is_night", "card_tx_count_1d")


def explanation(values=(0.4, -1.2, 0.4), base_value=-3.0, output=-3.4, **kwargs) -> Explanation:
    return Explanation(np.array(values), base_value, output, NAMES, np.array([250.0, 1.0, 3.0]), **kwargs)


def test_the_gap_is_computed_from_the_fields_not_given():
    assert explanation().additivity_gap == pytest.approx(0.0, abs=1e-15)
    assert explanation(output=-3.3).additivity_gap == pytest.approx(0.1)
    with pytest.raises(TypeError):
        Explanation(np.zeros(3), 0.0, 0.0, NAMES, np.zeros(3), additivity_gap=0.0)


def test_a_non_finite_explanation_always_fails_the_check():
    broken = [explanation(values=(math.nan, 0.0, 0.0)), explanation(output=math.inf), explanation()]
    assert math.isnan(broken[0].additivity_gap)
    assert check_additivity(broken, tolerance=1e9) == [0, 1]


def test_the_tolerance_grows_with_the_logit_so_float32_rounding_of_a_large_one_passes():
    """A large amount gives a logit in the thousands: the model's float32 logit then differs from the float64 sum
    of the reasons by its rounding alone (2e-4 here), which must not flag a correct explanation."""
    logit = 4321.2
    rounded = explanation(values=(4000.0, 321.0, 0.2), base_value=0.0, output=float(np.float32(logit)))
    assert rounded.additivity_gap > 1e-4
    assert check_additivity([rounded], tolerance=1e-4) == []
    # still relative: a gap of twice the tolerance per unit of logit fails
    broken = explanation(values=(4000.0, 321.0, 0.2 + 2e-4 * logit), base_value=0.0, output=logit)
    assert check_additivity([broken], tolerance=1e-4) == [0]
    # below a logit of 1 the tolerance is absolute, as named
    assert check_additivity([explanation(base_value=0.0, output=-0.4 + 2e-5)], tolerance=1e-5) == [0]


def test_ties_keep_model_order_and_top_truncates():
    reasons = explanation(labels=("big spend", "at night", "3 today")).reasons()
    assert [reason.feature for reason in reasons] == ["is_night", "amount", "card_tx_count_1d"]
    assert reasons[0] == Reason("is_night", "at night", 1.0, -1.2)
    assert explanation().reasons(top=0) == []
    with pytest.raises(ExplainError):
        explanation().reasons(top=-1)


def test_the_arrays_of_a_frozen_explanation_cannot_change():
    values = np.array([0.4, -1.2, 0.4])
    frozen = Explanation(values, -3.0, -3.4, NAMES, np.zeros(3))
    values[0] = 100.0
    assert frozen.values[0] == 0.4
    with pytest.raises(ValueError):
        frozen.values[0] = 1.0


def test_probability_is_the_sigmoid_without_overflow():
    assert explanation(output=0.0).probability == 0.5
    assert explanation(output=-1_000.0).probability == 0.0
    assert explanation(output=1_000.0).probability == 1.0
    assert explanation(output=2.0).probability == pytest.approx(1 / (1 + math.exp(-2.0)))


def test_the_plain_form_is_json_ready():
    plain = json.loads(json.dumps(explanation().to_dict(top=2)))
    assert plain["space"] == "log-odds"
    assert [reason["feature"] for reason in plain["reasons"]] == ["is_night", "amount"]
    assert plain["reasons"][1]["label"] == "amount = 250"


@pytest.mark.parametrize(
    "kwargs",
    [{"values": (1.0, 2.0)}, {"labels": ("only one",)}, {"space": "probability"}],
)
def test_inconsistent_fields_are_refused(kwargs):
    with pytest.raises(ExplainError):
        explanation(**kwargs)
