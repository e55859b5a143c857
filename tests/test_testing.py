"""The comparison helpers the suites use: a value from student code never passes by its type's say-so."""
from __future__ import annotations

import pytest
import torch

from autograder.authoring.config import Performance
from autograder.testing import assert_close, assert_equal, best_measurement, check_tensor


@pytest.mark.parametrize("actual,expected", [
    (True, 1), (1.0, 1), ([1, True], [1, 1]), ((2, 3.0), (2, 3)), ({"a": True}, {"a": 1}),
    ([1, 2], [1, 2, 3]), ({"a": 1}, {"b": 1}), ((1, 2), [1, 2]),
])
def test_assert_equal_checks_types_all_the_way_down(actual, expected):
    with pytest.raises(AssertionError):
        assert_equal(actual, expected, "value")


def test_assert_equal_accepts_equal_plain_data():
    assert_equal([1, (2, "x"), {"k": [3]}], [1, (2, "x"), {"k": [3]}], "value")


class _Sub(torch.Tensor):
    def __eq__(self, other):  # what a hostile submission would return
        return True


def test_tensor_subclass_is_not_a_tensor():
    fake = torch.zeros(3).as_subclass(_Sub)
    with pytest.raises(AssertionError, match="expected a torch.Tensor"):
        check_tensor(fake, "out")
    with pytest.raises(AssertionError, match="expected a torch.Tensor"):
        assert_close(fake, torch.ones(3), "out")


@pytest.mark.parametrize("actual,match", [
    (torch.ones(3, dtype=torch.float64), "dtype"), (torch.ones(4), "shape"),
    (torch.tensor([1.0, float("nan"), 1.0]), "NaN"), (torch.tensor([1.0, 1.0, 2.0]), "worst at index"),
])
def test_assert_close_reports_what_is_wrong(actual, match):
    with pytest.raises(AssertionError, match=match):
        assert_close(actual, torch.ones(3), "out")


def test_best_measurement_stops_at_full_credit():
    ratios = iter([2.0, 1.2, 0.9])
    perf = Performance(max_ratio=1.5)
    best, taken = best_measurement(lambda: next(ratios), perf.credit, attempts=3)
    assert (best, taken) == (1.2, 2)  # an unlucky first measurement does not decide the grade


def test_best_measurement_keeps_the_best_of_all_attempts():
    ratios = iter([2.0, 1.6, 2.6, 1.0])
    perf = Performance(full_ratio=1.25, zero_ratio=3.0)
    best, taken = best_measurement(lambda: next(ratios), perf.credit, attempts=3)
    assert (best, taken) == (1.6, 3)  # never more than `attempts`, and the slowest one is not kept


def test_best_measurement_survives_nan_scores():
    values = iter([float("nan"), float("nan")])
    best, taken = best_measurement(lambda: next(values), lambda v: v, attempts=2)
    assert taken == 2 and best != best  # a NaN ratio still comes back (and fails its threshold)


def test_attempts_must_be_positive():
    with pytest.raises(ValueError):
        Performance(max_ratio=1.5, attempts=0)
