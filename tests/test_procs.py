"""Helper processes for large grouped fits (nlfit.procs): a helper solves a block as this
process does, a block it cannot do is done here, the CLI's rows do not change, and a signal
ends the fit and its helpers cleanly. The data are small: the tests set the threshold
(NLFIT_PROCESS_POINTS) to 0, so two size buckets give two blocks."""

from __future__ import annotations

import functools
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import started
from typer.testing import CliRunner

from nlfit import prepare as prepare_module
from nlfit import procs
from nlfit.batch import GroupFits
from nlfit.cli.app import app
from nlfit.cli.fit import block_rows
from nlfit.io.dataset import Dataset
from nlfit.io.read import read_dataset
from nlfit.options import FitOptions
from nlfit.report.formats import Json

FORMULA = "a*exp(-b*x)"


def _dataset(sizes=(8,) * 6 + (40,) * 6, seed=3) -> Dataset:
    rng = np.random.default_rng(seed)
    x, y, keys = [], [], []
    for g, size in enumerate(sizes):
        t = np.linspace(0.0, 4.0, size)
        x.append(t)
        y.append(rng.uniform(1, 2) * np.exp(-rng.uniform(0.4, 1.0) * t) + rng.normal(0, 0.01, size))
        keys += [f"g{g}"] * size
    return Dataset(x=np.concatenate(x), y=np.concatenate(y), x_names=("x",), y_name="y", groups=np.array(keys, dtype=object))


def _without_seconds(lines: list[str]) -> list[dict]:
    rows = [json.loads(line) for line in lines]
    for row in rows:
        row.pop("seconds")
    return rows


def _one_process(data, monkeypatch):
    monkeypatch.setenv(procs.SWITCH_ENV, "off")
    fits = GroupFits(data, FORMULA, p0=[1.0, 1.0])
    return [value for _, value in fits.blocks(functools.partial(block_rows, Json(), {}))]


def _with_helpers(data, share: bool):
    fits = GroupFits(data, FORMULA, p0=[1.0, 1.0])
    steps = fits.prepared.plan()
    helpers = procs.Helpers(fits.prepared, steps, functools.partial(block_rows, Json(), {}), 1, time.perf_counter())
    try:
        values = [value for _, value in helpers.run(share=share)]
    finally:
        helpers.close()
    return steps, values, helpers


def _assert_same(ours, theirs):
    assert len(ours) == len(theirs)
    for (fits, lines), (reference, reference_lines) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(fits.status, reference.status)
        np.testing.assert_allclose(fits.params, reference.params, rtol=1e-10)
        np.testing.assert_allclose(fits.stderr, reference.stderr, rtol=1e-8)
        rows, expected = _without_seconds(lines), _without_seconds(reference_lines)
        assert [row["group"] for row in rows] == [row["group"] for row in expected]
        assert [row["status"] for row in rows] == [row["status"] for row in expected]


def test_a_helper_process_solves_every_block_as_this_process_does(monkeypatch):
    data = _dataset()
    reference = _one_process(data, monkeypatch)
    steps, values, helpers = _with_helpers(data, share=False)
    assert len(steps) == 2 and helpers.served == {0: "helper", 1: "helper"}
    assert helpers.remote_then is not None  # the CLI's row formatting runs in the helper
    _assert_same(values, reference)
    assert all(process.returncode == 0 for process in helpers.processes)


def test_a_blocks_own_rows_build_the_batch_the_whole_data_builds(tmp_path, monkeypatch):
    """What a helper is sent for a block (``Prepared.rows_of``), put on the fit without its
    data (``without_rows().with_rows``), builds the batch the main process builds from all
    the rows: interleaved groups, per-point sigma, two predictors, a group whose rows were
    all dropped, one that lost a row, and a last block filled with copies of its last group."""
    rng = np.random.default_rng(5)
    lines = ["k,u,v,y,s"]
    for row in range(200):
        key = f"g{row % 7}"  # interleaved: group g's rows are every 7th
        u, v = rng.uniform(0, 1, 2)
        y = "" if key == "g3" or row == 12 else f"{1 + u + 2 * v + rng.normal(0, 0.01):.6f}"  # g3 all gone, g5 one row
        lines.append(f"{key},{u:.6f},{v:.6f},{y},{rng.uniform(0.01, 0.02):.6f}")
    path = tmp_path / "groups.csv"
    path.write_text("\n".join(lines) + "\n")
    data = read_dataset(str(path), x_columns=["u", "v"], y_column="y", sigma_column="s", group_column="k")
    monkeypatch.setattr(prepare_module, "BLOCK_GROUPS", 4)  # 6 groups with rows: two blocks, the last with copies; g3 alone
    whole = prepare_module.prepare(data, "a + b*u + c*v", FitOptions(), p0=[1, 1, 1], grouped=True)
    steps = whole.plan()
    assert len(steps) == 3 and any(step.distinct < len(step.members) for step in steps)
    bare = pickle.loads(pickle.dumps(whole.without_rows()))
    assert bare.dataset.n_points == 0 and bare.dataset.dropped == whole.dataset.dropped == 30  # g3 29 rows, g5 one
    warned, empty = [], []
    for step in steps:
        rows, renumbered = whole.rows_of(step)
        assert len(rows["y"]) == int(whole.grouped.counts[np.unique(step.members)].sum())  # its groups' rows, no more
        ours, theirs = bare.with_rows(rows).batch(renumbered), whole.batch(step)
        assert ours.keys == theirs.keys and ours.distinct == theirs.distinct and ours.config == theirs.config
        np.testing.assert_array_equal(ours.real, theirs.real)
        np.testing.assert_array_equal(ours.counts, theirs.counts)
        np.testing.assert_array_equal(ours.starts, theirs.starts)
        real = theirs.real
        np.testing.assert_array_equal(ours.problems.x[real], theirs.problems.x[real])
        np.testing.assert_array_equal(ours.problems.y[real], theirs.problems.y[real])
        for name in ("sigma", "scale", "f_scale", "lower", "upper"):
            np.testing.assert_array_equal(getattr(ours.problems, name), getattr(theirs.problems, name))
        warnings = bare.with_rows(rows).reader_warnings(ours)
        assert warnings == whole.reader_warnings(theirs)
        warned += [ours.keys[i] for i in warnings]
        empty += [key for key, count in zip(ours.keys, ours.counts, strict=True) if count == 0]
    assert sorted(warned) == ["g3", "g5"] and empty == ["g3"]  # the rows each lost, g3 all of them


# A fake helper that reads the fit and says it is ready, as nlfit.procs.main does, then SCRIPT.
READY = "import pickle, sys; pickle.load(sys.stdin.buffer); pickle.dump(('ready', None), sys.stdout.buffer); sys.stdout.buffer.flush(); "


@pytest.mark.parametrize(
    "command",
    [(sys.executable, "-c", "import sys; sys.exit(3)"), (sys.executable, "-c", READY + "pickle.load(sys.stdin.buffer); sys.exit(3)"), ("/nonexistent/python",)],
    ids=["ends-at-once", "ends-holding-a-block", "cannot-start"],
)
def test_a_block_a_helper_cannot_do_is_done_here(monkeypatch, command):
    """This process does every block itself (``share=False``) only once no helper is left:
    a block is done here because the helper handed it back, or because no helper could take it."""
    data = _dataset()
    reference = _one_process(data, monkeypatch)
    monkeypatch.setattr(procs, "COMMAND", command)
    steps, values, helpers = _with_helpers(data, share=False)
    assert set(helpers.served.values()) == {"main"} and len(helpers.served) == len(steps)
    _assert_same(values, reference)


def test_a_signal_during_post_processing_keeps_every_block_and_is_reported(monkeypatch):
    """A signal that lands outside a solve (here: in this process's post-processing of its
    block) is held until the block is done: no block is lost, the later blocks come back
    unsolved (interrupted), the helpers are stopped, and the fit says it was signalled."""
    from nlfit import signals

    data = _dataset()
    reference = _one_process(data, monkeypatch)
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    hook = sys.unraisablehook
    fired = []
    original = procs.finish_block

    def finishing(prepared, batch, *args, **kwargs):
        if not fired:
            fired.append(batch.members[0])
            os.kill(os.getpid(), signal.SIGTERM)  # arrives here, in the middle of the post-processing
        return original(prepared, batch, *args, **kwargs)

    monkeypatch.setattr(procs, "finish_block", finishing)
    monkeypatch.setattr(procs, "COMMAND", (sys.executable, "-c", READY + "sys.stdin.buffer.read()"))  # takes a block, never answers
    signals.install()
    try:
        steps, values, helpers = _with_helpers(data, share=True)
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
        sys.unraisablehook = hook
        signals.reset()
    assert fired and helpers.signalled and len(values) == len(steps) == 2
    mine = next(i for i, step in enumerate(steps) if step.members[0] == fired[0])  # solved here (the other: held by the helper, or taken here after the signal)
    np.testing.assert_array_equal(values[mine][0].status, reference[mine][0].status)  # solved before the signal: kept
    np.testing.assert_allclose(values[mine][0].params, reference[mine][0].params, rtol=1e-10)
    assert {row["status"] for row in _without_seconds(values[1 - mine][1])} == {"interrupted"}  # handed back after it: not solved
    assert all(process.poll() is not None for process in helpers.processes)


def test_helpers_start_only_for_large_fits_on_several_cores(monkeypatch):
    from nlfit import cores

    data = _dataset()
    fits = GroupFits(data, FORMULA, p0=[1.0, 1.0])
    steps = fits.prepared.plan()
    monkeypatch.setattr(cores, "usable", lambda: 4)
    monkeypatch.delenv(procs.SWITCH_ENV, raising=False)
    monkeypatch.delenv(procs.POINTS_ENV, raising=False)
    assert procs.helper_count(fits.prepared, steps) == 0  # 288 points: below MIN_POINTS
    monkeypatch.setenv(procs.POINTS_ENV, "0")
    assert procs.helper_count(fits.prepared, steps) == 1  # two blocks: one helper
    with cores.limited(1):
        assert procs.helper_count(fits.prepared, steps) == 0  # --threads 1
    monkeypatch.setenv(procs.SWITCH_ENV, "off")
    assert procs.helper_count(fits.prepared, steps) == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="helpers need a second core")
def test_the_cli_writes_the_same_rows_with_helpers(tmp_path, monkeypatch):
    data = _dataset()
    path = tmp_path / "groups.csv"
    path.write_text("id,x,y\n" + "".join(f"{k},{float(a)!r},{float(b)!r}\n" for k, a, b in zip(data.groups, data.x, data.y, strict=True)))
    outputs = {}
    for name, value in (("off", "off"), ("on", "on")):
        monkeypatch.setenv(procs.SWITCH_ENV, value)
        monkeypatch.setenv(procs.POINTS_ENV, "0")
        done = CliRunner().invoke(app, ["fit", str(path), "--group-by", "id", "-m", FORMULA, "--p0", "a=1,b=1", "-f", "json", "-qq", "--threads", "2"])
        assert done.exit_code == 0, done.stderr
        outputs[name] = _without_seconds(done.stdout.splitlines())
    assert [row["group"] for row in outputs["on"]] == [f"g{g}" for g in range(12)]
    for row, reference in zip(outputs["on"], outputs["off"], strict=True):
        assert row["status"] == reference["status"] and row["group"] == reference["group"]
        for name in ("a", "b"):
            assert row["params"][name]["value"] == pytest.approx(reference["params"][name]["value"], rel=1e-10)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


@pytest.mark.skipif(not os.path.exists("/proc/self/task") or len(os.sched_getaffinity(0)) < 2, reason="Linux's /proc; 2 cores")
def test_a_signal_during_a_fit_with_helpers_ends_it_and_them(tmp_path):
    data = _dataset()
    path = tmp_path / "groups.csv"
    path.write_text("id,x,y\n" + "".join(f"{k},{float(a)!r},{float(b)!r}\n" for k, a, b in zip(data.groups, data.x, data.y, strict=True)))
    command = [sys.executable, "-m", "nlfit", "fit", str(path), "--group-by", "id", "-m", FORMULA, "--p0", "a=1,b=1", "--method", "gd",
               "-g", "none", "--step", "1e-7", "--max-iter", "100000000", "--starts", "1", "-f", "json", "-q", "--progress", "--threads", "2"]  # fmt: skip
    env = {**os.environ, procs.POINTS_ENV: "0", procs.SWITCH_ENV: "on"}
    with started(command, "nlfit: progress:", env, stdout=subprocess.PIPE) as process:
        helpers = _children(process.pid)
        assert helpers, "no helper process was started"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "Traceback" not in err and "Exception ignored" not in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["group"] for row in rows] == [f"g{g}" for g in range(12)]  # every group keeps its row
    assert {row["status"] for row in rows} == {"interrupted"}
    for pid in helpers:  # waited for: gone, not left running
        assert not os.path.exists(f"/proc/{pid}") or "nlfit.procs" not in open(f"/proc/{pid}/cmdline").read()
