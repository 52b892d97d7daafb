"""Data files (paths, ``-`` for stdin, NIST StRD ``.dat`` files, Parquet) -> :class:`Dataset`.

What is read, and how (the README's "Data input" says the same for users):

* DATA is a literal path: ``run[1].csv`` is that file. Several files are several
  arguments and are concatenated; they must have the same columns. With ``glob=True``
  (``--glob``) each DATA is a pattern that nlfit expands (sorted). ``-`` is stdin, once.
* Every input is read once, as bytes (so FIFOs, ``<(cmd)`` and ``/dev/stdin`` work), and
  decoded as UTF-8 (a BOM is dropped; UTF-16 with a BOM is decoded too). Bytes that are not
  UTF-8 are an error naming the line: nothing is replaced silently.
* A regular file (stdin too, when redirected from one) is read whole; a stream (a pipe,
  a FIFO, a device) is read up to ``MAX_STREAM_BYTES`` (2 GiB; the environment's
  ``NLFIT_MAX_STREAM_BYTES`` sets another), and more is an error naming it. ``refit``
  reads each input up to its recorded size + 1 byte. Running out of memory while reading
  or parsing is an error naming the input and its size (exit 2), not an internal error.
* A gzip, bzip2, xz or zstd input (recognized by its first bytes, whatever its name; stdin
  too; zstd needs ``nlfit[zstd]``) is decompressed first, up to the same limit; a result's
  provenance hashes the bytes as stored.
* The delimiter is detected from the first records (``--sep`` forces one): tab, semicolon
  or comma when it splits every sampled line into the same number of fields (in that order
  of preference), else runs of spaces and tabs when they do, else the delimiter most used on
  the first line.
* Lines whose first non-blank character is ``#`` are comments, wherever they are; blank
  lines are skipped. A ``#`` after data on a line is not a comment (it is part of the cell).
* A first row made only of numbers is data, not a header: the columns are then called
  ``x`` and ``y`` when there are two, else ``V1`` ... ``Vk`` (R's ``read.table`` names).
* Columns are chosen by name, or by 1-based number (``--x 1``) when no column has that
  name. By default the columns called ``x`` and ``y`` are used, else the first and second.
* A missing cell (empty, or ``NA``, ``N/A``, ``n/a``, ``NULL``, ``null``, ``None``) in a used
  column drops its row (``missing="drop"``, counted in ``Dataset.dropped``) or is an error
  (``missing="error"``). Text that is not a number is always an error; ``nan`` and ``inf``
  are numbers that are not finite: an error, except with a group column, where they fail
  only their own group.
* A Parquet file (recognized by its content, whatever its name; stdin too) is read with
  pyarrow (``nlfit[parquet]``), only the used columns; it can be concatenated with other
  Parquet or CSV files that have the same columns. The same column, missing-value and
  number rules apply (a null is a missing cell). A file with PAR1 at one end only that is
  not text is a damaged Parquet file; a used column of binary or nested values is an error.
* Every error that names a data row gives its row (1-based, among the data rows of its
  file) and its physical line in the file (1-based, counting the header, comments and
  blank lines); file content quoted in a message is shown with control characters escaped,
  a cell or a header as at most ``errors.EXCERPT_CHARS`` characters and its length.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import io
import itertools
import os
import re
import stat
import sys
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nlfit.errors import InputError, OptionError, excerpt, printable
from nlfit.io.dataset import Dataset, remember_group_codes
from nlfit.numerics import aligned_full

# Cells that mean "no value". 'nan' and 'inf' are numbers (a program's NaN), not missing.
NA_TEXT = ["", "NA", "N/A", "n/a", "NULL", "null", "None"]
_NA_SET = frozenset(NA_TEXT)
WHITESPACE = "whitespace"  # runs of spaces and tabs, as in gnuplot's data files
_SEP_NAMES = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "space": WHITESPACE, "whitespace": WHITESPACE, " ": WHITESPACE}
_WIDE = 1000  # columns from which only the used ones are converted
ARROW_BYTES = 8 << 20  # a file from this size on is read by pyarrow when it can (``_Source._arrow_frame``)
DIRECT_BYTES = 64 << 20  # a plain CSV file from this size on is parsed from the file itself (``_read_direct``)
_DIRECT_HEAD = 1 << 20  # the bytes a direct read looks at first (header, delimiter, encoding)
_SCAN_CHUNK = 16 << 20
# The most bytes read from a stream (stdin, a FIFO, a device: /dev/zero never ends) or
# decompressed from one input (a small .gz can expand to terabytes); the environment's
# NLFIT_MAX_STREAM_BYTES sets another. A regular file is read whole, whatever its size.
MAX_STREAM_BYTES = 2 << 30
_SEP_WORDS = {",": "comma", ";": "semicolon", "\t": "tab", WHITESPACE: "whitespace"}
_SAMPLE_RECORDS = 20  # records looked at to detect the delimiter
_SHOWN_COLUMNS = 20  # column names listed in an error message
MISSING_MODES = ("drop", "error")


def read_dataset(
    source: str | os.PathLike | list[str | os.PathLike],
    x_columns: list[str] | None = None,
    y_column: str | None = None,
    sigma_column: str | None = None,
    stdin=None,
    group_column: str | None = None,
    formula: str | None = None,
    *,
    sep: str | None = None,
    missing: str = "drop",
    glob: bool = False,
    expected: list[dict] | None = None,
) -> Dataset:
    """Read ``source`` (a path, ``-`` for stdin, or a list of them: concatenated) and pick
    the columns of the fit. With a ``formula`` (a user formula), every data column it names
    is a predictor (``nlfit.models.expression.choose_columns``). ``sep``: the delimiter
    (``parse_sep``; None detects it); ``missing``: ``drop`` or ``error``; ``glob``: expand
    each source as a pattern. ``stdin``: the stream read for ``-`` (default ``sys.stdin``).
    ``expected``: the input records of a saved result (``input_record``, ``nlfit refit``):
    each input's sha256 must be the saved one, checked on the bytes read, before parsing."""
    from nlfit.models.registry import is_formula

    if missing not in MISSING_MODES:
        raise OptionError(f"--missing must be drop or error; got '{printable(missing)}'")
    separator = parse_sep(sep)
    if not is_formula(formula):
        formula = None
    names = expand_sources(source, glob)
    if len(names) == 1 and not expected:
        direct = _read_direct(names[0], x_columns, y_column, sigma_column, group_column, formula, separator, missing)
        if direct is not None:
            return direct
    # refit reads no more than one byte past each recorded size: enough to see a change
    most = [_most(saved) for saved in expected or ()] + [None] * (len(names) - len(expected or ()))
    raws = [(_label(name), _read_bytes(name, stdin, limit)) for name, limit in zip(names, most, strict=True)]
    if expected:  # checked before anything parses the bytes
        records = tuple(input_record(name, raw) for name, (_, raw) in zip(names, raws, strict=True))
        return _parse(names, raws, records, x_columns, y_column, sigma_column, group_column, formula, separator, missing, expected)
    # else the sha256 of the provenance is taken while the bytes are parsed: hashlib releases
    # the GIL, so a thread hashes beside the parser (0.2 s of a 400 MB file's read)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlfit-hash") as pool:
        hashing = pool.submit(lambda: tuple(input_record(name, raw) for name, (_, raw) in zip(names, raws, strict=True)))
        return _parse(names, raws, hashing, x_columns, y_column, sigma_column, group_column, formula, separator, missing, expected)


def _parse(names, raws, records, x_columns, y_column, sigma_column, group_column, formula, separator, missing, expected) -> Dataset:
    """``read_dataset`` from the bytes read; ``records``: the inputs' records, or a future of
    them (taken when the dataset is made)."""

    from concurrent.futures import Future

    def recorded():
        return records.result() if isinstance(records, Future) else records

    for saved, now in zip(expected or (), recorded() if expected else (), strict=False):  # before anything parses the bytes
        if saved["sha256"] != now["sha256"]:
            if now["size"] == _most(saved):  # read up to the recorded size + 1: it is longer now, its hash unknown
                longer = f"it is longer than the {saved['size']} bytes fitted (sha256 {saved['sha256']})"
                raise InputError(f"{printable(saved['path'])} changed since the fit: {longer}")
            sizes = f"{now['size']} bytes, were {saved.get('size')}"
            raise InputError(f"{printable(saved['path'])} changed since the fit: sha256 {saved['sha256']} when fitted, {now['sha256']} now ({sizes})")
    inputs = []
    for label, raw in raws:  # the stored bytes (hashed above) decompressed, then checked as text
        data = _decompress(raw, label)
        with _memory(label, len(data)):
            inputs.append((label, data if _is_parquet(data) else _prepare(data, label)))
    nist = [i for i, (label, data) in enumerate(inputs) if names[i] != "-" and _is_nist(names[i], data)]
    if nist:
        if len(inputs) > 1:
            raise InputError(f"{printable(inputs[nist[0]][0])} is a NIST StRD file: it is read alone, not with other files")
        dataset = _read_nist(inputs[0][0], inputs[0][1].decode("utf-8", errors="replace"), x_columns, y_column, sigma_column, formula)
        return dataclasses.replace(dataset, inputs=recorded())
    sources = []
    for label, data in inputs:
        with _memory(label, len(data)):
            sources.append(_Parquet.parse(label, data) if _is_parquet(data) else _Source.parse(label, data, separator))
    x_columns, y_column, sigma_column, group_column, used = plan_columns(sources, x_columns, y_column, sigma_column, group_column, formula)
    label = ", ".join(s.label for s in sources)
    frames = []
    for s in sources:  # only the used columns are converted
        with _memory(s.label, len(s.data)):
            frames.append(s.frame(used, group_column))
    with _memory(label, sum(len(s.data) for s in sources)):
        if len(frames) == 1:
            frame = frames[0]
        else:
            import pandas as pd

            frame = pd.concat([f.to_pandas() if isinstance(f, _Columns) else f for f in frames], ignore_index=True)
        locate = _Locator(sources, [len(f) for f in frames])
        # With a group column a non-finite number only fails its own group (status nonfinite).
        dataset = _select(frame, x_columns, y_column, sigma_column, label, None, group_column=group_column, missing=missing, locate=locate)
    return Dataset(**{**dataset.__dict__, "files": tuple(s.label for s in sources), "inputs": recorded()})


class _Fallback(Exception):
    """The direct read does not apply: the file is read the usual way (``_read_direct``)."""


def _read_direct(name, x_columns, y_column, sigma_column, group_column, formula, separator, missing) -> Dataset | None:
    """A large plain CSV file (``DIRECT_BYTES`` or more: uncompressed UTF-8 without a byte
    order mark, no carriage return, no comment line, not a ``.dat`` file) parsed by pyarrow
    from the file itself, as pyarrow's own ``read_csv`` reads it: its bytes are not first
    read into memory (a 400 MB file: 0.23 s and 400 MB less). A thread reads the file beside
    the parse for its sha256 and checks every byte for what the usual path would treat
    otherwise (``_prepare``: a byte that is not UTF-8, a carriage return, a comment line).
    None where any of that, or anything else, does not hold (the pyarrow reader declines, a
    cell is not a number, an error to report with its line number, the file changed
    meanwhile): then ``read_dataset`` reads the file the usual way, and gives the same result
    or the same error as it always did. The file is read, not memory-mapped: a file cut
    short while it is parsed must not end the process (SIGBUS)."""
    if name == "-" or str(name).lower().endswith(".dat"):  # a .dat file may be NIST's: the usual path looks at all of it
        return None
    try:
        info = os.stat(name)
        if not stat.S_ISREG(info.st_mode) or info.st_size < DIRECT_BYTES:
            return None
        with open(name, "rb") as handle:
            head = handle.read(_DIRECT_HEAD)
            handle.seek(-min(len(PARQUET_MAGIC), info.st_size), os.SEEK_END)
            tail = handle.read()
    except OSError:
        return None
    head = head[: head.rfind(b"\n") + 1]
    if _compression(head) or PARQUET_MAGIC in (head[:4], tail) or head.startswith(codecs.BOM_UTF8) or not _plain(head, codecs.getincrementaldecoder("utf-8")()):
        return None
    records, _ = _Source._head(head)
    if len(records) < _SAMPLE_RECORDS or not records[-1][3]:
        return None  # very long records: the usual path looks further
    from concurrent.futures import ThreadPoolExecutor

    label, stop = _label(name), threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="nlfit-hash") as pool:
        scanned = pool.submit(_scan, name, stop)
        try:
            with _memory(label, info.st_size):
                source = _Source.parse(label, head, separator)
                source.path, source.size = name, info.st_size
                x_columns, y_column, sigma_column, group_column, used = plan_columns([source], x_columns, y_column, sigma_column, group_column, formula)
                frame = source.frame(used, group_column)

                def locate(index):
                    raise _Fallback  # an error to report: the usual path names its line

                dataset = _select(frame, x_columns, y_column, sigma_column, label, None, group_column=group_column, missing=missing, locate=locate)
            record, clean = scanned.result()
            after = os.stat(name)
        except (_Fallback, InputError, OSError):
            stop.set()
            return None
        except BaseException:  # a signal: the hash thread stops at its next chunk
            stop.set()
            raise
    fields = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")  # ctime: any write changes it, and no one can set it back
    if not clean or record["size"] != info.st_size or any(getattr(after, f) != getattr(info, f) for f in fields):
        return None  # a byte the usual path treats otherwise, or the file changed while the parse and the hash read it
    return Dataset(**{**dataset.__dict__, "files": (label,), "inputs": (record,)})


def _plain(chunk: bytes, decoder) -> bool:
    """Whether ``chunk`` (the next bytes of a file, through its incremental UTF-8 ``decoder``)
    is text that ``_prepare`` passes through as it is: UTF-8, no carriage return, no comment
    line. A '#' at the start of a chunk counts as a comment line (a false alarm only costs
    the usual read)."""
    if b"\r" in chunk or (b"#" in chunk and _COMMENT_START.search(chunk)):
        return False
    if chunk.isascii():
        return True
    try:
        decoder.decode(chunk)
    except UnicodeDecodeError:
        return False
    return True


def _scan(name: str, stop) -> tuple[dict, bool]:
    """(``input_record`` of the file, whether all of it is ``_plain``), read in chunks
    (hashlib releases the GIL: this runs beside the parse)."""
    import hashlib

    digest, size, clean, decoder = hashlib.sha256(), 0, True, codecs.getincrementaldecoder("utf-8")()
    with open(name, "rb") as handle:
        while not stop.is_set() and (chunk := handle.read(_SCAN_CHUNK)):
            digest.update(chunk)
            size += len(chunk)
            clean = clean and _plain(chunk, decoder)
    if clean:
        try:
            decoder.decode(b"", final=True)  # no character cut off at the end
        except UnicodeDecodeError:
            clean = False
    record = {"path": str(name), "absolute": os.path.abspath(name), "size": size, "sha256": digest.hexdigest()}
    return record, clean


def _most(saved: dict) -> int | None:
    """The bytes to read of an input whose saved record is ``saved``: its size + 1, or all
    (None) where the record has no size."""
    size = saved.get("size")
    return size + 1 if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None


def input_record(name: str, raw: bytes) -> dict:
    """What a result's provenance says of one input: the path as given and as an absolute
    path (None for stdin, ``-``), its size and the sha256 of the bytes read."""
    import hashlib

    return {
        "path": str(name),
        "absolute": None if name == "-" else os.path.abspath(name),
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def plan_columns(sources, x_columns, y_column, sigma_column, group_column, formula):
    """The columns of the fit, from the inputs' column names alone (``sources``: each has
    ``label``, ``names`` and ``sep``; the first one's names are the table's, and every other
    must have the same): (x columns, y column, sigma column, group column, the used columns).
    ``formula``: a user formula (its data columns are the predictors) or None."""
    first = sources[0]
    for other in sources[1:]:
        if other.names != first.names:
            raise InputError(
                f"the columns of {printable(other.label)} ({_column_list(other.names)}) differ from those of "
                f"{printable(first.label)} ({_column_list(first.names)}); several files must have the same columns"
            )
    label = ", ".join(s.label for s in sources)
    columns = list(first.names)
    if group_column is not None:
        group_column = _resolve(group_column, columns, label, "--group-by ")
    x_columns = [_resolve(c, columns, label) for c in x_columns] if x_columns else None
    y_column = _resolve(y_column, columns, label) if y_column is not None else None
    sigma_column = _resolve(sigma_column, columns, label) if sigma_column else None
    if formula is not None:
        x_columns, y_column = _formula_columns(formula, columns, x_columns, y_column, (sigma_column, group_column))
    elif (x_columns is None or y_column is None) and len(columns) - (group_column is not None) < 2:
        seps = sorted({_SEP_WORDS.get(s.sep, repr(s.sep)) for s in sources})
        raise InputError(
            f"{printable(label)} needs at least two columns (x and y); it has {len(columns) - (group_column is not None)} "
            f"(read with delimiter {' / '.join(seps)}; --sep sets another)"
        )
    x_columns, y_column, wanted = _pick(columns, x_columns, y_column, sigma_column, label, group_column)
    used = list(dict.fromkeys([*wanted, *([group_column] if group_column else [])]))
    return x_columns, y_column, sigma_column, group_column, used


def parse_sep(sep: str | None) -> str | None:
    """``--sep``: None (detect), ``,`` ``;`` ``tab`` (or ``\\t``), ``space`` / ``whitespace``
    (runs of blanks), or any single character but a quote, ``#`` or a line break."""
    if sep is None:
        return None
    if sep in _SEP_NAMES or sep.lower() in _SEP_NAMES:
        return _SEP_NAMES.get(sep, _SEP_NAMES.get(sep.lower()))
    if len(sep) != 1 or sep in '"#\r\n':
        raise OptionError(f"--sep must be one character (such as , or ;), tab, or space/whitespace (runs of blanks); got {printable(repr(sep))}")
    return sep


def missing_warning(dataset: Dataset) -> str | None:
    """The warning line (without 'nlfit: warning: ') for the rows dropped, or None."""
    n = dataset.dropped
    if not n:
        return None
    return f"dropped {n} row{'s' if n != 1 else ''} with missing values in the used columns (--missing error to refuse)"


# --- reading ------------------------------------------------------------------------------


def expand_sources(source, use_glob: bool) -> list[str]:
    """The DATA arguments as the files to read: literal paths, or with ``use_glob`` each
    pattern expanded (sorted); '-' (stdin) at most once."""
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    names = [os.fspath(item) for item in items]
    if not names:
        raise OptionError("no data given: name a file, or '-' for stdin")
    if names.count("-") > 1:
        raise OptionError("stdin ('-') can be read only once; give '-' once")
    if not use_glob:
        return _once(names)
    import glob as globbing

    expanded = []
    for name in names:
        if name == "-":
            expanded.append(name)
            continue
        matches = sorted(globbing.glob(name))
        if not matches:
            raise InputError(f"no file matches {printable(name)}")
        expanded += matches
    return _once(expanded)


def _once(names: list[str]) -> list[str]:
    """``names``, refused when one file is named twice (``d.csv ./d.csv``, ``- /dev/stdin``,
    overlapping patterns): its rows would count twice and every standard error shrink."""
    seen: dict[tuple, str] = {}
    for name in names:
        try:
            info = os.fstat(0) if name == "-" else os.stat(name)
        except (OSError, ValueError):
            continue  # reported when it is read
        if not stat.S_ISREG(info.st_mode) and name != "-" and not stat.S_ISFIFO(info.st_mode):
            continue
        key = (info.st_dev, info.st_ino)
        if key in seen and (stat.S_ISREG(info.st_mode) or name == "-" or seen[key] == "-"):
            raise InputError(f"{printable(name)} and {printable(seen[key])} are the same file: each input may be given once")
        seen[key] = name
    return names


def _label(name: str) -> str:
    return "stdin" if name == "-" else name


def stream_limit() -> int:
    """The most bytes read from a stream or decompressed from one input: ``MAX_STREAM_BYTES``,
    or the environment's ``NLFIT_MAX_STREAM_BYTES`` (a whole number of bytes)."""
    text = os.environ.get("NLFIT_MAX_STREAM_BYTES", "").strip()
    if not text:
        return MAX_STREAM_BYTES
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise OptionError(f"NLFIT_MAX_STREAM_BYTES must be a whole number of bytes (at least 1); got '{excerpt(text)}'")
    return int(text)


def _read_bytes(name: str, stdin, most: int | None = None) -> bytes:
    """The whole input, read once (a FIFO or a pipe cannot be read twice). A regular file is
    read whole: its size is known, and ``_memory`` names it if it does not fit. A stream
    (stdin, a FIFO, a device such as /dev/zero: no size to go by) is read up to
    ``stream_limit()`` bytes; more is an error; stdin redirected from a regular file
    (``< data.csv``) is that file. ``most``: read at most this many bytes (``refit``: the
    recorded size + 1, enough to see that an input changed)."""
    if name == "-":
        stream = stdin if stdin is not None else sys.stdin
        if stream is None:
            raise InputError("cannot read stdin: it is closed")
        handle = getattr(stream, "buffer", stream)
        try:
            size = _regular_size(handle)
            if size is not None:
                with _memory("stdin", size):
                    data = handle.read() if most is None else handle.read(most)
                return data if isinstance(data, bytes) else str(data).encode("utf-8", errors="surrogatepass")
            return _read_stream(handle, "stdin", most)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read stdin: {getattr(exc, 'strerror', None) or exc}") from None
    if os.path.isdir(name):
        raise InputError(f"data path is a directory, not a file: {printable(name)}")
    try:
        with open(name, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                return _read_stream(handle, name, most)
            with _memory(name, info.st_size):
                return handle.read() if most is None else handle.read(most)
    except FileNotFoundError:
        raise InputError(f"data file not found: {printable(name)}") from None
    except IsADirectoryError:
        raise InputError(f"data path is a directory, not a file: {printable(name)}") from None
    except OSError as exc:
        raise InputError(f"cannot read {printable(name)}: {exc.strerror or exc}") from None


_CHUNK = 1 << 20  # bytes read at a time from a stream


def _regular_size(handle) -> int | None:
    """The size of the regular file ``handle`` reads, or None: a stream (a pipe, a terminal,
    a device, or an object with no descriptor, such as a test's BytesIO)."""
    try:
        info = os.fstat(handle.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _read_stream(handle, label: str, most: int | None = None, compressed: str | None = None) -> bytes:
    """What ``handle`` holds (bytes, or text encoded as UTF-8), read up to ``stream_limit()``
    bytes (``most``: no more than this many, and no error); more is an error naming the
    input. ``compressed``: the input's compression, where ``handle`` decompresses it."""
    limit = stream_limit()
    cap = limit + 1 if most is None else min(most, limit + 1)
    buffer = io.BytesIO()
    try:
        while buffer.tell() < cap:
            chunk = handle.read(min(_CHUNK, cap - buffer.tell()))
            if not chunk:
                break
            buffer.write(chunk if isinstance(chunk, bytes) else str(chunk).encode("utf-8", errors="surrogatepass"))
    except MemoryError:
        raise _out_of_memory(label, f"{'decompressed ' if compressed else ''}{buffer.tell()} bytes read") from None
    if buffer.tell() > limit:
        what = f"decompresses ({compressed}) to" if compressed else "is a stream (a pipe or a device) of"
        keep = "decompress it to a file" if compressed else "save it to a file"
        raise InputError(
            f"{printable(label)} {what} more than {limit} bytes, the most nlfit reads that way: {keep}, or set NLFIT_MAX_STREAM_BYTES to allow more"
        )
    return buffer.getvalue()


@contextlib.contextmanager
def _memory(label: str, size: int):
    """A MemoryError while ``label`` (``size`` bytes) is read or parsed is one line naming
    it (exit 2), not an internal error: the data is too large for the memory this process
    may use."""
    try:
        yield
    except MemoryError:
        raise _out_of_memory(label, f"{size} bytes") from None


def _out_of_memory(label: str, size: str) -> InputError:
    """The error of a MemoryError while ``label`` (``size``, in words) was read or parsed."""
    why = "it needs more memory than this process may use (a memory limit such as ulimit -v, or too little RAM)"
    return InputError(f"out of memory reading {printable(label)} ({size}): {why}")


# Compressed input, recognized by its first bytes (whatever its name; stdin too).
_BZIP2_BLOCK = (b"\x31\x41\x59\x26\x53\x59", b"\x17\x72\x45\x38\x50\x90")  # a first block, or the end of an empty stream


def _compression(data: bytes) -> str | None:
    """``gzip``, ``bzip2``, ``xz`` or ``zstd`` when ``data`` starts as such a file does, else None."""
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:3] == b"BZh" and data[3:4] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9") and data[4:10] in _BZIP2_BLOCK:
        return "bzip2"
    if data[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return None


def _decompressor(kind: str, handle, label: str):
    """A file object that reads ``handle`` decompressed (``kind`` as ``_compression`` says);
    several concatenated members or frames are read one after the other, as zcat does."""
    if kind == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=handle, mode="rb")
    if kind == "bzip2":
        import bz2

        return bz2.BZ2File(handle, "rb")
    if kind == "xz":
        import lzma

        return lzma.LZMAFile(handle, "rb")
    try:
        import zstandard
    except ImportError:
        raise InputError(f"{printable(label)} is zstd-compressed: reading it needs the zstandard package (pip install 'nlfit[zstd]')") from None
    return _ZstdReader(zstandard, handle)


class _ZstdReader:
    """zstd frames read one after the other (as zstdcat does); a frame cut short is an error
    (zstandard's own stream reader ends there quietly). The input is fed in small pieces so
    that one call's output stays small: a few bytes can hold a block of 128 KiB."""

    _PIECE = 1024

    def __init__(self, zstandard, handle):
        self._zstandard, self._handle = zstandard, handle
        self._frame, self._out = None, bytearray()

    def read(self, size: int) -> bytes:
        while len(self._out) < size:
            piece = self._handle.read(self._PIECE)
            if not piece:
                if self._frame is not None and not self._frame.eof:
                    raise self._zstandard.ZstdError("the last frame is cut short")
                break
            while piece:
                if self._frame is None or self._frame.eof:  # a frame begins
                    self._frame = self._zstandard.ZstdDecompressor().decompressobj()
                self._out += self._frame.decompress(piece)
                piece = self._frame.unused_data if self._frame.eof else b""
        data = bytes(self._out[:size])
        del self._out[:size]
        return data


def _decompress(raw: bytes, label: str) -> bytes:
    """``raw`` decompressed when it is compressed (``_compression``), else ``raw`` itself.
    The decompressed size is bounded as a stream's is (``_read_stream``), so a small file
    that expands to terabytes is one line, not the end of the memory."""
    kind = _compression(raw)
    if kind is None:
        return raw
    with _memory(label, len(raw)):
        try:
            data = _read_stream(_decompressor(kind, io.BytesIO(raw), label), label, compressed=kind)
        except (InputError, MemoryError):
            raise
        except Exception as exc:  # OSError, EOFError, zlib/lzma/zstd errors: a damaged or cut file
            raise InputError(f"{printable(label)} is not a readable {kind} file (damaged, or cut short): {_first_line(exc)}") from None
    if _compression(data) is not None:
        raise InputError(f"{printable(label)} is compressed twice ({kind}, then {_compression(data)}): decompress it once first")
    return data


def _prepare(raw: bytes, label: str) -> bytes:
    """The input as UTF-8 bytes for the parser: BOM dropped (UTF-16 with a BOM re-encoded),
    checked to be UTF-8, line ends as '\\n', comment lines emptied (lines keep their numbers).
    A plain ASCII file without comments or '\\r' is passed through as it is (no copy)."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            raw = raw.decode("utf-16").encode("utf-8", errors="surrogatepass")
        except UnicodeError:
            raise InputError(f"{printable(label)} is not UTF-16 text although it starts with a UTF-16 byte order mark") from None
    if not raw.isascii():
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise InputError(
                f"{printable(label)} is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line {line} (convert it, e.g. iconv -f latin1 -t utf-8)"
            ) from None
    if b"\r" in raw or (b"#" in raw and _COMMENT_START.search(raw)):
        text = raw.decode("utf-8", errors="surrogatepass")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        raw = _blank_comments(text).encode("utf-8", errors="surrogatepass")
    return raw


def _is_nist(name: str, data: bytes) -> bool:
    """A ``.dat`` file that looks like NIST StRD's (a 'Model:' or 'Data:' section, or NIST on
    its first line); any other ``.dat`` file (gnuplot's) is read as data."""
    if not name.lower().endswith(".dat"):
        return False
    return b"NIST" in data[: data.find(b"\n")] or re.search(rb"(?m)^(?:Model|Data):", data) is not None


def _read_nist(label, text, x_columns, y_column, sigma_column, formula) -> Dataset:
    from nlfit.io import nist

    try:
        dataset = nist._parse(text.splitlines(), Path(label))
    except (ValueError, IndexError, StopIteration) as exc:
        why = _first_line(exc) if str(exc).strip() else "no Model: section"
        raise InputError(f"{printable(label)} is not a NIST StRD nonlinear regression file ({why})") from None
    dataset = Dataset(**{**dataset.__dict__, "files": (label,)})
    if formula is not None:
        x_columns, y_column = _formula_columns(formula, [dataset.y_name, *dataset.x_names], x_columns, y_column, (sigma_column,))
        if (tuple(x_columns), y_column) == (dataset.x_names, dataset.y_name) and not sigma_column:
            return dataset
    if x_columns or y_column or sigma_column:
        frame = _frame_from_dataset(dataset)
        columns = list(frame.columns)
        x_columns = [_resolve(c, columns, label) for c in x_columns] if x_columns else None
        y_column = _resolve(y_column, columns, label) if y_column else None
        sigma_column = _resolve(sigma_column, columns, label) if sigma_column else None
        selected = _select(frame, x_columns, y_column, sigma_column, label, dataset.nist)
        return Dataset(**{**selected.__dict__, "files": (label,)})
    return dataset


# --- one file of several, read alone (the Dask engine reads each on a worker) ---------------

_HEAD_BYTES = 1 << 16  # the first bytes read for the header of a text file (doubled as needed)


def read_header(name: str, sep: str | None = None):
    """The column names of the data file ``name`` without reading its data: a Parquet file's
    schema (its footer), or the first records of a text file (at least the records the
    delimiter is detected from, so the names and the delimiter are those ``read_dataset``
    finds). Returns an object with ``label``, ``names`` and ``sep``; errors as
    ``read_dataset``'s. ``sep``: as ``parse_sep`` returns it. A compressed file, and one
    with the Parquet magic at one end only (damaged, or a text whose header starts with
    PAR1), is read whole (``_decompress``, ``_is_parquet``)."""
    if os.path.isdir(name):
        raise InputError(f"data path is a directory, not a file: {printable(name)}")
    try:
        with open(name, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = handle.read(16)
            handle.seek(max(size - len(PARQUET_MAGIC), 0))
            end = handle.read()
            handle.seek(0)
            if start[:4] == PARQUET_MAGIC == end and size >= 2 * len(PARQUET_MAGIC):
                return _parquet_header(name, handle)
            if _compression(start) or PARQUET_MAGIC in (start[:4], end):
                with _memory(name, size):
                    data = _decompress(handle.read(), name)
                    if _is_parquet(data):
                        return _Parquet.parse(name, data)
                handle = io.BytesIO(data)
            return _text_header(name, handle, sep)
    except FileNotFoundError:
        raise InputError(f"data file not found: {printable(name)}") from None
    except OSError as exc:
        raise InputError(f"cannot read {printable(name)}: {exc.strerror or exc}") from None


def _parquet_header(name: str, handle) -> _Parquet:
    parquet = _pyarrow_parquet(name)
    handle.seek(0)
    try:
        schema = parquet.read_schema(handle)
    except Exception as exc:  # pyarrow's ArrowInvalid and friends: one line, not a traceback
        raise InputError(f"{printable(name)} is not a readable Parquet file (damaged, or cut short): {_first_line(exc)}") from None
    names = [str(n) for n in schema.names if not str(n).startswith("__index_level_")]
    if not names:
        raise InputError(f"{printable(name)} is empty: a Parquet file with no columns")
    return _Parquet(name, b"", names)


def _text_header(name: str, handle, sep: str | None) -> _Source:
    """The header of a text file from a prefix of whole lines, grown until it holds the
    records ``_Source.parse`` looks at (or is the whole file)."""
    raw, size = b"", _HEAD_BYTES
    while True:
        more = handle.read(size - len(raw))
        raw += more
        whole = not more or len(raw) < size
        prefix = raw if whole else raw[: raw.rfind(b"\n") + 1]
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not whole:
            text = codecs.getincrementaldecoder("utf-16")(errors="replace").decode(raw[: len(raw) - len(raw) % 2])
            prefix = codecs.BOM_UTF8 + text[: text.rfind("\n") + 1].encode("utf-8", errors="surrogatepass")
        if whole or prefix:
            data = _prepare(prefix, name)
            if _is_nist(name, data):
                raise InputError(f"{printable(name)} is a NIST StRD file: it is read alone, not with other files")
            head, _ = _Source._head(data)
            if whole or (len(head) == _SAMPLE_RECORDS and head[-1][3]):  # the records the whole file would give
                return _Source.parse(name, data, sep)
        size *= 4


def read_part(name: str, names: list[str], first: str, x_columns: list[str], y_column: str, sigma_column: str | None,
              group_column: str, *, sep: str | None = None, missing: str = "drop") -> Dataset:  # fmt: skip
    """One file of a grouped fit over several, read alone with the columns chosen from the
    headers (``plan_columns``): the same dialect, missing-value and number rules as
    ``read_dataset``. ``names``: the columns every file must have (those of the file
    ``first``). A file whose every row has a missing value gives an empty Dataset (the
    caller checks the files together)."""
    data = _decompress(_read_bytes(name, None), name)
    with _memory(name, len(data)):
        source = _Parquet.parse(name, data) if _is_parquet(data) else _Source.parse(name, _prepare(data, name), sep)
        plan_columns([_Parquet(first, b"", list(names)), source], None, None, None, None, None)  # the same columns as the first file
        frame = source.frame(list(dict.fromkeys([*x_columns, y_column, *([sigma_column] if sigma_column else []), group_column])), group_column)
        locate = _Locator([source], [len(frame)])
        dataset = _select(frame, x_columns, y_column, sigma_column, name, None, group_column=group_column, missing=missing, locate=locate, empty_ok=True)
    return Dataset(**{**dataset.__dict__, "files": (name,)})


# --- lines and records --------------------------------------------------------------------

_COMMENT_LINE = re.compile(r"^[ \t]*#[^\n]*", re.MULTILINE)
_COMMENT_START = re.compile(rb"^[ \t]*#", re.MULTILINE)


def _blank_comments(text: str) -> str:
    """``text`` with every comment line emptied (its line break kept, so that lines keep
    their numbers; the parser skips empty lines). A line inside a quoted field is data."""
    if "#" not in text:
        return text
    if '"' not in text:
        return _COMMENT_LINE.sub("", text)
    out, quoted = [], False
    for line in text.split("\n"):
        out.append("" if not quoted and line.lstrip(" \t").startswith("#") else line)
        if line.count('"') % 2:
            quoted = not quoted
    return "\n".join(out)


def _records(text: str):
    """(first line, record text, end offset, closed) of each record of ``text`` that is not
    blank or a comment; a record spans lines while a quoted field is open."""
    pos, size, number = 0, len(text), 0
    while pos < size:
        end = text.find("\n", pos)
        end = size if end < 0 else end
        line = text[pos:end]
        pos, number = end + 1, number + 1
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        first = number
        quotes = line.count('"')
        if quotes % 2:
            parts = [line]
            while quotes % 2 and pos < size:
                end = text.find("\n", pos)
                end = size if end < 0 else end
                parts.append(text[pos:end])
                quotes += parts[-1].count('"')
                pos, number = end + 1, number + 1
            line = "\n".join(parts)
        yield first, line, min(pos, size), quotes % 2 == 0


def _fields(record: str, sep: str) -> list[str]:
    if sep == WHITESPACE:
        if '"' not in record:
            return record.split()
        return [f for f in next(csv.reader([record.replace("\t", " ")], delimiter=" ", skipinitialspace=True)) if f != ""]
    return next(csv.reader(io.StringIO(record), delimiter=sep, skipinitialspace=True), [])


def _detect(records: list[str]) -> str:
    """The delimiter of these first records (see the module's docstring)."""
    sample = [re.sub(r'"[^"]*"', '""', r) for r in records]
    counts = {d: [line.count(d) for line in sample] for d in ("\t", ";", ",")}
    for d in ("\t", ";", ","):
        if counts[d][0] > 0 and len(set(counts[d])) == 1:
            return d
    blanks = [len(line.split()) for line in sample]
    if blanks[0] >= 2 and len(set(blanks)) == 1:
        return WHITESPACE
    best = max((",", "\t", ";"), key=lambda d: counts[d][0])
    if counts[best][0] > 0:
        return best
    return WHITESPACE if blanks[0] >= 2 else ","


def _is_number(cell: str) -> bool:
    """A cell Python reads as a number (also '1_000' and non-ASCII digits: a first row of
    such cells is data, whose cells then get a message saying what is wrong with them)."""
    cell = cell.strip()
    if not cell:
        return False
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_plain_number(cell: str) -> bool:
    """A number as the parsers read it: ASCII, no digit-group '_' ('nan', 'inf' are)."""
    return cell.isascii() and "_" not in cell and _is_number(cell)


@dataclass
class _Source:
    """One input: its bytes (``_prepare``), delimiter, column names, whether its first record
    is a header, and the byte offset of its first data record."""

    label: str
    data: bytes
    sep: str
    names: list[str]
    header: bool
    body: int
    _text: str | None = field(default=None, repr=False)
    _lines: list[int] | None = field(default=None, repr=False)
    path: str | None = field(default=None, repr=False)  # read from this file (``_read_direct``): ``data`` is its head only
    size: int | None = field(default=None, repr=False)

    @property
    def text(self) -> str:
        """The whole text (decoded when first needed: for an error message)."""
        if self._text is None:
            self._text = self.data.decode("utf-8", errors="replace")
        return self._text

    @classmethod
    def parse(cls, label: str, data: bytes, sep: str | None) -> _Source:
        head, text = cls._head(data)
        if not head:
            raise InputError(f"{printable(label)} is empty: expected CSV with a header row")
        sep = sep or _detect([r[1] for r in head])
        try:
            first = [cell.strip() for cell in _fields(head[0][1], sep)]
        except csv.Error as exc:
            raise InputError(f"{printable(label)} is not valid CSV: {exc}") from None
        if not any(first):
            raise InputError(f"{printable(label)} is empty: expected CSV with a header row")
        if all(_is_number(cell) for cell in first):
            names = ["x", "y"][: len(first)] if len(first) <= 2 else [f"V{i + 1}" for i in range(len(first))]
            return cls(label, data, sep, names, header=False, body=0)
        names = [cell or f"V{i + 1}" for i, cell in enumerate(first)]
        duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
        if duplicated:
            raise InputError(f"{printable(label)} has duplicate column names: {', '.join(excerpt(n) for n in duplicated)}")
        return cls(label, data, sep, names, header=True, body=len(text[: head[0][2]].encode("utf-8", errors="surrogatepass")))

    @staticmethod
    def _head(data: bytes):
        """The first records (up to _SAMPLE_RECORDS) and the text they were read from: a
        prefix of whole lines, decoded; grown until it holds them or is the whole input."""
        lines = 4 * _SAMPLE_RECORDS
        while True:
            end = -1
            for _ in range(lines):
                end = data.find(b"\n", end + 1)
                if end < 0:
                    break
            whole = end < 0
            text = data.decode("utf-8", errors="replace") if whole else data[: end + 1].decode("utf-8", errors="replace")
            head = list(itertools.islice(_records(text), _SAMPLE_RECORDS))
            if whole or (len(head) == _SAMPLE_RECORDS and head[-1][3]):
                return head, text
            lines *= 4

    def frame(self, used: list[str], group_column: str | None):
        """The ``used`` columns of the data records as a DataFrame (pandas' C parser); a
        group column is kept as text."""
        # pandas refuses a row with more fields than the names (a trailing empty field,
        # '1,2,', is allowed), but not when it reads only some columns (usecols): a wide file
        # (where converting every column would cost seconds) is checked here instead.
        wide = len(self.names) > _WIDE
        numeric = [n for n in (used if wide else self.names) if n != group_column]
        options = {
            "header": None,
            "names": self.names,
            "index_col": False,
            "skipinitialspace": True,
            "keep_default_na": False,
            "na_values": {n: NA_TEXT for n in numeric} if group_column else NA_TEXT,
            "low_memory": False,
            "engine": "c",
        }
        if not wide and (self.size if self.path else len(self.data)) - self.body >= ARROW_BYTES:
            frame = self._arrow_frame(used, group_column)
            if frame is not None:
                return frame
        if self.path is not None:
            raise _Fallback  # only pyarrow reads from the file; pandas reads the bytes, the usual way
        import pandas as pd

        if wide:
            options["usecols"] = used
        if group_column:
            options["dtype"] = {group_column: object}
        options["sep"] = r"\s+" if self.sep == WHITESPACE else self.sep
        try:
            stream = io.BytesIO(self.data)  # shares the bytes: no copy
            stream.seek(self.body)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", pd.errors.ParserWarning)
                frame = pd.read_csv(stream, **options)
            # a first data row longer than the names: pandas cuts it with a warning
            wide = wide or any("Length of header" in str(w.message) for w in caught)
        except pd.errors.EmptyDataError:
            frame = pd.DataFrame(columns=self.names)
        except pd.errors.ParserError as exc:
            if "out of memory" in str(exc):  # pandas' C tokenizer says so in a ParserError
                raise MemoryError from None
            raise InputError(self._parser_error(str(exc))) from None
        except (ValueError, OverflowError) as exc:
            raise InputError(f"{printable(self.label)} is not valid CSV: {_first_line(exc)}") from None
        if frame.shape[0] == 0:
            if self.header:
                raise InputError(f"{printable(self.label)} has a header but no data rows")
            raise InputError(f"{printable(self.label)} is empty: expected CSV with a header row")
        if wide:
            self._check_widths()
        return frame[used]

    def _arrow_frame(self, used: list[str], group_column: str | None):
        """The ``used`` columns read by pyarrow's multithreaded CSV reader (several times
        faster than pandas' at millions of rows), or None where it does not apply or fails:
        then pandas' parser reads the file, and gives any error message. It applies where it
        reads the cells as pandas does: not with the whitespace delimiter, every record with
        as many fields as the names, the used numeric columns holding numbers or NA_TEXT
        (missing) and nothing else (a blank before or after a number fails pyarrow's
        conversion, so pandas reads that file), no blank at the start of a group key, and
        pyarrow installed (the ``parquet`` extra)."""
        if self.sep == WHITESPACE:
            return None
        try:
            import pyarrow as pa
            import pyarrow.compute as arrow_compute
            import pyarrow.csv as arrow_csv
        except ImportError:
            return None
        numeric = [name for name in used if name != group_column]
        stream = None
        try:
            if self.path is not None:
                stream = pa.OSFile(self.path)  # read, not mapped: see _read_direct
                stream.seek(self.body)
            else:
                stream = pa.BufferReader(memoryview(self.data)[self.body :])
            table = arrow_csv.read_csv(
                stream,
                read_options=arrow_csv.ReadOptions(column_names=self.names),
                parse_options=arrow_csv.ParseOptions(delimiter=self.sep),
                convert_options=arrow_csv.ConvertOptions(
                    include_columns=used,
                    column_types={**{name: pa.float64() for name in numeric}, **({group_column: pa.string()} if group_column else {})},
                    null_values=NA_TEXT,
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, OSError):
            return None
        finally:
            if self.path is not None and stream is not None:
                stream.close()
        if table.num_rows == 0:
            return None
        if group_column and arrow_compute.any(arrow_compute.match_substring_regex(table.column(group_column), r"^[ \t]")).as_py():
            return None  # pandas skips the blanks after a delimiter (skipinitialspace); pyarrow keeps them
        if any(arrow_compute.any(arrow_compute.is_nan(table.column(name))).as_py() for name in numeric):
            return None  # text such as 'nan': pyarrow reads a NaN (a missing cell, dropped); pandas keeps the text, an error or its group's non-finite value
        if group_column is None and _Columns.numeric(table, used):
            held = [table]
            del table
            return _Columns.drain(held, used)
        # one pandas block per column (no copy of every column into one 2-D block); a column
        # of float64 cells without missing ones in one chunk is not copied at all
        return table.select(used).to_pandas(split_blocks=True, self_destruct=True)

    def _check_widths(self) -> None:
        """A record with more fields than the names is an error (see ``frame``)."""
        size, sep = len(self.names), self.sep
        body = len(self.data[: self.body].decode("utf-8", errors="replace"))
        for row, (line, record, _, _) in enumerate(_records(self.text[body:])):
            if sep == WHITESPACE or '"' in record:
                try:
                    count = len(_fields(record, sep))
                except csv.Error:
                    continue
            else:
                count = record.count(sep) + 1
            if count > size and not (count == size + 1 and record.rstrip(" \t").endswith(sep)):
                what = "the header has" if self.header else "the first row has"
                raise InputError(f"{printable(self.label)}: row {row + 1} (line {self._line_offset() + line}) has {count} fields; {what} {size}")

    def _parser_error(self, message: str) -> str:
        """pandas' message, with the row and the line in the file instead of its own count."""
        label = printable(self.label)
        expected = re.search(r"Expected (\d+) fields", message)
        body = len(self.data[: self.body].decode("utf-8", errors="replace"))
        for row, (line, record, _, closed) in enumerate(_records(self.text[body:])):
            if not closed:
                return f"{label}: row {row + 1} (line {self._line_offset() + line}) opens a quoted field that is never closed"
            if expected:
                try:
                    count = len(_fields(record, self.sep))
                except csv.Error:
                    continue
                if count > int(expected.group(1)):
                    what = "the header has" if self.header else "the first row has"
                    return f"{label}: row {row + 1} (line {self._line_offset() + line}) has {count} fields; {what} {len(self.names)}"
        return f"{label} is not valid CSV: {_first_line(message)}"

    def _line_offset(self) -> int:
        return self.data.count(b"\n", 0, self.body)

    def line_of(self, row: int) -> int | None:
        """The physical line (1-based) of data row ``row`` (0-based), or None."""
        if self._lines is None:
            self._lines = [line for line, *_ in _records(self.text)][1 if self.header else 0 :]
        return self._lines[row] if 0 <= row < len(self._lines) else None


PARQUET_MAGIC = b"PAR1"


def _is_parquet(data: bytes) -> bool:
    """A Parquet file (whatever its name; stdin too): it starts and ends with PAR1, or it is
    one cut short or damaged: PAR1 at one end, and not text (a NUL byte, or not UTF-8),
    so that pyarrow, not the CSV parser, says what is wrong with it. A text whose first
    column is named PAR1 is text."""
    head, tail = data[:4] == PARQUET_MAGIC, data[-4:] == PARQUET_MAGIC
    if head and tail and len(data) >= 8:
        return True
    if not (head or tail):
        return False
    if b"\0" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@dataclass
class _Parquet:
    """One Parquet input (pandas with pyarrow, ``pip install 'nlfit[parquet]'``): its columns
    are the names; only the used ones are read."""

    label: str
    data: bytes
    names: list[str]
    sep: str = "parquet"

    @classmethod
    def parse(cls, label: str, data: bytes) -> _Parquet:
        parquet = _pyarrow_parquet(label)
        try:
            schema = parquet.read_schema(_arrow_buffer(data))
        except Exception as exc:  # pyarrow's ArrowInvalid and friends: one line, not a traceback
            raise InputError(f"{printable(label)} is not a readable Parquet file (damaged, or cut short): {_first_line(exc)}") from None
        names = [str(name) for name in schema.names if not str(name).startswith("__index_level_")]
        if not names:
            raise InputError(f"{printable(label)} is empty: a Parquet file with no columns")
        return cls(label, data, names)

    def frame(self, used: list[str], group_column: str | None):
        parquet = _pyarrow_parquet(self.label)
        try:
            # ParquetFile, not read_table: the latter imports pyarrow.dataset (0.3 s of a fresh
            # process) for what one file's columns do not need
            # and the bytes as an arrow buffer, not io.BytesIO (a Python stream: 0.17 s against
            # 0.08 s for 10^7 rows)
            table = parquet.ParquetFile(_arrow_buffer(self.data)).read(columns=used)
        except Exception as exc:
            raise InputError(f"{printable(self.label)} is not a readable Parquet file (damaged, or cut short): {_first_line(exc)}") from None
        repeated = sorted({name for name in table.column_names if table.column_names.count(name) > 1})
        if repeated:  # pandas would give a frame for the name, not a column
            name = excerpt(repeated[0])
            raise InputError(f"{printable(self.label)}: column '{name}' appears more than once in the Parquet file; give each column its own name")
        for column in table.schema:
            _check_arrow_type(self.label, column.name, column.type)
        if group_column is None and _Columns.numeric(table, used):
            held = [table]
            del table
            return _Columns.drain(held, used)
        frame = table.to_pandas(split_blocks=True)  # a column each, taken as they are (one 2-D block of floats was a copy: 0.17-0.2 s at 10^7 rows)
        if group_column is not None and frame[group_column].dtype.kind not in "iu":  # integer keys (never missing) stay numbers: factorized as such
            frame[group_column] = frame[group_column].astype(object).where(frame[group_column].notna(), None)
        return frame

    def line_of(self, row: int) -> int | None:
        return None  # rows, not lines


class _Columns:
    """The used columns of an arrow table as float64 arrays, without pandas (importing it is
    0.2-0.3 s of a fresh process): what ``_select`` reads of a frame (``columns``, ``len``,
    a column by name), for a fit without a group column whose columns all hold numbers."""

    def __init__(self, arrays: dict):
        self.arrays = arrays
        self.columns = list(arrays)

    @staticmethod
    def numeric(table, used: list[str]) -> bool:
        """Every used column holds floats or integers, with no missing cell."""
        return all(str(table.schema.field(n).type) in _ARROW_NUMBERS and table.column(n).null_count == 0 for n in used)

    @classmethod
    def drain(cls, held: list, used: list[str]) -> _Columns:
        """The used columns of the one table in ``held`` (a ``numeric`` one), taken from its
        arrow buffers (pyarrow's own conversions import pandas); the table is given up
        column by column, so that its buffers are freed as each column is converted."""
        table, arrays = held.pop(), {}
        for name in dict.fromkeys(used):
            dtype = np.dtype(_ARROW_NUMBERS[str(table.schema.field(name).type)])
            chunks = [chunk for chunk in table.column(name).chunks if len(chunk)]  # an empty chunk may have no data buffer
            parts = [np.frombuffer(chunk.buffers()[1], dtype=dtype, count=len(chunk), offset=chunk.offset * dtype.itemsize) for chunk in chunks]
            if len(parts) == 1 and dtype == np.float64:
                arrays[name] = parts[0]  # arrow's buffer as it is (on 64 bytes, as arrow allocates)
            else:  # one copy, on 64 bytes (numpy's own arrays are on 16): JAX then takes it as it is
                arrays[name] = np.concatenate(parts, out=aligned_full((sum(map(len, parts)),), None)) if parts else np.empty(0)
            del chunks, parts
            table = table.drop_columns([name])
        return cls(arrays)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.arrays, copy=False)


# arrow's numeric types (str of the type) -> their numpy dtype; booleans are bits, not bytes
_ARROW_NUMBERS = {"double": "f8", "float": "f4", **{f"int{b}": f"i{b // 8}" for b in (8, 16, 32, 64)}, **{f"uint{b}": f"u{b // 8}" for b in (8, 16, 32, 64)}}


def _arrow_buffer(data: bytes):
    import pyarrow as pa

    return pa.BufferReader(data)


def _check_arrow_type(label: str, name: str, kind) -> None:
    """A used Parquet column of a type nlfit cannot read as numbers or group keys is one line
    naming it: binary (bytes, not text: pandas would decode them as UTF-8, and fail) and
    nested types (lists, structs, maps: one cell holds several values). A dictionary-encoded
    column is judged by its values; every other type is read (a number, or text)."""
    import pyarrow.types as types

    while types.is_dictionary(kind):
        kind = kind.value_type
    if types.is_binary(kind) or types.is_large_binary(kind) or types.is_fixed_size_binary(kind) or str(kind) == "binary_view":
        raise InputError(
            f"{printable(label)}: column '{excerpt(name)}' holds binary data (Parquet type {kind}: bytes, not text or numbers); "
            "store numbers as a numeric type and group keys as strings"
        )
    if types.is_nested(kind):
        raise InputError(f"{printable(label)}: column '{excerpt(name)}' holds {excerpt(kind)} values (several values per cell), not numbers or text")


def _pyarrow_parquet(label: str):
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise InputError(f"{printable(label)} is a Parquet file: reading it needs pyarrow (pip install 'nlfit[parquet]')") from None
    return parquet


def _first_line(exc) -> str:
    """The first line of a library's message, cut (``excerpt``): it may quote the data."""
    text = str(exc).strip()
    return excerpt(text.splitlines()[0], 200) if text else type(exc).__name__


class _Locator:
    """Row of the concatenated frame -> 'FILE: row N (line L)'."""

    def __init__(self, sources: list[_Source], lengths: list[int]):
        self.sources = sources
        self.starts = np.cumsum([0, *lengths])[:-1]

    def __call__(self, index: int) -> str:
        which = int(np.searchsorted(self.starts, index, side="right") - 1)
        source, row = self.sources[which], int(index - self.starts[which])
        line = source.line_of(row)
        where = f"row {row + 1}" + (f" (line {line})" if line is not None else "")
        return f"{printable(source.label)}: {where}"


# --- columns ------------------------------------------------------------------------------


def _column_list(names) -> str:
    names = list(names)
    shown = ", ".join(excerpt(n) for n in names[:_SHOWN_COLUMNS])
    return shown if len(names) <= _SHOWN_COLUMNS else f"{shown}, ... ({len(names)} columns)"


def _resolve(spec: str, columns: list[str], label: str, flag: str = "") -> str:
    """A column given by name, else by 1-based number (as gnuplot's ``using 1:2``)."""
    spec = str(spec).strip()
    if spec in columns:
        return spec
    if spec.isascii() and spec.isdigit():
        number = int(spec)
        if 1 <= number <= len(columns):
            return columns[number - 1]
        raise InputError(f"{flag}column {number} is out of range: {printable(label)} has {len(columns)} column{'s' if len(columns) != 1 else ''}")
    raise InputError(f"unknown {flag}column '{excerpt(spec)}' in {printable(label)}; columns are: {_column_list(columns)}")


def _formula_columns(formula, columns, x_columns, y_column, reserved):
    from nlfit.errors import FormulaError
    from nlfit.models.expression import choose_columns

    try:
        return choose_columns(formula, [str(c).strip() for c in columns], x_columns, y_column, reserved)
    except FormulaError as error:
        raise InputError(f"{error} (columns: {_column_list(columns)})") from None


def _frame_from_dataset(dataset: Dataset):
    import pandas as pd

    columns = {dataset.y_name: dataset.y}
    x = dataset.x.reshape(dataset.n_points, -1)
    for i, name in enumerate(dataset.x_names):
        columns[name] = x[:, i]
    return pd.DataFrame(columns)


def _pick(columns, x_columns, y_column, sigma_column, label, exclude=None):
    """(x columns, y column, the used numeric columns): by default 'x' (else the first
    column) and 'y' (else the next); every one must exist."""
    names = [c for c in columns if c != exclude]
    if x_columns is None:
        x_columns = ["x"] if "x" in names else names[:1]
    if y_column is None:
        if "y" in names:
            y_column = "y"
        else:
            rest = [c for c in names if c not in x_columns]
            if not rest:
                raise InputError(f"{printable(label)} needs at least two columns (x and y); it has {len(names)}")
            y_column = rest[0]
    repeated = sorted({c for c in x_columns if list(x_columns).count(c) > 1}) if len(x_columns) > 1 else []
    if repeated:
        raise InputError(f"--x names the column '{excerpt(repeated[0])}' twice")
    if sigma_column and sigma_column in (*x_columns, y_column):
        raise InputError(f"--sigma column '{excerpt(sigma_column)}' is also a predictor or the response")
    wanted = [*x_columns, y_column] + ([sigma_column] if sigma_column else [])
    available = set(names)
    for column in wanted:
        if column not in available:
            raise InputError(f"unknown column '{excerpt(column)}' in {printable(label)}; columns are: {_column_list(names)}")
    return list(x_columns), y_column, wanted


def _select(frame, x_columns, y_column, sigma_column, label, nist, group_column=None, missing="drop", locate=None, empty_ok=False) -> Dataset:
    """The fit's columns as numbers. Rows with a missing cell in a used column are dropped
    (or an error with ``missing='error'``); with a group column, non-finite numbers are kept
    (their group fails alone). Every row dropped is an error unless ``empty_ok`` (one file
    of several, read alone: the caller checks them all together)."""
    locate = locate or (lambda index: f"{printable(label)}: row {index + 1}")
    x_columns, y_column, wanted = _pick(list(frame.columns), x_columns, y_column, sigma_column, label, group_column)
    values, problems = {}, []
    absent = np.zeros(len(frame), dtype=bool)
    for column in dict.fromkeys(wanted):
        values[column], gaps, problem = _numeric_column(frame, column, group_column is not None, missing)
        absent |= gaps
        if problem is not None:
            problems.append(problem)
    if problems:  # the first bad cell in the file (by row, then in the order of the columns)
        index, column, what = min(problems, key=lambda p: p[0])
        raise InputError(f"{locate(index)}, column '{excerpt(column)}' {what}")
    groups = None
    if group_column is not None:
        raw = frame[group_column]
        gaps = raw.isna().to_numpy().copy()
        if missing == "error" and gaps.any():
            raise InputError(f"{locate(int(np.flatnonzero(gaps)[0]))}, column '{excerpt(group_column)}' is missing")
        absent |= gaps
        groups, codes, names = _key_text(raw)
    dropped = int(absent.sum())
    kept = None
    empty_groups: tuple = ()
    dropped_by_group: dict = {}
    if dropped and groups is not None:
        empty_groups = _emptied_groups(groups, absent, gaps)
        lost, numbers = np.unique(groups[absent & ~gaps], return_counts=True)
        dropped_by_group = dict(zip(lost.tolist(), numbers.tolist(), strict=True))
    if dropped:
        if dropped == len(frame) and not empty_ok:
            raise InputError(
                f"{printable(label)}: every row ({dropped}) has a missing value in the used columns ({', '.join(excerpt(c) for c in dict.fromkeys(wanted))})"
            )
        kept = np.flatnonzero(~absent)
        values = {c: v[kept] for c, v in values.items()}
        groups = None if groups is None else groups[kept]
    elif groups is not None:  # every row kept: the fit reuses the codes (groups first seen among the kept rows, as here)
        remember_group_codes(groups, codes, names)
    x = np.column_stack([values[c] for c in x_columns]) if len(x_columns) > 1 else values[x_columns[0]]
    sigma = None
    if sigma_column:
        sigma = values[sigma_column]
        bad = np.flatnonzero(sigma <= 0)
        if bad.size:
            index = int(bad[0] if kept is None else kept[bad[0]])
            raise InputError(f"{locate(index)}, column '{excerpt(sigma_column)}' is {sigma[bad[0]]:g}: sigma must be positive")
    return Dataset(
        x=x,
        y=values[y_column],
        x_names=tuple(x_columns),
        y_name=y_column,
        sigma=sigma,
        source=label,
        groups=groups,
        dropped=dropped,
        nist=nist,
        empty_groups=empty_groups,
        kept_rows=kept if empty_groups else None,
        dropped_by_group=dropped_by_group,
    )


def _key_text(raw) -> tuple:
    """(keys, codes, names): the group column as text, one key per row (stripped), with each
    distinct value converted once (a million rows of 10,000 integer keys: the conversion of
    10,000); and keys = names[codes], names the distinct keys in order of first appearance
    (two values with one text, ' a' and 'a', are one key). A missing key reads "nan", as
    astype(str) gives (its row is dropped), and has the code -1."""
    import pandas as pd

    codes, uniques = pd.factorize(raw, sort=False, use_na_sentinel=True)
    text = pd.Index(uniques).astype(str).str.strip().to_numpy(dtype=object)
    keys = np.append(text, "nan")[codes]
    merged, names = pd.factorize(text, sort=False)  # first appearance among the uniques: among the rows
    table = np.append(merged, -1).astype(np.int32 if len(text) < 2**31 - 1 else np.int64)  # 4 bytes a row where they suffice
    return keys, table[codes], names.tolist()  # the texts themselves: str already


def _emptied_groups(groups: np.ndarray, absent: np.ndarray, key_missing: np.ndarray) -> tuple:
    """((key, first row), ...): the keys whose every row was dropped, each with the row where
    it first appears (so that it keeps its place among the groups)."""
    import pandas as pd

    named = ~key_missing
    survivors = set(pd.unique(groups[~absent]))
    keys, first = np.unique(groups[named], return_index=True)
    rows = np.flatnonzero(named)[first]
    lost = [(str(k), int(r)) for k, r in zip(keys.tolist(), rows.tolist(), strict=True) if k not in survivors]
    return tuple(sorted(lost, key=lambda item: item[1]))


_DECIMAL_COMMA = re.compile(r"^[-+]?\d+,\d+$")
_DIGIT_GROUPS = re.compile(r"^[-+]?\d{1,3}(?:[_ '\u00a0\u202f]\d{3})+(?:\.\d*)?(?:[eE][-+]?\d+)?$")


def _numeric_column(frame, column: str, allow_nonfinite: bool = False, missing: str = "drop"):
    """(values, missing mask, first problem) of a used column; the problem, (row index,
    column, what is wrong) or None, is text that is no number, a non-finite number unless
    ``allow_nonfinite``, or a missing cell when ``missing='error'``."""
    raw = frame[column]
    if isinstance(raw, np.ndarray) or _numbers(raw):
        numbers = raw if isinstance(raw, np.ndarray) else raw.to_numpy(dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(np.sum(numbers))  # one pass: a sum is finite only if every term is (one that overflows: the masks below)
        if finite:
            return numbers, np.zeros(numbers.shape, dtype=bool), None
        gaps = np.isnan(numbers)  # NaN here only comes from a missing cell: 'nan' text is not parsed as a number by the C parser
        text = None
        wrong = np.zeros(numbers.shape, dtype=bool)
    else:
        import pandas as pd

        text = raw.astype(str).str.strip()
        gaps = raw.isna().to_numpy() | text.isin(_NA_SET).to_numpy()
        numbers = pd.to_numeric(text.where(~gaps, ""), errors="coerce").to_numpy(dtype=np.float64, copy=True)
        numbers[gaps] = np.nan
        wrong = ~gaps & np.isnan(numbers)
        for i in np.flatnonzero(wrong):  # 'nan', 'NaN', '-nan': numbers that are not finite
            wrong[i] = not _is_plain_number(text.iloc[i])
    problems = wrong.copy()
    if not allow_nonfinite:
        problems |= ~gaps & ~np.isfinite(numbers)
    if missing == "error":
        problems |= gaps
    if not problems.any():
        return numbers, gaps, None
    index = int(np.flatnonzero(problems)[0])
    if gaps[index]:
        return numbers, gaps, (index, column, "is missing (--missing drop skips such rows)")
    cell = (str(raw[index]) if isinstance(raw, np.ndarray) else str(raw.iloc[index]).strip()) if text is None else text.iloc[index]
    if wrong[index]:
        return numbers, gaps, (index, column, f"is not a number: {excerpt(cell, quoted=True)}{_number_hint(cell)}")
    return numbers, gaps, (index, column, f"is not a finite number: {excerpt(cell, quoted=True)}")


def _numbers(raw) -> bool:
    """A pandas column of numbers (not booleans)."""
    import pandas as pd

    return pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw)


def _number_hint(cell: str) -> str:
    """Why a cell that looks like a number is not one, in parentheses, or ''."""
    if _DECIMAL_COMMA.match(cell):
        return " (a decimal comma? nlfit reads numbers with a decimal point)"
    if _DIGIT_GROUPS.match(cell):
        return " (digit-group separators are not accepted: write 1000, not 1_000 or 1 000)"
    other = next((ch for ch in cell if not ch.isascii()), None)
    if other is not None and any(ch.isdigit() or ch in "+-." for ch in cell):
        import unicodedata

        what = "digit" if unicodedata.category(other) == "Nd" else "character"
        name = unicodedata.name(other, f"U+{ord(other):04X}")
        return f" (a non-ASCII {what}, {printable(repr(other))} {name}: nlfit reads numbers written with ASCII 0-9, '.', '+', '-' and 'e')"
    return ""
