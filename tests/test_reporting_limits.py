"""Reporting at the limits: results that are not finite, outputs too big to hold, and a
stdout that cannot show a character.

1. A fit that ends non-finite (a model undefined at every parameter value, data at the ends
   of the double range) is still reported and written, in every format, with the fit's exit
   code (1), never nlfit's internal error (70). A saved result that holds NaN or Infinity is
   one line naming the key (exit 2).
2. Grouped fits and ``generate`` write their rows as they are produced: peak memory stays
   flat in the number of rows.
3. An encoding error on stdout says which encoding cannot show the result.

Commands run in-process (``nlfit.cli.app.run``, which maps a bug to exit 70 as the real
command does) where the streams do not matter, as real processes where they do.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from nlfit.cli.app import run

ENV = {**os.environ, "NLFIT_WORKER": "off"}


def cli(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``nlfit ARGS`` run in this process."""
    monkeypatch.setattr(sys, "argv", ["nlfit", *map(str, args)])
    code = run()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_parsed(output_format: str, text: str) -> None:
    """stdout holds a whole result in ``output_format``."""
    if output_format == "json":
        payload = json.loads(text)
        rows = payload if isinstance(payload, list) else [payload]
        assert all(not row["success"] for row in rows)
    elif output_format == "ndjson":
        rows = [json.loads(line) for line in text.splitlines()]
        assert rows and any(not row["success"] for row in rows)
    elif output_format == "csv":
        rows = list(csv.reader(io.StringIO(text)))
        assert len(rows) >= 2 and len({len(row) for row in rows}) == 1, text
    else:
        assert "parameters" in text


# 1. Non-finite results ------------------------------------------------------------------

LINE = "x,y\n1,1\n2,2\n3,3\n"
SUBNORMAL = "x,y\n1,1e-310\n2,2e-310\n3,3.5e-310\n4,4e-310\n"
HUGE_X = "x,y\n1e300,1\n2e300,2\n3e300,3.5\n1.7e308,4\n"

NONFINITE_FITS = {
    "sqrt of a negative": (LINE, ["-m", "sqrt(-a*a-1)*x"]),
    "log of a negative": (LINE, ["-m", "log(a-10)*x", "--starts", "1"]),
    "subnormal y": (SUBNORMAL, ["-m", "a*x+b"]),
    "x near 1e300": (HUGE_X, ["-m", "a*x+b"]),
}


@pytest.mark.parametrize("output_format", ["json", "csv", "table"])
@pytest.mark.parametrize("case", list(NONFINITE_FITS))
def test_a_fit_that_ends_non_finite_is_written_with_the_fits_exit_code(case, output_format, tmp_path, capsys, monkeypatch):
    text, options = NONFINITE_FITS[case]
    data = tmp_path / "data.csv"
    data.write_text(text)
    code, out, err = cli(capsys, monkeypatch, "fit", data, *options, "-f", output_format)
    assert code == 1, err
    assert "internal error" not in err and "Traceback" not in err
    assert_parsed(output_format, out)


def test_the_json_of_a_fit_on_subnormal_data_is_written(tmp_path, capsys, monkeypatch):
    """The issue's command: no report (-q), so only the JSON writer meets the non-finite
    numbers (the residual scale of subnormal data overflowed f_scale)."""
    data = tmp_path / "data.csv"
    data.write_text(SUBNORMAL)
    code, out, err = cli(capsys, monkeypatch, "fit", data, "-m", "a*x+b", "-f", "json", "-q")
    assert code == 1 and "internal error" not in err, err
    payload = json.loads(out)
    assert payload["success"] is False and payload["f_scale"] == 1.0


@pytest.mark.parametrize("output_format", ["json", "csv"])
def test_grouped_rows_with_a_non_finite_group_are_all_written(output_format, tmp_path, capsys, monkeypatch):
    data = tmp_path / "groups.csv"
    data.write_text("g,x,y\nA,1,1\nA,2,2\nA,3,3.5\nB,1,1e-310\nB,2,2e-310\nB,3,3e-310\nC,1e300,1\nC,2e300,2\nC,1.7e308,3\n")
    code, out, err = cli(capsys, monkeypatch, "fit", data, "--group-by", "g", "-m", "a*x+b", "-f", output_format)
    assert code == 1, err
    assert "internal error" not in err and "Warning" not in err  # nor a Python RuntimeWarning
    assert_parsed("ndjson" if output_format == "json" else "csv", out)
    assert len(out.splitlines()) == 3 + (output_format == "csv")


@pytest.fixture
def saved(tmp_path, capsys, monkeypatch):
    """A good fit saved as JSON (its text) and where it lies."""
    data = tmp_path / "lin.csv"
    data.write_text("x,y\n1,2.1\n2,3.9\n3,6.2\n4,7.9\n")
    code, out, err = cli(capsys, monkeypatch, "fit", data, "-m", "a*x+b", "-f", "json", "-q")
    assert code == 0, err
    return out


@pytest.mark.parametrize(
    "literal, key",
    [("NaN", "params.a.value"), ("-Infinity", "params.b.value"), ("1e999", "params.a.value"), ("Infinity", "covariance[0][1]")],
)
def test_refit_of_a_saved_result_with_a_non_finite_number_is_one_line_naming_the_key(literal, key, saved, tmp_path, capsys, monkeypatch):
    """JSON has no NaN or Infinity (nlfit writes null); Python's reader accepts them, and
    reads 1e999 as infinity. (predict's schema check refused them already; both now share
    the reader's check.)"""
    payload = json.loads(saved)
    if key.startswith("covariance"):
        payload["covariance"][0][1] = "MARK"
    else:
        payload["params"][key.split(".")[1]]["value"] = "MARK"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(payload, indent=2).replace('"MARK"', literal))
    code, out, err = cli(capsys, monkeypatch, "refit", path)
    lines = err.splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("nlfit: error: ") and f"'{key}'" in lines[0], err


def test_json_never_holds_nan_or_infinity():
    from nlfit.io.write import json_text, ndjson_text

    payload = {"f_scale": float("inf"), "stats": {"rss": float("nan")}, "rows": [1.5, float("-inf")], "n": 3}
    assert json.loads(json_text(payload)) == {"f_scale": None, "stats": {"rss": None}, "rows": [1.5, None], "n": 3}
    assert json.loads(ndjson_text([payload, {"a": 1.0}])[: -len('{"a": 1.0}\n')]) == json.loads(json_text(payload))


# 2. Memory flat in the size of the output -------------------------------------------------

PEAK = """
import os, resource, sys
if sys.argv[1] != "0":  # smaller blocks: many of them in a test of seconds
    import nlfit.prepare
    assert hasattr(nlfit.prepare, "BLOCK_GROUPS"), "nlfit.prepare.BLOCK_GROUPS is gone: set the new name here"
    nlfit.prepare.BLOCK_GROUPS = int(sys.argv[1])
sys.argv = ["nlfit", *sys.argv[2:]]
from nlfit.cli.main import execute
code = execute()  # the command as main() runs it with no worker, without main()'s os._exit
os.write(2, b"\\npeak %d\\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def peak_kib(*args, block_groups: int = 0) -> int:
    """The peak resident memory (KiB) of ``nlfit ARGS`` run as its own process; it must succeed.
    Without the compile cache, every run compiles what it runs (the same work at every size).
    ``block_groups``: at most this many groups a block (``nlfit.prepare.BLOCK_GROUPS``)."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(block_groups), *map(str, args)], capture_output=True, text=True, env={**ENV, "NLFIT_NO_CACHE": "1"}, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return int(done.stderr.rsplit("peak ", 1)[1])


def test_generate_writes_in_pieces_with_flat_memory(tmp_path):
    """8x the rows: the numbers of the larger table alone (2e6 rows x 2 columns) are 32 MB."""
    small = peak_kib("generate", "runge", "--n", "250000", "--seed", "1", "-o", tmp_path / "small.csv")
    big = peak_kib("generate", "runge", "--n", "2000000", "--seed", "1", "-o", tmp_path / "big.csv")
    assert big - small < 12 * 1024, (small, big)
    with open(tmp_path / "big.csv") as handle:
        assert sum(1 for _ in handle) == 2_000_001


def test_grouped_fits_are_written_as_they_are_solved_with_flat_memory(tmp_path):
    """8x the one-point groups, in blocks of 2,000 (the memory of a block's results does not
    grow with the number of groups): a full row per group held until the end took over 4 kB each."""
    peaks = {}
    for groups in (2_000, 16_000):
        data = tmp_path / f"groups{groups}.csv"
        data.write_text("g,x,y\n" + "".join(f"{i},{1 + i % 7},{2.0 * (1 + i % 7) + 0.01 * (i % 3)}\n" for i in range(groups)))
        out = tmp_path / f"rows{groups}.csv"
        peaks[groups] = peak_kib("fit", data, "--group-by", "g", "-m", "a*x", "-f", "csv", "-q", "-o", out, block_groups=2_000)
        lines = out.read_text().splitlines()
        assert len(lines) == groups + 1 and [line.split(",")[0] for line in lines[1:4]] == ["0", "1", "2"]
    assert peaks[16_000] - peaks[2_000] < 30 * 1024, peaks


# 3. Encodings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, character",
    [(["-m", "a*x+b", "-f", "table"], "U+2503"), (["-m", "μ*x+b", "-f", "csv"], "U+03BC")],
)
def test_a_character_stdout_cannot_encode_is_named_not_called_a_closed_stdout(args, character, tmp_path, capsys, monkeypatch):
    """PYTHONIOENCODING=ascii: the table's rules, or a parameter's name, cannot be written."""
    data = tmp_path / "lin.csv"
    data.write_text("x,y\n1,2.1\n2,3.9\n3,6.2\n4,7.9\n")
    monkeypatch.setattr(sys, "argv", ["nlfit", "fit", str(data), *args, "-q"])
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    code = run()
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("nlfit: error: ") and "(ascii)" in lines[0] and character in lines[0] and "PYTHONIOENCODING=utf-8" in lines[0]
