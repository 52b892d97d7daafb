"""The rows of a grouped fit, written from the columns of a :class:`nlfit.result.Fits` in bulk.

Each NDJSON line holds the JSON of ``fits.result(g).to_json(history=False, options=False)``
(the single-fit contract without the history), plus what the caller adds to every row (the
short provenance). The numbers are taken from the columns as Python lists at once, and each
line is serialized by orjson (NaN and infinities become null, JSON's rule and
``io.write.json_number``'s), so that a row costs a few microseconds instead of a walk
through a result object. Measured by ``benchmarks/batch.py``.

A CSV line per group: the group, each parameter and its standard error, then ``loss`` (the
minimized objective, 1/2 RSS or the robust cost), ``rss`` (the weighted residual sum of
squares), ``success`` (true/false), ``status``, ``warnings`` (how many; the messages are in
the JSON) and ``iterations``.
"""

from __future__ import annotations

import contextlib
import gc

import numpy as np
import orjson

from nlfit.result import INTEGER_STATS, SIDES, Fits
from nlfit.solvers.status import Status

CSV_TAIL = ("loss", "rss", "success", "status", "warnings", "iterations")


def json_rows(fits: Fits, extra: dict | None = None) -> list[str]:
    """One NDJSON line (with its newline) per fit, in the order of ``fits``."""
    with paused_collection():
        return _json_rows(fits, extra)


@contextlib.contextmanager
def paused_collection():
    """Python's cyclic garbage collector paused: building many small lists and dicts (none of
    them cyclic) otherwise triggers full collections that walk every object of the process
    (JAX's included): 0.28 s of 0.31 s for 5,000 rows, measured."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _param_entries(fits: Fits) -> tuple[list, list, list]:
    """Each row's ``params`` object, ``covariance`` and ``correlation`` (None without one)."""
    names = list(fits.param_names)
    covered = fits.has_covariance
    nan = np.full(fits.params.shape, np.nan)
    stderr = np.where(covered[:, None], fits.stderr, nan).tolist()
    tvalues = np.where(covered[:, None], fits.tvalues, nan).tolist()
    usable = (covered[:, None] & np.all(np.isfinite(fits.intervals), axis=2)).tolist()
    intervals, fixed, values = fits.intervals.tolist(), fits.fixed.tolist(), fits.params.tolist()
    sides = [[SIDES[s] for s in row] for row in fits.sides.tolist()]
    per_param = []  # for each parameter, its entry of every row
    for i in range(len(names)):
        per_param.append(
            [
                {"value": v[i], "stderr": s[i], "ci": c[i] if u[i] else None, "tvalue": t[i], "fixed": f[i], "at_bound": b[i]}
                for v, s, c, u, t, f, b in zip(values, stderr, intervals, usable, tvalues, fixed, sides, strict=True)
            ]
        )
    params = [dict(zip(names, entries, strict=True)) for entries in zip(*per_param, strict=True)] if names else [{} for _ in range(len(fits))]
    has = covered.tolist()
    covariance = [m if h else None for m, h in zip(np.where(np.isnan(fits.covariance), 0.0, fits.covariance).tolist(), has, strict=True)]
    correlation = [m if h else None for m, h in zip(fits.correlation.tolist(), has, strict=True)]
    return params, covariance, correlation


def _json_rows(fits: Fits, extra: dict | None) -> list[str]:
    params, covariance, correlation = _param_entries(fits)
    stat_names = list(fits.stats)
    stat_rows = [
        {k: v for k, v in zip(stat_names, row, strict=True) if v is not _ABSENT}
        for row in zip(*(_stat_column(name, fits.stats[name]) for name in stat_names), strict=True)
    ]
    labels = {int(s): (s.success, s.label) for s in Status}
    verdict = [labels[s] for s in fits.status.tolist()]
    terminations = [labels[t][1] if t >= 0 else v[1] for t, v in zip(fits.termination.tolist(), verdict, strict=True)]
    counts = [{"iterations": i, "nfev": f, "njev": j} for i, f, j in zip(fits.iterations.tolist(), fits.nfev.tolist(), fits.njev.tolist(), strict=True)]
    warnings = [[w.to_json() for w in fits.warnings[g]] if g in fits.warnings else [] for g in range(len(fits))]
    starts = fits.starts or [None] * len(fits)
    shared = {"model": fits.model.spec, "model_info": fits.model.to_json(), "method": fits.method, "globalization": fits.globalization,
              "jac": fits.jac_mode, "loss": fits.loss_name}  # fmt: skip
    data, absolute, seconds, extra = fits.data_columns, fits.absolute_sigma, fits.seconds, extra or {}
    option = orjson.OPT_APPEND_NEWLINE
    keys = fits.keys or [None] * len(fits)
    return [
        orjson.dumps(
            {
                **({} if key is None else {"group": key}),
                "success": ok,
                "status": label,
                "message": message,
                "termination": termination,
                **shared,
                "f_scale": f_scale,
                "params": entries,
                "data": data,
                "absolute_sigma": absolute,
                "covariance": cov,
                "correlation": corr,
                "stats": stat,
                "counts": count,
                "starts": start,
                "seconds": seconds,
                "warnings": warning,
                **extra,
            },
            option=option,
        ).decode()
        for key, (ok, label), message, termination, f_scale, entries, cov, corr, stat, count, start, warning in zip(
            keys,
            verdict,
            fits.messages(),
            terminations,
            fits.f_scale.tolist(),
            params,
            covariance,
            correlation,
            stat_rows,
            counts,
            starts,
            warnings,
            strict=True,
        )  # fmt: skip
    ]


_ABSENT = object()  # a statistic that a row does not have (conf_level without a covariance)


def _stat_column(name: str, column: np.ndarray) -> list:
    values = column.tolist()
    if name in INTEGER_STATS:
        return [int(v) for v in values]
    if name in ("conf_level", "t_quantile"):
        return [_ABSENT if v != v else v for v in values]  # NaN: the fit has no covariance
    return values  # NaN (a statistic not defined) is written as null by orjson, as None would be


def csv_lines(fits: Fits | None, param_names=None) -> list[str]:
    """The CSV line of each fit of ``fits``; with ``fits`` None, the header line of
    ``param_names`` alone."""
    import csv
    import io

    from nlfit.io.write import csv_number

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")

    def line(cells) -> str:
        out.seek(0)
        out.truncate()
        writer.writerow(cells)
        return out.getvalue()

    if fits is None:
        return [line(["group"] + [c for name in param_names for c in (name, f"{name}_stderr")] + list(CSV_TAIL))]
    values = fits.params.tolist()
    stderr = np.where(fits.has_covariance[:, None], fits.stderr, np.nan).tolist()
    loss, rss = fits.stats["loss"].tolist(), fits.stats["rss"].tolist()
    labels = [Status(s).label for s in fits.status.tolist()]
    success = ["true" if s else "false" for s in fits.success.tolist()]
    iterations = fits.iterations.tolist()
    keys = fits.keys or [""] * len(fits)
    n = len(fits.param_names)
    lines = []
    for g in range(len(fits)):
        cells = [keys[g]]
        for i in range(n):
            cells += [csv_number(values[g][i]), csv_number(stderr[g][i])]
        cells += [csv_number(loss[g]), csv_number(rss[g]), success[g], labels[g], len(fits.warnings.get(g, ())), iterations[g]]
        lines.append(line(cells))
    return lines
