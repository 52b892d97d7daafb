"""Batched fits with --group-by: one vmapped solve, failures isolated per group."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nlfit import fit
from nlfit.batch import fit_groups
from nlfit.cli.app import app
from nlfit.io.dataset import Dataset
from nlfit.io.read import read_dataset

FORMULA = "a*exp(-b*x)"


def _good_groups(rng, count=6, points=25):
    x = np.linspace(0.0, 4.0, points)
    rows = []
    for g in range(count):
        a, b = rng.uniform(1, 2), rng.uniform(0.4, 1.0)
        rows += [(f"g{g}", xi, a * np.exp(-b * xi) + rng.normal(0, 0.01)) for xi in x]
    return rows


def _csv(rows):
    return "id,x,y\n" + "".join(f"{k},{float(x)!r},{float(y)!r}\n" for k, x, y in rows)


@pytest.mark.parametrize("method", ["lm", "gn"])
def test_broken_groups_get_their_own_status_and_the_others_match_separate_fits(method):
    rng = np.random.default_rng(4)
    rows = _good_groups(rng)
    rows.insert(30, ("nan", 0.0, 1.0))
    rows += [("nan", 1.0, float("nan")), ("nan", 2.0, 0.5)]  # NaN data
    rows += [("few", 0.5, 1.0)]  # fewer points than parameters
    rows += [("flat", 1.0, 0.3), ("flat", 1.0, 0.31), ("flat", 1.0, 0.29)]  # one distinct x: a, b not identifiable
    data = read_dataset("-", stdin=io.StringIO(_csv(rows)), group_column="id")
    result = fit_groups(data, FORMULA, p0=[1.0, 1.0], method=method)
    status = dict(zip(result.keys, (r["status"] for r in result.rows()), strict=True))
    assert result.keys[:2] == ["g0", "g1"] and result.keys.index("nan") == 2  # order of first appearance
    assert status["nan"] == "nonfinite"
    assert status["few"] == "too-few-points"
    few = result.rows()[result.keys.index("few")]  # not fitted: its start, no iterations, no starts
    assert [few["params"][name]["value"] for name in ("a", "b")] == [1.0, 1.0]
    assert few["counts"] == {"iterations": 0, "nfev": 0, "njev": 0} and few.get("starts") is None
    flat = result.rows()[result.keys.index("flat")]
    assert flat["params"]["a"]["stderr"] is None  # not identifiable: no standard error
    for g in range(6):
        key = f"g{g}"
        index = result.keys.index(key)
        assert result.rows()[index]["success"], status[key]
        member = [(x, y) for k, x, y in rows if k == key]
        alone = Dataset(x=np.array([m[0] for m in member]), y=np.array([m[1] for m in member]), x_names=("x",), y_name="y")
        separate = fit(alone, FORMULA, p0=[1.0, 1.0], method=method)
        np.testing.assert_allclose(result.params[index], separate.params, rtol=1e-8)
        np.testing.assert_allclose(result.stderr[index], separate.stderr, rtol=1e-6)


def test_group_by_cli_ndjson_and_csv(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "groups.csv"
    path.write_text(_csv(_good_groups(rng, count=3)))
    done = CliRunner().invoke(app, ["fit", str(path), "--group-by", "id", "-m", FORMULA, "--p0", "a=1,b=1", "-f", "json"])
    assert done.exit_code == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["group"] for r in rows] == ["g0", "g1", "g2"]
    assert set(rows[0]) >= {"success", "status", "params", "stats", "counts"} and "history" not in rows[0]
    done = CliRunner().invoke(app, ["fit", str(path), "--group-by", "id", "-m", FORMULA, "--p0", "a=1,b=1", "-f", "csv", "-q"])
    lines = done.stdout.splitlines()
    assert lines[0] == "group,a,a_stderr,b,b_stderr,loss,rss,success,status,warnings,iterations" and len(lines) == 4
    bad = CliRunner().invoke(app, ["fit", str(path), "--group-by", "nope", "-m", FORMULA])
    assert bad.exit_code == 2 and "unknown --group-by column 'nope'" in bad.stderr


def test_generated_groups_recover_their_true_parameters():
    done = CliRunner().invoke(app, ["generate", "exp-decay", "--groups", "40", "--n", "60", "--noise", "0.01", "--seed", "3"])
    data = read_dataset("-", stdin=io.StringIO(done.stdout), group_column="group")
    result = fit_groups(data, FORMULA, p0=[1.0, 1.0])
    truth = np.loadtxt(io.StringIO(done.stdout), delimiter=",", skiprows=1, usecols=(0, 3, 4))
    per_group = {str(int(row[0])): row[1:] for row in truth}
    inside = 0
    for g, key in enumerate(result.keys):
        z = np.abs(result.params[g] - per_group[key]) / result.stderr[g]
        inside += np.all(z < 3.5)
    assert inside >= 38  # about 99.9% per parameter for normal errors; 2 slips allowed


@pytest.mark.parametrize("method, globalization", [("lm", "line-search"), ("newton", "trust-region"), ("gd", "line-search")])
def test_other_cells_batch_too(method, globalization):
    rng = np.random.default_rng(6)
    data = read_dataset("-", stdin=io.StringIO(_csv(_good_groups(rng, count=3))), group_column="id")
    result = fit_groups(data, FORMULA, p0=[1.0, 1.0], method=method, globalization=globalization, max_iter=3000)
    assert result.method == method and result.globalization == globalization
    reference = fit_groups(data, FORMULA, p0=[1.0, 1.0])
    np.testing.assert_allclose(result.params, reference.params, rtol=1e-3 if method == "gd" else 1e-7)


def test_engine_without_group_by_is_an_error(runge_csv):
    done = CliRunner().invoke(app, ["fit", str(runge_csv), "-m", "rational", "--engine", "dask"])
    assert done.exit_code == 2 and "--group-by" in done.stderr


def test_a_large_batch_matches_its_groups_fitted_alone(monkeypatch):
    """From COMPACTION x SMALLEST_COMPACTED groups on, the solve gathers the groups still running into
    ever smaller working sets (``loop.Compacted``). Every group's fit is still the one of the
    batch solved whole, and of fitting the group alone: the slowest groups, which ran in the
    smallest sets, and a few others are fitted alone with the same solver (LM, Cholesky steps)."""
    from nlfit.solvers import loop

    rng = np.random.default_rng(11)
    groups, x = loop.COMPACTION * loop.SMALLEST_COMPACTED + 37, np.linspace(-1.0, 1.0, 40)
    truth = np.column_stack([rng.uniform(0.5, 1.5, groups), rng.uniform(-0.3, 0.3, groups), rng.uniform(1, 25, groups)])
    y = 1.0 / (truth[:, :1] + truth[:, 1:2] * x + truth[:, 2:3] * x * x) + rng.normal(0, 0.01, (groups, x.size))
    data = Dataset(x=np.tile(x, groups), y=y.ravel(), x_names=("x",), y_name="y", groups=np.repeat(np.arange(groups), x.size).astype(str))
    options = {"model_spec": "1/(c0 + c1*x + c2*x^2)", "p0": [1.0, 0.0, 10.0], "starts": 1}
    sizes = []
    shrink = loop.Compacted._shrink

    def spy(self, statuses):
        shrink(self, statuses)
        sizes.append(self.size)

    monkeypatch.setattr(loop.Compacted, "_shrink", spy)
    batch = fit_groups(data, **options)
    iterations = np.array([r.counts["iterations"] for r in batch.results])
    assert iterations.max() > 2 * np.median(iterations) and min(sizes) < max(sizes)  # the working set did shrink
    monkeypatch.setattr(loop, "SMALLEST_COMPACTED", 10**9)
    whole = fit_groups(data, **options)
    # Each working-set size is its own compiled program, vectorized its own way: the last bits
    # differ, and with them which convergence test (ftol or xtol) a group meets first.
    assert all(a.status.success and b.status.success for a, b in zip(batch.results, whole.results, strict=True))
    np.testing.assert_allclose(batch.params, whole.params, rtol=1e-8)
    for g in [*np.argsort(iterations)[-5:], 0, groups // 2]:
        alone = Dataset(x=x, y=y[g], x_names=("x",), y_name="y")
        single = fit(alone, options["model_spec"], p0=options["p0"], starts=1, factorization="cholesky")
        # Alone, the formula runs on its tape (``nlfit.models.tape``), another program: which of
        # the convergence tests is met first can differ in the last bits, that they are met cannot.
        assert single.status.success and batch.results[g].status.success, g
        assert np.linalg.norm(single.params - batch.params[g]) <= 1e-8 * np.linalg.norm(single.params), g


def _noisy_runge() -> Dataset:
    """200 points of the Runge function with noise 0.5: the rational model's 32 starts stop
    at very different iterations (5 to over 100)."""
    x = np.linspace(-1.0, 1.0, 200)
    y = 1.0 / (1.0 + 10.0 * x * x) + np.random.default_rng(0).normal(0.0, 0.5, x.size)
    return Dataset(x=x, y=y, x_names=("x",), y_name="y")


def test_the_starts_of_a_single_fit_take_turns_without_changing_the_fit(monkeypatch):
    """A single fit's starts stop at very different iterations (the Runge data with the
    rational model: 5 to over 100); they run in turns of TURN_WIDTH (``loop.Turns``), the
    running ones only. The fit, its loss history and the multistart summary are those of the
    starts run together to the end, within round-off."""
    from nlfit.solvers import loop

    data = _noisy_runge()
    turns = []
    sets = loop.Turns.sets

    def spy(self, statuses):
        index, own = sets(self, statuses)
        turns.append(int(np.count_nonzero(own.any(axis=1))))
        assert own.sum() == np.count_nonzero(statuses == loop.Status.RUNNING)  # every running start once
        assert all(len(set(row)) == self.width for row in index.tolist())
        return index, own

    monkeypatch.setattr(loop.Turns, "sets", spy)
    monkeypatch.setattr(loop, "SCREEN_AFTER", None)  # every start to its end (the screening: below)
    in_turns = fit(data, "rational", starts=32)
    assert turns[0] == 32 // loop.TURN_WIDTH and turns[-1] == 1  # four turns at first, one at the end
    monkeypatch.setattr(loop, "TURN_WIDTH", 10**9)
    turns.clear()
    whole = fit(data, "rational", starts=32)
    assert not turns
    assert in_turns.status == whole.status and in_turns.starts["chosen"] == whole.starts["chosen"]
    np.testing.assert_allclose(in_turns.params, whole.params, rtol=1e-10)
    assert [row["iteration"] for row in in_turns.history] == [row["iteration"] for row in whole.history]
    np.testing.assert_allclose([row["loss"] for row in in_turns.history], [row["loss"] for row in whole.history], rtol=1e-10)
    assert in_turns.starts["converged"] == whole.starts["converged"]
    assert [m["count"] for m in in_turns.starts["minima"]] == [m["count"] for m in whole.starts["minima"]]
    np.testing.assert_allclose([m["loss"] for m in in_turns.starts["minima"]], [m["loss"] for m in whole.starts["minima"]], rtol=1e-8)


def test_the_screening_of_the_starts_keeps_the_fit_and_counts_the_starts_set_aside(monkeypatch):
    """After ``SCREEN_AFTER`` iterations only the given start and the running starts of lowest
    loss go on (a fifth of the rational model's 32 starts on the Runge data wander towards a
    pole for their whole budget). The chosen fit is the one every start run to its end gives;
    the starts set aside are counted, and they neither converged nor count as minima."""
    from nlfit.solvers import loop

    data = _noisy_runge()
    screens = []
    screen = loop.Turns._screen

    def spy(self, state):
        screens.append(int(np.count_nonzero(np.asarray(state.status) == loop.Status.RUNNING)))
        return screen(self, state)

    monkeypatch.setattr(loop.Turns, "_screen", spy)
    screened = fit(data, "rational", starts=32)
    assert screens and screens[0] > 8  # more starts were running than went on
    monkeypatch.setattr(loop, "SCREEN_AFTER", None)
    whole = fit(data, "rational", starts=32)
    assert screened.status.success and whole.status.success
    np.testing.assert_allclose(screened.params, whole.params, rtol=1e-8)
    assert screened.loss == pytest.approx(whole.loss, rel=1e-10)
    counts = screened.starts
    assert counts["set_aside"] == screens[0] - 8 and whole.starts["set_aside"] == 0
    assert counts["converged"] + counts["set_aside"] <= counts["tried"] == 32
    assert sum(m["count"] for m in counts["minima"]) == counts["converged"]
    assert screened.starts["minima"][0]["loss"] == pytest.approx(whole.starts["minima"][0]["loss"], rel=1e-8)


def test_a_start_set_aside_with_the_lowest_loss_goes_on_to_the_full_budget(monkeypatch):
    """A start the screening stopped is stopped as its budget would stop it: when it holds the
    lowest loss of all, it is the winner and goes on from where it stood to ``max_iter``. Here
    the screening comes after 2 iterations and sets every running start aside (the given one
    too), so the winner is one of them."""
    from nlfit._jax import jnp
    from nlfit.solvers import loop

    data = _noisy_runge()
    running_then = []

    def every_start(self, state):
        running = state.status == int(loop.Status.RUNNING)
        running_then.append(int(np.count_nonzero(np.asarray(running))))
        return state._replace(status=jnp.where(running, int(loop.Status.MAX_ITER), state.status), budget=jnp.where(running, state.iteration, state.budget))

    monkeypatch.setattr(loop, "SCREEN_AFTER", 2)
    monkeypatch.setattr(loop.Turns, "_screen", every_start)
    early = fit(data, "rational", starts=32)
    monkeypatch.setattr(loop, "SCREEN_AFTER", None)
    whole = fit(data, "rational", starts=32)
    assert running_then == [running_then[0]] and running_then[0] > 0  # the winner's own run is not screened
    # the winner, one of those set aside at iteration 2, went on (and no longer counts as set aside)
    assert early.status.success and early.counts["iterations"] > 2
    assert early.starts["set_aside"] == running_then[0] - 1
    assert early.loss == pytest.approx(whole.loss, rel=1e-9)


def test_the_screening_keeps_a_quarter_of_all_the_starts_however_far_the_set_has_shrunk():
    """``Turns._screen`` on a made-up state of 32 starts: the given start and the 7 running
    starts of lowest loss go on (a quarter of 32), also when most starts have stopped already;
    a stopped start never takes a running one's place."""
    from typing import NamedTuple

    from nlfit.solvers import loop

    class Local(NamedTuple):
        loss: object

    class Fake(NamedTuple):
        status: object
        local: Local
        iteration: object
        budget: object

    def state(running, loss):
        status = np.where(np.isin(np.arange(32), running), int(loop.Status.RUNNING), int(loop.Status.FTOL))[None]
        return Fake(status=status, local=Local(np.asarray(loss, dtype=float)[None]), iteration=np.full((1, 32), 17), budget=np.full((1, 32), 200))

    loss = np.arange(32, 0, -1.0)  # later starts have lower losses
    screen = loop.Turns(None, None, 32, loop.turn_width(32))
    out = screen._screen(state(np.arange(12), loss))  # 12 running: start 0 and the 7 lowest of 1-11 (5-11) go on
    going = np.flatnonzero(np.asarray(out.status)[0] == loop.Status.RUNNING)
    assert going.tolist() == [0, 5, 6, 7, 8, 9, 10, 11]
    assert np.all(np.asarray(out.budget)[0, 1:5] == 17) and np.all(np.asarray(out.budget)[0, going] == 200)
    out = screen._screen(state(np.arange(8), loss))  # 8 running: a quarter of all the starts, all go on
    assert np.count_nonzero(np.asarray(out.status)[0] == loop.Status.RUNNING) == 8
    # start 0 stopped, 9 others running, 20 stopped with lower losses than any of them
    out = screen._screen(state(np.arange(1, 10), np.where(np.arange(32) >= 10, 0.0, loss)))
    going = np.flatnonzero(np.asarray(out.status)[0] == loop.Status.RUNNING)
    assert going.tolist() == [2, 3, 4, 5, 6, 7, 8, 9]


def test_blocks_post_processed_in_helper_threads_arrive_in_order_and_equal_the_sequential_ones(monkeypatch):
    """With two cores, each block's post-processing (and the caller's ``then``) runs in a
    helper thread while the next block is solved (``GroupFits.blocks``); the blocks still
    arrive in block order, every group once, with the results of doing it all in turn."""
    import threading

    from nlfit import cores, prepare
    from nlfit.batch import GroupFits

    rng = np.random.default_rng(5)
    data = read_dataset("-", stdin=io.StringIO(_csv(_good_groups(rng, count=9))), group_column="id")
    monkeypatch.setattr(prepare, "BLOCK_RESIDUALS", 2 * 25)  # 2 groups of 25 rows a block: 5 blocks
    monkeypatch.setattr(cores, "usable", lambda: 2)

    def run(threads):
        seen = []

        def then(fits):
            seen.append(threading.current_thread().name)
            return fits, len(fits)

        with cores.limited(threads):
            parts = list(GroupFits(data, FORMULA, p0=[1.0, 1.0], starts=1).blocks(then))
        return parts, seen

    together, names = run(2)
    alone, names_alone = run(1)
    assert len(together) == 5 and all(name.startswith("nlfit-post") for name in names)
    assert names_alone == [threading.main_thread().name] * 5
    order = np.concatenate([block for block, _ in together])
    np.testing.assert_array_equal(order, np.arange(9))
    for (block, (fits, count)), (same_block, (same, _)) in zip(together, alone, strict=True):
        np.testing.assert_array_equal(block, same_block)
        assert count == len(block)
        np.testing.assert_array_equal(fits.status, same.status)
        np.testing.assert_allclose(fits.params, same.params, rtol=1e-12)
        np.testing.assert_allclose(fits.stderr, same.stderr, rtol=1e-10)
