"""Shared CLI plumbing: error handling, config files, parsing of list options, output."""

from __future__ import annotations

import contextlib
import functools
import os
import stat
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


def load_config(path: str | None, allowed: set[str]) -> dict:
    """Options from a TOML file, keys as on the command line (dashes or underscores), each
    checked against its declared type (``nlfit.schema.OPTIONS``): a wrong type or a value out
    of range is one OptionError naming the key (exit code 2)."""
    from nlfit.schema import check_option

    if path is None:
        return {}
    file = Path(path)
    try:
        if not file.exists():
            raise OptionError(f"config file not found: {printable(path)}")
        if file.is_dir():
            raise OptionError(f"config file {printable(path)} is a folder")
    except OSError as exc:  # a name too long, a loop of links: exists() does not say why
        raise OptionError(f"config file {printable(path)}: {exc.strerror or exc}") from None
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


def csv_text(columns: dict) -> str:
    """Columns of floats as CSV, each value printed so that it reads back exactly."""
    names = list(columns)
    rows = zip(*(columns[name] for name in names), strict=True)

    import numpy as np

    def cell(value):
        return str(value) if isinstance(value, (int, np.integer)) else repr(float(value))

    return ",".join(names) + "\n" + "".join(",".join(cell(v) for v in row) + "\n" for row in rows)


def emit(text: str, output: str | None) -> None:
    """The result: to ``output`` (atomically where it can, see ``write_atomic``), or to
    stdout. Where the write cannot block (a regular file), signals wait until the text is
    written, so it is whole or absent; a write to a pipe or FIFO that blocks stays
    interruptible."""
    emit_chunks([text], output)


def emit_chunks(pieces, output: str | None) -> None:
    """Like :func:`emit` for a long text made piece by piece. A file is written atomically
    (a signal removes the temporary file); ``/dev/stdout``, ``/dev/fd/N`` and the like are
    the descriptors themselves (nlfit's stdout is its own copy, see ``nlfit.cli.streams``)."""
    from nlfit import signals
    from nlfit.io.write import descriptor_of, write_atomic

    fd = descriptor_of(output) if output else 1
    if fd is None:
        try:
            holding = signals.deferred() if _regular_destination(output) else contextlib.nullcontext()
            with holding:
                write_atomic(output, pieces)
        except OSError as exc:
            raise OptionError(f"cannot write --output {printable(output)}: {exc.strerror or exc}") from None
        return
    stream = sys.stdout if fd == 1 else sys.stderr if fd == 2 else None
    for piece in pieces:
        with signals.deferred() if _is_regular_fd(stream if stream is not None else fd) else contextlib.nullcontext():
            if stream is sys.stdout:
                write_stdout(piece)
            elif stream is not None:
                stream.write(piece)
                stream.flush()
            else:
                try:
                    os.write(fd, piece.encode("utf-8"))
                except OSError as exc:
                    raise OptionError(f"cannot write --output {printable(output)}: {exc.strerror or exc}") from None


def _regular_destination(path: str) -> bool:
    try:
        return not os.path.exists(path) or os.path.isfile(path)
    except OSError:
        return False


def _is_regular_fd(target) -> bool:
    """Is ``target`` (a descriptor or a stream) a regular file, where a write cannot block?"""
    try:
        fd = target if isinstance(target, int) else target.fileno()
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except (OSError, ValueError, TypeError):
        return False


class PipeClosed(BaseException):
    """The reader of stdout went away (``| head``). Not an OSError, so that click and rich,
    which turn a broken pipe into exit 1, let it through to the entry point (exit 0)."""


def stdout_console(width: int | None = None):
    """A rich Console on stdout whose broken pipe ends the command with exit 0 (not a
    terminal: ``width`` or 140 columns)."""
    from rich.console import Console

    if sys.stdout is None:
        raise OptionError("stdout is closed")

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
    except UnicodeEncodeError as exc:  # a ValueError, but stdout is open: its encoding lacks a character
        raise OptionError(encoding_message(exc, sys.stdout.encoding)) from None
    except (OSError, ValueError) as exc:
        from nlfit.cli.streams import silence_stdout

        silence_stdout()
        reason = getattr(exc, "strerror", None) or ("stdout is closed" if isinstance(exc, ValueError) else str(exc))
        raise OptionError(f"cannot write the result to stdout: {reason}") from None


def encoding_message(exc: UnicodeEncodeError, encoding: str | None) -> str:
    """What an encoding error on stdout means, and what to do about it."""
    character = exc.object[exc.start : exc.start + 1]
    return (
        f"cannot write the result to stdout: its encoding ({encoding or exc.encoding}) cannot show the character "
        f"{ascii(character)} (U+{ord(character):04X}); set PYTHONIOENCODING=utf-8 (or a UTF-8 locale), or give --output FILE"
    )


def check_outputs(outputs: dict[str, str | None], inputs: list[str]) -> None:
    """Before any work: each output (flag -> path) can be written, is none of the inputs
    (data, config; '-' is whatever stdin is) and is not another output. Files are compared
    by device and inode (a link, a FIFO, ``./x`` and ``x`` are the same), character devices
    such as /dev/null never clash, paths that do not exist yet by their resolved names."""
    from nlfit.io.write import check_destination, descriptor_of

    if not outputs.get("--output") and sys.stdout is None:
        raise OptionError("stdout is closed: give --output FILE for the result")
    seen: dict[tuple, str] = {}
    for name in inputs:
        if name:
            seen.setdefault(_identity(name), f"the input {printable(name) if name != '-' else '(stdin)'}")
    for flag, path in outputs.items():
        if path is None:
            continue
        if path == "":
            raise OptionError(f"{flag} needs a file name")
        identity = _identity(path)
        if identity in seen and identity[0] != "device":
            raise OptionError(f"{flag} {printable(path)} would overwrite {seen[identity]}; choose another file")
        if descriptor_of(path) is None:
            check_destination(path, flag)
        seen[identity] = f"{flag} {printable(path)}"


def _identity(path: str) -> tuple:
    """What ``path`` is on disk: ("file", dev, inode) for anything but a character device,
    ("device", path) for one, ("name", resolved path) for what does not exist (yet)."""
    from nlfit.io.write import descriptor_of

    fd = 0 if path == "-" else descriptor_of(path)
    try:
        if fd is not None:
            fd = sys.stdout.fileno() if fd == 1 and sys.stdout is not None else fd  # nlfit's own copy of stdout
            info = os.fstat(fd)
        else:
            info = os.stat(path)
    except (OSError, ValueError, AttributeError):
        try:
            return ("name", os.path.realpath(path))
        except (OSError, RuntimeError):
            return ("name", path)
    if stat.S_ISCHR(info.st_mode):
        return ("device", path)
    return ("file", info.st_dev, info.st_ino)
