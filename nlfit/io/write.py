"""FitResult -> JSON / CSV text (pure functions), and atomic writes of that text."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path


def json_text(payload) -> str:
    return json.dumps(payload, indent=2, allow_nan=False) + "\n"


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
            writer.writerow([*lead, name, _fmt(entry["value"]), _fmt(entry.get("stderr")), _fmt(interval[0]), _fmt(interval[1])])
    return out.getvalue()


def _fmt(value) -> str:
    return "" if value is None else repr(float(value))


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` via a temporary file in the same folder and a rename.

    Readers see the old file or the new one, never a half-written one; a failure leaves the
    old file as it was.
    """
    target = Path(path)
    if target.is_symlink():
        target = target.resolve()  # replace the file the link points to, keep the link
    data = content.encode("utf-8") if isinstance(content, str) else content
    if target.exists() and not target.is_file():
        # A device, FIFO or /dev/stdout: there is nothing to replace, write through.
        with open(target, "wb") as handle:
            handle.write(data)
        return
    directory = target.parent if str(target.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    # mkstemp makes the file private (0600); give it the mode a plain open() would (or the old file's).
    mode = target.stat().st_mode & 0o7777 if target.exists() else 0o666 & ~_umask()
    try:
        os.chmod(temporary, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def ndjson_text(rows: list[dict]) -> str:
    """One JSON object per line (batched fits)."""
    return "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)


def groups_csv_text(rows: list[dict], param_names) -> str:
    """One row per group: group, each parameter and its stderr, loss, status, iterations."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["group"] + [c for name in param_names for c in (name, f"{name}_stderr")] + ["loss", "status", "iterations"]
    writer.writerow(header)
    for row in rows:
        cells = [row["group"]]
        for name in param_names:
            entry = row["params"][name]
            cells += [_fmt(entry["value"]), _fmt(entry["stderr"])]
        cells += [_fmt(row["stats"]["loss"]), row["status"], row["counts"]["iterations"]]
        writer.writerow(cells)
    return out.getvalue()
