"""SIGINT and SIGTERM, at any moment: one line, exit 130 or 143, nothing half-written.

The console entry point installs :func:`install` before it imports anything heavy. The
handler raises :class:`Interrupted`, a ``BaseException`` that is not a ``KeyboardInterrupt``:
click turns a ``KeyboardInterrupt`` into "Aborted!" and exit 1, and ``except Exception``
blocks must not catch it either. The solver loop catches it and reports each member's best
point; anywhere else it ends the command with ``nlfit: interrupted`` (or ``terminated``).

A signal can also arrive where Python cannot raise: inside a garbage-collection callback
(JAX registers one) or a ``__del__``, where an exception is printed as "Exception ignored"
and dropped. So the handler also records the signal. The solver loop checks the record
between compiled chunks, the entry point checks it before it exits, and the hook for
unraisable exceptions stays quiet about ours. Inside :func:`deferred` (writing a result) a
signal is recorded and raised when the block ends, so a file or stdout gets the whole text or
nothing.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
MESSAGES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(MESSAGES.get(signum, "interrupted"))
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 130)


_received: int | None = None  # the last signal that arrived
_pending: int | None = None  # a signal not yet acted on (swallowed, or held by deferred())
_deferring = 0
_arrivals = 0  # how many signals arrived


def _handler(signum, frame) -> None:
    global _received, _pending, _arrivals
    _received = _pending = signum
    _arrivals += 1
    if _deferring == 0:
        raise Interrupted(signum)


def _quiet_unraisable(unraisable, _default=sys.unraisablehook) -> None:
    if isinstance(unraisable.exc_value, Interrupted | KeyboardInterrupt):
        return  # still pending: acted on at the next check()
    _default(unraisable)


def install() -> None:
    """Route SIGINT and SIGTERM through :func:`_handler` (main thread only), and hold them
    while a C extension module initializes (see :func:`_hold_during_extension_imports`)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    sys.unraisablehook = _quiet_unraisable
    _hold_during_extension_imports()


def _hold_during_extension_imports() -> None:
    """An exception raised by the handler while a C extension initializes (jaxlib's
    nanobind modules call back into Python during their init) cannot unwind through C++:
    the process aborts or segfaults. So the loading of extension modules runs inside
    :func:`deferred`; a signal that arrives then is acted on as soon as the module is loaded
    (JAX's import, the longest, takes about half a second)."""
    from importlib.machinery import ExtensionFileLoader

    if getattr(ExtensionFileLoader, "_nlfit_holds_signals", False):
        return
    create, execute = ExtensionFileLoader.create_module, ExtensionFileLoader.exec_module

    def create_module(self, spec):  # held from here to the end of exec_module: a module
        global _deferring  # dropped between its creation and its init can crash at exit
        _deferring += 1
        try:
            return create(self, spec)
        except BaseException:
            _deferring -= 1
            raise

    def exec_module(self, module):
        global _deferring
        try:
            return execute(self, module)
        finally:
            _deferring -= 1
            if _deferring == 0:
                check()

    ExtensionFileLoader.create_module = create_module
    ExtensionFileLoader.exec_module = exec_module
    ExtensionFileLoader._nlfit_holds_signals = True


def received() -> int | None:
    """The last signal that arrived, or None."""
    return _received


def arrivals() -> int:
    """How many signals arrived so far: a caller compares two counts to learn whether one
    arrived in between, even if something else acted on it (a solver loop consumes it)."""
    return _arrivals


def exit_code() -> int:
    """The exit code of an interrupted command: 143 after SIGTERM, else 130."""
    return EXIT_CODES.get(_received, 130)


def pending() -> int | None:
    """A signal that arrived and has not been acted on, or None."""
    return _pending


def consume() -> None:
    """The caller has acted on the signal (the solver stopped at its best points)."""
    global _pending
    _pending = None


def check() -> None:
    """Raise :class:`Interrupted` for a signal that arrived and was not acted on; in the main
    thread only, where Python delivers signals: a thread that helps it (the post-processing
    of a grouped fit's blocks, ``nlfit.batch``) runs to its end, and the main thread acts."""
    if _pending is not None and threading.current_thread() is threading.main_thread():
        raise Interrupted(_pending)


@contextlib.contextmanager
def deferred():
    """Hold signals for the duration of the block (a result being written), then act."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _deferring == 0:
        check()


def reset() -> None:
    """Forget every signal (tests that run several commands in one process)."""
    global _received, _pending
    _received = _pending = None
