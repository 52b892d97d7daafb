"""Big CSV files are read by pyarrow where it reads the cells as pandas does, else by pandas."""

from __future__ import annotations

import numpy as np
import pytest

import nlfit.io.read as read
from nlfit.errors import InputError
from nlfit.io.read import read_dataset

pytest.importorskip("pyarrow")


def _both(path, monkeypatch, **columns):
    """The dataset read with pyarrow allowed from 0 bytes, and with pandas only; and whether
    pyarrow read it."""
    used = []
    original = read._Source._arrow_frame

    def spy(self, *args):
        frame = original(self, *args)
        used.append(frame is not None)
        return frame

    monkeypatch.setattr(read._Source, "_arrow_frame", spy)
    monkeypatch.setattr(read, "ARROW_BYTES", 0)
    arrow = read_dataset(str(path), **columns)
    monkeypatch.setattr(read, "ARROW_BYTES", 1 << 62)
    pandas = read_dataset(str(path), **columns)
    return arrow, pandas, all(used) and bool(used)


def _same(a, b):
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.dropped == b.dropped
    if a.groups is None:
        assert b.groups is None
    else:
        assert [str(k) for k in a.groups] == [str(k) for k in b.groups]


def test_plain_file_with_groups_and_missing_values(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    lines = ["id,x,y,note"]
    for i in range(300):
        y = "NA" if i == 17 else ("" if i == 40 else repr(float(rng.normal())))
        lines.append(f"g{i % 7},{rng.uniform(-1, 1)!r},{y},text {i}")
    path = tmp_path / "plain.csv"
    path.write_text("\n".join(lines) + "\n")
    arrow, pandas, by_arrow = _both(path, monkeypatch, x_columns=["x"], y_column="y", group_column="id")
    assert by_arrow
    _same(arrow, pandas)
    assert arrow.dropped == 2


@pytest.mark.parametrize(
    "text",
    [
        "x, y\n1, 2\n3, 4\n5, 6\n",  # blanks after the delimiter: pandas skips them
        'x,y\n1,"2"\n3,4\n5,6\n',  # a quoted number
        "x y\n1 2\n3 4\n5 6\n",  # whitespace-separated
        "id,x,y\n a,1,2\n b,3,4\n a,5,6\n",  # a blank before a group key
        "id,x,y\na,1,2\nb,3,nan\na,5,6\nb,7,8\n",  # 'nan' text: its group's non-finite value, not a dropped row
    ],
)
def test_odd_files_read_the_same_either_way(text, tmp_path, monkeypatch):
    path = tmp_path / "odd.csv"
    path.write_text(text)
    group = "id" if text.startswith("id") else None
    arrow, pandas, by_arrow = _both(path, monkeypatch, group_column=group)
    _same(arrow, pandas)
    if group or "," not in text:
        assert not by_arrow  # pyarrow would keep the blank in ' a' (pandas skips it) / cannot split on blanks


@pytest.mark.parametrize("text", ["x,y\n1,2\n3,oops\n5,6\n", "x,y\n1,2\n3,4,5\n5,6\n", "x,y\n1,2\n3,nan\n5,6\n"])
def test_errors_are_pandas_own(text, tmp_path, monkeypatch):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    monkeypatch.setattr(read, "ARROW_BYTES", 0)
    with pytest.raises(InputError) as fast:
        read_dataset(str(path))
    monkeypatch.setattr(read, "ARROW_BYTES", 1 << 62)
    with pytest.raises(InputError) as slow:
        read_dataset(str(path))
    assert str(fast.value) == str(slow.value)


def test_the_sha256_taken_beside_the_parse_is_that_of_the_bytes(tmp_path, monkeypatch):
    """The provenance's hash is computed in a thread while pyarrow parses (``read_dataset``);
    it is the sha256 of the file's bytes, as when taken before the parse (``nlfit refit``)."""
    import hashlib
    import threading

    path = tmp_path / "data.csv"
    x = np.linspace(0.0, 1.0, 5000)
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), np.sin(x).tolist(), strict=True)))
    where = []
    original = read.input_record

    def spy(name, raw):
        where.append(threading.current_thread().name)
        return original(name, raw)

    monkeypatch.setattr(read, "input_record", spy)
    monkeypatch.setattr(read, "ARROW_BYTES", 0)
    data = read_dataset(str(path))
    assert where == ["nlfit-hash_0"]
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.inputs[0]["sha256"] == expected and data.inputs[0]["size"] == path.stat().st_size
    again = read_dataset(str(path), expected=[dict(data.inputs[0])])  # refit: hashed first, in this thread
    assert again.inputs == data.inputs and where[-1] == threading.main_thread().name
    np.testing.assert_array_equal(again.x, data.x)


def _direct_and_usual(path, monkeypatch, **columns):
    """The dataset read from the file itself (``_read_direct``, allowed from 0 bytes, looking
    at its first 4 KB), and read the usual way; and whether the direct read applied."""
    applied = []
    original = read._read_direct

    def spy(*args):
        result = original(*args)
        applied.append(result is not None)
        return result

    monkeypatch.setattr(read, "_read_direct", spy)
    monkeypatch.setattr(read, "ARROW_BYTES", 0)
    monkeypatch.setattr(read, "_DIRECT_HEAD", 4096)
    monkeypatch.setattr(read, "DIRECT_BYTES", 0)
    direct = read_dataset(str(path), **columns)
    monkeypatch.setattr(read, "DIRECT_BYTES", 1 << 62)
    usual = read_dataset(str(path), **columns)
    return direct, usual, applied[0]


def _rows(count=600, sep=",", deep=None, at=450):
    rng = np.random.default_rng(1)
    lines = [sep.join(["id", "x", "y", "s"])]
    for i in range(count):
        y = "NA" if i == 17 else ("" if i == 40 else repr(float(rng.normal())))
        lines.append(sep.join([f"g{i % 7}", repr(float(rng.uniform(-1, 1))), y, repr(float(rng.uniform(1, 2)))]))
        if deep is not None and i == at:  # far past the first 4 KB
            lines.append(deep)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_a_large_plain_file_is_read_from_the_file_itself_as_the_usual_way(tmp_path, monkeypatch, sep):
    import hashlib

    path = tmp_path / "plain.csv"
    path.write_text(_rows(sep=sep))
    direct, usual, applied = _direct_and_usual(path, monkeypatch, x_columns=["x"], y_column="y", group_column="id", sigma_column="s")
    assert applied
    _same(direct, usual)
    np.testing.assert_array_equal(direct.sigma, usual.sigma)
    assert direct.dropped == 2 and direct.dropped_by_group == usual.dropped_by_group and direct.files == usual.files
    assert direct.inputs == usual.inputs and direct.inputs[0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "deep, content",
    [
        ("#c,0.5,0.5,1.0", "text"),  # a comment line: blanked the usual way, a row of group '#c' to pyarrow
        (None, "crlf"),  # Windows line ends after the first 4 KB only
    ],
)
def test_what_the_usual_way_changes_past_the_head_makes_the_direct_read_decline(tmp_path, monkeypatch, deep, content):
    path = tmp_path / "odd.csv"
    text = _rows(deep=deep)
    if content == "crlf":
        head, tail = text[:6000], text[6000:]
        path.write_bytes(head.encode() + tail.replace("\n", "\r\n").encode())
    else:
        path.write_bytes(text.encode("utf-8"))
    direct, usual, applied = _direct_and_usual(path, monkeypatch, x_columns=["x"], y_column="y", group_column="id")
    assert not applied
    _same(direct, usual)
    assert "#c" not in {str(k) for k in direct.groups}


def test_utf8_text_past_the_head_is_read_directly_as_the_usual_way(tmp_path, monkeypatch):
    path = tmp_path / "utf8.csv"
    path.write_bytes(_rows(deep="gé,0.5,0.5,1.0").encode("utf-8"))  # a non-ASCII key after the first 4 KB
    direct, usual, applied = _direct_and_usual(path, monkeypatch, x_columns=["x"], y_column="y", group_column="id")
    assert applied and "gé" in set(direct.groups)
    _same(direct, usual)
    assert direct.inputs == usual.inputs


@pytest.mark.parametrize("name, ending", [("plain.dat", ""), ("plain.csv", "g1,0.5,0.5,PAR1")])
def test_files_the_usual_way_judges_by_more_than_their_head_are_not_read_directly(tmp_path, monkeypatch, name, ending):
    """A .dat file may be NIST's (its sections can come late); a file ending in Parquet's magic
    may be a damaged Parquet file: the usual way looks at the whole file."""
    path = tmp_path / name
    path.write_text(_rows() + ending)
    direct, usual, applied = _direct_and_usual(path, monkeypatch, x_columns=["x"], y_column="y")
    assert not applied
    _same(direct, usual)


@pytest.mark.parametrize(
    "deep, message",
    [
        ("g1,0.5,oops,1.0", r"row 452 \(line 453\), column 'y' is not a number"),
        ("g1,0.5,0.5,-1.0", r"row 452 \(line 453\), column 's' is -1: sigma must be positive"),
        ("g1,0.5,\xff,1.0", r"not UTF-8 text: byte 0xff on line 453"),
    ],
)
def test_an_error_past_the_head_names_its_line_as_the_usual_way(tmp_path, monkeypatch, deep, message):
    path = tmp_path / "bad.csv"
    text = _rows().splitlines(keepends=True)
    path.write_bytes("".join(text[:452]).encode() + deep.encode("latin-1") + b"\n" + "".join(text[452:]).encode())
    monkeypatch.setattr(read, "ARROW_BYTES", 0)
    monkeypatch.setattr(read, "_DIRECT_HEAD", 4096)
    errors = []
    for limit in (0, 1 << 62):  # the direct read (declining), then the usual way alone
        monkeypatch.setattr(read, "DIRECT_BYTES", limit)
        with pytest.raises(InputError, match=message) as caught:
            read_dataset(str(path), x_columns=["x"], y_column="y", group_column="id", sigma_column="s")
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
