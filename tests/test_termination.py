"""The stopping rule, case by case: one test per status and per boundary of its test
(``nlfit.solvers.termination``), as scipy tests ``check_termination`` and optimistix
``cauchy_termination``. The function is called with plain numbers."""

from __future__ import annotations

import math

import pytest

from nlfit.solvers.status import Status
from nlfit.solvers.termination import Measures, Tolerances, at_start, termination

TOL = Tolerances(ftol=1e-8, xtol=1e-8, gtol=1e-8)


def measures(**changes) -> Measures:
    """An iteration that meets no test: an accepted step that lowered the loss a lot."""
    base = dict(
        finite=True, loss=1.0, old_loss=2.0, gradient_measure=0.5, accepted=True, actual=1.0, predicted=1.2,
        scaled_step=0.3, scaled_params=1.0, collapsed=False, steep=False, search_stalled=False, iteration=5, budget=100,
    )  # fmt: skip
    return Measures(**{**base, **changes})


def status(**changes) -> Status:
    return Status(int(termination(measures(**changes), TOL)))


def test_running_when_no_test_holds():
    assert status() == Status.RUNNING


@pytest.mark.parametrize("changes", [{"finite": False}, {"finite": False, "gradient_measure": 0.0, "iteration": 100}])
def test_nonfinite_wins_over_everything(changes):
    assert status(**changes) == Status.NONFINITE


@pytest.mark.parametrize(
    "measure, accepted, expected",
    [(1e-8, True, Status.GTOL), (1.0000001e-8, True, Status.RUNNING), (0.0, False, Status.RUNNING)],
)
def test_gtol_boundary_and_only_at_accepted_points(measure, accepted, expected):
    assert status(gradient_measure=measure, accepted=accepted) == expected


def test_a_zero_loss_is_gtol_whatever_the_measure():
    assert status(loss=0.0, gradient_measure=1.0) == Status.GTOL


@pytest.mark.parametrize(
    "actual, predicted, expected",
    [
        (2e-8, 2e-8, Status.FTOL),  # both at ftol * old_loss (old_loss 2): converged
        (2.0001e-8, 1e-9, Status.RUNNING),  # the actual decrease is above it
        (1e-9, 2.0001e-8, Status.RUNNING),  # the model still predicts more
        (-1e-9, 1e-9, Status.FTOL),  # |actual|: a tiny increase counts (MINPACK)
        (math.nan, 0.0, Status.RUNNING),  # a non-finite trial decides nothing
    ],
)
def test_ftol_needs_both_decreases_small(actual, predicted, expected):
    assert status(actual=actual, predicted=predicted, accepted=False) == expected


@pytest.mark.parametrize(
    "step, accepted, expected",
    [(1e-8 * (1e-8 + 1.0), True, Status.XTOL), (1.01e-8, True, Status.RUNNING), (0.0, False, Status.RUNNING)],
)
def test_xtol_boundary_on_the_scaled_step_of_an_accepted_step(step, accepted, expected):
    assert status(scaled_step=step, accepted=accepted, actual=1.0) == expected


def test_a_collapsed_trust_region_is_xtol_where_flat_and_stalled_where_steep():
    assert status(collapsed=True, steep=False, accepted=False) == Status.XTOL
    assert status(collapsed=True, steep=True, accepted=False) == Status.STALLED


def test_the_globalization_may_say_stalled():
    assert status(search_stalled=True, accepted=False) == Status.STALLED


@pytest.mark.parametrize("iteration, expected", [(99, Status.RUNNING), (100, Status.MAX_ITER), (101, Status.MAX_ITER)])
def test_max_iter_at_the_budget(iteration, expected):
    assert status(iteration=iteration) == expected


def test_order_gtol_ftol_xtol_stalled_max_iter():
    everything = dict(gradient_measure=0.0, actual=0.0, predicted=0.0, scaled_step=0.0, search_stalled=True, iteration=100)
    assert status(**everything) == Status.GTOL
    assert status(**{**everything, "gradient_measure": 1.0}) == Status.FTOL
    assert status(**{**everything, "gradient_measure": 1.0, "actual": 1.0}) == Status.XTOL
    assert status(**{**everything, "gradient_measure": 1.0, "actual": 1.0, "scaled_step": 1.0}) == Status.STALLED
    assert status(iteration=100, search_stalled=False) == Status.MAX_ITER


@pytest.mark.parametrize(
    "finite, loss, measure, expected",
    [
        (True, 1.0, 0.5, Status.RUNNING),
        (True, 1.0, 1e-8, Status.GTOL),
        (True, 0.0, 1.0, Status.GTOL),
        (False, math.inf, 0.0, Status.NONFINITE),
    ],
)
def test_the_start_uses_the_same_rule(finite, loss, measure, expected):
    assert Status(int(at_start(finite, loss, measure, TOL))) == expected
