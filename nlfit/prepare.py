"""One preparation for every fit: ``prepare(dataset, model, options) -> Prepared``.

A single fit is one group, ``--group-by`` gives one group per key, and each Dask partition is
a dataset of its own groups: all three are set up here and nowhere else. ``prepare`` checks
the model, the starts and the bounds before anything is solved (their errors come before
any output), and ``Prepared.batches()`` hands over the groups as :class:`Batch` values:
problems with a leading group axis, their starts, real-row counts and mask, and a frozen
:class:`SolverConfig`. Nothing else builds a ``Problem`` for a fit.

Grouped data: the rows of a long-format table are grouped by their key (order of first
appearance kept; a key whose rows were all dropped by the reader keeps its place and gets
the status ``no-data``). Groups of similar size share a batch (``size_buckets``: sizes
within a factor of 2), padded to the longest group in it; a padded point gets sigma = inf,
so its weighted residual and its row of the Jacobian are exactly zero. A single fit is
padded to a ladder of sizes (``numerics.padded_size``) so that files of different lengths
share one compiled solver.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from nlfit import multistart
from nlfit.errors import InputError, ModelError, OptionError
from nlfit.io.dataset import Dataset, group_codes
from nlfit.models import padded, tape
from nlfit.models.registry import model_for
from nlfit.numerics import LARGE_DATA_POINTS, aligned, aligned_full, padded_size, residual_scales
from nlfit.options import FitOptions
from nlfit.start import box, choose_start, default_start

BLOCK_RESIDUALS = 1 << 18  # residuals (groups x points) solved at once: the working set stays in cache
BLOCK_GROUPS = 1 << 13  # groups solved at once: the results of a block are held until they are written
BUCKET_GROWTH = 2.0  # groups whose sizes differ by less than this factor share a padded batch


@dataclass(frozen=True, eq=False)
class SolverConfig:
    """How every member of a batch is solved: the direction and globalization objects, the
    factorization and Jacobian mode, the jitted ``settings``, the number of starts per group
    (``count``), which parameters enter linearly and which are free."""

    direction: object
    globalization: object
    factorization: str
    jac_mode: str
    settings: object
    seed: int
    count: int
    linear: np.ndarray
    free: np.ndarray
    # the fused sums chosen by ``auto`` (a large single fit): the conditioning of J^T J is
    # checked at the start and at their result, and the streaming QR takes over where it is poor
    checked: bool = False


# The methods whose large single fits iterate on the fused sums by default (``solver_config``):
# the least-squares ones, whose steps need J^T J and J^T r only.
FUSED_METHODS = ("lm", "gn")
# The condition number of the equilibrated J^T J above which the streaming QR does a fused
# fit's work (``nlfit.fitting.solve``: checked at the start, where the QR then does the whole
# fit, and at the fused result, where it goes on from there): cond(J) > 1e4, where the
# normal equations' steps lose more than 8 of the 16 digits (their error grows as cond(J)^2).
# Measured at 200,000 rows against the QR's own fit: polynomial:7 on [-1, 1] (1.6e4) agreed to
# 2.4e-12, on [0, 10] (5.9e9) only to 1.6e-9 without the QR's steps.
GRAM_CONDITION = 1e8


def choose_factorization(option: str, rows: int, groups: int = 1, params: int | None = None, method: str | None = None) -> str:
    """The default ``auto`` (the same for single and grouped fits): for many groups fitted by
    Levenberg-Marquardt with at most ``subproblems.SMALL_PARAMETERS`` parameters, J^T J with
    the steps' closed-form Cholesky (the batches' fast path); otherwise J and its SVD below
    LARGE_DATA_POINTS rows in all (groups x rows per group), and from there the streaming
    QR for one fit and J^T J for the steps of many small fits. Statistics and the final
    Gauss-Newton polish always use the SVD of each J (or its R factor)."""
    from nlfit.solvers.subproblems import SMALL_PARAMETERS

    if option != "auto":
        return option
    if groups > 1 and method == "lm" and params is not None and params <= SMALL_PARAMETERS and rows < LARGE_DATA_POINTS:
        return "cholesky"
    if rows * groups < LARGE_DATA_POINTS:
        return "svd"
    return "qr" if groups == 1 or rows >= LARGE_DATA_POINTS else "gram"


def start_count(options: FitOptions, model, free: np.ndarray, rows: int, groups: int) -> int:
    """How many starts: the option's count, or for ``auto`` ``multistart.auto_count``."""
    if options.starts != "auto":
        return int(options.starts)
    linear = np.array(model.linear_params, dtype=bool)
    return multistart.auto_count(linear, free, rows, groups, robust=options.loss != "linear")


def solver_config(options: FitOptions, model, lower, upper, rows: int, groups: int, jac_mode: str) -> SolverConfig:
    """The solver of these options for ``groups`` problems of ``rows`` rows each."""
    from nlfit.solvers.directions import make_direction
    from nlfit.solvers.globalization import make_globalization

    factorization = choose_factorization(options.factorization, rows, groups, len(model.param_names), options.method)
    checked = options.factorization == "auto" and groups == 1 and rows >= LARGE_DATA_POINTS and options.loss == "linear" and options.method in FUSED_METHODS
    if checked:
        factorization = "gram"
    free = np.asarray(lower) != np.asarray(upper)
    fused = factorization in ("gram", "cholesky") and groups == 1 and rows >= LARGE_DATA_POINTS and options.loss == "linear"
    return SolverConfig(
        direction=make_direction(options.method, options.batch_size, factorization, keep_residuals=not fused),
        globalization=make_globalization(options.globalization),
        factorization=factorization,
        jac_mode=jac_mode,
        settings=options.settings(),
        seed=options.seed,
        count=start_count(options, model, free, rows, groups),
        linear=np.array(model.linear_params, dtype=bool),
        free=free,
        checked=checked,
    )


@dataclass
class Grouped:
    """The rows of each group, without padding: group g holds rows ``order[begin[g]:begin[g] + counts[g]]``;
    ``order`` None: the rows in their own order (one fit of every row: no index of m values is built)."""

    keys: list[str]
    order: np.ndarray | None
    begin: np.ndarray
    counts: np.ndarray

    def index(self) -> np.ndarray:
        return np.arange(int(self.counts.sum())) if self.order is None else self.order

    def rows(self, g: int) -> np.ndarray:
        return self.index()[self.begin[g] : self.begin[g] + self.counts[g]]

    def run(self, g: int) -> slice | None:
        """Group g's rows as one slice of the data, where they are one run in their order."""
        begin, count = int(self.begin[g]), int(self.counts[g])
        if self.order is None:
            return slice(begin, begin + count)
        rows = self.order[begin : begin + count]
        if count and rows[0] + count - 1 == rows[-1] and np.all(np.diff(rows) == 1):
            return slice(int(rows[0]), int(rows[0]) + count)
        return None

    def pad(self, members: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: np.ndarray | None, width: int | None = None):
        """x (B, L[, k]), y (B, L), sigma (B, L) and the real-row mask (B, L) of the groups
        ``members``, padded to their longest (L, or ``width``): a padded point repeats the
        group's first point (the first row of the data for a group without rows) with
        sigma = inf."""
        counts = self.counts[members]
        width = int(counts.max()) if width is None else width
        if len(members) == 1 and counts[0] == width and width > 0 and sigma is None:  # one group, no padding: its rows as they are
            part = self.run(int(members[0]))
            if part is not None:  # contiguous: views, no copy
                return np.asarray(x)[part][None], np.asarray(y)[part][None], aligned_full((1, width), 1.0), np.ones((1, width), dtype=bool)
        order = self.index()
        offsets = np.arange(width)[None, :]
        real = offsets < counts[:, None]
        position = self.begin[members][:, None] + np.where(real, offsets, 0)
        x, y = np.asarray(x), np.asarray(y)
        source = None if sigma is None else np.asarray(sigma)
        if not len(order):  # no group has rows (a Dask partition of groups that lost them all): one stand-in point
            x, y, source = np.zeros((1, *x.shape[1:])), np.zeros(1), None
        index = np.where(counts[:, None] > 0, order[np.minimum(position, max(len(order) - 1, 0))] if len(order) else 0, 0)
        return x[index], y[index], np.where(real, 1.0 if source is None else source[index], np.inf), real


def group_rows(dataset: Dataset) -> Grouped:
    """The groups of ``dataset`` in order of first appearance, the keys whose every row was
    dropped (``Dataset.empty_groups``) among them, with no rows."""
    import pandas as pd

    known = group_codes(dataset.groups)  # the reader's, where it kept every row
    if known is not None:
        codes, keys = known[0], list(known[1])
    else:
        codes, found = pd.factorize(dataset.groups, sort=False)
        keys = [str(k) for k in found]
    present = set(keys)
    empty = [(key, row) for key, row in dict(reversed(list(dataset.empty_groups or ()))).items() if key not in present]  # each once, at its first row
    empty.sort(key=lambda item: item[1])
    if not keys and not empty:
        raise InputError("--group-by: the data has no rows")
    counts = np.bincount(codes, minlength=len(keys))
    contiguous = len(codes) < 2 or bool(np.all(codes[1:] >= codes[:-1]))  # each group's rows together, in order: the common file
    order = np.arange(len(codes)) if contiguous else np.argsort(codes, kind="stable")
    begin = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    if empty:  # every group at the row where it first appears in the input
        first = np.unique(codes, return_index=True)[1] if len(keys) else np.zeros(0, dtype=np.int64)
        places = np.concatenate([first if dataset.kept_rows is None else np.asarray(dataset.kept_rows)[first], [row for _, row in empty]])
        placed = np.argsort(places, kind="stable")
        keys = [(keys + [key for key, _ in empty])[i] for i in placed]
        counts = np.concatenate([counts, np.zeros(len(empty), dtype=counts.dtype)])[placed]
        begin = np.concatenate([begin, np.zeros(len(empty), dtype=np.int64)])[placed]
    return Grouped(keys, order, begin, counts)


def size_buckets(counts: np.ndarray) -> list[np.ndarray]:
    """The groups (indices, in order) in batches of similar size: group g goes to bucket
    ceil(log_BUCKET_GROWTH(counts[g])), and each bucket is padded only to its own longest
    group. One 200,000-point group among 200 small ones then pads only itself; padding
    costs at most a factor BUCKET_GROWTH in memory and time."""
    counts = np.asarray(counts)
    level = np.ceil(np.log(np.maximum(counts, 1)) / np.log(BUCKET_GROWTH) - 1e-9).astype(int)
    return [np.flatnonzero(level == value) for value in np.unique(level)]


def blocks(bucket: np.ndarray, width: int) -> list[np.ndarray]:
    """``bucket`` cut into blocks of at most BLOCK_RESIDUALS residuals and BLOCK_GROUPS
    groups, solved one after the other. A vmapped solve copies its whole state every
    iteration and runs until its slowest member stops: in blocks the state stays in the
    cache, and a block ends with its own slowest member (20,000 rational groups of 100
    points: 5.5 s as one batch, 2.5-2.9 s in blocks). With at most BLOCK_GROUPS groups a
    block, the results held at once do not grow with the number of groups. Every block has
    the same number of groups, so one compiled solver serves them all: the last is filled
    up with copies of its last group, whose results are dropped."""
    largest = max(1, min(BLOCK_RESIDUALS // max(width, 1), BLOCK_GROUPS))
    count = -(-len(bucket) // largest)
    if count <= 1:
        return [bucket]
    # the blocks about even, their size on the ladder of padded sizes (at most the largest): fits
    # of other numbers of groups (each Dask partition, each file) then share compiled solvers
    # (a partition of 25,000 groups traced and compiled its own in every worker: 57 s of 71)
    size = min(padded_size(-(-len(bucket) // count)), largest)
    padded = np.concatenate([bucket, np.repeat(bucket[-1:], count * size - len(bucket))])
    return list(padded.reshape(count, size))


def settle_options(options: FitOptions, model, sizes: dict[int, int]) -> FitOptions:
    """``options`` with the choices that depend on all the groups made once (for fits of
    parts of the groups, such as Dask partitions, that must agree with one fit of all):
    the ``--starts auto`` count, the Jacobian mode (widest group), and the factorization
    where every size bucket resolves the same way. ``sizes``: group size -> how many groups."""
    from nlfit import derivatives

    n_params = len(model.param_names)
    widest, groups = max(sizes), sum(sizes.values())
    lower, upper, _ = box(model, options.bounds, options.fix, np.ones(n_params), given=False)
    starts = start_count(options, model, np.asarray(lower) != np.asarray(upper), widest, groups)
    jac = derivatives.resolve_mode(options.jac, widest, n_params)
    size_list = np.array(sorted(sizes))
    numbers = np.array([sizes[int(s)] for s in size_list])
    ways = {
        choose_factorization(options.factorization, int(size_list[b].max()), int(numbers[b].sum()), n_params, options.method) for b in size_buckets(size_list)
    }
    factorization = ways.pop() if len(ways) == 1 else options.factorization
    return options.replace(starts=starts, jac=jac, factorization=factorization)


@dataclass(frozen=True, eq=False)
class Batch:
    """G groups ready for the one solve (``nlfit.fitting.solve_batch``): ``problems`` (leaves
    with a leading G axis, L rows each), ``starts`` (G, n), ``counts`` (G,) real rows,
    ``real`` (G, L), the ``config``, ``model_starts`` (G, n) (the model's own start beside a
    given one, for multistart) or None, ``members`` (G,) the groups' positions in
    ``Prepared.keys`` of which the first ``distinct`` are the block's own groups (the rest
    fill the last block), and ``keys`` (None for a single fit)."""

    problems: object
    starts: np.ndarray
    counts: np.ndarray
    real: np.ndarray
    config: SolverConfig
    model_starts: np.ndarray | None
    members: np.ndarray
    distinct: int
    keys: list[str] | None


@dataclass(frozen=True, eq=False)
class Step:
    """One block of a grouped fit before it is built: its groups (``members``, of which the
    first ``distinct`` are its own), the padded width and the bucket's solver configuration."""

    members: np.ndarray
    width: int
    distinct: int
    config: SolverConfig


@dataclass(eq=False)
class Prepared:
    """A checked fit of one model to one or more groups; ``batches()`` yields its blocks."""

    model: object
    options: FitOptions
    dataset: Dataset
    grouped: Grouped
    keys: list[str] | None
    starts: np.ndarray  # (G, n)
    lower: np.ndarray
    upper: np.ndarray
    jac_mode: str
    p0_given: bool
    y_fitted: np.ndarray  # the response the model fits (after its transform)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.model.param_names)

    @property
    def data_columns(self) -> dict:
        data = self.dataset
        out = {"x": list(data.x_names), "y": data.y_name, "files": list(data.files), "dropped": int(data.dropped)}
        x = np.asarray(data.x)
        if self.keys is None and x.ndim == 1 and x.size and np.all(np.isfinite(x[[0, -1]])):  # one fit, one predictor: where predict --y looks
            with np.errstate(invalid="ignore"):
                out["x_range"] = [float(np.nanmin(x)), float(np.nanmax(x))]
        return out

    def reader_warnings(self, batch: Batch) -> dict:
        """{i: [FitWarning]}: the rows the reader dropped, for the members of ``batch`` that lost any."""
        from nlfit.warning import FitWarning

        def warning(n: int) -> FitWarning:
            return FitWarning("dropped-rows", f"dropped {n} row{'s' if n != 1 else ''} with missing values in the used columns (--missing error to refuse)")

        if batch.keys is None:
            return {0: [warning(int(self.dataset.dropped))]} if self.dataset.dropped else {}
        lost = self.dataset.dropped_by_group
        return {i: [warning(int(lost[key]))] for i, key in enumerate(batch.keys[: batch.distinct]) if key in lost} if lost else {}

    def batches(self) -> Iterator[Batch]:
        """Every group once, bucket by bucket and block by block (a single fit: one batch)."""
        return (self.batch(step) for step in self.plan())

    def plan(self) -> list[Step]:
        """The blocks of :meth:`batches`, not yet built: whichever process builds and solves
        step i (``nlfit.procs``) gets the same batch."""
        counts = self.grouped.counts
        if self.keys is None:
            rows = int(counts[0])
            width = rows if self.options.batch_size is not None else padded_size(rows)  # SGD samples rows: never padded
            return [Step(np.array([0]), width, 1, solver_config(self.options, self.model, self.lower, self.upper, rows, 1, self.jac_mode))]
        steps = []
        for bucket in size_buckets(counts):
            width = int(max(counts[bucket].max(), 1))
            # the choices (factorization, number of starts) follow the whole bucket, however it is cut
            config = solver_config(self.options, self.model, self.lower, self.upper, width, len(bucket), self.jac_mode)
            steps.extend(Step(block, width, len(set(block.tolist())), config) for block in blocks(bucket, width))
        return steps

    def batch(self, step: Step) -> Batch:
        return self._batch(step.members, step.width, step.distinct, step.config)

    def rows_of(self, step: Step) -> tuple[dict, Step]:
        """The data that ``batch(step)`` reads, the rows of the step's groups alone, and the
        step renumbered over those groups: ``without_rows().with_rows(data)`` builds the same
        batch from them (what a helper process gets for each block it solves: ``nlfit.procs``),
        but for the padded points of a group without rows, which nothing reads (they repeat
        the first row of the data they are cut from, or stand at 0 where it has none)."""
        own, members = np.unique(step.members, return_inverse=True)  # repeated members (a filled last block) once
        return self._part(own), dataclasses.replace(step, members=members.reshape(step.members.shape))

    def without_rows(self) -> Prepared:
        """This grouped fit without its data (for ``with_rows``): the model, options, bounds
        and the facts of the whole (dropped rows, files), but no row or group."""
        return self.with_rows(self._part(np.zeros(0, dtype=np.int64)))

    def _part(self, own: np.ndarray) -> dict:
        """The groups ``own`` (positions in ``keys``, increasing) and their rows, in group order."""
        counts = self.grouped.counts[own]
        begin = np.zeros(len(own), dtype=np.int64)
        np.cumsum(counts[:-1], out=begin[1:])
        rows = self.grouped.index()[np.repeat(self.grouped.begin[own] - begin, counts) + np.arange(int(counts.sum()))]
        data = self.dataset
        keys = [self.keys[g] for g in own]
        lost = data.dropped_by_group
        return {
            "x": np.asarray(data.x)[rows],
            "y": np.asarray(data.y)[rows],
            "sigma": None if data.sigma is None else np.asarray(data.sigma)[rows],
            "y_fitted": self.y_fitted[rows],
            "keys": keys,
            "counts": counts,
            "begin": begin,
            "starts": self.starts[own],
            "dropped_by_group": {key: lost[key] for key in keys if key in lost} if lost else {},
        }

    def with_rows(self, part: dict) -> Prepared:
        """This fit over the groups of ``part`` (``rows_of``) alone, their rows in group order."""
        data = dataclasses.replace(
            self.dataset, x=part["x"], y=part["y"], sigma=part["sigma"], groups=None, kept_rows=None, empty_groups=(), dropped_by_group=part["dropped_by_group"]
        )
        grouped = Grouped(part["keys"], None, part["begin"], part["counts"])
        return dataclasses.replace(self, dataset=data, grouped=grouped, keys=part["keys"], starts=part["starts"], y_fitted=part["y_fitted"])

    def _batch(self, members: np.ndarray, width: int, distinct: int, config: SolverConfig) -> Batch:
        from nlfit.problem import Problem

        sigma = self.dataset.sigma
        xs, ys, sigmas, real = self.grouped.pad(members, np.asarray(self.dataset.x), self.y_fitted, sigma, width)
        if np.size(ys) >= LARGE_DATA_POINTS:  # read in place by every compiled call, not copied by each
            xs, ys, sigmas = aligned(xs), aligned(ys), aligned(sigmas)
        scales = residual_scales(ys, sigmas, real)
        size = len(members)
        grouped = self.keys is not None
        taped = tape.runner_for(self.model, width, grouped=grouped)
        model = taped[0] if taped is not None else None if grouped or width >= LARGE_DATA_POINTS else padded.for_model(self.model)
        pad = (lambda values: values) if model is None else model.pad  # noqa: E731 (nlfit.models.padded)
        problems = Problem(
            x=np.asarray(xs, dtype=np.float64),
            y=np.asarray(ys, dtype=np.float64),
            sigma=np.asarray(sigmas, dtype=np.float64),
            model=self.model if model is None else model,
            tape=None if taped is None else taped[1].arrays(size),
            loss=self.options.loss,
            f_scale=np.asarray(self.options.f_scale / scales, dtype=np.float64),
            lower=np.tile(pad(np.asarray(self.lower, dtype=np.float64)), (size, 1)),
            upper=np.tile(pad(np.asarray(self.upper, dtype=np.float64)), (size, 1)),
            scale=np.asarray(scales, dtype=np.float64),
        )
        counts = self.grouped.counts[members]
        model_starts = None
        if self.p0_given and config.count > 1:  # the model's own start per group beside the one given
            model_starts = pad(np.stack([_default_start(self.model, xs[i][real[i]], ys[i][real[i]], len(self.lower)) for i in range(size)]))
        if model is not None:
            config = dataclasses.replace(config, linear=model.pad_mask(config.linear), free=model.pad_mask(config.free))
        keys = None if self.keys is None else [self.keys[g] for g in members]
        return Batch(problems, pad(self.starts[members]), counts, real, config, model_starts, members, distinct, keys)


def prepare(dataset: Dataset, model, options: FitOptions, p0=None, *, grouped: bool = False, group_starts=None, file_start: int | None = None) -> Prepared:
    """Check and set up the fit of ``model`` (a spec or a Model) to ``dataset``: one group, or
    with ``grouped`` one per ``dataset.groups`` key. ``p0`` (position or names) applies to
    every group; ``group_starts`` (G, n) gives each group its own; without either, each
    group gets the model's default (moved into the bounds). Errors here come before any
    solve: a start the user gave outside the bounds, a missing start, a bad option."""
    from nlfit import derivatives

    model = model_for(model, dataset)
    n_params = len(model.param_names)
    y_fitted = np.asarray(model.transform_response(dataset.y, dataset.x), dtype=np.float64)
    if grouped:
        rows = group_rows(dataset)
        starts, given = _group_starts(model, dataset, rows, y_fitted, p0, group_starts)
    else:
        rows = Grouped(["0"], None, np.array([0]), np.array([dataset.n_points]))
        start, given = choose_start(model, dataset, p0, file_start)
        starts = np.asarray(start, dtype=np.float64)[None]
    jac_mode = derivatives.resolve_mode(options.jac, int(rows.counts.max()), n_params)
    lower, upper, _ = box(model, options.bounds, options.fix, starts[0], given=False)  # the bounds; the starts are placed below
    starts = _place_starts(model, starts, lower, upper, options.fix, given)
    if not grouped:
        estimated = int(np.count_nonzero(lower != upper))
        if dataset.n_points < estimated:
            raise ModelError(f"model '{model.spec}' has {estimated} free parameters but the data have only {dataset.n_points} point(s)")
        if not np.all(np.isfinite(y_fitted)):
            raise ModelError(f"the response transform of '{model.spec}' gives non-finite values (e.g. log of a value <= 0)")
    return Prepared(model, options, dataset, rows, rows.keys if grouped else None, starts, lower, upper, jac_mode, given, y_fitted)


def _group_starts(model, dataset: Dataset, rows: Grouped, y_fitted: np.ndarray, p0, group_starts) -> tuple[np.ndarray, bool]:
    """(G, n) starts and whether the user gave them (``group_starts``, or ``p0`` for all)."""
    groups, n_params = len(rows.keys), len(model.param_names)
    if group_starts is not None:
        starts = np.asarray(group_starts, dtype=np.float64)
        if starts.shape != (groups, n_params):
            raise InputError(f"starts must have shape ({groups}, {n_params}); got {starts.shape}")
        return starts, True
    x_all = np.asarray(dataset.x)
    if p0 is None and model.default_p0(x_all[:1], y_fitted[:1]) is None:
        choose_start(model, dataset)  # raises the "needs a starting point" error
    if not getattr(model, "data_dependent_start", True) and (p0 is None or not isinstance(p0, dict)):
        start = choose_start(model, Dataset(x=x_all[:1], y=y_fitted[:1], x_names=dataset.x_names, y_name=dataset.y_name), p0)[0]
        return np.tile(np.asarray(start, dtype=np.float64), (groups, 1)), p0 is not None
    starts = np.full((groups, n_params), np.nan)
    pending = np.ones(groups, dtype=bool)  # groups whose start is still to be chosen one by one
    if dataset.nist is None and (p0 is None or isinstance(p0, dict)):
        batched = _default_starts(model, rows, x_all, y_fitted, n_params)
        if batched is not None:
            starts, pending = batched
            if isinstance(p0, dict) and not np.all(pending):  # the named values over the default (checked as one group's would be)
                g = int(np.flatnonzero(~pending)[0])
                given = choose_start(model, Dataset(x=x_all[rows.rows(g)], y=y_fitted[rows.rows(g)], x_names=dataset.x_names, y_name=dataset.y_name), p0)[0]
                names = list(model.param_names)
                for name in p0:
                    starts[~pending, names.index(name)] = given[names.index(name)]
    for g in np.flatnonzero(pending):  # the model's default start depends on each group's data
        member_rows = rows.rows(g)
        member = Dataset(x=x_all[member_rows], y=y_fitted[member_rows], x_names=dataset.x_names, y_name=dataset.y_name)
        try:
            with np.errstate(all="ignore"):
                starts[g] = choose_start(model, member, p0)[0]
        except (np.linalg.LinAlgError, ValueError):
            starts[g] = np.ones(n_params)  # a group whose default start cannot be computed (bad data)
    return np.nan_to_num(starts, nan=1.0, posinf=1.0, neginf=1.0), p0 is not None


START_VALUES = 1 << 20  # values (groups x points) whose default starts are computed at once


def _default_starts(model, rows: Grouped, x_all, y_fitted, n_params: int):
    """(starts (G, n), pending (G,)): the model's default starts of the groups of each size
    bucket at once (``Model.default_p0_groups``), in slices of at most START_VALUES values;
    pending marks the groups left to go one by one (fewer rows than parameters, or more than
    ``start.START_ROWS``, whose start comes from a subsample). None without a batched form."""
    from nlfit.start import START_ROWS

    if model.default_p0_groups(np.zeros((1, 1)), np.ones((1, 1)), np.ones((1, 1), dtype=bool)) is None:
        return None
    starts, pending = np.full((len(rows.counts), n_params), np.nan), np.ones(len(rows.counts), dtype=bool)
    for bucket in size_buckets(rows.counts):
        bucket = bucket[(rows.counts[bucket] >= n_params) & (rows.counts[bucket] <= START_ROWS)]
        if not len(bucket):
            continue
        step = max(1, START_VALUES // int(rows.counts[bucket].max()))
        for begin in range(0, len(bucket), step):
            members = bucket[begin : begin + step]
            x, y, _, real = rows.pad(members, x_all, y_fitted, None)
            found = model.default_p0_groups(x, y, real)
            if found is not None:
                starts[members], pending[members] = found, False
    return starts, pending


def _place_starts(model, starts: np.ndarray, lower, upper, fix, given: bool) -> np.ndarray:
    """Fixed parameters at their values; a default start moved into the bounds; a given
    start outside them is an error that names the parameter (the same for one or many groups)."""
    starts = np.array(starts, dtype=np.float64)
    names = list(model.param_names)
    for name, value in (fix or {}).items():
        starts[:, names.index(name)] = value
    if not given:
        return np.clip(starts, lower, upper)
    outside = (starts < lower) | (starts > upper)
    if np.any(outside):
        g, i = (int(v[0]) for v in np.nonzero(outside))
        raise OptionError(f"the start {names[i]}={starts[g, i]:g} is outside its bounds [{lower[i]:g}, {upper[i]:g}]; give a --p0 inside")
    return starts


def _default_start(model, x, y, n_params) -> np.ndarray:
    """The model's default start for one group (NaN where it cannot be computed)."""
    try:
        with np.errstate(all="ignore"):
            start = default_start(model, x, y)
    except (np.linalg.LinAlgError, ValueError):
        start = None
    return np.full(n_params, np.nan) if start is None else np.asarray(start, dtype=np.float64)
