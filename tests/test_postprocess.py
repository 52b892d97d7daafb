"""The post-processing stages one by one, on small hand-made arrays (no solve, no compile),
and the rows of a grouped fit: every group keeps its row.

The stages (``nlfit.postprocess``): statistics (``nlfit.stats``), the checks
(``nlfit.diagnostics.CHECKS``), the verdicts (suspect, unfitted), the assembled columns
(``nlfit.result.Fits``) and the rows written from them (``nlfit.io.rows``).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from nlfit import diagnostics, postprocess, stats
from nlfit.io.dataset import Dataset
from nlfit.io.rows import csv_lines, json_rows
from nlfit.models.registry import build_model
from nlfit.prepare import group_rows
from nlfit.result import STAT_ORDER, Fits
from nlfit.solvers.status import Status
from nlfit.warning import FitWarning


class Line:
    """A model stand-in: what the rows need of a model (its spec, names and description)."""

    spec = "a + b*x"
    param_names = ("a", "b")
    linear_params = (True, True)

    def to_json(self):
        return {"spec": self.spec, "params": list(self.param_names)}


def _line_fits(groups=3):
    """Straight-line fits of G groups, y = 1 + 2 x + noise, as the statistics give them."""
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 1.0, 6)
    y = 1.0 + 2.0 * x + rng.normal(0, 0.1, (groups, x.size))
    jac = np.broadcast_to(np.column_stack([np.ones_like(x), x]), (groups, x.size, 2)).copy()
    params = np.array([np.linalg.lstsq(jac[g], y[g], rcond=None)[0] for g in range(groups)])
    residuals = np.einsum("gmn,gn->gm", jac, params) - y
    table = stats.compute(jac, residuals, params, ["a", "b"], y, None, np.full(groups, x.size), np.ones(groups))
    return x, y, jac, params, residuals, table


def test_statistics_are_columns_with_the_textbook_covariance():
    x, y, jac, params, residuals, table = _line_fits()
    dof = x.size - 2
    for g in range(3):
        s2 = np.sum(residuals[g] ** 2) / dof
        np.testing.assert_allclose(table.covariance[g], s2 * np.linalg.inv(jac[g].T @ jac[g]), rtol=1e-10)
    assert set(STAT_ORDER) <= set(table.values) and all(np.shape(table.values[k]) == (3,) for k in STAT_ORDER)
    np.testing.assert_array_equal(table.values["dof"], [dof] * 3)
    assert np.all(np.isnan(table.values["chi2"]))  # no sigma: not defined, written as null
    assert table.warnings == {} and np.all(table.has_covariance)


def test_statistics_warn_with_their_kind_and_parameters():
    jac = np.array([[[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]])  # b = 2 a: only a combination is determined
    table = stats.compute(jac, np.array([[0.1, -0.1, 0.0]]), np.array([[1.0, 1.0]]), ["a", "b"], np.zeros((1, 3)), None, np.array([3]), np.ones(1))
    (warning,) = table.warnings[0]
    assert warning.kind == "not-identifiable" and warning.params == ("a", "b") and not warning.fatal
    assert not table.has_covariance[0]


def _evidence(params, starts, residuals, factor, grad, statuses, y, held=None, iterations=None):
    groups, rows = residuals.shape
    problems = SimpleNamespace(
        y=y, sigma=np.ones_like(y), scale=np.ones(groups), loss="linear", f_scale=np.ones(groups), x=np.zeros((groups, rows, 2))
    )  # two predictor columns: the pole check has no order to look between
    return diagnostics.Evidence(
        model=Line(), problems=problems, params=params, starts=starts, residuals=residuals, factor=factor, grad=grad,
        losses=0.5 * np.sum(residuals**2, axis=1), statuses=np.asarray(statuses), counts=np.full(groups, rows), real=np.ones((groups, rows), bool),
        held=np.zeros(params.shape, bool) if held is None else held, iterations=np.full(groups, 5) if iterations is None else iterations,
        r2=np.full(groups, 0.9),
    )  # fmt: skip


def test_each_check_flags_its_own_case():
    y = np.array([[1.0, 2.0, 3.0, 4.0]] * 3)
    residuals = np.array([[0.1, -0.2, 0.2, -0.1]] * 3)
    factor = np.array([[[1.0, 0.0], [1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]] * 3)
    factor[0, :, 1] = 0.0  # group 0: b's column is dead (a plateau)
    params = np.array([[1.0, 1.0], [1.0, 5e7], [1.0, 1.0]])  # group 1: b ran away from its start
    grad = np.zeros((3, 2))
    grad[2] = [0.5, 0.5]  # group 2: converged, but not stationary
    starts = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 2.0]])  # group 2 moved: not stuck at its start
    ev = _evidence(params, starts, residuals, factor, grad, [Status.GTOL] * 3, y)
    plateau, runaway, not_minimum = diagnostics.plateau(ev), diagnostics.runaway(ev), diagnostics.not_a_minimum(ev)
    assert list(plateau) == [0] and plateau[0][0].fatal and plateau[0][0].params == ("b",)
    assert list(runaway) == [1] and not runaway[1][0].fatal and runaway[1][0].kind == "runaway"
    assert list(not_minimum) == [2] and not_minimum[2][0].kind == "not-stationary" and not_minimum[2][0].fatal


def test_worse_than_a_constant_warns_without_an_auxiliary_fit():
    y = np.array([[1.0, 2.0, 1.0, 2.0]])
    residuals = np.array([[5.0, -5.0, 5.0, -5.0]])  # far worse than the mean
    factor = np.array([[[1.0, 0.0], [1.0, 1.0], [1.0, 2.0], [1.0, 3.0]]])
    ev = _evidence(np.ones((1, 2)), np.ones((1, 2)), residuals, factor, np.zeros((1, 2)), [Status.FTOL], y)
    (warning,) = diagnostics.worse_than_constant(ev)[0]
    assert warning.kind == "worse-than-constant" and not warning.fatal  # no fit_constant: it cannot show a lower loss


def test_checks_add_bound_warnings_and_say_each_message_once():
    repeated = FitWarning("correlated", "a and b are strongly correlated", params=("a", "b"))
    params = np.array([[0.0, 1.0], [2.0, 3.0]])
    lower, upper = np.array([[0.0, -np.inf]] * 2), np.array([[np.inf, np.inf]] * 2)
    ev = SimpleNamespace(names=["a", "b"])
    found = postprocess.checks(ev, {1: [repeated, repeated]}, params, lower, upper, np.zeros((2, 2), bool), every=())
    assert [w.kind for w in found[0]] == ["at-bound"] and found[0][0].params == ("a",)
    assert found[1] == [repeated]


def test_verdicts_make_fatal_fits_suspect_and_unfitted_groups_silent():
    fatal, mild = FitWarning("plateau", "stuck", fatal=True), FitWarning("runaway", "far")
    statuses = np.array([Status.GTOL, Status.MAX_ITER, Status.TOO_FEW_POINTS, Status.NO_DATA, Status.FTOL])
    new, termination, found = postprocess.verdicts(statuses, {0: [fatal], 1: [fatal], 2: [mild], 3: [mild], 4: [mild]})
    assert new.tolist() == [Status.SUSPECT, Status.MAX_ITER, Status.TOO_FEW_POINTS, Status.NO_DATA, Status.FTOL]
    assert termination.tolist() == [Status.GTOL, -1, -1, -1, -1]
    assert sorted(found) == [0, 1, 4]


def _fits(groups=3):
    x, y, jac, params, residuals, table = _line_fits(groups)
    table.values["loss"] = 0.5 * np.sum(residuals**2, axis=1)
    fixed = np.zeros((groups, 2), bool)
    statuses, termination, found = postprocess.verdicts(
        np.array([Status.GTOL, Status.GTOL, Status.XTOL][:groups]), {1: [FitWarning("plateau", "stuck", fatal=True, params=("b",))]}
    )
    return Fits(
        model=Line(), method="lm", globalization="trust-region", jac_mode="fwd", loss_name="linear", param_names=("a", "b"),
        keys=[f"g{g}" for g in range(groups)], params=params, stderr=table.stderr, covariance=table.covariance, correlation=table.correlation,
        tvalues=table.tvalues, intervals=table.intervals, has_covariance=table.has_covariance, fixed=fixed, sides=np.zeros((groups, 2), np.int8),
        status=statuses, termination=termination, stats={k: table.values[k] for k in (*STAT_ORDER, "conf_level", "t_quantile", "loss")},
        iterations=np.arange(groups), nfev=np.arange(groups) + 1, njev=np.arange(groups), f_scale=np.ones(groups), warnings=found,
        data_columns={"x": ["x"], "y": "y"},
    )  # fmt: skip


def test_rows_from_columns_hold_each_results_json():
    fits = _fits()
    lines = json_rows(fits, {"provenance": {"nlfit": "test"}})
    assert len(lines) == 3 and all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    for g, line in enumerate(lines):
        row = json.loads(line)
        expected = json.loads(json.dumps(fits.result(g).to_json(history=False, options=False)))
        assert row.pop("provenance") == {"nlfit": "test"}
        assert row == expected
    suspect = json.loads(lines[1])
    assert suspect["status"] == "suspect" and suspect["termination"] == "gtol" and not suspect["success"]
    assert suspect["warnings"] == [{"kind": "plateau", "message": "stuck", "fatal": True, "params": ["b"]}]


def test_csv_rows_say_loss_rss_success_and_how_many_warnings():
    fits = _fits()
    header, *rows = [line.rstrip("\n").split(",") for line in csv_lines(None, fits.param_names) + csv_lines(fits)]
    assert header == ["group", "a", "a_stderr", "b", "b_stderr", "loss", "rss", "success", "status", "warnings", "iterations"]
    assert [r[0] for r in rows] == ["g0", "g1", "g2"]
    assert [r[7] for r in rows] == ["true", "false", "true"] and [r[9] for r in rows] == ["0", "1", "0"]
    assert float(rows[0][6]) == pytest.approx(2 * float(rows[0][5]))  # rss = 2 x the least-squares loss


def test_groups_whose_rows_were_all_dropped_keep_their_place():
    data = Dataset(
        x=np.arange(5.0), y=np.arange(5.0), x_names=("x",), y_name="y", groups=np.array(["b", "b", "d", "d", "d"], dtype=object),
        empty_groups=(("a", 0), ("c", 4)), kept_rows=np.array([1, 2, 5, 6, 7]),
    )  # fmt: skip
    grouped = group_rows(data)
    assert grouped.keys == ["a", "b", "c", "d"] and grouped.counts.tolist() == [0, 2, 0, 3]
    xs, ys, sigma, real = grouped.pad(np.arange(4), data.x, data.y, None, 3)
    assert real.tolist() == [[False] * 3, [True, True, False], [False] * 3, [True] * 3]
    assert np.all(np.isinf(sigma[~real])) and ys[3].tolist() == [2.0, 3.0, 4.0]


@pytest.mark.parametrize(
    "keys",
    [
        [3, 3, 1, 1, 1, 7],  # integers, each group's rows together
        [" a", "b", "a", "b", "a ", "c"],  # groups interleaved; ' a', 'a' and 'a ' are one key
        [2.5, 1.0, 2.5, 1.0],
    ],
)
def test_group_rows_reuse_the_readers_codes_and_find_the_same_groups(tmp_path, keys):
    import dataclasses

    from nlfit.io import dataset as dataset_module
    from nlfit.io.read import read_dataset

    path = tmp_path / "g.csv"
    path.write_text("id,x,y\n" + "".join(f"{k},{i},{2 * i}\n" for i, k in enumerate(keys)))
    data = read_dataset(str(path), group_column="id")
    assert dataset_module.group_codes(data.groups) is not None and not data.groups.flags.writeable
    reused = group_rows(data)
    copy = dataclasses.replace(data, groups=data.groups.copy())  # another array: factorized afresh
    assert dataset_module.group_codes(copy.groups) is None
    afresh = group_rows(copy)
    assert reused.keys == afresh.keys == list(dict.fromkeys(str(k).strip() for k in keys))
    for field in ("order", "begin", "counts"):
        np.testing.assert_array_equal(getattr(reused, field), getattr(afresh, field))
    assert [data.y[reused.order[b : b + c]].tolist() for b, c in zip(reused.begin, reused.counts, strict=True)] == [
        [2.0 * i for i, k in enumerate(keys) if str(k).strip() == key] for key in reused.keys
    ]


def test_a_read_that_dropped_rows_leaves_the_grouping_to_the_fit(tmp_path):
    from nlfit.io import dataset as dataset_module
    from nlfit.io.read import read_dataset

    path = tmp_path / "g.csv"
    path.write_text("id,x,y\na,0,\nb,1,2\na,2,4\nb,3,6\n")  # group a's first row has no y
    data = read_dataset(str(path), group_column="id")
    assert data.dropped == 1 and dataset_module.group_codes(data.groups) is None
    grouped = group_rows(data)
    assert grouped.keys == ["b", "a"] and grouped.counts.tolist() == [2, 1]


def test_an_all_missing_group_and_a_two_row_group_keep_their_rows(tmp_path):
    from nlfit.cli.app import app

    x = np.linspace(0.0, 3.0, 8)
    lines = ["id,x,y"] + [f"full,{v},{2.0 * np.exp(-0.5 * v) + 0.01 * np.sin(9 * v)}" for v in x]
    lines[3:3] = ["gone,0.5,", "gone,1.0,"]
    lines += ["two,0.0,2.0", "two,1.0,1.2", "gone,2.0,"]
    path = tmp_path / "groups.csv"
    path.write_text("\n".join(lines) + "\n")
    for fmt in ("json", "csv"):
        done = CliRunner().invoke(app, ["fit", str(path), "--group-by", "id", "-m", "a*exp(-b*x)", "--p0", "a=1,b=1", "-f", fmt])
        assert done.exit_code == 1, done.stderr  # 'gone' is not fitted
        assert "dropped 3 rows with missing values" in done.stderr
        if fmt == "json":
            rows = {r["group"]: r for r in map(json.loads, done.stdout.splitlines())}
            assert list(rows) == ["full", "gone", "two"]
            assert rows["gone"]["status"] == "no-data" and rows["gone"]["stats"]["n"] == 0
            assert [(w["kind"], w["message"][:15]) for w in rows["gone"]["warnings"]] == [("dropped-rows", "dropped 3 rows ")]  # the reader's
            assert rows["two"]["success"] and rows["two"]["stats"]["n"] == 2 and rows["two"]["params"]["a"]["stderr"] is None
            assert rows["two"]["params"]["a"]["value"] == pytest.approx(2.0, rel=1e-8)
        else:
            table = [line.split(",") for line in done.stdout.splitlines()]
            assert [r[0] for r in table[1:]] == ["full", "gone", "two"] and table[2][8] == "no-data"


def test_the_polish_on_the_normal_equations_equals_the_one_on_j():
    """The Gauss-Newton polish of many small fits sums J^T J in one pass per step
    (``_polish_groups`` with ``normal``) instead of forming J; from the same near-minimum points it reaches
    the same minimum as the polish by least squares on J, keeps a parameter held at its bound
    and a group that did not converge where they are, and hands back J at its points."""
    from nlfit import derivatives
    from nlfit.models.registry import build_model
    from nlfit.problem import Problem

    rng = np.random.default_rng(3)
    groups, x = 4, np.linspace(-1.0, 1.0, 40)
    truth = np.column_stack([rng.uniform(0.8, 1.2, groups), rng.uniform(-0.2, 0.2, groups), rng.uniform(8, 12, groups)])
    y = 1.0 / (truth[:, :1] + truth[:, 1:2] * x + truth[:, 2:3] * x * x) + rng.normal(0, 0.01, (groups, x.size))
    lower, upper = np.full((groups, 3), -np.inf), np.full((groups, 3), np.inf)
    lower[2, 1] = upper[2, 1] = 0.05  # group 2: b held at a bound
    problems = Problem(
        x=np.tile(x, (groups, 1)),
        y=y,
        sigma=np.ones_like(y),
        model=build_model("rational", x),
        lower=lower,
        upper=upper,
        f_scale=np.ones(groups),
        scale=np.ones(groups),
    )
    params = truth * (1 + 1e-4 * rng.standard_normal(truth.shape))  # short of the minimum, as a solver stops
    params[2, 1] = 0.05
    residuals, jac = (np.asarray(v) for v in derivatives.jacobian_batch(params, problems, "fwd"))
    statuses = np.array([Status.FTOL, Status.GTOL, Status.FTOL, Status.MAX_ITER])
    on_j = postprocess.gauss_newton_polish(problems, params.copy(), residuals, jac, statuses, "fwd", closed_form=False)
    normal = postprocess.gauss_newton_polish(problems, params.copy(), residuals, jac, statuses, "fwd", closed_form=True)
    np.testing.assert_allclose(normal[0], on_j[0], rtol=1e-10)
    np.testing.assert_allclose(normal[1], on_j[1], rtol=1e-8, atol=1e-14)
    assert normal[0][2, 1] == 0.05  # held
    np.testing.assert_array_equal(normal[0][3], params[3])  # not converged: not polished
    np.testing.assert_array_equal(normal[2][3], jac[3])
    moved, moved_jac = (np.asarray(v) for v in derivatives.jacobian_batch(normal[0], problems, "fwd"))
    np.testing.assert_allclose(normal[2][:3], moved_jac[:3], rtol=1e-12)
    np.testing.assert_allclose(normal[1], moved, rtol=1e-12)
    before, after = np.sum(residuals**2, axis=1), np.sum(normal[1] ** 2, axis=1)
    assert np.all(after[:3] < before[:3])  # the steps were taken (1e-4 short is far above rounding)


def test_the_pole_grid_of_a_long_unsorted_fit_equals_the_sorted_ones():
    """One long fit's grid takes only the ranks it picks (a partition, not a sort); groups
    with missing or non-finite values are sorted as before: the same grid either way."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1, 50_000))
    grid, valid = diagnostics._grids(x, np.ones(x.shape, dtype=bool))
    expected, expected_valid = diagnostics._grids(np.sort(x, axis=1), np.ones(x.shape, dtype=bool))
    np.testing.assert_array_equal(grid, expected)
    np.testing.assert_array_equal(valid, expected_valid)
    assert grid.shape[1] == (diagnostics.GRID_VALUES - 1) * diagnostics.GRID_STEPS + 1
    short = rng.normal(size=(3, 40))
    real = np.ones(short.shape, dtype=bool)
    real[1, 5:9], short[2, 3] = False, np.nan
    grid, valid = diagnostics._grids(short, real)
    usable = np.sort(np.where(real & np.isfinite(short), short, np.inf), axis=1)
    expected, expected_valid = diagnostics._grids(usable, np.isfinite(usable))
    np.testing.assert_array_equal(grid, expected)
    np.testing.assert_array_equal(valid, expected_valid)


def test_groups_on_one_design_share_one_pole_grid_and_find_the_same_poles():
    """Every group on the same x: one grid for all (a view), equal to each group's own; the
    pole check then names the same groups as it does group by group."""
    x = np.tile(np.linspace(-1.0, 1.0, 30)[::-1], (4, 1))  # descending: each grid is sorted first
    real = np.ones(x.shape, dtype=bool)
    grid, valid = diagnostics._grids(x, real)
    assert not grid.flags.writeable and grid.shape[0] == 4
    for g in range(4):
        own, own_valid = diagnostics._grids(x[g : g + 1].copy(), real[:1])
        np.testing.assert_array_equal(grid[g : g + 1], own)
        np.testing.assert_array_equal(valid[g : g + 1], own_valid)
    model = build_model("a/(x-b)", x[0])
    problems = SimpleNamespace(x=x)
    params = np.array([[1.0, 0.3], [1.0, 2.0], [1.0, -0.55], [1.0, -3.0]])  # poles at 0.3 and -0.55 lie inside [-1, 1]
    together = diagnostics._pole_findings(model, problems, params[:, None, :], real)
    alone = {g: diagnostics._pole_findings(model, SimpleNamespace(x=x[g : g + 1].copy()), params[g : g + 1, None, :], real[:1]) for g in range(4)}
    assert sorted(g for g, _ in together) == [0, 2] == sorted(g for g, found in alone.items() if found)
    for (g, _), found in together.items():
        assert [w.message for w in found] == [w.message for w in alone[g][(0, 0)]]


def test_the_undetermined_check_reuses_the_statistics_svd_and_finds_the_same_pairs():
    """Where no parameter is held, the statistics' SVD of the factor with unit columns is the
    one the undetermined-pairs check needs: given it, the check flags the same parameters and
    gives the same relative standard errors as from its own SVD."""
    rng = np.random.default_rng(5)
    x = np.linspace(0.0, 1.0, 40)
    factors = []
    for g in range(4):
        slope = 1e-7 if g % 2 == 0 else 1.0  # groups 0 and 2: b and c only move together (a valley)
        jac = np.column_stack([np.ones_like(x), x, x * (1 + slope * rng.normal(size=x.size))])
        factors.append(np.linalg.qr(jac, mode="r"))
    factor = np.array(factors)
    params = np.array([[1.0, 1e-3, -1e-3], [1.0, 2.0, 3.0], [1.0, 1e-3, -1e-3], [1.0, 2.0, 3.0]])
    rss, counts = np.full(4, 0.4), np.full(4, x.size)
    nonlinear, free = np.array([False, True, True]), np.ones((4, 3), dtype=bool)
    table = stats.compute(factor, np.zeros((4, x.size)), params, ["a", "b", "c"], np.ones((4, x.size)), None, counts, np.ones(4))
    own = diagnostics.undetermined(factor, rss, counts - 3, params, nonlinear, free)
    shared = diagnostics.undetermined(factor, rss, counts - 3, params, nonlinear, free, table.svd)
    np.testing.assert_array_equal(own[0], shared[0])
    assert own[0][:, 1:].tolist() == [[True, True], [False, False], [True, True], [False, False]]  # the test has teeth: both kinds of group
    # the two SVDs are of the same matrix up to the rounding of its column scales (a few eps):
    # the relative errors then agree to about eps times the condition number, not to the last bit
    tolerance = 100 * np.finfo(float).eps * np.max(np.linalg.cond(factor))
    np.testing.assert_allclose(shared[1], own[1], rtol=tolerance)
