"""Parquet input: recognized by its content (a name, a pattern, stdin), read with pyarrow,
only the used columns; the same fits, column rules and one-line errors as CSV."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from nlfit.cli.app import app
from nlfit.errors import InputError
from nlfit.io.read import read_dataset

runner = CliRunner()


@pytest.fixture
def frames():
    x = np.linspace(-1.0, 1.0, 120)
    y = 1.0 / (1.0 + 10.0 * x * x) + np.random.default_rng(7).normal(0.0, 0.1, x.size)
    return pd.DataFrame({"x": x, "y": y, "note": ["n"] * x.size})


def _csv(frame, path):
    frame.to_csv(path, index=False, float_format="%.17g")


def test_a_parquet_file_fits_as_its_csv(tmp_path, frames):
    frames.to_parquet(tmp_path / "d.parquet")
    _csv(frames, tmp_path / "d.csv")
    results = [runner.invoke(app, ["fit", str(tmp_path / name), "-m", "rational", "-f", "json", "-q"]) for name in ("d.parquet", "d.csv")]
    assert all(r.exit_code == 0 for r in results), [r.stderr for r in results]
    parquet, csv = (json.loads(r.stdout) for r in results)
    assert parquet["params"] == csv["params"]  # the same numbers, bit for bit
    assert parquet["data"]["files"] == [str(tmp_path / "d.parquet")]


def test_parquet_from_stdin_and_with_any_name(tmp_path, frames):
    frames.to_parquet(tmp_path / "data.bin")
    by_name = read_dataset(str(tmp_path / "data.bin"))
    piped = read_dataset("-", stdin=io.BytesIO((tmp_path / "data.bin").read_bytes()))
    np.testing.assert_array_equal(by_name.y, frames["y"].to_numpy())
    np.testing.assert_array_equal(piped.x, frames["x"].to_numpy())


def test_nulls_are_missing_cells_and_groups_work(tmp_path):
    x = np.tile(np.linspace(0.0, 3.0, 30), 2)
    y = np.r_[2.0 * np.exp(-0.5 * x[:30]), 3.0 * np.exp(-0.7 * x[30:])]
    frame = pd.DataFrame({"run": np.repeat(["a", "b"], 30), "x": x, "y": y})
    frame.loc[3, "y"] = None
    frame.to_parquet(tmp_path / "runs.parquet")
    data = read_dataset(str(tmp_path / "runs.parquet"), group_column="run")
    assert data.dropped == 1 and data.n_points == 59
    done = runner.invoke(app, ["fit", str(tmp_path / "runs.parquet"), "--group-by", "run", "-m", "a*exp(-b*x)", "-f", "csv", "-q"])
    assert done.exit_code == 0, done.stderr
    rows = done.stdout.splitlines()
    assert rows[1].startswith("a,2.0") and rows[2].startswith("b,3.0")
    assert "nlfit: warning: dropped 1 row with missing values in the used columns" in done.stderr


@pytest.mark.parametrize("dtype", ["int64", "uint16", "int32"])
def test_integer_group_keys_read_as_the_csvs(tmp_path, dtype):
    """Integer keys are factorized as numbers (no text per row first): the same keys, order,
    dropped rows and emptied groups as the CSV of the same table."""
    rng = np.random.default_rng(3)
    ids = np.array([7, 3, 7, 12, 3, 3, 12, 7, 40, 40], dtype=dtype).repeat(3)
    frame = pd.DataFrame({"id": ids, "x": rng.uniform(0, 1, ids.size), "y": rng.uniform(0, 1, ids.size)})
    frame.loc[frame["id"] == 40, "y"] = None  # group 40 loses every row
    frame.loc[0, "y"] = None
    frame.to_parquet(tmp_path / "k.parquet")
    _csv(frame, tmp_path / "k.csv")
    parquet, csv = (read_dataset(str(tmp_path / name), group_column="id") for name in ("k.parquet", "k.csv"))
    assert list(parquet.groups) == list(csv.groups) and parquet.groups.dtype == object
    assert parquet.empty_groups == csv.empty_groups and parquet.dropped_by_group == csv.dropped_by_group and parquet.dropped == csv.dropped
    np.testing.assert_array_equal(parquet.y, csv.y)


def test_parquet_and_csv_concatenate_when_their_columns_match(tmp_path, frames):
    frames.iloc[:60].to_parquet(tmp_path / "a.parquet")
    _csv(frames.iloc[60:], tmp_path / "b.csv")
    both = read_dataset([str(tmp_path / "a.parquet"), str(tmp_path / "b.csv")])
    np.testing.assert_array_equal(both.y, frames["y"].to_numpy())
    frames[["x", "y"]].to_parquet(tmp_path / "c.parquet")
    with pytest.raises(InputError, match="differ from those of"):
        read_dataset([str(tmp_path / "c.parquet"), str(tmp_path / "b.csv")])


def test_a_broken_parquet_file_is_one_line_error(tmp_path, frames):
    frames.to_parquet(tmp_path / "d.parquet")
    whole = (tmp_path / "d.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(whole[:200] + b"PAR1")
    done = runner.invoke(app, ["fit", str(tmp_path / "cut.parquet"), "-m", "rational"])
    assert done.exit_code == 2
    assert done.stderr.startswith("nlfit: error: ") and "is not a readable Parquet file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = runner.invoke(app, ["fit", str(tmp_path / "d.parquet"), "-m", "rational", "--y", "note"])
    assert done.exit_code == 2 and "column 'note'" in done.stderr  # text where a number goes, as in CSV


def test_without_pyarrow_the_error_says_what_to_install(tmp_path, frames, monkeypatch):
    frames.to_parquet(tmp_path / "d.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if not installed
    with pytest.raises(InputError, match=r"reading it needs pyarrow \(pip install 'nlfit\[parquet\]'\)"):
        read_dataset(str(tmp_path / "d.parquet"))


def test_a_used_column_named_twice_is_one_line_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = pa.array(np.linspace(0.0, 1.0, 8))
    y = pa.array(np.exp(-np.linspace(0.0, 1.0, 8)))
    pq.write_table(pa.Table.from_arrays([x, y, y], names=["x", "y", "y"]), tmp_path / "dup.parquet")
    done = runner.invoke(app, ["fit", str(tmp_path / "dup.parquet"), "-m", "a*exp(-b*x)", "--starts", "1"])
    assert done.exit_code == 2 and "column 'y' appears more than once" in done.stderr
    assert done.stderr.startswith("nlfit: error: ") and len(done.stderr.strip().splitlines()) == 1


def test_numeric_columns_are_taken_from_arrow_as_pandas_reads_them(tmp_path):
    """Without a group column, float and integer columns skip pandas: the same numbers as
    pandas' conversion, in one float64 array each that starts on 64 bytes (JAX then takes it
    without a copy), also across row groups (several arrow chunks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nlfit.io import read

    x = np.linspace(-1.0, 1.0, 1000)
    table = pa.table({"x": x, "y32": (x * 3).astype(np.float32), "k": np.arange(1000, dtype=np.int32), "u": np.arange(1000, dtype=np.uint16)})
    path = tmp_path / "d.parquet"
    pq.write_table(table, path, row_group_size=300)  # four chunks a column
    expected = pd.read_parquet(path)
    for y_column in ("y32", "k", "u"):
        dataset = read_dataset(str(path), x_columns=["x"], y_column=y_column)
        np.testing.assert_array_equal(dataset.x, expected["x"].to_numpy(np.float64))
        np.testing.assert_array_equal(dataset.y, expected[y_column].to_numpy(np.float64))
        assert dataset.y.dtype == np.float64 and dataset.x.dtype == np.float64
        assert dataset.x.ctypes.data % 64 == 0 and dataset.y.ctypes.data % 64 == 0
    whole = pa.table({"x": x})
    assert not read._Columns.numeric(pa.table({"x": pa.array([1.0, None])}), ["x"])  # a missing cell: the pandas way
    assert not read._Columns.numeric(pa.table({"x": [True, False]}), ["x"])
    assert read._Columns.numeric(whole, ["x"])


def test_a_missing_cell_without_groups_is_a_dropped_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x": [0.0, 1.0, 2.0, 3.0, 4.0], "y": [1.0, None, 3.0, 4.0, float("nan")]}), path)
    dataset = read_dataset(str(path))
    assert dataset.dropped == 2
    np.testing.assert_array_equal(dataset.x, [0.0, 2.0, 3.0])


def test_a_numeric_parquet_fit_does_not_import_pandas(tmp_path):
    """Importing pandas is 0.2-0.3 s of a fresh process: a fit of numeric columns needs none."""
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.linspace(-1.0, 1.0, 200)
    pq.write_table(pa.table({"x": x, "y": 1.0 / (1.0 + 10.0 * x * x)}), tmp_path / "d.parquet")
    code = (
        "import sys; from nlfit import fit; from nlfit.io.read import read_dataset; "
        f"r = fit(read_dataset({str(tmp_path / 'd.parquet')!r}), 'rational', p0=[1, 0, 10]); "
        "print(r.success, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"], out.stderr


def test_a_non_finite_number_in_numeric_columns_is_the_usual_one_line_error(tmp_path, monkeypatch):
    """Columns taken from arrow (no pandas) name a non-finite cell as the pandas way does:
    Parquet, and a CSV file read by pyarrow; a column whose sum overflows is read without a
    warning (the suite turns RuntimeWarnings into errors)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nlfit.io import read

    pq.write_table(pa.table({"x": [0.0, 1.0, 2.0], "y": [1.0, float("-inf"), 3.0]}), tmp_path / "inf.parquet")
    (tmp_path / "inf.csv").write_text("x,y\n0,1\n1,2\n2,inf\n")
    monkeypatch.setattr(read, "ARROW_BYTES", 0)  # the CSV by pyarrow, as a large one
    for name, row, cell in (("inf.parquet", 2, "-inf"), ("inf.csv", 3, "inf")):
        with pytest.raises(InputError) as caught:
            read_dataset(str(tmp_path / name))
        assert f"row {row}" in str(caught.value) and f"column 'y' is not a finite number: '{cell}'" in str(caught.value)
    done = runner.invoke(app, ["fit", str(tmp_path / "inf.parquet"), "-m", "rational", "-q"])
    assert done.exit_code == 2 and "is not a finite number: '-inf'" in done.stderr and "internal error" not in done.stderr
    x = np.linspace(0.0, 1.0, 40)
    pq.write_table(pa.table({"x": x, "y": 1e307 * (1.0 + x)}), tmp_path / "huge.parquet")
    np.testing.assert_array_equal(read_dataset(str(tmp_path / "huge.parquet")).y, 1e307 * (1.0 + x))
