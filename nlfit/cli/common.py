"""Shared CLI plumbing: error handling, config files, parsing of list options, output."""

from __future__ import annotations

import functools
import os
import sys
import tomllib
from pathlib import Path

import typer

from nlfit.errors import NlfitError, OptionError, printable


def error_line(message: str) -> None:
    """One line on stderr: 'nlfit: error: ...' (plain text, no markup)."""
    text = printable(" ".join(str(message).split()))  # a header can hold terminal escapes
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
    """Options from a TOML file, keys as on the command line (dashes or underscores), each
    checked against its declared type (``nlfit.schema.OPTIONS``): a wrong type or a value out
    of range is one OptionError naming the key (exit code 2)."""
    from nlfit.schema import check_option

    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise OptionError(f"config file not found: {path}")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise OptionError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise OptionError(f"config file {path} is not a text (UTF-8) file") from None
    try:
        data = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise OptionError(f"config file {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise OptionError(f"config file {path} is not valid TOML: nested too deeply") from None
    options: dict = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in allowed:
            raise OptionError(f"config file {path}: unknown option '{key}'")
        if name in spelled:
            raise OptionError(f"config file {path}: '{spelled[name]}' and '{key}' are the same option; give it once")
        spelled[name] = key
        options[name] = check_option(name, value, f"config file {path}", key=key)
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
    """The result: to ``output`` (atomically where it can, see ``write_atomic``), or to
    stdout. Signals wait until the text is written, so it is whole or absent."""
    from nlfit import signals

    with signals.deferred():
        if output:
            from nlfit.io.write import write_atomic

            try:
                write_atomic(output, text)
            except OSError as exc:
                raise OptionError(f"cannot write --output {printable(output)}: {exc.strerror or exc}") from None
        else:
            write_stdout(text)


def emit_chunks(pieces, output: str | None) -> None:
    """Like :func:`emit` for a long text made piece by piece: a file is written atomically
    (a signal removes the temporary file); stdout gets whole pieces as they are made."""
    from nlfit import signals

    if output:
        from nlfit.io.write import write_atomic

        try:
            write_atomic(output, pieces)
        except OSError as exc:
            raise OptionError(f"cannot write --output {printable(output)}: {exc.strerror or exc}") from None
        return
    for piece in pieces:
        with signals.deferred():
            write_stdout(piece)


class PipeClosed(BaseException):
    """The reader of stdout went away (``| head``). Not an OSError, so that click and rich,
    which turn a broken pipe into exit 1, let it through to the entry point (exit 0)."""


def stdout_console(width: int | None = None):
    """A rich Console on stdout whose broken pipe ends the command with exit 0 (not a
    terminal: ``width`` or 140 columns)."""
    from rich.console import Console

    class Quiet(Console):
        def on_broken_pipe(self) -> None:
            raise PipeClosed

    console = Quiet(width=width)
    return console if console.is_terminal else Quiet(width=width or 140)


def write_stdout(text: str) -> None:
    """Results on stdout; a full device or a closed stdout is a one-line error (exit 2)."""
    try:
        if sys.stdout is None:
            raise OSError("stdout is closed")
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise PipeClosed from None  # '| head': the entry point ends quietly with exit 0
    except (OSError, ValueError) as exc:
        from nlfit.cli.main import _silence_stdout

        _silence_stdout()
        reason = getattr(exc, "strerror", None) or ("stdout is closed" if isinstance(exc, ValueError) else str(exc))
        raise OptionError(f"cannot write the result to stdout: {reason}") from None


def check_outputs(outputs: dict[str, str | None], inputs: list[str]) -> None:
    """Before any work: each output (flag -> path) can be written, is none of the inputs
    (data, config) and is not another output. Paths are compared as files (same device and
    inode) when they exist, else by their resolved names."""
    from nlfit.io.write import check_destination

    if not outputs.get("--output") and sys.stdout is None:
        raise OptionError("stdout is closed: give --output FILE for the result")
    seen: dict[tuple, str] = {}
    for name in inputs:
        if name and name != "-":
            seen[_identity(name)] = f"the input {printable(name)}"
    for flag, path in outputs.items():
        if not path:
            continue
        identity = _identity(path)
        if identity in seen:
            raise OptionError(f"{flag} {printable(path)} would overwrite {seen[identity]}; choose another file")
        check_destination(path, flag)
        seen[identity] = f"{flag} {printable(path)}"


def _identity(path: str) -> tuple:
    try:
        info = os.stat(path)
        if not os.path.isfile(path):  # /dev/stdout, a FIFO: not a file that can be overwritten
            return ("special", path)
        return ("file", info.st_dev, info.st_ino)
    except OSError:
        return ("name", os.path.realpath(path))


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
