"""--engine dask with several files: read and fitted on the workers, rows in the local order.

One LocalCluster (2 single-threaded worker processes) serves the whole module; each command
connects to it with --scheduler, as a user's cluster would be used.
"""

from __future__ import annotations

import codecs
import json
import operator
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from nlfit.cli.app import app

FORMULA = "a*exp(-b*x)"
GROUPS = 12
POINTS = 15


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    from nlfit.dask_engine import LOCAL_CLUSTER

    with LocalCluster(**LOCAL_CLUSTER, n_workers=2) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def table():
    """Rows of GROUPS exponential decays, interleaved so that the order of first appearance
    is neither sorted nor the order of the files; group 'few' cannot be fitted, one row has a
    missing y (dropped, with a warning), and group 'gone' has only rows with a missing y (its
    row says no-data: no group vanishes)."""
    rng = np.random.default_rng(11)
    x = np.linspace(0.0, 4.0, POINTS)
    rows = []
    for g in rng.permutation(GROUPS):
        a, b = rng.uniform(1, 2), rng.uniform(0.4, 1.0)
        rows += [(f"g{g}", float(xi), float(a * np.exp(-b * xi) + rng.normal(0, 0.01))) for xi in x]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    rows.insert(40, ("few", 0.5, 1.0))
    rows.insert(7, ("g3", 1.5, None))
    rows.insert(3, ("gone", 0.5, None))
    rows.insert(60, ("gone", 1.5, None))
    return rows


def _split(rows, count):
    size = -(-len(rows) // count)
    return [rows[i * size : (i + 1) * size] for i in range(count)]


def _write_csv(path, rows, dialect):
    """CSV in the dialects nlfit detects: a BOM and comments, semicolons, tabs."""
    sep = {"bom": ",", "semicolon": ";", "tab": "\t"}[dialect]
    lines = [sep.join(["id", "x", "y"])] + [sep.join([k, repr(x), "" if y is None else repr(y)]) for k, x, y in rows]
    text = "\n".join(lines) + "\n"
    if dialect == "bom":
        text = "# made by test_dask_engine\n" + text.replace("\n", "\n# a comment line\n", 3)
        path.write_bytes(codecs.BOM_UTF8 + text.encode())
    else:
        path.write_text(text)


def _write_parquet(path, rows):
    import pandas as pd

    pd.DataFrame(rows, columns=["id", "x", "y"]).to_parquet(path, index=False)


def _fit(paths, *extra):
    args = ["fit", *map(str, paths), "--group-by", "id", "-m", FORMULA, "--p0", "a=1,b=1", *extra]
    return CliRunner().invoke(app, args)


def _same(local, dask_rows):
    assert [r["group"] for r in dask_rows] == [r["group"] for r in local]  # the local order: first appearance
    for ours, theirs in zip(local, dask_rows, strict=True):
        assert theirs["status"] == ours["status"]
        assert theirs["counts"] == ours["counts"]
        assert theirs["warnings"] == ours["warnings"]
        for name in ("a", "b"):
            if ours["params"][name]["value"] is not None:
                assert theirs["params"][name]["value"] == pytest.approx(ours["params"][name]["value"], rel=1e-12)


def test_csv_and_parquet_parts_equal_local_and_fill_an_output_folder(tmp_path, scheduler, table, monkeypatch):
    """One test (one cluster, however pytest-xdist spreads the tests): each kind of input
    equals the local engine, and -o DIR/ gets one part file per partition."""
    for kind in ("csv", "parquet"):
        _dask_equals_local(tmp_path / kind, scheduler, table, kind)
    _output_folder(tmp_path / "folder", scheduler, table, monkeypatch)
    _whole_files(tmp_path / "whole", scheduler, table, monkeypatch)


def _survey(paths, scheduler):
    """The survey of ``paths``, after checking its group sizes against those counted over
    all the files at once (the tree reduction: what the survey does where groups span files)."""
    from distributed import Client

    from nlfit import dask_engine
    from nlfit.options import FitOptions

    with Client(scheduler) as client:
        job = dask_engine.Job(client, dask_engine.plan([str(p) for p in paths], "id", formula=FORMULA), FORMULA, None, FitOptions())
        survey = job.survey()
        assert all(client.submit(lambda frame: frame is not None, k).result() for k in job._kept)  # small files: held for the fit
        reads = [client.submit(dask_engine._read, i, name, job.plan) for i, name in enumerate(job.plan.files)]
        summed = dask_engine._sizes([client.submit(operator.itemgetter(3), r) for r in reads], client)
        assert summed == survey.sizes and sum(survey.sizes.values()) == survey.groups
        return survey


def _whole_files(folder, scheduler, table, monkeypatch):
    """Files that each hold their groups whole are fitted as they are, without the shuffle
    (the survey says so) and without the sort of the result rows; the rows still equal the
    local engine's, in its order, and -o DIR/ still gets parts of at most RESULT_ROWS."""
    folder.mkdir()
    groups = list(dict.fromkeys(key for key, _, _ in table))
    paths = []
    for i in range(4):  # two files per worker: no shuffle
        mine = set(groups[i::4])
        paths.append(folder / f"part{i}.parquet")
        _write_parquet(paths[-1], [row for row in table if row[0] in mine])
    assert _survey(paths, scheduler).whole_files
    split = sorted((folder.parent / "parquet").glob("*.parquet"))
    assert not _survey(split, scheduler).whole_files  # the interleaved files of _dask_equals_local: shuffled
    local = _fit(paths, "-f", "json")
    done = _fit(paths, "--engine", "dask", "--scheduler", scheduler, "-f", "json")
    assert local.exit_code == done.exit_code == 1, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == GROUPS + 2 and next(r for r in rows if r["group"] == "gone")["status"] == "no-data"
    _same([json.loads(line) for line in local.stdout.splitlines()], rows)
    import nlfit.dask_engine

    monkeypatch.setattr(nlfit.dask_engine, "HOLD_SHARE", 0.0)  # no worker holds a partition: each file read again for the fit
    again = _fit(paths, "--engine", "dask", "--scheduler", scheduler, "-f", "json")
    assert again.exit_code == 1, again.stderr
    _same(rows, [json.loads(line) for line in again.stdout.splitlines()])
    monkeypatch.undo()
    lost = folder / "lost.csv"  # a file whose every row has a missing value, among whole files
    _write_csv(lost, [("z0", 1.0, None), ("z0", 2.0, None), ("z1", 1.0, None)], "tab")
    local = _fit([*paths, lost], "-f", "json")
    done = _fit([*paths, lost], "--engine", "dask", "--scheduler", scheduler, "-f", "json")
    assert local.exit_code == done.exit_code == 1, done.stderr
    assert [r["group"] for r in map(json.loads, done.stdout.splitlines())][-2:] == ["z0", "z1"]
    _same([json.loads(line) for line in local.stdout.splitlines()], [json.loads(line) for line in done.stdout.splitlines()])
    monkeypatch.setattr(nlfit.dask_engine, "RESULT_ROWS", 2)
    out = folder / "out"
    done = _fit(paths, "--engine", "dask", "--scheduler", scheduler, "-f", "json", "-o", f"{out}/", "-q")
    assert done.exit_code == 1, done.stderr
    texts = [p.read_text().splitlines() for p in sorted(out.iterdir())]
    assert all(1 <= len(t) <= 2 for t in texts) and len(texts) >= GROUPS // 2
    assert [json.loads(line)["group"] for t in texts for line in t] == [r["group"] for r in rows]


def _dask_equals_local(folder, scheduler, table, kind):
    folder.mkdir()
    paths = []
    for i, part in enumerate(_split(table, 4)):
        path = folder / f"part{i}.{kind}"
        _write_csv(path, part, ["bom", "semicolon", "tab", "bom"][i]) if kind == "csv" else _write_parquet(path, part)
        paths.append(path)
    local = _fit(paths, "-f", "json")
    done = _fit([folder / f"*.{kind}"], "--glob", "--engine", "dask", "--scheduler", scheduler, "-f", "json")
    assert local.exit_code == done.exit_code == 1, done.stderr  # 'few' and 'gone' are not fitted
    assert "dropped 3 rows with missing values" in local.stderr and "dropped 3 rows with missing values" in done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == GROUPS + 2 and rows[0]["group"] == table[0][0]
    assert next(r for r in rows if r["group"] == "few")["status"] == "too-few-points"
    gone = next(r for r in rows if r["group"] == "gone")
    assert gone["status"] == "no-data" and not gone["success"] and gone["stats"]["n"] == 0
    _same([json.loads(line) for line in local.stdout.splitlines()], rows)
    assert rows[0]["data"]["files"] == [str(p) for p in paths]  # the inputs, as the local engine names them


def _output_folder(folder, scheduler, table, monkeypatch):
    import nlfit.dask_engine

    folder.mkdir()
    monkeypatch.setattr(nlfit.dask_engine, "RESULT_ROWS", 4)  # 14 groups: several partitions
    monkeypatch.setattr(nlfit.dask_engine, "HOLD_SHARE", 0.0)  # the shuffle reads each file again
    paths = []
    for i, part in enumerate(_split(table, 3)):
        paths.append(folder / f"in{i}.parquet")
        _write_parquet(paths[-1], part)
    local = _fit(paths, "-f", "csv")
    out = folder / "out"
    done = _fit(paths, "--engine", "dask", "--scheduler", scheduler, "-f", "csv", "-o", f"{out}/", "-q")
    assert done.exit_code == 1 and done.stdout == "", done.stderr
    parts = sorted(out.iterdir())
    assert len(parts) >= 2 and [p.name for p in parts] == [f"part-{i:05d}.csv" for i in range(len(parts))]
    header, *expected = local.stdout.splitlines()
    texts = [p.read_text().splitlines() for p in parts]
    assert all(t[0] == header and len(t) > 1 for t in texts)  # each part a CSV file of its own
    got = [line for t in texts for line in t[1:]]
    assert [line.split(",")[0] for line in got] == [line.split(",")[0] for line in expected]  # cat part-* is the local order
    again = _fit(paths, "--engine", "dask", "--scheduler", scheduler, "-o", str(out))  # an existing folder: parts from this run would mix
    assert again.exit_code == 2 and "already holds part files" in again.stderr
    assert sorted(out.iterdir()) == parts
    monkeypatch.undo()


def test_headers_are_checked_on_the_client_with_the_local_errors(tmp_path, table):
    paths = [tmp_path / "a.csv", tmp_path / "b.parquet"]
    _write_csv(paths[0], table[:30], "bom")
    _write_parquet(paths[1], table[30:])
    for flags, message in [
        (["--group-by", "nope"], "unknown --group-by column 'nope'"),
        (["--group-by", "id", "--sigma", "s"], "unknown column 's'"),
    ]:
        args = ["fit", *map(str, paths), "-m", FORMULA, *flags]
        local, done = CliRunner().invoke(app, args), CliRunner().invoke(app, [*args, "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1"])
        assert local.exit_code == done.exit_code == 2 and message in done.stderr
        assert done.stderr.splitlines() == local.stderr.splitlines()  # before any connection: the same one line
    stdin = CliRunner().invoke(app, ["fit", "-", "--group-by", "id", "-m", FORMULA, "--engine", "dask"], input="id,x,y\n")
    assert stdin.exit_code == 2 and "stdin" in stdin.stderr and "Traceback" not in stdin.stderr


def test_threads_sets_the_local_clusters_workers_and_nothing_else(tmp_path, table, monkeypatch):
    from nlfit import dask_engine

    for name in dask_engine.WORKER_MALLOC:  # a value in the environment wins (another cluster of this process may have set Dask's)
        monkeypatch.delenv(name, raising=False)
    with dask_engine.connect(None, 1) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        settings = client.run(lambda: {name: os.environ.get(name) for name in dask_engine.WORKER_MALLOC})
        assert list(settings.values()) == [dask_engine.WORKER_MALLOC]  # the workers keep the memory they free
    path = tmp_path / "a.csv"
    _write_csv(path, table[:30], "bom")
    for flags, message in [
        (["--engine", "dask"], "apply to batched fits (--group-by)"),
        (["--group-by", "id", "--engine", "dask", "--scheduler", "tcp://127.0.0.1:1", "--threads", "2"], "a --scheduler's cluster has its own"),
        (["--group-by", "id", "--engine", "dask", "--threads", "0"], "--threads"),
    ]:
        done = CliRunner().invoke(app, ["fit", str(path), "-m", FORMULA, *flags])
        assert done.exit_code == 2 and message in done.stderr and "Traceback" not in done.stderr, (flags, done.stderr)


def test_a_shuffled_partition_keeps_one_place_per_group_as_the_local_engine(tmp_path):
    """The fit of a shuffled partition (no cluster: ``_fit_partition`` on the files' own
    partitions, concatenated in a scrambled order): a group that lost every row in one file
    but has rows in another is placed at its first kept row, a group that lost every row in
    both files once, at its first row; the rows, their order and places are the local engine's."""
    import pandas as pd

    from nlfit import dask_engine
    from nlfit.options import FitOptions

    x = np.linspace(0.0, 4.0, POINTS)
    first = [("late", 0.5, None), ("none", 0.5, None)] + [("a", float(v), float(1.5 * np.exp(-0.7 * v))) for v in x] + [("late", 1.5, None)]
    second = [("none", 2.0, None)] + [("late", float(v), float(1.2 * np.exp(-0.5 * v))) for v in x]
    paths = [tmp_path / "one.csv", tmp_path / "two.csv"]
    for path, rows in zip(paths, (first, second), strict=True):
        _write_csv(path, rows, "semicolon")
    plan = dask_engine.plan([str(p) for p in paths], "id", formula=FORMULA)
    reads = [dask_engine._read(i, name, plan) for i, name in enumerate(plan.files)]
    frame = pd.concat([r[0] for r in reads], ignore_index=True)
    frame = frame.iloc[np.random.default_rng(3).permutation(len(frame))]
    survey = dask_engine.Survey(3, POINTS, {1: 1, POINTS: 2}, 2 * POINTS, 4, (0.0,), (4.0,), (2, 2))
    options, _ = dask_engine.resolve(FORMULA, plan, survey, FitOptions())
    context = {"plan": plan, "survey": survey, "spec": FORMULA, "p0": {"a": 1.0, "b": 1.0}, "options": options, "format": "json", "stamp": None}
    done = dask_engine._fit_partition(frame, context)
    local = [json.loads(line) for line in _fit(paths, "-f", "json").stdout.splitlines()]
    rows = [json.loads(text) for text in done["text"]]
    assert list(done["group"]) == [r["group"] for r in rows] == [r["group"] for r in local]
    assert sorted(done["group"]) == ["a", "late", "none"]
    _same(local, rows)
