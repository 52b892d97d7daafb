"""A large grouped fit on every core: helper processes that solve blocks of the same plan.

XLA:CPU runs one program on one core, and a grouped fit's post-processing is partly Python.
In one process the solve of one block and the post-processing of the one before it share
the GIL and the memory bus; on two cores that gained 1.1-1.2x (``nlfit.batch``'s helper
threads). Two processes share neither the GIL nor JAX's runtime. So a large grouped fit
starts one helper process per further core (``python -m nlfit.procs``):

- it gets the prepared fit once (the model, the plan of blocks and the arrays they are cut
  from, pickled through its stdin; the group-key column stays behind), then block numbers,
  and answers each with the block's value: its :class:`nlfit.result.Fits` and whatever the
  caller's ``then`` (a picklable function of the Fits: the CLI's row formatting) made of it;
- the main process solves blocks too; whichever process is free takes the next block, and
  the blocks come out in plan order, so the rows are the same text as from one process;
- a helper runs on one device (``NLFIT_THREADS=1``), with the main process's compilation
  cache, so its programs are loaded, not compiled, after the first run.

When: more than one usable core (``nlfit.cores``: ``--threads N`` caps the processes at N),
more than one block, and at least ``MIN_POINTS`` rows in all (``$NLFIT_PROCESS_POINTS``
overrides it; ``NLFIT_PROCESSES=off`` turns helpers off). Below that a helper's start-up
(JAX's import and the stored programs: about a second) costs more than its core saves.

Signals: a helper ignores SIGINT (a terminal's Ctrl-C reaches the whole process group; the
main process acts on it) and ends with its parent (``PR_SET_PDEATHSIG`` on Linux). When the
main process is interrupted it sends SIGTERM to its helpers: a block in its solve stops at its
best points and comes back marked interrupted, as in one process; a helper that ends, fails
or is stopped outside a solve hands its block back, and the main process builds it itself.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

MIN_POINTS = 1_000_000
COMMAND = (sys.executable, "-m", "nlfit.procs")  # a helper
POINTS_ENV = "NLFIT_PROCESS_POINTS"
SWITCH_ENV = "NLFIT_PROCESSES"


def helper_count(prepared, steps) -> int:
    """How many helper processes a grouped fit of ``prepared`` in ``steps`` should start."""
    from nlfit import cores
    from nlfit.client import OFF_VALUES

    if prepared.keys is None or len(steps) < 2 or os.environ.get(SWITCH_ENV, "").strip().lower() in OFF_VALUES:
        return 0
    text = os.environ.get(POINTS_ENV, "").strip()
    threshold = int(text) if text.isdigit() else MIN_POINTS
    if int(prepared.grouped.counts.sum()) < threshold:
        return 0
    usable = min(cores.limit() or cores.usable(), cores.usable())
    return max(min(usable, len(steps)) - 1, 0)


def portable(prepared):
    """``prepared`` without what a helper does not read: the group-key column (an object
    array as long as the data) and the map of kept rows."""
    data = dataclasses.replace(prepared.dataset, groups=None, kept_rows=None)
    return dataclasses.replace(prepared, dataset=data)


def run_step(prepared, step, *, timeout, stopped, since, then=None, on_progress=None):
    """Build, solve and post-process one block: ``(value, interrupted)``, where value is its
    Fits (``then(fits)`` where given) and interrupted whether the solve was stopped by a
    signal. ``stopped``: the status of the blocks not solved because an earlier one was
    interrupted (their time limit is then 0); ``since``: the time origin of ``Fits.seconds``."""
    from nlfit.fitting import solve
    from nlfit.solvers.status import Status

    batch = prepared.batch(step)
    solved = solve(prepared, batch, record=False, timeout=timeout, on_progress=on_progress)
    value = finish_block(prepared, batch, solved, stopped, since, then)
    return value, bool((solved.statuses == Status.INTERRUPTED).any())


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
    block's value in plan order; the main thread solves blocks itself meanwhile."""

    def __init__(self, prepared, steps, then, count: int, began: float):
        from nlfit import signals

        self.steps, self.began, self.then = steps, began, then
        self.prepared = prepared
        self.lock = threading.Condition()
        self.next = 0  # the next block not yet taken
        self.handed_back: list[int] = []  # blocks a helper could not do: the main thread does them
        self.done: dict[int, object] = {}
        self.stopped = None  # Status.INTERRUPTED after a signal: later blocks are not solved
        self.finished = 0  # groups done, for the progress
        self.complete = False  # every block yielded
        self.served: dict[int, str] = {}  # block -> "main" or "helper": who solved it
        self.signals = signals
        self.remote_then = then if _picklable(then) else None  # else this process applies it to the helpers' Fits
        payload = (portable(prepared), steps, self.remote_then)  # pickled by each helper's thread, straight into its stdin
        environment = dict(os.environ, NLFIT_THREADS="1", NLFIT_WORKER="off", **{SWITCH_ENV: "off"})
        self.processes = [subprocess.Popen(list(COMMAND), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environment) for _ in range(count)]
        self.threads = [threading.Thread(target=self._serve, args=(process, payload), name="nlfit-helper", daemon=True) for process in self.processes]
        for thread in self.threads:
            thread.start()

    def _timing(self):
        """(time limit left, stopped) for a block taken now."""
        left = self.prepared.options.timeout
        if left is not None or self.stopped is not None:
            left = 0.0 if self.stopped is not None else max(left - (time.perf_counter() - self.began), 0.0)
        return left, self.stopped

    def _take(self, main: bool, share: bool = True):
        with self.lock:
            if main and self.handed_back:
                return self.handed_back.pop(0)
            if self.next >= len(self.steps) or (main and not share):
                return None
            self.next += 1
            return self.next - 1

    def _serve(self, process, payload: tuple) -> None:
        """One helper's thread: send the fit, then a block at a time, until none is left."""
        index = None
        try:
            pickle.dump(payload, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            process.stdin.flush()
            while (index := self._take(main=False)) is not None:
                left, stopped = self._timing()
                pickle.dump((index, left, stopped, time.perf_counter() - self.began), process.stdin)
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
            pass  # the helper ended: its block goes back to the main thread
        finally:
            with self.lock:
                if index is not None:
                    self.handed_back.append(index)
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

    def run(self, on_progress=None, share: bool = True):
        """Every block's value, in plan order. ``share``: this thread solves blocks too (else
        it solves only the blocks a helper hands back)."""
        following, total = 0, int(sum(step.distinct for step in self.steps))
        while following < len(self.steps):
            index = self._take(main=True, share=share)
            if index is not None:
                left, stopped = self._timing()
                base = self.finished

                def progress(solved, _total, base=base, distinct=self.steps[index].distinct):
                    if on_progress is not None:
                        on_progress(base + min(solved, distinct), total)

                value, interrupted = run_step(self.prepared, self.steps[index], timeout=left, stopped=stopped, since=self.began,
                                              then=self.then, on_progress=progress)  # fmt: skip
                if interrupted and self.stopped is None:
                    self.stop()
                with self.lock:
                    self.done[index], self.served[index] = value, "main"
                    self.finished += self.steps[index].distinct
            else:
                with self.lock:
                    if following not in self.done and not self.handed_back:
                        try:
                            self.lock.wait()
                        except self.signals.Interrupted:
                            self.signals.consume()
                            self.stop()
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
        helpers are stopped first."""
        if not self.complete:
            with self.lock:
                self.next = len(self.steps)
            self.stop()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for thread in self.threads:
            thread.join()


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
    """A helper: read the fit, then answer block numbers until stdin ends."""
    from nlfit import signals

    signals.install()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process acts on a Ctrl-C
    _die_with_parent()
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a library's print cannot corrupt the answers
    source = sys.stdin.buffer
    try:
        prepared, steps, then = pickle.load(source)
        while True:
            message = pickle.load(source)
            index, left, stopped, elapsed = message
            since = time.perf_counter() - elapsed
            try:
                value, _ = run_step(prepared, steps[index], timeout=left, stopped=stopped, since=since, then=then)
            except Exception as error:  # noqa: BLE001 (the main process redoes the block and reports it)
                pickle.dump(("error", f"{type(error).__name__}: {error}"), answers)
                answers.flush()
                return 1
            pickle.dump(("done", value), answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()
    except (EOFError, BrokenPipeError, signals.Interrupted):
        return 0


if __name__ == "__main__":
    sys.exit(main())
