"""Reading within bounds, and the inputs people have: a stream (stdin, a pipe, a device) is
read up to a limit, refit reads no more than the recorded size, running out of memory is one
line naming the input; compressed CSV is read; a damaged Parquet file, an odd number cell, a
huge cell or header and a Parquet column of binary or nested values are one line each."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from nlfit.cli.app import app
from nlfit.errors import InputError, OptionError
from nlfit.io.read import read_dataset, read_header, read_part

runner = CliRunner()
CSV = "x,y\n" + "".join(f"{x},{2.0 * x + 1.0 + 0.01 * (-1) ** x}\n" for x in range(20))
MEMORY = 1 << 30  # RLIMIT_AS of the subprocesses below: pandas and nlfit's CLI start well within it
READ = "import sys; from nlfit.io.read import read_dataset; read_dataset(sys.argv[1])"
CLI = "import runpy, sys; sys.argv[0] = 'nlfit'; runpy.run_module('nlfit', run_name='__main__')"


def _run(code: str, *args: str, **env: str):
    """Python ``code`` with ``args`` in a fresh process whose address space is bounded (set
    there, not by a fork of this one), so that reading without end stops in seconds with a
    MemoryError wherever nlfit does not bound it itself."""
    bounded = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({MEMORY}, {MEMORY})); {code}"
    return subprocess.run([sys.executable, "-c", bounded, *args], capture_output=True, text=True, timeout=120, env={**os.environ, "NLFIT_WORKER": "off", **env})


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nlfit: error: "), stderr[-2000:]
    return lines[0]


# --- A: bounded reading -------------------------------------------------------------------


def test_a_stream_is_read_up_to_the_limit_and_named_beyond_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NLFIT_MAX_STREAM_BYTES", str(len(CSV)))
    (tmp_path / "d.csv").write_text(CSV + "20,41\n")
    with open(tmp_path / "d.csv", "rb") as redirected:  # stdin from a regular file (< d.csv) is that file: read whole
        assert read_dataset("-", stdin=redirected).n_points == 21
    assert read_dataset("-", stdin=io.BytesIO(CSV.encode())).n_points == 20  # exactly the limit: read
    with pytest.raises(InputError, match=rf"^stdin is a stream .* of more than {len(CSV)} bytes.*NLFIT_MAX_STREAM_BYTES"):
        read_dataset("-", stdin=io.BytesIO(CSV.encode() + b"20,41\n"))
    done = runner.invoke(app, ["fit", "-", "-m", "polynomial:1", "-q"], input=CSV + "20,41\n")
    assert done.exit_code == 2 and "stdin is a stream" in _one_error_line(done.stderr)
    monkeypatch.setenv("NLFIT_MAX_STREAM_BYTES", "lots")
    with pytest.raises(OptionError, match="NLFIT_MAX_STREAM_BYTES must be a whole number of bytes"):
        read_dataset("-", stdin=io.BytesIO(CSV.encode()))


def test_dev_zero_is_one_line_not_the_end_of_the_memory():
    done = _run(READ, "/dev/zero", NLFIT_MAX_STREAM_BYTES="100000")
    assert "InputError: /dev/zero is a stream (a pipe or a device) of more than 100000 bytes" in done.stderr, done.stderr[-800:]
    done = _run(CLI, "fit", "/dev/zero", "-m", "polynomial:1", NLFIT_MAX_STREAM_BYTES="100000")
    assert done.returncode == 2 and "/dev/zero is a stream" in _one_error_line(done.stderr)


def test_refit_reads_no_more_than_the_recorded_size(tmp_path):
    (tmp_path / "d.csv").write_text(CSV)
    saved = runner.invoke(app, ["fit", str(tmp_path / "d.csv"), "-m", "polynomial:1", "-q", "-f", "json"])
    assert saved.exit_code == 0, saved.stderr
    payload = json.loads(saved.stdout)
    [record] = payload["provenance"]["inputs"]
    record["path"] = record["absolute"] = "/dev/zero"  # an endless input named by a result
    (tmp_path / "zero.json").write_text(json.dumps(payload))
    done = _run(CLI, "refit", str(tmp_path / "zero.json"))
    line = _one_error_line(done.stderr)
    assert done.returncode == 2 and f"/dev/zero changed since the fit: it is longer than the {len(CSV)} bytes fitted" in line
    (tmp_path / "fit.json").write_text(saved.stdout)
    (tmp_path / "d.csv").write_text(CSV + "20,41\n")  # a file that grew: not hashed whole
    done = runner.invoke(app, ["refit", str(tmp_path / "fit.json")])
    assert done.exit_code == 2 and f"changed since the fit: it is longer than the {len(CSV)} bytes fitted" in _one_error_line(done.stderr)


def test_running_out_of_memory_is_one_line_naming_the_input_and_its_size(tmp_path):
    big = tmp_path / "big.csv"
    with open(big, "wb") as handle:  # sparse: 2 GiB that take no disk, and more than the memory allowed
        handle.truncate(2 << 30)
    done = _run(READ, str(big))
    assert f"InputError: out of memory reading {big} ({2 << 30} bytes)" in done.stderr, done.stderr[-800:]


def test_a_memory_error_while_parsing_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "d.csv").write_text(CSV)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(pd, "read_csv", no_memory)
    done = runner.invoke(app, ["fit", str(tmp_path / "d.csv"), "-m", "polynomial:1"])
    assert done.exit_code == 2
    assert f"out of memory reading {tmp_path / 'd.csv'} ({len(CSV)} bytes)" in _one_error_line(done.stderr)


# --- B: compressed input ------------------------------------------------------------------


def _zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


COMPRESSORS = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress, "zstd": _zstd}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_compressed_csv_reads_as_the_csv_by_its_content(tmp_path, kind):
    packed = COMPRESSORS[kind](CSV.encode())
    path = tmp_path / "data.bin"  # any name: recognized by the first bytes
    path.write_bytes(packed)
    plain = read_dataset("-", stdin=io.BytesIO(CSV.encode()))
    for data in (read_dataset(str(path)), read_dataset("-", stdin=io.BytesIO(packed))):
        np.testing.assert_array_equal(data.x, plain.x)
        np.testing.assert_array_equal(data.y, plain.y)
    [record] = read_dataset(str(path)).inputs
    assert record["size"] == len(packed) and record["sha256"] == hashlib.sha256(packed).hexdigest()  # the file as stored
    grouped = tmp_path / "grouped.bin"  # the Dask engine's reader: a file's header, and its part
    grouped.write_bytes(COMPRESSORS[kind](("g," + CSV.replace("\n", "\nk,")[:-2]).encode()))
    assert read_header(str(grouped), None).names == ["g", "x", "y"]
    part = read_part(str(grouped), ["g", "x", "y"], str(grouped), ["x"], "y", None, "g")
    np.testing.assert_array_equal(part.y, plain.y)


def test_concatenated_members_and_a_compressed_parquet_file(tmp_path):
    half = CSV.index("\n10,")
    path = tmp_path / "two.csv.gz"
    path.write_bytes(gzip.compress(CSV[: half + 1].encode()) + gzip.compress(CSV[half + 1 :].encode()))  # as `cat a.gz b.gz`
    assert read_dataset(str(path)).n_points == 20
    frame = pd.DataFrame({"x": np.arange(5.0), "y": np.arange(5.0) * 3})
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    (tmp_path / "d.parquet.gz").write_bytes(gzip.compress(buffer.getvalue()))
    np.testing.assert_array_equal(read_dataset(str(tmp_path / "d.parquet.gz")).y, frame["y"].to_numpy())


def test_a_decompression_bomb_and_a_damaged_file_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("NLFIT_MAX_STREAM_BYTES", "100000")
    bomb = tmp_path / "bomb.csv.xz"
    bomb.write_bytes(lzma.compress(b"x,y\n" + b"1,2\n" * 1_000_000))  # 4 MB from a few kB
    done = runner.invoke(app, ["fit", str(bomb), "-m", "polynomial:1"])
    assert done.exit_code == 2 and f"{bomb} decompresses (xz) to more than 100000 bytes" in _one_error_line(done.stderr)
    for kind, compress in COMPRESSORS.items():
        cut = tmp_path / f"cut.{kind}"
        cut.write_bytes(compress(CSV.encode())[:-12])
        done = runner.invoke(app, ["fit", str(cut), "-m", "polynomial:1"])
        assert done.exit_code == 2 and f"{cut} is not a readable {kind} file (damaged, or cut short)" in _one_error_line(done.stderr)


def test_zstd_without_zstandard_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "d.csv.zst").write_bytes(_zstd(CSV.encode()))
    monkeypatch.setitem(sys.modules, "zstandard", None)  # import fails as if not installed
    with pytest.raises(InputError, match=r"is zstd-compressed: reading it needs the zstandard package \(pip install 'nlfit\[zstd\]'\)"):
        read_dataset(str(tmp_path / "d.csv.zst"))


# --- C: a damaged Parquet file ------------------------------------------------------------


def test_a_cut_parquet_file_is_named_damaged_not_read_as_text(tmp_path):
    buffer = io.BytesIO()
    pd.DataFrame({"x": np.arange(50.0), "y": np.arange(50.0) * 2}).to_parquet(buffer)
    whole = buffer.getvalue()
    for name, part in (("head.parquet", whole[:300]), ("tail.parquet", whole[-300:])):  # PAR1 at one end only
        (tmp_path / name).write_bytes(part)
        done = runner.invoke(app, ["fit", str(tmp_path / name), "-m", "polynomial:1"])
        assert done.exit_code == 2
        assert f"{tmp_path / name} is not a readable Parquet file (damaged, or cut short)" in _one_error_line(done.stderr)
        with pytest.raises(InputError, match="not a readable Parquet file"):
            read_header(str(tmp_path / name))
    (tmp_path / "par.csv").write_text("PAR1,PAR2\n1,2\n2,4\n3,6.5\n")  # a text whose first column is named PAR1 is CSV
    assert read_dataset(str(tmp_path / "par.csv")).x_names == ("PAR1",)


# --- D: what is wrong with a cell, in a few words -----------------------------------------


@pytest.mark.parametrize(
    "cell, why",
    [
        ("1_000", "digit-group separators are not accepted"),
        ("1 000", "digit-group separators are not accepted"),
        ("１", "a non-ASCII digit, '１' FULLWIDTH DIGIT ONE"),
        ("\u22123", "a non-ASCII character, '\u2212' MINUS SIGN"),
    ],
)
def test_a_number_written_otherwise_says_what_is_wrong(cell, why):
    with pytest.raises(InputError) as error:
        read_dataset("-", stdin=io.StringIO(f"x,y\n1,2\n{cell},4\n3,6\n"))
    assert str(error.value).startswith("stdin: row 2 (line 3), column 'x' is not a number: ") and why in str(error.value)


def test_a_huge_cell_or_header_is_quoted_as_an_excerpt(tmp_path):
    cell = "7" * 1_000_000 + "z"
    (tmp_path / "cell.csv").write_text(f"x,y\n1,2\n{cell},3\n3,4\n")
    done = runner.invoke(app, ["fit", str(tmp_path / "cell.csv"), "-m", "polynomial:1"])
    line = _one_error_line(done.stderr)
    assert done.exit_code == 2 and len(line) < 300 and "(1000001 characters)" in line
    header = "Y" * 100_000
    (tmp_path / "head.csv").write_text(f"x,{header}\n1,2\n2,oops\n3,4\n")
    for args in (["--y", "2"], ["--y", "nosuch"]):
        done = runner.invoke(app, ["fit", str(tmp_path / "head.csv"), "-m", "polynomial:1", *args])
        line = _one_error_line(done.stderr)
        assert done.exit_code == 2 and len(line) < 300 and "(100000 characters)" in line


# --- E: Parquet columns of other types ----------------------------------------------------


def test_parquet_column_types_give_a_clean_line_or_a_valid_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    refused = {
        "binary": pa.array([b"\xff", b"a", b"b", b"c"], pa.binary()),
        "large_binary": pa.array([b"\xff", b"a", b"b", b"c"], pa.large_binary()),
        "fixed_binary": pa.array([b"\xff\x00", b"ab", b"bc", b"cd"], pa.binary(2)),
        "dictionary_binary": pa.array([b"\xff", b"a", b"\xff", b"a"], pa.binary()).dictionary_encode(),
        "list": pa.array([[1.0], [2.0], [3.0], [4.0]]),
        "struct": pa.array([{"a": 1.0}] * 4),
        "map": pa.array([[("a", 1.0)]] * 4, pa.map_(pa.string(), pa.float64())),
    }
    read = {
        "dictionary_text": pa.array(["1", "2", "3", "4"]).dictionary_encode(),
        "dictionary_float": pa.array([1.0, 2.0, 3.0, 4.0]).dictionary_encode(),
        "decimal": pa.array([1, 2, 3, 4], pa.decimal128(5, 2)),
        "float32": pa.array([1.0, 2.0, 3.0, 4.0], pa.float32()),
    }
    path = tmp_path / "types.parquet"
    pq.write_table(pa.table({**refused, **read, "y": [1.0, 2.0, 3.5, 4.0], "u": [1.0, 2.0, 3.0, 4.0]}), path)
    for name in refused:
        kind = "binary data" if "binary" in name else "several values per cell"
        for options in ({"x_columns": [name]}, {"x_columns": ["u"], "group_column": name}):
            with pytest.raises(InputError, match=rf"^{path}: column '{name}' holds .*{kind}"):
                read_dataset(str(path), y_column="y", **options)
        with pytest.raises(InputError, match=rf"column '{name}' holds .*{kind}"):  # as a Dask worker reads it
            read_part(str(path), list(pq.read_schema(path).names), str(path), ["u"], "y", None, name)
    for name in read:
        np.testing.assert_array_equal(read_dataset(str(path), x_columns=[name], y_column="y").x, [1.0, 2.0, 3.0, 4.0])
        assert list(read_dataset(str(path), x_columns=["u"], y_column="y", group_column=name).groups)[0] in ("1", "1.0", "1.00")
    done = runner.invoke(app, ["fit", str(path), "--x", "binary", "-m", "polynomial:1"])
    assert done.exit_code == 2 and "column 'binary' holds binary data" in _one_error_line(done.stderr)
