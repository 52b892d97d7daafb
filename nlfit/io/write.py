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
    """One row per parameter: name, value, stderr (empty when unknown).

    For a method comparison (a list of results) each row starts with the method.
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    results = result_json if isinstance(result_json, list) else [result_json]
    prefix = ["method"] if isinstance(result_json, list) else []
    writer.writerow([*prefix, "name", "value", "stderr"])
    for result in results:
        lead = [result["method"]] if prefix else []
        for name, entry in result["params"].items():
            writer.writerow([*lead, name, _fmt(entry["value"]), _fmt(entry.get("stderr"))])
    return out.getvalue()


def _fmt(value) -> str:
    return "" if value is None else repr(float(value))


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename.

    Readers see the old file or the new one, never a half-written one; a failure leaves the
    old file as it was.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
