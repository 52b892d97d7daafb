"""The console entry point. A resident worker runs the command when one is listening
(``nlfit.client``: nothing heavy is imported before that is known); otherwise the command
runs here, and a worker is started in the background for the next ones. In-process, the
signal handlers are installed before anything heavy is imported, so Ctrl-C or SIGTERM at
any moment ends with one line and exit 130 or 143."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from nlfit import client, signals
from nlfit.cli.streams import guard_streams, silence_stdout


def main() -> None:
    argv = sys.argv[1:]
    if "--no-worker" in argv:  # the same as NLFIT_WORKER=off, for this command
        argv = [a for a in argv if a != "--no-worker"]
        sys.argv[1:] = argv
        os.environ["NLFIT_WORKER"] = "off"
    use_worker = client.enabled(argv)
    if use_worker:
        code = client.run(argv)
        if code is not None:
            sys.exit(code)
    code = execute()
    if use_worker and signals.received() is None:
        client.start_in_background()
    _exit(code)


def execute(prog_name: str | None = None) -> int:
    """Run the command in ``sys.argv`` in this process; its exit code (the worker calls
    this too, with the client's streams as descriptors 0-2 and the client's program name)."""
    try:
        signals.install()
        guard_streams()
        if os.environ.get("NLFIT_ANNOUNCE_START"):  # tests: a line to synchronise on; signals are handled from here
            client.say("nlfit: started\n")
        from nlfit.cli.app import run

        code = run(prog_name)
        signals.check()  # a signal swallowed on its way (a gc callback) still ends the run
    except (signals.Interrupted, KeyboardInterrupt) as stop:
        for signum in signals.EXIT_CODES:  # one message, whatever arrives next
            signal.signal(signum, signal.SIG_IGN)
        signals.consume()
        stop = stop if isinstance(stop, signals.Interrupted) else signals.Interrupted(signal.SIGINT)
        client.say(f"nlfit: {stop}\n")
        code = stop.exit_code
    return code


def _exit(code: int) -> None:
    """Flush what the command wrote and leave without Python's finalization. Every output
    file is written and closed by then (``nlfit.io.write``), a Dask cluster closed, and no
    thread of the command is left, so finalization only tears down modules and runs JAX's
    exit hooks: 0.3 s of a 1.6 s default fit from a new process (``benchmarks/startup.py``),
    for nothing the user sees. It could also be cut short by a signal, or tear down a C
    extension whose import a signal interrupted. Code that needs to run after the command
    calls ``execute`` instead."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            if stream is sys.stdout:
                silence_stdout()
    # The work is done and written: a signal from now on must not turn a complete result
    # into a death by signal.
    for signum in signals.EXIT_CODES:
        signal.signal(signum, signal.SIG_IGN)
    with contextlib.suppress(Exception):  # what C code wrote to its own buffers (LAPACK's messages on descriptor 1)
        import ctypes

        ctypes.CDLL(None).fflush(None)
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))
