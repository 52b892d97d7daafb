"""FitResult -> JSON / CSV text (pure functions), and atomic writes of that text."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path


def json_text(payload) -> str:
    return json_dumps(payload, indent=2) + "\n"


def json_dumps(value, **options) -> str:
    """``value`` as JSON text, every float that JSON cannot hold (NaN, infinities) written as
    null by ``json_number``'s rule wherever it sits: a statistic, a scale or a difference
    that overflowed must not cost the user the result. The payload is walked only when it
    holds such a number."""
    try:
        return json.dumps(value, allow_nan=False, **options)
    except ValueError:
        return json.dumps(_json_numbers(value), allow_nan=False, **options)


def _json_numbers(value):
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, dict):
        return {key: _json_numbers(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_numbers(item) for item in value]
    return value


def params_csv_text(result_json: dict | list[dict]) -> str:
    """One row per parameter: name, value, stderr, interval (empty when unknown).

    For a method comparison (a list of results) each row starts with the method.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    results = result_json if isinstance(result_json, list) else [result_json]
    prefix = ["method"] if isinstance(result_json, list) else []
    writer.writerow([*prefix, "name", "value", "stderr", "ci_low", "ci_high"])
    for result in results:
        lead = [result["method"]] if prefix else []
        for name, entry in result["params"].items():
            interval = entry.get("ci") or [None, None]
            writer.writerow([*lead, name, csv_number(entry["value"]), csv_number(entry.get("stderr")), csv_number(interval[0]), csv_number(interval[1])])
    return out.getvalue()


def json_number(value) -> float | None:
    """A number as JSON holds it: a float, or None for None, NaN and infinities (JSON has
    neither). The one place nlfit decides how a number is written."""
    return None if value is None or not math.isfinite(value) else float(value)


def csv_number(value) -> str:
    """A number as a CSV cell: empty for None, else the shortest text that reads back exactly."""
    return "" if value is None else repr(float(value))


def write_atomic(path: str | Path, content) -> str:
    """Write ``content`` (text, bytes, or an iterable of pieces) to ``path``; returns how:
    "atomic" or "through".

    Atomic: a temporary file with a short name (``.nlfit-XXXXXXXX.tmp``, so any valid target
    name works) in the target's folder, then a rename. Readers see the old file or the new one,
    never half of one, and a failure (or a signal) leaves the old file as it was. In the
    resident worker the rename is the client's, once the command has ended (``defer_renames``).

    Through: when no temporary file can be made next to the target (a folder you cannot write
    that holds a file you can) or the target is not a regular file (a FIFO, a device,
    /dev/stdout), the file itself is truncated and written. A failure then can leave it
    partly written; ``check_destination`` says beforehand which way it will go.
    """
    if _discarding:
        return "discarded"
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()  # replace the file the link points to, keep the link
    pieces = [content] if isinstance(content, str | bytes) else content
    fd = descriptor_of(path)
    if fd is not None:  # /dev/stdout, /dev/fd/3: the descriptor itself, never the file behind it
        stream = {1: sys.stdout, 2: sys.stderr}.get(fd)
        if stream is not None:
            stream.flush()
            _write_pieces(stream.buffer, pieces)
            stream.buffer.flush()
        else:
            with os.fdopen(os.dup(fd), "wb") as handle:
                _write_pieces(handle, pieces)
        return "through"
    if destination_mode(target) == "through":
        with open(target, "wb") as handle:
            _write_pieces(handle, pieces)
        return "through"
    directory = target.parent if str(target.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=".nlfit-", suffix=".tmp", dir=directory)
    # mkstemp makes the file private (0600); give it the mode a plain open() would (or the old file's).
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
    try:
        os.chmod(temporary, mode)
        with os.fdopen(fd, "wb") as handle:
            _write_pieces(handle, pieces)
            handle.flush()
            os.fsync(handle.fileno())
        if _discarding:
            raise OSError("the command's client has gone")
        if _hand_over is not None:
            folder = os.path.join(os.getcwd(), str(directory))  # both in one folder, spelled alike
            _hand_over(os.path.join(folder, os.path.basename(temporary)), os.path.join(folder, target.name))
        else:
            os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    return "atomic"


# In the resident worker: called with each finished (temporary, target) pair of the running
# command instead of renaming it; its client renames them once the command has ended, so a
# client that dies first leaves the old files. None in-process.
_hand_over = None
_discarding = False  # the worker's client died mid-command: its command writes nothing more


def defer_renames(hand_over) -> None:
    """From now on, hand each finished temporary file to ``hand_over(temporary, target)``
    instead of renaming it over its target (None: rename at once again). Only the worker
    calls this, before and after each command."""
    global _hand_over, _discarding
    _hand_over, _discarding = hand_over, False


def discard_outputs() -> None:
    """The worker's client is gone: like a killed process, the command writes no output."""
    global _discarding
    _discarding = True


def _write_pieces(handle, pieces) -> None:
    for piece in pieces:
        handle.write(piece.encode("utf-8") if isinstance(piece, str) else piece)


def descriptor_of(path) -> int | None:
    """The open descriptor a path names (/dev/stdin, /dev/stdout, /dev/stderr, /dev/fd/N,
    /proc/self/fd/N), or None. Such a path is written through its descriptor, so
    ``-o /dev/stdout >> log`` appends to the log as ``>>`` asked, and nothing is renamed over
    the file behind it."""
    if path is None:
        return None
    text = os.path.normpath(os.fspath(path))
    named = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
    if text in named:
        return named[text]
    found = re.fullmatch(r"/(?:dev/fd|proc/self/fd|proc/" + str(os.getpid()) + r"/fd)/(\d{1,9})", text)
    return int(found.group(1)) if found else None


def destination_mode(target: Path) -> str:
    """ "atomic" when a temporary file can be made next to ``target`` and renamed over it,
    "through" when only the file itself can be written (or it is a FIFO or a device)."""
    if target.exists() and not target.is_file():
        return "through"
    directory = target.parent if str(target.parent) else Path(".")
    if os.access(directory, os.W_OK | os.X_OK):
        return "atomic"
    return "through"


def check_destination(path: str, flag: str) -> str:
    """Before any work: can ``path`` be written? Returns "atomic" or "through"; raises
    OptionError with the reason otherwise (missing folder, a folder, no permission)."""
    from nlfit.errors import OptionError, printable

    try:
        return _check_destination(path, flag)
    except (OSError, RuntimeError) as exc:  # a name too long for the file system, a loop of links
        reason = getattr(exc, "strerror", None) or ("a loop of symbolic links" if isinstance(exc, RuntimeError) else str(exc))
        raise OptionError(f"{flag} {printable(path)}: {reason}") from None


def _check_destination(path: str, flag: str) -> str:
    from nlfit.errors import OptionError, printable

    target = Path(path)
    shown = printable(path)
    if target.is_symlink():
        target = target.resolve(strict=False)
    if target.is_dir():
        raise OptionError(f"{flag} {shown} is a folder; name a file")
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise OptionError(f"{flag} {shown}: the folder {printable(str(directory))} does not exist")
    if len(target.name.encode()) > _name_max(directory):
        raise OptionError(f"{flag} {shown}: the file name is longer than the file system allows")
    mode = destination_mode(target)
    if mode == "through":
        if target.exists() and not os.access(target, os.W_OK):
            raise OptionError(f"{flag} {shown}: permission denied")
        if not target.exists():
            raise OptionError(f"{flag} {shown}: the folder {printable(str(directory))} is not writable")
    return mode  # "atomic": the folder is writable, so a rename can replace any file in it


def _name_max(directory: Path) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def ndjson_text(rows: list[dict]) -> str:
    """One JSON object per line (batched fits)."""
    return "".join(json_dumps(row) + "\n" for row in rows)
