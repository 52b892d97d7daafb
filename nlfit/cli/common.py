"""Shared CLI plumbing: error handling, config files, parsing of list options, output."""

from __future__ import annotations

import functools
import os
import sys
import tomllib
from pathlib import Path

import typer

from nlfit.errors import NlfitError, OptionError


def error_line(message: str) -> None:
    """One line on stderr: 'nlfit: error: ...' (plain text, no markup)."""
    text = " ".join(str(message).split())
    sys.stderr.write(f"nlfit: error: {text}\n")
    sys.stderr.flush()


def debug_enabled(flag: bool | None = None) -> bool:
    return bool(flag) or os.environ.get("NLFIT_DEBUG", "") not in ("", "0")


def handle_errors(command):
    """Turn NlfitError into one stderr line and its exit code; --debug re-raises."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NlfitError as exc:
            if debug_enabled(kwargs.get("debug")):
                raise
            error_line(str(exc))
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def parse_number_list(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OptionError(f"{option} must be comma-separated numbers; got '{text}'") from None


def parse_p0(value):
    """'1,0,10' -> [1.0, 0.0, 10.0]; 'c0=1,c2=10' -> {'c0': 1.0, 'c2': 10.0}; TOML lists/tables pass."""
    if value is None:
        return None
    if isinstance(value, dict):
        try:
            return {str(k): float(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise OptionError("p0 values must be numbers") from None
    if isinstance(value, list):
        try:
            return [float(v) for v in value]
        except (TypeError, ValueError):
            raise OptionError("p0 values must be numbers") from None
    text = str(value).strip()
    if "=" in text:
        out = {}
        for part in text.split(","):
            if not part.strip():
                continue
            name, _, number = part.partition("=")
            try:
                out[name.strip()] = float(number)
            except ValueError:
                raise OptionError(f"--p0 entry '{part.strip()}' is not name=number") from None
        return out
    return parse_number_list(text, "--p0")


def load_config(path: str | None, allowed: set[str]) -> dict:
    """Options from a TOML file, keys as on the command line (dashes or underscores)."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise OptionError(f"config file not found: {path}")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise OptionError(f"config file {path} is not valid TOML: {exc}") from None
    options = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in allowed:
            raise OptionError(f"config file {path}: unknown option '{key}'")
        if isinstance(value, list) and name in ("x", "method"):
            value = ",".join(str(v) for v in value)  # x = ["x1", "x2"] is --x x1,x2
        options[name] = value
    return options


def merge(cli: dict, config: dict) -> dict:
    """Command-line values (those not None) win over the config file."""
    return {**config, **{k: v for k, v in cli.items() if v is not None}}


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def emit(text: str, output: str | None) -> None:
    """The result: to ``output`` atomically, or to stdout."""
    if output:
        from nlfit.io.write import write_atomic

        try:
            write_atomic(output, text)
        except OSError as exc:
            raise OptionError(f"cannot write --output {output}: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def parse_bounds(value) -> dict | None:
    """'b1=0:inf,b2=-1:1' (or a TOML table {b1 = [0, inf]} / {b1 = "0:inf"}) -> {name: (lo, hi)}."""
    if value is None:
        return None
    if isinstance(value, dict):
        items = value.items()
    else:
        items = []
        for part in str(value).split(","):
            if part.strip():
                name, sep, rest = part.partition("=")
                if not sep:
                    raise OptionError(f"--bounds entry '{part.strip()}' is not name=low:high")
                items.append((name.strip(), rest))
    out = {}
    for name, spec in items:
        try:
            low, high = spec if isinstance(spec, list) else str(spec).split(":")
            out[str(name)] = (float(low), float(high))
        except (ValueError, TypeError):
            raise OptionError(f"--bounds {name}: expected low:high such as 0:inf or -1:1; got '{spec}'") from None
    return out


def parse_fix(value) -> dict | None:
    """'b2=0.5,b3=1' (or a TOML table) -> {name: value}."""
    if value is None:
        return None
    parsed = parse_p0(value)
    if not isinstance(parsed, dict):
        raise OptionError("--fix must be name=value pairs, e.g. b2=0.5")
    return parsed
