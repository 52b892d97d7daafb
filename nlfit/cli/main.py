"""The console entry point. A resident worker runs the command when one is listening
(``nlfit.client``: nothing heavy is imported before that is known); otherwise the command
runs here, and a worker is started in the background for the next ones. In-process, the
signal handlers are installed before anything heavy is imported, so Ctrl-C or SIGTERM at
any moment ends with one line and exit 130 or 143."""

from __future__ import annotations

import io
import os
import signal
import sys

from nlfit import client, signals


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
        _guard_streams()
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


def _guard_streams() -> None:
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


def _exit(code: int) -> None:
    """Exit without Python's final flush of a stdout that may be closed or full."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            if stream is sys.stdout:
                _silence_stdout()
    # The work is done and written: a signal from now on (Python's finalization, JAX's exit
    # hooks) must not turn a complete result into a death by signal.
    for signum in signals.EXIT_CODES:
        signal.signal(signum, signal.SIG_IGN)
    if signals.received() is not None:
        # Interrupted: what was written is complete and flushed. Python's finalization could
        # now tear down a C extension whose import the signal cut short: leave without it.
        os._exit(code)
    sys.exit(code)


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
