"""A saved fit result read back (``nlfit predict`` and ``nlfit refit`` take one): the
file or stdin, its JSON, and the refusals that name what is wrong with it. Its fields are
checked by ``nlfit.schema.check_fit_result``; here the text is read and parsed.
"""

from __future__ import annotations

import json
import math
import sys

from nlfit.errors import InputError


def read_result(result: str, command: str = "predict"):
    """The saved fit result at path ``result`` ('-': stdin), parsed (``parse_result``) for
    ``command`` (named in the message about grouped rows)."""
    return parse_result(read_text(result), result, command)


def read_text(result: str) -> str:
    """The text of the saved result at path ``result`` ('-': stdin)."""
    try:
        if result == "-" and sys.stdin is None:
            raise InputError("cannot read the fit result from stdin: it is closed")
        if result == "-":
            text = sys.stdin.read()
        else:
            with open(result, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise InputError(f"cannot read fit result {result}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{result} is not a text (UTF-8) file") from None
    return text


def parse_result(text: str, result: str, command: str = "predict"):
    """The JSON of a fit result. The NDJSON of ``--group-by`` (one fit per line) is one fit
    per group: a single line is read as that fit, several are an error that says what to do.
    A number JSON does not have (NaN, Infinity, or one beyond the range of a double) is an
    error naming its key: nlfit writes null for those, so the file was edited or written
    elsewhere, and no saved number is used that is not finite."""
    try:
        payload = json.loads(text)
    except RecursionError:
        raise InputError(f"{result} is not a fit result (JSON nested too deeply)") from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            lines = [line for line in text.splitlines() if line.strip()]
            try:
                rows = [json.loads(line) for line in lines]
            except (ValueError, RecursionError):
                rows = []
            if len(rows) > 1 and all(isinstance(row, dict) for row in rows):
                if command == "refit":
                    raise InputError(f"{result} holds {len(rows)} rows of a grouped fit (the NDJSON of --group-by): refit re-runs single fits") from None
                raise InputError(
                    f"{result} holds {len(rows)} fit results, one per line (the NDJSON of --group-by); "
                    f"{command} takes one: save the line of one group to its own file, e.g. head -n 1 {result} > one.json"
                ) from None
        raise InputError(f"{result} is not JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InputError(f"{result} is not a fit result ({exc})") from None
    found = _nonfinite(payload, "")
    if found is not None:
        where, value = found
        what = "NaN" if math.isnan(value) else f"{'-' if value < 0 else ''}Infinity (or a number beyond the range of a double)"
        raise InputError(f"{result}: '{where}' is {what}; a saved result holds finite numbers or null")
    return payload


def _nonfinite(value, where: str):
    """(key path, value) of the first float in ``value`` that is not finite, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (where or "(the whole file)", value)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _nonfinite(item, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None
