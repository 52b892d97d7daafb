"""``nlfit fit FILES... --group-by COL --engine dask``: grouped fits of data that need not fit
on one machine. The client reads headers and results, never the data.

1. Client: the columns of the fit from each file's header (``read_header``: a Parquet
   file's footer, the first records of a text file) with ``plan_columns``, so a bad
   ``--group-by``, ``-x``, ``-y`` or ``--sigma`` is the local engine's one-line error.
2. Workers: each file is one partition, read by nlfit's own reader (``read_part``: the same
   delimiter detection, comments, BOM, missing-value and number rules). A row carries
   ``pos`` = (file index << ROW_BITS) + its row among the kept rows of its file, which
   orders the rows as the concatenated input does.
3. Survey (computed on the workers; a few numbers come back): each file's rows kept and
   dropped, the histogram of its group sizes and the range of each predictor, and whether
   any group key lies in two files (the keys' hashes, counted on a worker). Where none does,
   the files' histograms add up to the whole's; else the group sizes are counted over all
   the files (a tree reduction). From it one worker resolves what the local engine resolves
   over all the groups at once (``resolve``): the ``--starts auto`` count (widest group,
   number of groups), the Jacobian mode, the factorization when every size bucket gets the
   same, and the model's domain (Chebyshev).
4. Shuffle on the group key (not needed, and skipped, where the survey found that each
   file holds its groups whole and there are at least two files per worker): every group
   lies whole in one partition, whose groups one worker fits with ``nlfit.batch.fit_groups``
   (the vmapped solver), one result row each, already formatted (an NDJSON line or a CSV
   line), with its group's first ``pos``.
5. The result rows (one per group: small next to the data) are sorted on that ``pos``
   (the local engine's order: first appearance) into partitions of about RESULT_ROWS rows;
   without the shuffle, the files' partitions are in that order already, and are not sorted
   again. On the workers they are cut into pieces (``Piece``) of at most RESULT_ROWS rows:
   their text, joined, and their counts. The pieces are pulled in order: to stdout, to ``-o
   FILE`` (a temporary file renamed at the end), or with ``-o DIR/`` into one part file per
   piece (``part-00000.ndjson`` or ``.csv``, each written atomically).

Each file's partition stays on the worker that read it, from the survey to the fit, while
that worker's process holds less than HOLD_SHARE of its memory limit (``_may_hold``: decided
on the worker, from what it holds, not from the sizes of compressed files); the other files
are read again for the fit.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
import operator
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nlfit import cores
from nlfit.errors import InputError, OptionError, excerpt, printable
from nlfit.options import FitOptions

ROW_BITS = 40  # pos = file index << ROW_BITS | row: 2**40 rows per file, 2**23 files
HOLD_SHARE = 0.25  # a worker holds the partitions it read for the fit while its process uses less than this share of its memory limit
RESULT_ROWS = 2000  # result rows per pulled partition (and part file): about 4 MB of NDJSON
PART_NAME = re.compile(r"part-\d{5,}\.(ndjson|csv)")
# The LocalCluster started without --scheduler: single-threaded worker processes on
# 127.0.0.1, no dashboard (and the scheduler's small HTTP server on a free local port, not
# on 8787 of every interface), only errors logged. Each worker process computes on one core
# (NLFIT_THREADS=1: one XLA device, nlfit.cores), the cluster on all of them.
LOCAL_CLUSTER = {
    "threads_per_worker": 1,
    "env": {"NLFIT_THREADS": "1"},
    "processes": True,
    "host": "127.0.0.1",
    "dashboard_address": None,
    "scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"},
    "silence_logs": logging.ERROR,
    "preload": ["nlfit.dask_preload"],  # each worker imports the reader, then the solver beside its first reads
}
# The memory settings of nlfit's own workers (glibc's malloc; set before each worker process
# starts, ``distributed.nanny.pre-spawn-environ``; a variable already set in the environment
# wins): freed memory up to 1 GiB is kept for the next partition, and blocks below 32 MiB
# come from the heap. Dask's own (MALLOC_TRIM_THRESHOLD_=65536: every freed block goes back to
# the system) made each partition's arrays fault their pages in anew; 100,000 groups in 20
# Parquet files on 2 workers took 15.3-16.5 s with it, 8.8-9.6 s without.
WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 25)}


@dataclass(frozen=True)
class Plan:
    """What every worker needs to read its file: the files, the columns every one has, and
    the columns of the fit (already resolved from the headers)."""

    files: tuple[str, ...]
    names: tuple[str, ...]
    x_columns: tuple[str, ...]
    y_column: str
    sigma_column: str | None
    group_column: str
    sep: str | None
    missing: str

    @property
    def label(self) -> str:
        return ", ".join(self.files)


def plan(files: list[str], group_column: str, x_columns=None, y_column=None, sigma_column=None, formula=None, *, sep=None, missing="drop") -> Plan:
    """The reading plan of ``files`` from their headers alone (errors as ``read_dataset``'s)."""
    from nlfit.io.read import MISSING_MODES, parse_sep, plan_columns, read_header
    from nlfit.models.registry import is_formula

    if missing not in MISSING_MODES:
        raise OptionError(f"--missing must be drop or error; got '{printable(missing)}'")
    separator = parse_sep(sep)
    for name in files:
        if name == "-":
            raise OptionError("--engine dask reads the data on the workers: stdin ('-') cannot be an input; save it to a file")
        with contextlib.suppress(OSError):
            if not stat.S_ISREG(os.stat(name).st_mode) and not os.path.isdir(name):
                raise OptionError(f"--engine dask reads the data on the workers: {printable(name)} is not a regular file")
    headers = [read_header(name, separator) for name in files]
    chosen = plan_columns(headers, x_columns, y_column, sigma_column, group_column, formula if is_formula(formula) else None)
    x, y, sigma, group, _ = chosen
    return Plan(tuple(files), tuple(headers[0].names), tuple(x), y, sigma, group, separator, missing)


def local_cluster(workers: int):
    """The LocalCluster ``--engine dask`` starts without ``--scheduler``: ``workers``
    single-threaded worker processes (LOCAL_CLUSTER) with nlfit's memory settings
    (WORKER_MALLOC)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{name}": value for name, value in WORKER_MALLOC.items()}):
        return LocalCluster(**LOCAL_CLUSTER, n_workers=workers)


@contextlib.contextmanager
def connect(scheduler: str | None, workers: int | None = None):
    """A client of the scheduler at ``scheduler``, or of a LocalCluster (``workers``
    single-threaded worker processes, default one per core, on 127.0.0.1, no dashboard)
    started here and closed after."""
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--engine dask needs dask: pip install 'nlfit[dask]'") from None
    if scheduler and workers:
        raise OptionError("--threads sets the local cluster's workers; a --scheduler's cluster has its own")
    cluster = client = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="10s")
        else:
            cluster = local_cluster(workers or os.cpu_count() or 1)
            client = Client(cluster)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise OptionError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


@dataclass(frozen=True)
class Survey:
    """What the local engine knows of all the groups before it fits them."""

    groups: int
    widest: int
    sizes: dict[int, int]  # group size -> number of groups of that size
    rows: int
    dropped: int
    x_min: tuple[float, ...]
    x_max: tuple[float, ...]
    file_groups: tuple[int, ...] = ()  # each file's own number of groups (placeholders included)

    @property
    def whole_files(self) -> bool:
        """No group has rows (or a placeholder) in two files: the files' own group counts add
        up to the whole's, so each file holds its groups whole."""
        return bool(self.file_groups) and sum(self.file_groups) == self.groups


@dataclass(frozen=True)
class Piece:
    """At most RESULT_ROWS result rows, made on a worker: their text (NDJSON or CSV lines, in
    group order) and what the client counts of them."""

    text: str
    rows: int
    failed: int
    interrupted: bool
    warnings: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (group, its lines): only the groups that have some


def tally(counts, piece: Piece) -> None:
    """Add the rows of ``piece`` to ``counts`` (a :class:`nlfit.batch.Tally`)."""
    counts.add_rows(piece.rows, piece.failed, piece.interrupted)
    for group, lines in piece.warnings:
        counts.add_warnings(group, lines)


class Job:
    """One grouped fit on a cluster: ``survey`` (once: it also resolves the options and the
    parameter names), then ``parts`` (the result rows in group order, piece by piece)."""

    def __init__(self, client, plan: Plan, model_spec: str, p0, options: FitOptions, stamp: dict | None = None):
        self.client, self.plan, self.model_spec, self.p0, self.options = client, plan, model_spec, p0, options
        self.stamp = stamp  # the rows' short provenance (``nlfit.provenance.compact``)
        self.param_names: tuple[str, ...] = ()
        self._survey: Survey | None = None
        self._options = options
        self._kept: list | None = None  # futures of the files' partitions held on the workers since the survey (or None)

    def _frames(self):
        """The files as one dask DataFrame, each file a partition: the one its worker held since
        the survey, or the file read again."""
        import dask
        import dask.dataframe as dd

        kept = self._kept or [None] * len(self.plan.files)
        frames = [dask.delayed(_partition, pure=True)(i, name, self.plan, frame) for i, (name, frame) in enumerate(zip(self.plan.files, kept, strict=True))]
        return dd.from_delayed(frames, meta=_meta(self.plan), verify_meta=False)

    def survey(self) -> Survey:
        """Group sizes, dropped rows, predictor ranges: computed by the workers."""
        client, plan = self.client, self.plan
        reads = [client.submit(_read, i, name, plan, HOLD_SHARE, pure=False) for i, name in enumerate(plan.files)]
        facts = client.gather([client.submit(operator.itemgetter(1), r, pure=False) for r in reads])
        # whether each file holds its groups whole: no key in two files (equal keys hash
        # equal), counted on a worker; a hash shared by two keys only costs the histogram below
        distinct = client.submit(_distinct, [client.submit(operator.itemgetter(2), r, pure=False) for r in reads], pure=False)
        self._kept = [client.submit(operator.itemgetter(0), r, pure=False) for r in reads]  # a partition, or None where its worker had no room
        own = tuple(f["groups"] for f in facts)
        if distinct.result() == sum(own):  # every group in one file: the files' histograms add up
            sizes = functools.reduce(operator.add, (collections.Counter(f["sizes"]) for f in facts), collections.Counter())
        else:
            sizes = _sizes([client.submit(operator.itemgetter(3), r, pure=False) for r in reads], client)
        del reads
        rows, dropped = sum(f["rows"] for f in facts), sum(f["dropped"] for f in facts)
        if rows == 0:  # read_dataset's error (each file alone may lose all its rows)
            used = ", ".join(excerpt(c) for c in dict.fromkeys([*plan.x_columns, plan.y_column, plan.sigma_column]) if c)
            raise InputError(f"{printable(plan.label)}: every row ({dropped}) has a missing value in the used columns ({used})")
        read = [f for f in facts if f["rows"] > 0]
        x_min = [float(np.min([f["x_min"][i] for f in read])) for i in range(len(plan.x_columns))]  # NaN spreads, as np.min over all the data does
        x_max = [float(np.max([f["x_max"][i] for f in read])) for i in range(len(plan.x_columns))]
        sizes = {int(k): int(v) for k, v in sizes.items()}
        self._survey = Survey(sum(sizes.values()), max(sizes), sizes, rows, dropped, tuple(x_min), tuple(x_max), own)
        self._options, self.param_names = client.submit(resolve, self.model_spec, plan, self._survey, self.options, pure=False).result()
        return self._survey

    def parts(self, output_format: str):
        """The result rows in group order, as :class:`Piece` s of at most RESULT_ROWS rows."""
        survey = self._survey or self.survey()
        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        context = {
            "plan": self.plan,
            "survey": survey,
            "spec": self.model_spec,
            "p0": self.p0,
            "options": self._options,
            "format": output_format,
            "stamp": self.stamp,
            "piece_rows": RESULT_ROWS,
        }
        # every group lies whole in one partition: the files themselves where each holds its
        # groups whole and there are enough of them to keep the workers busy, else a shuffle
        # on the key (on one machine it cost 6 s of 28 for 100,000 groups in 20 files)
        if survey.whole_files and len(self.plan.files) >= 2 * workers:
            # the files' own partitions, in file order, each of its groups in order of first
            # appearance: the rows are in the local order already, and need no sort (a
            # shuffle of every result row). Each file's rows are cut on its worker into pieces,
            # as many as its groups (its result rows) make, each pulled alone: the client
            # holds one piece at a time, however large a file
            kept = self._kept or [None] * len(self.plan.files)
            pending = []
            for i, (name, frame, groups) in enumerate(zip(self.plan.files, kept, survey.file_groups, strict=True)):
                fitted = self.client.submit(_fit_file, i, name, frame, context, pure=False)
                pending += [self.client.submit(operator.getitem, fitted, slice(k, k + 1), pure=False) for k in range(-(-groups // RESULT_ROWS))]
            del fitted
        else:
            pending = self._sorted(survey, context, workers)
        self._kept = kept = None  # each partition is released once fitted
        for index in range(len(pending)):  # each a list of pieces: one, or a sorted partition's (about RESULT_ROWS rows: one or two)
            pieces = pending[index].result()
            pending[index] = None  # released: its rows are on the client now
            yield from pieces

    def _sorted(self, survey: Survey, context: dict, workers: int) -> list:
        """Futures of the pieces, in order, where the groups are shuffled into whole ones
        first: fitted, then the result rows sorted on ``pos`` (the order of first appearance)."""
        import dask
        from distributed import wait

        count = max(1, min(survey.groups, max(len(self.plan.files), 2 * workers)))
        fitted = self._frames().shuffle("key", npartitions=count).map_partitions(_fit_partition, context, meta=_result_meta(), align_dataframes=False)
        fitted = self.client.persist(fitted)  # fitted once; the sort below reads it twice (its quantiles, then the rows)
        wait(fitted)
        ordered = self.client.persist(fitted.sort_values("pos", npartitions=max(1, -(-survey.groups // RESULT_ROWS))))
        del fitted
        return [self.client.compute(dask.delayed(_cut)(part, context["piece_rows"])) for part in ordered.to_delayed()]


def _sizes(counts: list, client) -> dict:
    """The histogram of group sizes (size -> groups of that size) from ``counts``, futures
    of each file's rows per group (``_read``'s fourth item), where groups span files: their
    sum per group, a tree reduction on the workers (for many groups Dask otherwise chose a
    shuffle: 100,000 groups, 1.0-1.4 s of 2.4-2.9), then each partition of the sums' sizes
    counted there (summed here: a plain .value_counts() after the groupby trips a dask bug
    once the sums are split)."""
    import dask.dataframe as dd
    import pandas as pd

    meta = pd.DataFrame({"key": pd.Series([], dtype="string[pyarrow]"), "rows": pd.Series([], dtype="int64")})
    sums = dd.from_delayed(counts, meta=meta, verify_meta=False).groupby("key")["rows"].sum(split_out=1)
    histogram = sums.map_partitions(_histogram, meta=pd.Series([], dtype="int64", name="count"))
    return client.compute(histogram).result().groupby(level=0).sum().to_dict()


def check_directory(path: str) -> None:
    """Before any work: ``-o DIR/`` can receive part files (its parent exists, it holds
    none already: a part left from another run would be mixed with this one's)."""
    folder = Path(path)
    if folder.exists():
        if not folder.is_dir():
            raise OptionError(f"--output {printable(path)} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OptionError(f"--output {printable(path)}: permission denied")
        old = sorted(p.name for p in folder.iterdir() if PART_NAME.fullmatch(p.name))
        if old:
            raise OptionError(f"--output {printable(path)} already holds part files ({printable(old[0])}, ...); remove them or choose another folder")
    elif not folder.parent.is_dir():
        raise OptionError(f"--output {printable(path)}: the folder {printable(str(folder.parent))} does not exist")


def write_parts(path: str, parts, output_format, param_names) -> int:
    """Each piece of rows to its own part file in ``path`` (made if needed), each
    written atomically (a temporary file renamed; a signal waits for the rename), named
    ``part-00000.ndjson`` (or ``.csv``) on; returns how many were written."""
    from nlfit import signals
    from nlfit.io.write import write_atomic

    folder = Path(path)
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise OptionError(f"cannot make --output {printable(path)}: {exc.strerror or exc}") from None
    written = 0
    suffix = "csv" if output_format.name != "json" else "ndjson"
    for part in parts:
        target = folder / f"part-{written:05d}.{suffix}"
        text = part_text(part, output_format, param_names, header=True)
        try:
            with signals.deferred():
                write_atomic(target, text)
        except OSError as exc:
            raise OptionError(f"cannot write {printable(str(target))}: {exc.strerror or exc}") from None
        written += 1
    return written


def part_text(piece: Piece, output_format, param_names, header: bool) -> str:
    """The rows of a piece as text: NDJSON lines, or CSV lines (after the header when
    ``header``)."""
    if output_format.name == "json":
        return piece.text
    return (csv_header(param_names) if header else "") + piece.text


def csv_header(param_names) -> str:
    from nlfit.report.formats import Csv

    return Csv().header(param_names)


# --- on the workers -------------------------------------------------------------------------


def _meta(plan: Plan):
    import pandas as pd

    columns = {"key": pd.Series([], dtype="string[pyarrow]")}
    for i in range(len(plan.x_columns)):
        columns[f"x{i}"] = pd.Series([], dtype="float64")
    columns["y"] = pd.Series([], dtype="float64")
    if plan.sigma_column:
        columns["sigma"] = pd.Series([], dtype="float64")
    columns["pos"] = pd.Series([], dtype="int64")
    columns["empty"] = pd.Series([], dtype="bool")
    columns["lost"] = pd.Series([], dtype="int64")
    return pd.DataFrame(columns)


def _histogram(sizes):
    return sizes.value_counts()


def _result_meta():
    import pandas as pd

    return pd.DataFrame(
        {
            "pos": pd.Series([], dtype="int64"),
            "group": pd.Series([], dtype="string[pyarrow]"),
            "text": pd.Series([], dtype="string[pyarrow]"),
            "success": pd.Series([], dtype="bool"),
            "interrupted": pd.Series([], dtype="bool"),
            "warnings": pd.Series([], dtype="string[pyarrow]"),
        }
    )


def _read(index: int, name: str, plan: Plan, hold: float = 1.0):
    """File ``index`` as a partition (key, x0.., y, sigma, pos; None where this worker may not
    hold it: ``_may_hold(hold)``), its
    facts (rows kept and dropped, groups, the histogram of its group sizes, the range of each
    predictor), the hashes of its group keys and its rows per group (``key``, ``rows``)."""
    import pandas as pd

    from nlfit.io.read import read_part

    dataset = read_part(
        name, list(plan.names), plan.files[0], list(plan.x_columns), plan.y_column, plan.sigma_column, plan.group_column, sep=plan.sep, missing=plan.missing
    )
    rows = dataset.n_points
    x = np.asarray(dataset.x, dtype=np.float64).reshape(rows, len(plan.x_columns))  # (not -1: a file may keep no row)
    empty = list(dataset.empty_groups)  # groups whose every row was dropped: one placeholder row each, at the group's first row
    places = np.arange(rows, dtype=np.int64) if dataset.kept_rows is None else np.asarray(dataset.kept_rows, dtype=np.int64)
    keys = np.concatenate([np.asarray(dataset.groups, dtype=object), np.array([k for k, _ in empty], dtype=object)])
    columns = {"key": pd.array(keys, dtype="string[pyarrow]")}
    filler = np.full(len(empty), np.nan)
    for i in range(x.shape[1]):
        columns[f"x{i}"] = np.concatenate([x[:, i], filler])
    columns["y"] = np.concatenate([np.asarray(dataset.y, dtype=np.float64), filler])
    if plan.sigma_column:
        columns["sigma"] = np.concatenate([np.asarray(dataset.sigma, dtype=np.float64), filler])
    columns["pos"] = (np.int64(index) << ROW_BITS) + np.concatenate([places, np.array([r for _, r in empty], dtype=np.int64)])
    columns["empty"] = np.concatenate([np.zeros(rows, dtype=bool), np.ones(len(empty), dtype=bool)])
    columns["lost"] = _lost_rows(keys, dataset.dropped_by_group)
    codes, uniques = pd.factorize(columns["key"], sort=False)
    sizes = np.bincount(codes, minlength=len(uniques))  # rows of each group here (a placeholder: one)
    facts = {
        "rows": rows,
        "dropped": int(dataset.dropped),
        "groups": len(uniques),
        "sizes": dict(zip(*(v.tolist() for v in np.unique(sizes, return_counts=True)), strict=True)),
        "x_min": [float(x[:, i].min()) if rows else np.nan for i in range(x.shape[1])],
        "x_max": [float(x[:, i].max()) if rows else np.nan for i in range(x.shape[1])],
    }
    hashes = pd.util.hash_array(np.asarray(uniques, dtype=object))
    counts = pd.DataFrame({"key": pd.array(uniques, dtype="string[pyarrow]"), "rows": sizes.astype(np.int64)})
    frame = pd.DataFrame(columns)
    return (frame if _may_hold(hold) else None), facts, hashes, counts


def _may_hold(share: float) -> bool:
    """Whether this worker may keep a partition it has just read until the fit: while its
    process (the partition included) uses less than ``share`` of its memory limit; always
    outside a worker (1.0: the caller keeps what it reads)."""
    if share >= 1.0:
        return True
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return False
    limit = getattr(worker.memory_manager, "memory_limit", None)
    return bool(limit) and worker.monitor.get_process_memory() < share * limit


def _partition(index: int, name: str, plan: Plan, frame):
    """File ``index``'s partition: ``frame`` as held since the survey, or the file read again."""
    return _read(index, name, plan)[0] if frame is None else frame


def _distinct(hashes: list) -> int:
    """How many distinct values the arrays ``hashes`` hold together."""
    return len(np.unique(np.concatenate(hashes))) if hashes else 0


def _lost_rows(keys: np.ndarray, dropped: dict) -> np.ndarray:
    """The rows each group lost in this file (the reader's ``dropped_by_group``), carried by
    the group's first row here, so that the partitions can add them up per group."""
    lost = np.zeros(len(keys), dtype=np.int64)
    if dropped:
        import pandas as pd

        first = ~pd.Series(keys).duplicated().to_numpy()
        lost[first] = [dropped.get(k, 0) for k in keys[first]]
    return lost


@functools.lru_cache(maxsize=8)
def _model(spec: str, x_names: tuple[str, ...], y_name: str, x_min: tuple[float, ...], x_max: tuple[float, ...]):
    """The model as the local engine builds it from all the data (its domain is the range of
    x), once per worker process (so its compiled solver is reused across partitions)."""
    from nlfit.models.registry import build_model

    probe = np.array([x_min, x_max], dtype=np.float64)
    return build_model(spec, probe[:, 0] if len(x_names) == 1 else probe, y_name=y_name, x_names=x_names)


def resolve(spec: str, plan: Plan, survey: Survey, options: FitOptions):
    """The options the local engine resolves over all the groups: the ``--starts auto``
    count, the Jacobian mode (widest group), the factorization (when every size bucket
    resolves the same way); and the parameter names. Run on a worker (it builds the model)."""
    from nlfit.prepare import settle_options

    model = _model(spec, plan.x_columns, plan.y_column, survey.x_min, survey.x_max)
    return settle_options(options, model, survey.sizes), tuple(model.param_names)


def _fit_file(index: int, name: str, frame, context: dict) -> list[Piece]:
    """Fit every group of file ``index`` (its partition kept since the survey, or read again
    when ``frame`` is None), which holds its groups whole; its result rows cut into pieces."""
    return _cut(_fitted(_partition(index, name, context["plan"], frame), context), context["piece_rows"])


def _fit_partition(frame, context: dict):
    """Fit every group of one shuffled partition; one result row per group."""
    import pandas as pd

    columns = _fitted(frame, context)
    if columns is None:
        return _result_meta()
    for name in ("group", "text", "warnings"):
        columns[name] = pd.array(columns[name], dtype="string[pyarrow]")
    return pd.DataFrame(columns)


def _cut(fitted, rows: int) -> list[Piece]:
    """Result rows (``_fitted``'s columns, or a partition of ``_fit_partition``'s rows) as
    pieces of at most ``rows`` rows, in their order."""
    if fitted is None or len(fitted["group"]) == 0:
        return []
    columns = {name: list(fitted[name]) for name in ("group", "text", "warnings")}
    success, interrupted = np.asarray(fitted["success"], dtype=bool), np.asarray(fitted["interrupted"], dtype=bool)
    pieces = []
    for begin in range(0, len(success), rows):
        end = begin + rows
        said = tuple((str(g), tuple(json.loads(w))) for g, w in zip(columns["group"][begin:end], columns["warnings"][begin:end], strict=True) if w)
        ok = success[begin:end]
        pieces.append(Piece("".join(columns["text"][begin:end]), len(ok), int(np.count_nonzero(~ok)), bool(np.any(interrupted[begin:end])), said))
    return pieces


def _fitted(frame, context: dict) -> dict | None:
    """Fit every group of a partition whose groups are whole: the result rows' columns
    (``pos``, ``group``, ``text``, ``success``, ``interrupted``, ``warnings``), one row per
    group in order of first appearance; None for an empty partition."""
    import pandas as pd

    from nlfit.batch import SAID_BEFORE, fit_groups
    from nlfit.io.dataset import Dataset, remember_group_codes
    from nlfit.report.formats import choose
    from nlfit.solvers.status import Status

    if frame.empty:
        return None
    plan, survey = context["plan"], context["survey"]
    if not frame["pos"].is_monotonic_increasing:  # a file's own partition is in order already
        frame = frame.sort_values("pos", kind="stable")
    empty = frame["empty"].to_numpy(dtype=bool)
    # the keys as codes (factorized on the Arrow column), each key a Python string once
    codes_all, names = pd.factorize(frame["key"].array, sort=False)
    names = np.asarray(names, dtype=object)
    # the rows each group lost in each file, carried by its first row there (a placeholder's
    # too, which goes below where the group has rows in another file): added up per group
    lost = frame["lost"].to_numpy()
    some = lost != 0  # few rows
    dropped_by_group = {names[c]: int(v) for c, v in pd.Series(lost[some]).groupby(codes_all[some], sort=False).sum().items() if v}
    # a placeholder stands for a group only where no file kept a row of it, once (its first)
    placeholder = np.zeros(len(empty), dtype=bool)
    if np.any(empty):
        has_rows = np.zeros(len(names), dtype=bool)
        has_rows[codes_all[~empty]] = True
        lone = codes_all[empty]
        placeholder[empty] = ~has_rows[lone] & ~pd.Series(lone).duplicated().to_numpy()
        keep = ~empty | placeholder
        frame, codes_all = frame[keep], codes_all[keep]
        empty = frame["empty"].to_numpy(dtype=bool)
    codes_all, found = pd.factorize(codes_all, sort=False)  # first appearance among the rows left
    names = names[found]
    keys_all = names[codes_all]
    rows = frame[~empty]
    keys = keys_all[~empty]
    row_codes, row_found = pd.factorize(codes_all[~empty], sort=False)  # the fit's groups: first appearance among the kept rows
    remember_group_codes(keys, row_codes, names[row_found].tolist())
    x = rows[[f"x{i}" for i in range(len(plan.x_columns))]].to_numpy(dtype=np.float64)
    dataset = Dataset(
        x=x[:, 0] if x.shape[1] == 1 else x,
        y=rows["y"].to_numpy(dtype=np.float64),
        x_names=plan.x_columns,
        y_name=plan.y_column,
        sigma=rows["sigma"].to_numpy(dtype=np.float64) if plan.sigma_column else None,
        source=plan.label,
        groups=keys,
        files=plan.files,
        dropped=survey.dropped,
        empty_groups=tuple(zip(keys_all[empty].tolist(), frame["pos"].to_numpy()[empty].tolist(), strict=True)),
        kept_rows=rows["pos"].to_numpy(),
        dropped_by_group=dropped_by_group,
    )
    model = _model(context["spec"], plan.x_columns, plan.y_column, survey.x_min, survey.x_max)
    # Dask runs as many tasks side by side as its workers have threads (a local cluster: one per
    # core): a task is one thread's work, so no helper process, post-processing thread or
    # second XLA device of its own (2 workers on 2 cores each spread over 2 devices and ran
    # 2 helper threads: 8 busy threads on 2 cores)
    with cores.limited(1):
        result = fit_groups(dataset, model, p0=context["p0"], options=context["options"], processes=False)
    first = np.unique(codes_all, return_index=True)[1]  # each group's first row: in result.keys order
    if names.tolist() != list(result.keys):
        raise RuntimeError("the groups of a partition came back in another order")
    fits = result.fits
    texts = choose(context["format"]).group_lines(fits, None if context.get("stamp") is None else {"provenance": context["stamp"]})
    said = [[w.message for w in fits.warnings.get(g, ()) if w.kind not in SAID_BEFORE] for g in range(len(fits))]
    warnings = [json.dumps(lines) if lines else "" for lines in said]
    return {
        "pos": frame["pos"].to_numpy()[first],
        "group": list(result.keys),
        "text": texts,
        "success": np.asarray(fits.success, dtype=bool),
        "interrupted": np.asarray(fits.status == Status.INTERRUPTED),
        "warnings": warnings,
    }
