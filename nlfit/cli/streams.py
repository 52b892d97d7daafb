"""The standard streams of a command: stdout carries results only.

Used by the entry point (``nlfit.cli.main``) before a command runs and when it exits, by
the application (``nlfit.cli.app``) when a write to stdout failed, and by the commands'
shared output helpers (``nlfit.cli.common``). It lives apart from all three, so that none
of them imports the entry point, and it imports nothing heavy (the entry point runs it
before it knows whether a resident worker will serve the command).
"""

from __future__ import annotations

import io
import os
import sys


def guard_streams() -> None:
    """stdout carries results only. Libraries that print from C (LAPACK's "On entry to DLASCL
    ...", XLA) write to file descriptor 1, so descriptor 1 is pointed at stderr and Python's
    ``sys.stdout`` gets a private copy of the real stdout. A standard descriptor that is
    closed (``>&-``, ``<&-``) is opened on /dev/null, so that no file nlfit opens later can
    take its number and receive such text; ``sys.stdin``/``sys.stdout`` stay None and the
    commands report "stdin is closed" or "stdout is closed"."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
            except OSError:
                pass
    stdout = sys.stdout
    if stdout is None or sys.stderr is None:
        return
    try:
        private = os.dup(stdout.fileno())
        os.dup2(sys.stderr.fileno(), 1)
    except (OSError, ValueError, AttributeError):
        return
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(private, "w")), encoding=stdout.encoding, errors=stdout.errors, line_buffering=stdout.line_buffering
    )


def silence_stdout() -> None:
    """Point descriptor 1 at /dev/null: stdout failed (a closed pipe, a full disk), and
    Python flushes it again at exit, which must not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
