"""Many independent fits of one model: ``nlfit fit DATA --group-by COL``.

The rows of a long-format table are grouped by a key (order of first appearance kept).
Every group becomes one member of a batch. Groups of similar size share a batch
(``size_buckets``: sizes within a factor of 2), padded to the longest group in it, and a
padded point gets sigma = inf, so its weighted residual and its row of the Jacobian are
exactly zero and it changes nothing. One jitted, vmapped solver step then advances every
member that is still running (``nlfit.solvers.loop.solve_batch``); a member that has stopped
is frozen, so a group that fails (non-finite data, no convergence, a singular Jacobian)
gets its own status and cannot disturb the others. Groups with fewer points than
parameters are reported as ``too-few-points``.

Every method x globalization batches (the step is the same function under ``vmap``). The
factorization of the steps follows ``nlfit.fitting.choose_factorization``, the same rule
as for a single fit. Statistics are computed for all groups at once from the batched SVD of their Jacobians.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nlfit.errors import InputError
from nlfit.io.dataset import Dataset
from nlfit.options import FitOptions
from nlfit.solvers.status import Status


@dataclass
class BatchResult:
    """The fits of every group, in group order: one :class:`nlfit.result.FitResult` each."""

    keys: list[str]
    results: list
    method: str
    globalization: str
    param_names: tuple[str, ...]
    seconds: float

    @property
    def params(self) -> np.ndarray:
        return np.array([r.params for r in self.results]).reshape(len(self.results), len(self.param_names))

    @property
    def stderr(self) -> np.ndarray:
        rows = [np.full(len(self.param_names), np.nan) if r.stderr is None else r.stderr for r in self.results]
        return np.array(rows).reshape(len(self.results), len(self.param_names))

    @property
    def statuses(self) -> np.ndarray:
        return np.array([int(r.status) for r in self.results])

    def rows(self) -> list[dict]:
        """One dict per group: the single-fit JSON contract without the history."""
        info = self.results[0].model.to_json() if self.results else None
        return [r.to_json(history=False, options=False, model_info=info) for r in self.results]


@dataclass
class Grouped:
    """The rows of each group, without padding: group g holds rows ``order[begin[g]:begin[g] + counts[g]]``."""

    keys: list[str]
    order: np.ndarray
    begin: np.ndarray
    counts: np.ndarray

    def rows(self, g: int) -> np.ndarray:
        return self.order[self.begin[g] : self.begin[g] + self.counts[g]]

    def pad(self, bucket: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None):
        """x (B, L[, k]), y (B, L), sigma (B, L) of the groups in ``bucket``, padded to their
        longest (L): a padded point repeats the group's first point with sigma = inf."""
        width = int(self.counts[bucket].max())
        index = np.stack([np.resize(self.rows(g), width) if self.counts[g] else np.zeros(width, int) for g in bucket])
        real = np.arange(width)[None, :] < self.counts[bucket][:, None]
        index = np.where(real, index, index[:, :1])
        source = np.ones_like(y) if sigma is None else np.asarray(sigma)
        return np.asarray(x)[index], y[index], np.where(real, source[index], np.inf), real


def group_rows(dataset: Dataset) -> Grouped:
    """The groups of ``dataset`` in order of first appearance."""
    import pandas as pd

    codes, keys = pd.factorize(dataset.groups, sort=False)
    if len(keys) == 0:
        raise InputError("--group-by: the data has no rows")
    counts = np.bincount(codes, minlength=len(keys))
    order = np.argsort(codes, kind="stable")
    begin = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return Grouped([str(k) for k in keys], order, begin, counts)


def fit_groups(dataset: Dataset, model_spec, p0=None, on_progress=None, group_starts=None, *, options: FitOptions | None = None, **given) -> BatchResult:
    """Fit every group. ``p0`` (position or names) applies to all groups; ``group_starts``
    (G, n) gives each group its own start; without either, each group gets the model's default.
    ``options`` and keywords: as for ``nlfit.fitting.fit``. The same solve and
    post-processing as a single fit (``nlfit.fitting``, ``nlfit.result``), with one problem
    per group. Every result is kept; :class:`GroupFits` hands them over block by block."""
    import time

    fits = GroupFits(dataset, model_spec, p0, on_progress, group_starts, options=options, **given)
    results = [None] * len(fits.keys)
    for block, part in fits.blocks():
        for g, result in zip(block, part, strict=True):
            results[g] = result
    seconds = time.perf_counter() - fits.began
    for r in results:
        r.seconds = seconds
    return BatchResult(keys=fits.keys, results=results, method=fits.options.method, globalization=fits.options.globalization,
                       param_names=fits.param_names, seconds=seconds)  # fmt: skip


class GroupFits:
    """The fits of every group, solved block by block: ``blocks()`` yields each block's
    groups (indices into ``keys``) and their :class:`nlfit.result.FitResult`, so that a
    caller can write them and let them go (``nlfit fit --group-by`` keeps no result). The
    model, the starts and the bounds are checked here, before any group is solved: their
    errors come before any output. Blocks follow the size buckets, so groups of different
    sizes arrive out of group order. Arguments as for :func:`fit_groups`."""

    def __init__(self, dataset: Dataset, model_spec, p0=None, on_progress=None, group_starts=None, *, options: FitOptions | None = None, **given):
        import time

        from nlfit import derivatives
        from nlfit.models.registry import model_for
        from nlfit.start import box, choose_start

        self.began = time.perf_counter()
        options = FitOptions.of(given) if options is None else options.replace(**given)
        model = model_for(model_spec, dataset)
        n_params = len(model.param_names)
        y_fitted = np.asarray(model.transform_response(dataset.y, dataset.x), dtype=np.float64)
        grouped = group_rows(dataset)
        groups = len(grouped.keys)
        x_all = np.asarray(dataset.x)

        if p0 is None and group_starts is None and model.default_p0(np.asarray(dataset.x)[:1], y_fitted[:1]) is None:
            choose_start(model, dataset)  # raises the "needs a starting point" error
        given_starts = group_starts
        starts = []
        for g in range(groups if given_starts is None else 0):
            rows = grouped.rows(g)
            member = Dataset(x=x_all[rows], y=y_fitted[rows], x_names=dataset.x_names, y_name=dataset.y_name)
            try:
                with np.errstate(all="ignore"):
                    starts.append(choose_start(model, member, p0)[0])
            except (np.linalg.LinAlgError, ValueError):
                starts.append(np.ones(n_params))  # a group whose default start cannot be computed (bad data)
        if given_starts is not None:
            starts = np.asarray(given_starts, dtype=np.float64)
            if starts.shape != (groups, n_params):
                raise InputError(f"starts must have shape ({groups}, {n_params}); got {starts.shape}")
        starts = np.nan_to_num(np.array(starts, dtype=np.float64), nan=1.0, posinf=1.0, neginf=1.0)

        self.jac_mode = derivatives.resolve_mode(options.jac, int(grouped.counts.max()), n_params)
        lower, upper, _ = box(model, options.bounds, options.fix, starts[0], given=False)
        for name, value in (options.fix or {}).items():
            starts[:, model.param_names.index(name)] = value
        if p0 is None and given_starts is None:
            starts = np.clip(starts, lower, upper)  # default starts are moved into the bounds
        elif np.any((starts < lower) | (starts > upper)):
            raise InputError("the start is outside the bounds; give a --p0 inside them")
        self.dataset, self.model, self.p0, self.on_progress, self.options = dataset, model, p0, on_progress, options
        self.grouped, self.keys, self.param_names = grouped, grouped.keys, tuple(model.param_names)
        self.x_all, self.y_fitted, self.starts, self.lower, self.upper = x_all, y_fitted, starts, lower, upper

    def blocks(self):
        """(group indices, their results) for each block solved, every group once."""
        import time

        from nlfit._jax import jnp
        from nlfit.fitting import fit_problems, solver_parts
        from nlfit.problem import Problem, residual_scale

        model, options, grouped, keys, starts = self.model, self.options, self.grouped, self.keys, self.starts
        counts, groups, n_params = grouped.counts, len(self.keys), len(self.param_names)
        done = np.zeros(groups, dtype=bool)
        finished = 0
        stopped = None  # INTERRUPTED once a bucket was interrupted: the rest are not solved
        for bucket in size_buckets(counts):
            width = int(counts[bucket].max())
            # the choices (factorization, number of starts) follow the whole bucket, however it is cut
            solver = solver_parts(options, model, self.lower, self.upper, width, len(bucket), self.jac_mode)
            for block in blocks(bucket, width):
                sub_counts = counts[block]
                xs, ys, sigmas, real = grouped.pad(block, self.x_all, self.y_fitted, self.dataset.sigma)
                scales = np.array([residual_scale(ys[g][real[g]], sigmas[g][real[g]]) for g in range(len(block))])
                problems = Problem(
                    x=jnp.asarray(xs),
                    y=jnp.asarray(ys),
                    sigma=jnp.asarray(sigmas),
                    model=model,
                    loss=options.loss,
                    f_scale=jnp.asarray(options.f_scale / scales),
                    lower=jnp.tile(jnp.asarray(self.lower), (len(block), 1)),
                    upper=jnp.tile(jnp.asarray(self.upper), (len(block), 1)),
                    scale=jnp.asarray(scales),
                )
                model_starts = None
                if self.p0 is not None and solver["count"] > 1:  # the model's own start per group beside the one given, as for a single fit
                    model_starts = np.array([_default_start(model, xs[g, : sub_counts[g]], ys[g, : sub_counts[g]], n_params) for g in range(len(block))])
                left = options.timeout
                if left is not None or stopped is not None:  # one time limit for the whole batch; after Ctrl-C, none
                    left = 0.0 if stopped is not None else max(left - (time.perf_counter() - self.began), 0.0)

                distinct = len(set(block.tolist()))  # the copies that fill the last block are not groups

                def progress(solved, total, offset=finished, distinct=distinct):
                    if self.on_progress is not None:
                        self.on_progress(offset + min(solved, distinct), groups)

                part = fit_problems(
                    model, problems, starts[block], sub_counts, real, self.dataset, options, solver, record=False, timeout=left,
                    keys=[keys[g] for g in block], model_starts=model_starts, on_progress=progress,
                )  # fmt: skip
                fresh, kept = [], []
                for g, result in zip(block, part, strict=True):
                    if done[g]:
                        continue  # a copy that filled the last block
                    if stopped is not None and result.status == Status.TIMEOUT:
                        result.status = stopped  # not solved because of the Ctrl-C in an earlier block
                    done[g] = True
                    fresh.append(int(g))
                    kept.append(result)
                finished += len(fresh)
                if any(r.status == Status.INTERRUPTED for r in part):
                    stopped = Status.INTERRUPTED
                yield fresh, kept


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

    def add(self, group, success: bool, interrupted: bool, warnings) -> None:
        self.rows += 1
        self.failed += not success
        self.interrupted |= bool(interrupted)
        for line in warnings:
            if len(self.warnings) < self.keep:
                self.warnings.append(f"group {group}: {line}")
            else:
                self.more_warnings += 1


BLOCK_RESIDUALS = 1 << 18  # residuals (groups x points) solved at once: the working set stays in cache
BLOCK_GROUPS = 1 << 13  # groups solved at once: the results of a block are held until they are written


def blocks(bucket: np.ndarray, width: int) -> list[np.ndarray]:
    """``bucket`` cut into blocks of at most BLOCK_RESIDUALS residuals and BLOCK_GROUPS
    groups, solved one after the other. A vmapped solve copies its whole state every
    iteration and runs until its slowest member stops: in blocks the state stays in the
    cache, and a block ends with its own slowest member (20,000 rational groups of 100
    points: 5.5 s as one batch, 2.5-2.9 s in blocks). With at most BLOCK_GROUPS groups a
    block, the results held at once (``GroupFits.blocks``) do not grow with the number of
    groups, one-point groups included. Every block has the same number of groups, so one
    compiled solver serves them all: the last is filled up with copies of its last group,
    whose results are dropped."""
    size = max(1, min(BLOCK_RESIDUALS // max(width, 1), BLOCK_GROUPS))
    count = -(-len(bucket) // size)
    if count <= 1:
        return [bucket]
    size = -(-len(bucket) // count)  # the blocks as even as they can be
    padded = np.concatenate([bucket, np.repeat(bucket[-1:], count * size - len(bucket))])
    return list(padded.reshape(count, size))


BUCKET_GROWTH = 2.0  # groups whose sizes differ by less than this factor share a padded batch


def size_buckets(counts: np.ndarray) -> list[np.ndarray]:
    """The groups (indices, in order) in batches of similar size: group g goes to bucket
    ceil(log_BUCKET_GROWTH(counts[g])), and each bucket is padded only to its own longest
    group. One 200,000-point group among 200 small ones then pads only itself; padding
    costs at most a factor BUCKET_GROWTH in memory and time."""
    counts = np.asarray(counts)
    level = np.ceil(np.log(np.maximum(counts, 1)) / np.log(BUCKET_GROWTH) - 1e-9).astype(int)
    return [np.flatnonzero(level == value) for value in np.unique(level)]


def _default_start(model, x, y, n_params) -> np.ndarray:
    """The model's default start for one group (NaN where it cannot be computed)."""
    try:
        with np.errstate(all="ignore"):
            start = model.default_p0(x, y)
    except (np.linalg.LinAlgError, ValueError):
        start = None
    return np.full(n_params, np.nan) if start is None else np.asarray(start, dtype=np.float64)
