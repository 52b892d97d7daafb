"""Many independent fits of one model: ``nlfit fit DATA --group-by COL``.

The rows of a long-format table are grouped by a key (order of first appearance kept).
Every group becomes one member of a batch: groups are padded to the longest one, and a
padded point gets sigma = inf, so its weighted residual and its row of the Jacobian are
exactly zero and it changes nothing. One jitted, vmapped solver step then advances every
member that is still running (``nlfit.solvers.loop.solve_batch``); a member that has stopped
is frozen, so a group that fails (non-finite data, no convergence, a singular Jacobian)
gets its own status and cannot disturb the others. Groups with fewer points than
parameters are reported as ``too-few-points``.

Every method x globalization batches (the step is the same function under ``vmap``). The
step works from J^T J (``--factorization gram``) unless ``--factorization svd`` is given.
Statistics are computed for all groups at once from the batched SVD of their Jacobians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nlfit.errors import InputError
from nlfit.io.dataset import Dataset
from nlfit.solvers.status import Status


@dataclass
class BatchResult:
    keys: list[str]
    param_names: tuple[str, ...]
    params: np.ndarray  # (G, n)
    stderr: np.ndarray  # (G, n), NaN where not available
    rss: np.ndarray
    n_points: np.ndarray
    statuses: np.ndarray
    iterations: np.ndarray
    nfev: np.ndarray
    njev: np.ndarray
    method: str
    globalization: str
    model_spec: str
    seconds: float
    n_estimated: int | None = None  # parameters not fixed (for dof); all when None

    def rows(self) -> list[dict]:
        """One dict per group in the single-fit JSON contract, without the history."""
        out = []
        for g, key in enumerate(self.keys):
            status = Status(int(self.statuses[g]))
            dof = int(self.n_points[g]) - (len(self.param_names) if self.n_estimated is None else self.n_estimated)
            params = {
                name: {
                    "value": _number(self.params[g, i]),
                    "stderr": _number(self.stderr[g, i]),
                }
                for i, name in enumerate(self.param_names)
            }
            out.append(
                {
                    "group": key,
                    "success": status.success,
                    "status": status.label,
                    "message": status.message,
                    "model": self.model_spec,
                    "method": self.method,
                    "globalization": self.globalization,
                    "params": params,
                    "stats": {
                        "rss": _number(self.rss[g]),
                        "loss": _number(0.5 * self.rss[g]),
                        "n": int(self.n_points[g]),
                        "dof": dof,
                        "sigma": _number(math.sqrt(self.rss[g] / dof)) if dof > 0 and np.isfinite(self.rss[g]) else None,
                    },
                    "counts": {"iterations": int(self.iterations[g]), "nfev": int(self.nfev[g]), "njev": int(self.njev[g])},
                }
            )
        return out


def _number(value):
    value = float(value)
    return value if math.isfinite(value) else None


def pad_groups(dataset: Dataset, y_fitted: np.ndarray):
    """(keys, x (G, L[, k]), y (G, L), sigma (G, L), counts): padded points have sigma = inf."""
    import pandas as pd

    codes, keys = pd.factorize(dataset.groups, sort=False)
    if len(keys) == 0:
        raise InputError("--group-by: the data has no rows")
    counts = np.bincount(codes, minlength=len(keys))
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(codes)) - np.repeat(starts, counts)
    width = int(counts.max())
    first_rows = order[starts]
    x = np.asarray(dataset.x)
    x_pad = np.repeat(x[first_rows][:, None], width, axis=1)
    y_pad = np.repeat(y_fitted[first_rows][:, None], width, axis=1)
    sigma_source = np.ones_like(y_fitted) if dataset.sigma is None else np.asarray(dataset.sigma)
    sigma_pad = np.full((len(keys), width), np.inf)
    rows, cols = codes[order], position
    x_pad[rows, cols] = x[order]
    y_pad[rows, cols] = y_fitted[order]
    sigma_pad[rows, cols] = sigma_source[order]
    return [str(k) for k in keys], x_pad, y_pad, sigma_pad, counts


def fit_groups(dataset: Dataset, model_spec, p0=None, on_progress=None, starts=None, **options) -> BatchResult:
    """Fit every group. ``p0`` (position or names) applies to all groups; ``starts`` (G, n)
    gives each group its own start; without either, each group gets the model's default."""
    from nlfit import api
    from nlfit._jax import jax, jnp
    from nlfit.problem import Problem
    from nlfit.solvers.directions import make_direction
    from nlfit.solvers.globalization import make_globalization
    from nlfit.solvers.loop import solve_batch

    opts, method, globalization, settings = api.validate(options)
    model = api.build_model(model_spec, dataset)
    n_params = len(model.param_names)
    y_fitted = np.asarray(model.transform_response(dataset.y, dataset.x), dtype=np.float64)
    keys, x_pad, y_pad, sigma_pad, counts = pad_groups(dataset, y_fitted)

    if p0 is None and starts is None and model.default_p0(np.asarray(dataset.x)[:1], y_fitted[:1]) is None:
        api.resolve_p0(model, dataset, None)  # raises the "needs a starting point" error
    given_starts = starts
    starts = []
    for g in range(len(keys) if given_starts is None else 0):
        member = Dataset(x=x_pad[g, : counts[g]], y=y_pad[g, : counts[g]], x_names=dataset.x_names, y_name=dataset.y_name)
        try:
            with np.errstate(all="ignore"):
                starts.append(api.resolve_p0(model, member, p0))
        except (np.linalg.LinAlgError, ValueError):
            starts.append(np.ones(n_params))  # a group whose default start cannot be computed (bad data)
    if given_starts is not None:
        starts = np.asarray(given_starts, dtype=np.float64)
        if starts.shape != (len(keys), n_params):
            raise InputError(f"starts must have shape ({len(keys)}, {n_params}); got {starts.shape}")
    starts = np.nan_to_num(np.array(starts, dtype=np.float64), nan=1.0, posinf=1.0, neginf=1.0)

    from nlfit import derivatives

    jac_mode = derivatives.resolve_mode(opts["jac"], x_pad.shape[1], n_params)
    lower, upper, _ = api.box(model, opts["bounds"], opts["fix"], starts[0], given=False)
    for name, value in (opts["fix"] or {}).items():
        starts[:, model.param_names.index(name)] = value
    if p0 is None and given_starts is None:
        starts = np.clip(starts, lower, upper)  # default starts are moved into the bounds
    elif np.any((starts < lower) | (starts > upper)):
        raise InputError("the start is outside the bounds; give a --p0 inside them")
    groups = len(keys)
    problems = Problem(
        x=jnp.asarray(x_pad),
        y=jnp.asarray(y_pad),
        sigma=jnp.asarray(sigma_pad),
        model=model,
        loss=opts["loss"],
        f_scale=jnp.full(groups, float(opts["f_scale"])),
        lower=jnp.tile(jnp.asarray(lower), (groups, 1)),
        upper=jnp.tile(jnp.asarray(upper), (groups, 1)),
    )
    # Batches use the normal equations by default: half the time of a batched SVD, and the
    # groups of a batch are usually small, well-posed fits (--factorization svd to change it).
    factorization = "gram" if opts["factorization"] == "auto" else opts["factorization"]
    direction = make_direction(method, opts["batch_size"], factorization)
    import time

    began = time.perf_counter()
    state, statuses = solve_batch(
        problems, starts, direction, make_globalization(globalization), jac_mode, settings, int(opts["seed"]), opts["timeout"], on_progress
    )
    n_estimated = int(np.count_nonzero(lower != upper))  # fixed parameters are not estimated
    statuses = np.where(counts < n_estimated, int(Status.TOO_FEW_POINTS), statuses)
    # A non-finite number in a group's data: that group alone is 'nonfinite'.
    bad_data = ~np.all(np.isfinite(y_pad) & np.isfinite(np.reshape(x_pad, (len(keys), x_pad.shape[1], -1))).all(axis=2), axis=1)
    statuses = np.where(bad_data & (statuses != Status.TOO_FEW_POINTS), int(Status.NONFINITE), statuses)
    params = np.asarray(state.params)
    residuals = np.asarray(state.local.residuals)
    rss = np.sum(np.where(np.isfinite(sigma_pad), residuals, 0.0) ** 2, axis=1)
    jac = state.local.jac
    if jac is None or jac_mode == "fd":  # gram factorization, gd or fd: the AD Jacobian at the solution
        jac = jax.jit(jax.vmap(lambda p, problem: derivatives.jacobian(p, problem, "fwd")[1]))(state.params, problems)
    jac = np.asarray(jac)
    estimated = np.flatnonzero(lower != upper)  # fixed parameters are not estimated
    middle = None
    if opts["loss"] != "linear":  # the sandwich, as for single fits (nlfit.stats)
        from nlfit.problem import rho

        scale = float(opts["f_scale"])
        z = (np.where(np.isfinite(sigma_pad), residuals, 0.0) / scale) ** 2
        first, second = (np.asarray(v) for v in rho(z, opts["loss"])[1:])
        weight = np.sqrt(np.maximum(first + 2 * second * z, np.finfo(float).eps))
        influence = jac[:, :, estimated] * (first * residuals)[:, :, None]
        middle = np.einsum("gmi,gmj->gij", influence, influence)
        jac = jac * weight[:, :, None]
    stderr = np.full(params.shape, np.nan)
    stderr[:, estimated] = batched_stderr(jac[:, :, estimated], rss, counts, len(estimated), middle)
    held = (params <= lower) | (params >= upper)  # fixed, or ended at a bound: no meaningful stderr
    # A group with a parameter at a bound: its statistics over the other parameters only, as a
    # single fit's (nlfit.api); such groups are few, so one at a time.
    for g in np.flatnonzero(np.any(held[:, estimated], axis=1)):
        keep = np.array([i for i in estimated if not held[g, i]], dtype=int)
        if keep.size:
            sub_middle = None
            if middle is not None:
                position = [list(estimated).index(i) for i in keep]
                sub_middle = middle[g][np.ix_(position, position)][None]
            stderr[g, keep] = batched_stderr(jac[g : g + 1][:, :, keep], rss[g : g + 1], counts[g : g + 1], keep.size, sub_middle)[0]
    stderr[held] = np.nan
    stderr[statuses == Status.TOO_FEW_POINTS] = np.nan
    return BatchResult(
        keys=keys,
        param_names=tuple(model.param_names),
        params=params,
        stderr=stderr,
        rss=rss,
        n_points=counts,
        statuses=statuses,
        iterations=np.asarray(state.iteration),
        nfev=np.asarray(state.nfev),
        njev=np.asarray(state.njev),
        method=method,
        globalization=globalization,
        model_spec=model.spec,
        seconds=time.perf_counter() - began,
        n_estimated=n_estimated,
    )


def batched_stderr(jac: np.ndarray, rss: np.ndarray, counts: np.ndarray, n_params: int, middle: np.ndarray | None = None) -> np.ndarray:
    """sqrt(diag(s^2 (J^T J)^-1)) for every group from one batched SVD; NaN where J is
    rank-deficient, not finite, or there are no degrees of freedom (as nlfit.stats)."""
    finite = np.all(np.isfinite(jac), axis=(1, 2))
    safe = np.where(finite[:, None, None], jac, 0.0)
    _, singular, vt = np.linalg.svd(safe, full_matrices=False)
    cutoff = np.finfo(float).eps * np.maximum(counts, n_params) * singular[:, :1].squeeze(-1)
    full_rank = np.all(singular > cutoff[:, None], axis=1) & (singular.shape[1] == n_params)
    dof = counts - n_params
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.swapaxes(vt, 1, 2) / singular[:, None, :]
        if middle is None:
            variance = np.einsum("gij,gij->gi", scaled, scaled) * (rss / dof)[:, None]
        else:
            inverse = scaled @ np.swapaxes(scaled, 1, 2)
            variance = np.einsum("gii->gi", inverse @ middle @ inverse) * (counts / dof)[:, None]
        stderr = np.sqrt(variance)
    usable = finite & full_rank & (dof > 0) & np.isfinite(rss)
    return np.where(usable[:, None], stderr, np.nan)


def subset(dataset: Dataset, keep: np.ndarray) -> Dataset:
    """The rows ``keep`` (a boolean mask) of a grouped dataset."""
    return Dataset(
        x=np.asarray(dataset.x)[keep],
        y=np.asarray(dataset.y)[keep],
        x_names=dataset.x_names,
        y_name=dataset.y_name,
        sigma=None if dataset.sigma is None else np.asarray(dataset.sigma)[keep],
        source=dataset.source,
        groups=np.asarray(dataset.groups)[keep],
    )


def _fit_partition(dataset: Dataset, model_spec, p0, options: dict) -> BatchResult:
    return fit_groups(dataset, model_spec, p0=p0, **options)


def fit_groups_dask(dataset: Dataset, model_spec, p0=None, scheduler: str | None = None, partitions: int | None = None, **options) -> BatchResult:
    """``fit_groups`` spread over Dask workers: the groups are cut into contiguous partitions,
    each worker runs the vmapped solver on its own, and the rows come back in group order.

    ``scheduler``: the address of a running scheduler; without it a LocalCluster of one
    single-threaded worker process per core is started on 127.0.0.1 (and closed after).
    """
    import os
    import time

    import pandas as pd

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("--engine dask needs dask: pip install 'nlfit[dask]'") from None
    from nlfit.errors import OptionError

    began = time.perf_counter()
    codes, keys = pd.factorize(dataset.groups, sort=False)
    cluster = None
    try:
        if scheduler:
            client = Client(scheduler, timeout="10s")
        else:
            cluster = LocalCluster(n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
            client = Client(cluster)
    except (OSError, TimeoutError) as exc:
        raise OptionError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    try:
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        count = partitions or 2 * workers
        bounds = np.linspace(0, len(keys), min(count, len(keys)) + 1).astype(int)
        parts = [subset(dataset, (codes >= lo) & (codes < hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        futures = client.map(_fit_partition, parts, model_spec=model_spec, p0=p0, options=options, pure=False)
        results = client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    first = results[0]

    def join(field):
        return np.concatenate([getattr(r, field) for r in results])

    return BatchResult(
        keys=[k for r in results for k in r.keys],
        param_names=first.param_names,
        params=join("params"),
        stderr=join("stderr"),
        rss=join("rss"),
        n_points=join("n_points"),
        statuses=join("statuses"),
        iterations=join("iterations"),
        nfev=join("nfev"),
        njev=join("njev"),
        method=first.method,
        globalization=first.globalization,
        model_spec=first.model_spec,
        seconds=time.perf_counter() - began,
        n_estimated=first.n_estimated,
    )
