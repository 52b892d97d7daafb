"""A single fit of many points iterates on the fused sums (r^T r, J^T r, J^T J of one pass,
no residual vector kept: ``Direction.keep_residuals``); the statistics come from the Cholesky
factor of its last J^T J where that is well conditioned, else from the R factor of the
streaming QR. Its results agree with the QR path's."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NIST_DIR

from nlfit import fit, numerics, prepare, read_dataset
from nlfit.io.dataset import Dataset
from nlfit.options import FitOptions


def _relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def _fused(data, spec, p0=None, **options) -> bool:
    prepared = prepare.prepare(data, spec, FitOptions.of(options), p0)
    (batch,) = prepared.batches()
    return not batch.config.direction.keep_residuals


@pytest.mark.parametrize(
    ("spec", "method", "globalization"),
    [("rational", "lm", None), ("polynomial:7", "lm", None), ("rational", "lm", "none"), ("rational", "gn", "line-search")],
)
def test_the_fused_sums_and_the_qr_agree_at_100000_rows(spec, method, globalization):
    """The trust region and a step taken as it comes evaluate their trial by the pass that
    linearizes there (``Direction.linearize_trial``); a line search by passes of its own."""
    x = np.linspace(-1.0, 1.0, 100_000)
    rng = np.random.default_rng(1)
    y = 1.0 / (1.0 + 10.0 * x * x) + rng.normal(0.0, 0.05, x.size) if spec == "rational" else np.cos(3.0 * x) + rng.normal(0.0, 0.05, x.size)
    data = Dataset(x=x, y=y, x_names=("x",), y_name="y")
    p0 = [1.0, 0.0, 10.0] if spec == "rational" else None
    options = {"starts": 1, "method": method, "globalization": globalization}
    assert _fused(data, spec, p0=p0, factorization="gram", **options) and not _fused(data, spec, p0=p0, factorization="qr", **options)
    fused = fit(data, spec, p0=p0, factorization="gram", **options)
    qr = fit(data, spec, p0=p0, factorization="qr", **options)
    assert fused.success and qr.success
    assert _relative(fused.params, qr.params) <= 1e-10
    assert np.max(np.abs(fused.stderr - qr.stderr) / qr.stderr) <= 1e-8
    assert fused.loss == pytest.approx(qr.loss, rel=1e-12)


@pytest.mark.parametrize("name", ["MGH09", "Thurber", "Eckerle4", "Rat42"])
def test_the_fused_sums_reach_the_qr_fit_on_nist_higher_difficulty(name, monkeypatch):
    """The fused path is for large data; here it is switched on for NIST's small files (the
    threshold lowered), from start 2 alone (a large fit screens its other starts on a
    subsample, where residuals are kept), against the streaming QR's fit."""
    data = read_dataset(str(NIST_DIR / f"{name}.dat"))
    p0 = data.nist.starts[2]
    qr = fit(data, data.nist.formula, p0=p0, starts=1, factorization="qr")
    monkeypatch.setattr(prepare, "LARGE_DATA_POINTS", 1)
    assert _fused(data, data.nist.formula, p0=p0, starts=1, factorization="gram")
    fused = fit(data, data.nist.formula, p0=p0, starts=1, factorization="gram")
    assert fused.success and qr.success
    # 1e-10, or where the problem is ill-conditioned (MGH09: 4e-9, Thurber: 9e-9 relative) the
    # rounding floor of its minimum: 1e-5 standard errors, at a sum of squares equal to 1e-12
    close = _relative(fused.params, qr.params) <= 1e-10
    assert close or np.max(np.abs(fused.params - qr.params) / qr.stderr) <= 1e-5, (fused.params, qr.params)
    assert fused.loss == pytest.approx(qr.loss, rel=1e-12)
    # the standard errors at the two points: 1e-8, or 1e-6 where the points differ as above
    assert np.max(np.abs(fused.stderr - qr.stderr) / qr.stderr) <= (1e-8 if close else 1e-6)


def _large_polynomial(lo: float, hi: float) -> Dataset:
    x = np.linspace(lo, hi, 100_000)
    return Dataset(x=x, y=np.cos(3.0 * x / hi) + np.random.default_rng(2).normal(0.0, 0.05, x.size), x_names=("x",), y_name="y")


def test_auto_iterates_on_the_fused_sums_unless_j_is_ill_conditioned_at_the_start(monkeypatch):
    """``auto`` at 100,000 rows: the fused sums; where J^T J at the start is too
    ill-conditioned (``prepare.GRAM_CONDITION``) the streaming QR does the whole fit."""
    from nlfit import fitting

    factorizations = []
    original = fitting.solve_groups

    def spy(problems, primary, counts, config, **options):
        factorizations.append(config.factorization)
        return original(problems, primary, counts, config, **options)

    monkeypatch.setattr(fitting, "solve_groups", spy)
    good = _large_polynomial(-1.0, 1.0)
    assert _fused(good, "polynomial:7", starts=1)
    fused = fit(good, "polynomial:7", starts=1)
    assert fused.success and factorizations == ["gram"]
    assert _relative(fused.params, fit(good, "polynomial:7", starts=1, factorization="qr").params) <= 1e-10
    factorizations.clear()
    bad = _large_polynomial(1.0, 2.0)  # monomials on [1, 2]: J^T J is numerically singular
    result = fit(bad, "polynomial:7", starts=1)
    qr = fit(bad, "polynomial:7", starts=1, factorization="qr")
    assert factorizations == ["qr", "qr"]
    np.testing.assert_array_equal(result.params, qr.params)


@pytest.mark.parametrize("max_iter", [None, 3])
def test_the_qr_takes_on_from_an_ill_conditioned_result_within_what_is_left_of_the_budget(monkeypatch, max_iter):
    """J well-conditioned at the start and not at the fused result (the rule made to say so
    there): the streaming QR goes on from that result with the iterations left of --max-iter,
    and the counts and history are those of both runs; with no iterations left, none."""
    from nlfit import fitting

    verdicts = iter([False, True])  # at the start, at the result
    monkeypatch.setattr(fitting, "ill_conditioned", lambda gram, free: next(verdicts))
    budgets = []
    original = fitting.solve_groups

    def spy(problems, primary, counts, config, **options):
        budgets.append((config.factorization, int(config.settings.max_iter)))
        return original(problems, primary, counts, config, **options)

    monkeypatch.setattr(fitting, "solve_groups", spy)
    data = _large_polynomial(-1.0, 1.0)
    options = {"starts": 1} if max_iter is None else {"starts": 1, "max_iter": max_iter}
    result = fit(data, "polynomial:7", **options)
    limit = 2000 if max_iter is None else max_iter
    assert result.counts["iterations"] <= limit
    if max_iter is None:
        (_, first), (kind, left) = budgets
        assert kind == "qr" and first == limit and left < limit and result.success
        iterations = [row["iteration"] for row in result.history]
        assert iterations == sorted(iterations) and iterations[-1] == result.counts["iterations"]
    else:  # the fused run used the budget: no QR run, max-iter as reported
        assert budgets == [("gram", 3)] and result.status.label == "max-iter"


def test_the_conditioning_rule():
    from nlfit.fitting import ill_conditioned

    free = np.ones(2, dtype=bool)
    assert not ill_conditioned(np.array([[4.0, 1.0], [1.0, 9.0]]), free)
    assert ill_conditioned(np.array([[1.0, 1.0 - 1e-10], [1.0 - 1e-10, 1.0]]), free)
    assert ill_conditioned(np.array([[1.0, np.nan], [np.nan, 1.0]]), free)
    held = np.array([[1.0, 0.0], [0.0, 0.0]])  # a parameter held at a bound: its column is zero, not ill-conditioned
    assert not ill_conditioned(held, free) and not ill_conditioned(held, np.array([True, False]))


def test_a_large_fit_takes_the_models_default_start_from_evenly_spaced_rows(monkeypatch):
    """The default start (a linearized least-squares fit for rational models) comes from
    ``start.START_ROWS`` evenly spaced rows of a larger data set, not from all of them."""
    from nlfit import start
    from nlfit.models.registry import build_model

    x = np.linspace(-1.0, 1.0, 3 * start.START_ROWS + 7)
    y = 1.0 / (1.0 + 10.0 * x * x) + np.random.default_rng(4).normal(0.0, 0.05, x.size)
    model = build_model("rational", x)
    sizes = []
    original = type(model).default_p0

    def spy(self, x, y):
        sizes.append(len(y))
        return original(self, x, y)

    monkeypatch.setattr(type(model), "default_p0", spy)
    near = start.default_start(model, x, y)
    assert sizes == [start.START_ROWS]
    np.testing.assert_allclose(near, original(model, x, y), rtol=0.05, atol=0.05)  # a start, near the one from every row
    result = fit(Dataset(x=x, y=y, x_names=("x",), y_name="y"), "rational")
    assert result.success and max(sizes) == start.START_ROWS
    np.testing.assert_allclose(result.params, [1.0, 0.0, 10.0], rtol=0.02, atol=0.02)


@pytest.mark.parametrize(("lo", "hi", "degree", "from_gram"), [(-1.0, 1.0, 4, True), (0.0, 1.0, 5, False)])
def test_a_fused_fits_statistics_come_from_its_own_gram_matrix_where_it_is_well_conditioned(monkeypatch, lo, hi, degree, from_gram):
    """At or below ``postprocess.STATS_CONDITION`` (polynomial:4 on [-1, 1]: about 1e2) the
    statistics of a fused fit take the Cholesky factor of the solver's last J^T J, with no QR
    pass; above it (polynomial:5 on [0, 1]: about 6e6) the streaming QR's R. Either way the
    standard errors equal the QR fit's to 1e-8."""
    from nlfit import derivatives, postprocess

    data = _large_polynomial(lo, hi)
    spec = f"polynomial:{degree}"
    qr = fit(data, spec, starts=1, factorization="qr")
    passes = []
    original = derivatives.qr_linearize_batch
    monkeypatch.setattr(derivatives, "qr_linearize_batch", lambda *args, **kwargs: passes.append(1) or original(*args, **kwargs))
    conditions = []
    monkeypatch.setattr(postprocess, "gram_condition", lambda gram, free: conditions.append(numerics.gram_condition(gram, free)) or conditions[-1])
    assert _fused(data, spec, starts=1, factorization="gram")
    fused = fit(data, spec, starts=1, factorization="gram")
    assert fused.success and qr.success
    assert (max(conditions) <= postprocess.STATS_CONDITION) == from_gram
    assert passes == ([] if from_gram else [1])
    # the normal equations' steps: accurate to about eps cond(J^T J) (polynomial:5 on [0, 1]: 4e-10)
    assert _relative(fused.params, qr.params) <= max(1e-10, 100 * np.finfo(float).eps * max(conditions))
    assert np.max(np.abs(fused.stderr - qr.stderr) / qr.stderr) <= 1e-8
    assert fused.loss == pytest.approx(qr.loss, rel=1e-12)
    assert fused.stats["r2"] == pytest.approx(qr.stats["r2"], rel=1e-12)


def test_a_large_fit_of_a_parameter_the_model_ignores_is_flagged_not_crashed():
    """A zero column of J (the model does not depend on c) at 100,000 rows: the statistics
    come from the streaming QR, which names what is not identifiable; no Cholesky of a
    singular J^T J."""
    x = np.linspace(0.0, 1.0, 100_000)
    y = 1.0 + 2.0 * x + np.random.default_rng(6).normal(0.0, 0.05, x.size)
    result = fit(Dataset(x=x, y=y, x_names=("x",), y_name="y"), "a + b*x + 0*c", p0={"a": 1.0, "b": 1.0, "c": 1.0}, starts=1)
    assert not result.success
    assert {"not-identifiable", "plateau"} & {warning.kind for warning in result.warnings}


def test_only_directions_whose_linearization_is_the_sums_alone_fuse_the_trial():
    """Newton adds the Hessian and gradient descent takes the gradient alone: their trial
    decrease is a pass of its own, while Levenberg-Marquardt and Gauss-Newton fuse it; with
    no residual vector kept, none of the normal-equation forms stores r."""
    from nlfit.models.registry import build_model
    from nlfit.problem import Problem
    from nlfit.solvers.directions import make_direction

    x = np.linspace(-1.0, 1.0, 40)
    problem = Problem(
        x=x, y=1.0 / (1.0 + 10.0 * x * x), sigma=np.ones_like(x), model=build_model("rational", x), lower=np.full(3, -np.inf), upper=np.full(3, np.inf)
    )
    for method, fuses in (("lm", True), ("gn", True), ("newton", False), ("gd", False)):
        direction = make_direction(method, None, "gram", keep_residuals=False)
        assert direction.fuses_trial(problem) is fuses
        if method != "gd":
            assert direction.linearize(problem, np.array([1.0, 0.0, 10.0]), "fwd").residuals.shape == (0,)
