"""Many independent fits of one model: ``nlfit fit DATA --group-by COL``.

Every group becomes one member of a batch (``nlfit.prepare``: size buckets, blocks, padding
with sigma = inf). One jitted, vmapped solver step then advances every member that is still
running (``nlfit.solvers.loop``); a member that has stopped is frozen, so a group that fails
(non-finite data, no convergence, a singular Jacobian) gets its own status and cannot
disturb the others. Groups with fewer points than parameters are reported as
``too-few-points``, groups whose every row was dropped as ``no-data``: every group keeps
its row. Each block's results are one :class:`nlfit.result.Fits` (columns), written in
bulk (``nlfit.io.rows``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from nlfit.io.dataset import Dataset
from nlfit.options import FitOptions
from nlfit.prepare import Grouped, blocks, group_rows, prepare, size_buckets  # noqa: F401 (re-exported)
from nlfit.result import Fits
from nlfit.solvers.status import Status


@dataclass
class BatchResult:
    """The fits of every group, in group order, as columns (``fits``) and, for the library's
    users, as one :class:`nlfit.result.FitResult` each (``results``)."""

    keys: list[str]
    fits: Fits
    method: str
    globalization: str
    param_names: tuple[str, ...]
    seconds: float

    @property
    def results(self) -> list:
        return [self.fits.result(g) for g in range(len(self.fits))]

    @property
    def params(self) -> np.ndarray:
        return self.fits.params

    @property
    def stderr(self) -> np.ndarray:
        return np.where(self.fits.has_covariance[:, None], self.fits.stderr, np.nan)

    @property
    def statuses(self) -> np.ndarray:
        return self.fits.status

    def rows(self) -> list[dict]:
        """One dict per group: the single-fit JSON contract without the history."""
        import json

        from nlfit.io.rows import json_rows

        return [json.loads(line) for line in json_rows(self.fits)]


def fit_groups(dataset: Dataset, model_spec, p0=None, on_progress=None, group_starts=None, *, options: FitOptions | None = None, processes: bool = True,
               **given) -> BatchResult:  # fmt: skip
    """Fit every group. ``p0`` (position or names) applies to all groups; ``group_starts``
    (G, n) gives each group its own start; without either, each group gets the model's default.
    ``options`` and keywords: as for ``nlfit.fitting.fit``; ``processes``: as ``GroupFits``."""
    fits = GroupFits(dataset, model_spec, p0, on_progress, group_starts, options=options, processes=processes, **given)
    parts = list(fits.blocks())
    order = np.argsort(np.concatenate([block for block, _ in parts]), kind="stable")
    merged = concatenate([part for _, part in parts]).take(order)
    merged.seconds = time.perf_counter() - fits.began
    options = fits.prepared.options
    return BatchResult(keys=fits.keys, fits=merged, method=options.method, globalization=options.globalization, param_names=fits.param_names,
                       seconds=merged.seconds)  # fmt: skip


def solve_only(dataset: Dataset, model_spec, group_starts, options: FitOptions, p0=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(params (G, n), solver statuses (G,), weighted residual sums of squares (G,)) of every
    group, in ``group_rows`` order: the solve alone, without the post-processing of
    ``fit_groups`` (polish, statistics, checks, results), for fits that need no more
    (``nlfit.profile``, ``nlfit.bootstrap``, ``nlfit.globalfit.separate_start``). Starts as
    ``fit_groups``: ``group_starts``, else ``p0`` for all, else each group's default."""
    from nlfit.fitting import solve

    prepared = prepare(dataset, model_spec, options, p0, grouped=True, group_starts=group_starts)
    groups, n = len(prepared.keys), len(prepared.param_names)
    params, statuses, rss = np.full((groups, n), np.nan), np.full(groups, int(Status.NONFINITE)), np.full(groups, np.nan)
    for batch in prepared.batches():
        solved = solve(prepared, batch, record=False, timeout=None)
        size, members = batch.distinct, batch.members[: batch.distinct]
        params[members] = np.asarray(solved.state.params)[:size]
        statuses[members] = np.asarray(solved.statuses)[:size]
        residuals = np.where(np.asarray(batch.real)[:size], np.asarray(solved.state.local.residuals)[:size], 0.0)  # scaled: r / (sigma scale)
        with np.errstate(over="ignore", invalid="ignore"):
            rss[members] = np.sum(residuals**2, axis=1) * np.asarray(batch.problems.scale)[:size] ** 2
    return params, statuses, rss


class GroupFits:
    """The fits of every group, solved block by block: ``blocks()`` yields each block's
    groups (indices into ``keys``) and their :class:`Fits`, so that a caller can write them
    and let them go (``nlfit fit --group-by`` keeps no result). Everything is checked by
    ``nlfit.prepare.prepare`` before any group is solved: its errors come before any output.
    Blocks follow the size buckets, so groups of different sizes arrive out of group order."""

    def __init__(self, dataset: Dataset, model_spec, p0=None, on_progress=None, group_starts=None, *, options: FitOptions | None = None,
                 processes: bool = True, **given):  # fmt: skip
        from nlfit import procs

        self.began = time.perf_counter()
        self.processes = processes  # whether a large fit may start helper processes (nlfit.procs)
        self.signalled = False  # a signal arrived while helpers ran (see _with_helpers)
        options = FitOptions.of(given) if options is None else options.replace(**given)
        self.started = procs.early(dataset) if processes else []  # helpers start while the fit is prepared
        try:
            self.prepared = prepare(dataset, model_spec, options, p0, grouped=True, group_starts=group_starts)
        except BaseException:
            self.close()
            raise
        self.on_progress = on_progress
        self.keys, self.param_names, self.model = self.prepared.keys, self.prepared.param_names, self.prepared.model

    def blocks(self, then=None):
        """(group indices, their Fits) for each block solved, every group once, in block order.

        A large fit on more than one core runs blocks in helper processes as well
        (``nlfit.procs``; ``then`` must then be picklable: a module-level function or a
        ``functools.partial`` of one). Otherwise the solve of each block runs here (the main
        thread: Ctrl-C and the time limit act on it as in a single fit); its post-processing
        (``nlfit.fitting.finish``) and ``then`` (a function of the block's Fits, e.g. its rows
        as text; its value is yielded in place of the Fits) run in helper threads, one block
        per thread, while the next blocks are solved: with more than one core
        (``nlfit.cores``), at most that many blocks are in post-processing at once. The
        solver's compiled loop and most of the post-processing (compiled polish, numpy)
        release the GIL, so the stages run side by side."""
        from nlfit import cores, procs

        steps = self.prepared.plan()
        helpers, devices = procs.helper_plan(self.prepared, steps) if self.processes else (0, 0)
        if helpers:
            yield from self._with_helpers(steps, then, helpers, devices)
            return
        self.close()  # helpers started early for a fit that turned out not to need them
        from concurrent.futures import ThreadPoolExecutor

        from nlfit.fitting import solve

        options, groups = self.prepared.options, len(self.keys)
        threads = min(cores.limit() or cores.usable(), cores.usable())
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="nlfit-post") if threads > 1 else None
        finished = 0
        stopped = None  # INTERRUPTED once a block was interrupted: the rest are not solved
        waiting = []  # (group indices, future or result) in block order
        try:
            for step in steps:
                batch = self.prepared.batch(step)
                left = options.timeout
                if left is not None or stopped is not None:  # one time limit for the whole batch; after Ctrl-C, none
                    left = 0.0 if stopped is not None else max(left - (time.perf_counter() - self.began), 0.0)

                def progress(solved, total, offset=finished, distinct=batch.distinct):
                    if self.on_progress is not None:
                        self.on_progress(offset + min(solved, distinct), groups)

                solved = solve(self.prepared, batch, record=False, timeout=left, on_progress=progress)
                block = batch.members[: batch.distinct]
                arguments = (self.prepared, batch, solved, stopped, self.began, then)
                waiting.append((block, procs.finish_block(*arguments) if pool is None else pool.submit(procs.finish_block, *arguments)))
                finished += batch.distinct
                if np.any(solved.statuses == Status.INTERRUPTED):
                    stopped = Status.INTERRUPTED
                while waiting and (pool is None or len(waiting) > threads or waiting[0][1].done()):
                    yield self._ready(waiting.pop(0))
            while waiting:
                yield self._ready(waiting.pop(0))
        finally:  # a block still in post-processing ends here (a resident worker's next command must not meet it)
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _with_helpers(self, steps, then, count: int, devices: int):
        """:meth:`blocks` with ``count`` helper processes (``nlfit.procs``) of ``devices``
        XLA devices each; this process solves blocks on as many meanwhile. A signal that
        arrived meanwhile sets ``signalled`` (the rows after it are unsolved, as in one process)."""
        from nlfit import cores, procs

        def progress(done, total):
            if self.on_progress is not None:
                self.on_progress(done, total)

        with cores.limited(devices):
            started, self.started = self.started, []
            helpers = procs.Helpers(self.prepared, steps, then, count, self.began, devices, started)
            try:
                for index, value in helpers.run(progress):
                    yield steps[index].members[: steps[index].distinct], value
            finally:
                self.signalled |= helpers.signalled
                helpers.close()

    def close(self) -> None:
        """End the helper processes started early and not handed to a run (``blocks`` does this
        itself; a caller that never calls it may)."""
        from nlfit import procs

        started, self.started = self.started, []
        for process in started:
            procs.end_helper(process)

    def __del__(self):
        for process in getattr(self, "started", ()):
            if process.poll() is None:
                process.kill()

    @staticmethod
    def _ready(item):
        from concurrent.futures import Future

        block, value = item
        return block, value.result() if isinstance(value, Future) else value


def concatenate(parts: list[Fits]) -> Fits:
    """The fits of several blocks as one Fits, in the order given."""
    import dataclasses

    first = parts[0]
    if len(parts) == 1:
        return first
    changes, offset, warnings = {}, 0, {}
    for item in dataclasses.fields(first):
        if isinstance(getattr(first, item.name), np.ndarray):
            changes[item.name] = np.concatenate([getattr(p, item.name) for p in parts])
    changes["stats"] = {name: np.concatenate([p.stats[name] for p in parts]) for name in first.stats}
    for part in parts:
        warnings.update({offset + g: found for g, found in part.warnings.items()})
        offset += len(part)
    changes["warnings"] = warnings
    for name in ("keys", "starts", "histories"):
        values = [getattr(p, name) for p in parts]
        changes[name] = None if any(v is None for v in values) else [item for v in values for item in v]
    return dataclasses.replace(first, **changes)


SAID_BEFORE = ("dropped-rows",)  # said once for the whole input (the reader's line), not once per group


@dataclass
class Tally:
    """What the rows of a grouped fit written so far say, whichever engine made them: how
    many, how many failed, whether one was interrupted, and the first ``keep`` warning lines
    (naming their group) with a count of the rest."""

    rows: int = 0
    failed: int = 0
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    more_warnings: int = 0
    keep: int = 20

    def add_fits(self, fits: Fits) -> None:
        """Every row of ``fits`` at once."""
        self.rows += len(fits)
        self.failed += int(np.count_nonzero(~fits.success))
        self.interrupted |= bool(np.any(fits.status == Status.INTERRUPTED))
        for g in sorted(fits.warnings):
            lines = [w.message for w in fits.warnings[g] if w.kind not in SAID_BEFORE]
            self.add_warnings(fits.keys[g] if fits.keys is not None else g, lines)

    def add_rows(self, rows: int, failed: int, interrupted: bool) -> None:
        """``rows`` more rows, ``failed`` of them failed (their warnings: ``add_warnings``)."""
        self.rows += rows
        self.failed += failed
        self.interrupted |= bool(interrupted)

    def add_warnings(self, group, lines) -> None:
        for line in lines:
            if len(self.warnings) < self.keep:
                self.warnings.append(f"group {group}: {line}")
            else:
                self.more_warnings += 1
