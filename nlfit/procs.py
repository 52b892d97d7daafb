"""A large grouped fit on every core: helper processes that solve blocks of the same plan.

XLA:CPU runs one program on one core, and a grouped fit's post-processing is partly Python.
In one process the solve of one block and the post-processing of the one before it share
the GIL and the memory bus; on two cores that gained 1.1-1.2x (``nlfit.batch``'s helper
threads). Two processes share neither the GIL nor JAX's runtime. So a large grouped fit
starts one helper process per further core (``python -m nlfit.procs``):

- it gets the prepared fit once without its data (the model, options and bounds, pickled
  through its stdin) and says it is ready; then, for each block it takes, it gets the block's
  number and the rows of its groups alone (``Prepared.rows_of``), and answers with the
  block's value: its :class:`nlfit.result.Fits` and whatever the caller's ``then`` (a
  picklable function of the Fits: the CLI's row formatting) made of it. A helper so starts
  solving as soon as it has imported, and holds one block's rows, not a copy of the whole
  data (sending all of it first took 0.3-0.4 s for 10^7 rows, while the helper waited);
- the main process solves blocks too; whichever process is free takes the next block, and
  the blocks come out in plan order, so the rows are the same text as from one process;
- the cores are shared out: each process (the main one and each helper) gets
  cores // processes XLA devices, with the main process's compilation cache, so a helper's
  programs are loaded, not compiled, after the first run.

When: more than one usable core (``nlfit.cores``: ``--threads N`` caps the processes at N),
more than one block, and at least ``MIN_POINTS`` rows in all (``$NLFIT_PROCESS_POINTS``
overrides it; ``NLFIT_PROCESSES=off`` turns helpers off). Below that a helper's start-up
(JAX's import and the stored programs: about a second) costs more than its core saves.

Signals: a helper runs in its own session (a terminal's Ctrl-C reaches the main process
only) and ends with its parent (``PR_SET_PDEATHSIG`` on Linux). When the main process is
interrupted, in a solve or anywhere else, it sends SIGTERM to its helpers: a block in its
solve stops at its best points and comes back marked interrupted, a block in its
post-processing is finished and sent, and every later block is sent back unsolved (status
``interrupted``), as in one process; the command then ends with the signal's exit code.
A helper that cannot start, ends, or fails hands its block back, and the main process does
it itself. A helper writes nothing to the terminal (its stderr is discarded): what goes
wrong in a block, the main process meets again when it redoes the block.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time

MIN_POINTS = 1_000_000
COMMAND = (sys.executable, "-P", "-m", "nlfit.procs")  # a helper; -P: not the current folder on sys.path
POINTS_ENV = "NLFIT_PROCESS_POINTS"
SWITCH_ENV = "NLFIT_PROCESSES"
CLOSE_SECONDS = 10.0  # how long the helpers get to end before they are killed


def helper_plan(prepared, steps) -> tuple[int, int]:
    """(helper processes, devices per process) for a grouped fit of ``prepared`` in
    ``steps``: (0, 0) where helpers do not pay."""
    from nlfit import cores
    from nlfit.client import OFF_VALUES

    if prepared.keys is None or len(steps) < 2 or os.environ.get(SWITCH_ENV, "").strip().lower() in OFF_VALUES:
        return 0, 0
    text = os.environ.get(POINTS_ENV, "").strip()
    threshold = int(text) if text.isdigit() else MIN_POINTS
    if int(prepared.grouped.counts.sum()) < threshold:
        return 0, 0
    usable = min(cores.limit() or cores.usable(), cores.usable())
    processes = min(usable, len(steps))
    return (processes - 1, usable // processes) if processes > 1 else (0, 0)


def helper_count(prepared, steps) -> int:
    """How many helper processes a grouped fit of ``prepared`` in ``steps`` should start."""
    return helper_plan(prepared, steps)[0]


def _held(work):
    """``work()`` with signals held until it ends; a signal that arrived meanwhile is then
    consumed (the caller learns of it from ``signals.arrivals()``). None if it raised one."""
    from nlfit import signals

    value = None
    try:
        with signals.deferred():
            value = work()
    except signals.Interrupted:  # raised as the block ends (the work is done), or by the work itself
        signals.consume()
    return value


def run_step(prepared, step, *, timeout, stopped, since, then=None, on_progress=None):
    """Build, solve and post-process one block: ``(value, interrupted)``, where value is its
    Fits (``then(fits)`` where given) and interrupted whether a signal arrived meanwhile
    (the solve then stopped at its best points; a signal outside the solve waits until the
    block is done, and a block whose building it met is not solved). ``stopped``: the status
    of the blocks not solved because an earlier one was interrupted (their time limit is 0);
    ``since``: the time origin of ``Fits.seconds``."""
    from nlfit import signals
    from nlfit.fitting import solve
    from nlfit.solvers.status import Status

    before = signals.arrivals()
    batch = _held(lambda: prepared.batch(step))
    if signals.arrivals() != before:
        stopped, timeout = Status.INTERRUPTED, 0.0
    if batch is None:
        batch = _held(lambda: prepared.batch(step))
    solved = solve(prepared, batch, record=False, timeout=timeout, on_progress=on_progress)
    value = _held(lambda: finish_block(prepared, batch, solved, stopped, since, then))
    if value is None:  # a check's own solve met the signal and raised it: once more
        value = _held(lambda: finish_block(prepared, batch, solved, stopped, since, then))
    return value, signals.arrivals() != before or bool((solved.statuses == Status.INTERRUPTED).any())


def finish_block(prepared, batch, solved, stopped, since, then=None):
    """A solved block's post-processing (``nlfit.fitting.finish``), the status of groups left
    unsolved after an interrupt, its time, and ``then``."""
    import numpy as np

    from nlfit.fitting import finish
    from nlfit.solvers.status import Status

    fits = finish(prepared, batch, solved).take(np.arange(batch.distinct))
    if stopped is not None:  # not solved because of the Ctrl-C in an earlier block
        fits.status = np.where(fits.status == Status.TIMEOUT, int(stopped), fits.status)
    fits.seconds = time.perf_counter() - since  # the batch's time when this block was done
    return fits if then is None else then(fits)


class Helpers:
    """Helper processes serving the blocks of one grouped fit. :meth:`run` yields every
    block's value in plan order; the main thread solves blocks itself meanwhile.
    ``signalled``: whether a signal arrived while the blocks were being done (the command
    then ends with its exit code, after the rows)."""

    def __init__(self, prepared, steps, then, count: int, began: float, devices: int = 1, started=None):
        """``started``: helper processes already started (``spawn``, while the fit was being
        prepared); more are started up to ``count``, and any beyond it ended."""
        from nlfit import signals

        self.steps, self.began, self.then = steps, began, then
        self.prepared = prepared
        self.lock = threading.Condition()
        self.next = 0  # the next block not yet taken
        self.handed_back: list[int] = []  # blocks a helper could not do: the main thread does them
        self.done: dict[int, object] = {}
        self.stopped = None  # Status.INTERRUPTED after a signal: later blocks are not solved
        self.signalled = False
        self.finished = 0  # groups done, for the progress
        self.complete = False  # every block yielded
        self.served: dict[int, str] = {}  # block -> "main" or "helper": who solved it
        self.signals = signals
        self.remote_then = then if _picklable(then) else None  # else this process applies it to the helpers' Fits
        payload = (prepared.without_rows(), self.remote_then)  # pickled by each helper's thread, straight into its stdin
        started = list(started or ())
        self.processes = started[:count] + spawn(count - len(started[:count]), devices)
        for extra in started[count:]:  # started early for a plan of fewer blocks: not needed
            end_helper(extra)
        self.serving = len(self.processes)  # helpers whose thread still hands out blocks
        self.threads = [threading.Thread(target=self._serve, args=(process, payload), name="nlfit-helper", daemon=True) for process in self.processes]
        for thread in self.threads:
            thread.start()

    def _timing(self):
        """(deadline on the wall clock or None, stopped) for a block taken now: after a signal
        a block is not solved (deadline now)."""
        if self.stopped is not None:
            return time.time(), self.stopped
        limit = self.prepared.options.timeout
        return (None if limit is None else time.time() + limit - (time.perf_counter() - self.began)), None

    def _take(self, main: bool, share: bool = True):
        with self.lock:
            if main and self.handed_back:
                return self.handed_back.pop(0)
            if self.next >= len(self.steps) or (main and not share and self.serving):  # no helper left: this thread does the rest
                return None
            self.next += 1
            return self.next - 1

    def _serve(self, process, payload: tuple) -> None:
        """One helper's thread: send the fit without its rows, wait until the helper is ready (its
        imports done), then hand it a block at a time with its rows, until none is left."""
        index = None
        try:
            pickle.dump(payload, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            process.stdin.flush()
            if pickle.load(process.stdout)[0] != "ready":  # a block is taken only once the helper can start on it
                return
            while (index := self._take(main=False)) is not None:
                deadline, stopped = self._timing()
                rows, step = self.prepared.rows_of(self.steps[index])
                message = (index, step, rows, deadline, stopped, time.time() - (time.perf_counter() - self.began))
                pickle.dump(message, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                del rows, message
                process.stdin.flush()
                kind, value = pickle.load(process.stdout)
                if kind != "done":
                    break  # the main thread redoes it, and meets the error itself
                if self.then is not None and self.remote_then is None:
                    value = self.then(value)
                with self.lock:
                    self.done[index], self.served[index] = value, "helper"
                    self.finished += self.steps[index].distinct
                    self.lock.notify_all()
                index = None
        except Exception:  # noqa: BLE001 (the helper ended or its fit could not be sent: the main thread does its blocks)
            pass
        finally:
            with self.lock:
                if index is not None:
                    self.handed_back.append(index)
                self.serving -= 1
                self.lock.notify_all()
            try:
                process.stdin.close()
            except OSError:
                pass

    def stop(self) -> None:
        """After a signal: later blocks are not solved, and the helpers' solves stop."""
        from nlfit.solvers.status import Status

        self.stopped = Status.INTERRUPTED
        for process in self.processes:
            if process.poll() is None:
                try:
                    process.send_signal(signal.SIGTERM)
                except OSError:
                    pass

    def _signal(self) -> None:
        self.signals.consume()
        self.signalled = True
        if self.stopped is None:
            self.stop()

    def run(self, on_progress=None, share: bool = True):
        """Every block's value, in plan order. ``share``: this thread solves blocks too (else
        it solves only the blocks a helper hands back, and every block once no helper is left).
        A signal ends no block early here: it is acted on as in :func:`run_step` (every later
        block comes back unsolved)."""
        following, total = 0, int(sum(step.distinct for step in self.steps))
        while following < len(self.steps):
            index = None
            try:
                index = self._take(main=True, share=share)
                if index is not None:
                    deadline, stopped = self._timing()
                    base = self.finished

                    def progress(solved, _total, base=base, distinct=self.steps[index].distinct):
                        if on_progress is not None:
                            on_progress(base + min(solved, distinct), total)

                    left = None if deadline is None else max(deadline - time.time(), 0.0)
                    value, interrupted = run_step(self.prepared, self.steps[index], timeout=left, stopped=stopped, since=self.began,
                                                  then=self.then, on_progress=progress)  # fmt: skip
                    with self.lock:
                        self.done[index], self.served[index] = value, "main"
                        self.finished += self.steps[index].distinct
                    index = None
                    if interrupted:
                        self._signal()
                else:
                    with self.lock:
                        if following not in self.done and not self.handed_back:
                            self.lock.wait()
            except self.signals.Interrupted:
                if index is not None:  # taken, not done: it goes round again
                    with self.lock:
                        self.handed_back.append(index)
                self._signal()
            while True:
                with self.lock:
                    if following not in self.done:
                        break
                    value = self.done.pop(following)
                if on_progress is not None:
                    on_progress(self.finished, total)
                yield following, value
                following += 1
        self.complete = True

    def close(self) -> None:
        """Wait for the helpers: they end once their stdin closes. Where the blocks were not
        all yielded (an error, or the caller stopped), no further block is handed out and the
        helpers are stopped first. Any helper still running after CLOSE_SECONDS is killed."""
        if not self.complete:
            with self.lock:
                self.next = len(self.steps)
            self.stop()
        deadline = time.monotonic() + CLOSE_SECONDS
        for process in self.processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for thread in self.threads:
            thread.join()


def spawn(count: int, devices: int = 1) -> list:
    """Start ``count`` helper processes of ``devices`` XLA devices each (fewer where the
    system refuses more). Each imports nlfit's solver while it waits for its fit."""
    import nlfit

    here = os.path.dirname(os.path.dirname(os.path.abspath(nlfit.__file__)))  # where this nlfit was imported from
    environment = dict(os.environ, NLFIT_THREADS=str(max(devices, 1)), NLFIT_WORKER="off", **{SWITCH_ENV: "off"})
    if here not in {os.path.abspath(p) for p in sys.path[1:] if p}:  # found only through the script's folder: tell the helper
        environment["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    processes = []
    for _ in range(count):
        try:
            processes.append(
                subprocess.Popen(
                    list(COMMAND), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=environment, start_new_session=True
                )  # fmt: skip
            )
        except OSError:  # no process to be had (a limit, no interpreter): the main thread does more
            break
    return processes


def early(dataset) -> list:
    """Helpers started before a grouped fit of ``dataset`` is prepared, so that their start-up
    (Python, JAX) runs beside the preparation: one per further core where the data are
    large enough for helpers (``helper_plan`` then decides how many are used)."""
    from nlfit import cores
    from nlfit.client import OFF_VALUES

    if dataset.groups is None or os.environ.get(SWITCH_ENV, "").strip().lower() in OFF_VALUES:
        return []
    text = os.environ.get(POINTS_ENV, "").strip()
    if dataset.n_points < (int(text) if text.isdigit() else MIN_POINTS):
        return []
    usable = min(cores.limit() or cores.usable(), cores.usable())
    return spawn(usable - 1) if usable > 1 else []


def end_helper(process) -> None:
    """End a helper that got no work: its stdin closes, so it exits; killed if it does not."""
    try:
        process.stdin.close()
    except OSError:
        pass
    try:
        process.wait(timeout=CLOSE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _picklable(function) -> bool:
    try:
        pickle.dumps(function)
    except (pickle.PicklingError, AttributeError, TypeError):
        return False
    return True


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent ends (a killed nlfit leaves no helper)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def main() -> int:
    """A helper: read the fit, then answer block numbers until stdin ends. Whatever ends it
    early (stdin closed, a signal outside a solve, a payload it cannot read) ends it quietly:
    the main process does its blocks."""
    try:
        from nlfit import signals

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process acts on a Ctrl-C
        signals.install()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent()
        answers = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)  # a library's print cannot corrupt the answers
        source = sys.stdin.buffer
        import nlfit.fitting  # noqa: F401 (while the main process prepares the fit)
        import nlfit.io.rows  # noqa: F401
        from nlfit._jax import jax

        jax.devices()
        whole, then = pickle.load(source)
        pickle.dump(("ready", None), answers)  # imported and set up: the main process may hand it a block
        answers.flush()
        while True:
            index, step, rows, deadline, stopped, began = pickle.load(source)
            prepared = whole.with_rows(rows)
            left = None if deadline is None else max(deadline - time.time(), 0.0)
            since = time.perf_counter() - (time.time() - began)  # the main process's start, on this clock
            try:
                value, _ = run_step(prepared, step, timeout=left, stopped=stopped, since=since, then=then)
            except Exception as error:  # noqa: BLE001 (the main process redoes the block and reports it)
                pickle.dump(("error", f"{type(error).__name__}: {error}"), answers)
                answers.flush()
                return 1
            pickle.dump(("done", value), answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()
    except BaseException:  # noqa: BLE001 (see the docstring)
        return 0


if __name__ == "__main__":
    sys.exit(main())
