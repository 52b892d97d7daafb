"""Reading within bounds, and the inputs people have: a stream (stdin, a pipe, a device) is
read up to a limit, refit reads no more than the recorded size, running out of memory is one
line naming the input; compressed CSV is read; a damaged Parquet file, an odd number cell, a
huge cell or header and a Parquet column of binary or nested values are one line each."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nlfit.cli.app import app
from nlfit.errors import InputError
from nlfit.io.read import read_dataset

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
