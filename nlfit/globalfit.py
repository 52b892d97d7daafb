"""A global fit set up from grouped data (``nlfit fit --group-by COL --share p1,p2``): the
problem over all rows (``global_problem``) and its start from separate fits
(``separate_start``). The model itself: ``nlfit.models.shared.GlobalModel``."""

from __future__ import annotations

import dataclasses

import numpy as np

from nlfit.errors import InputError, OptionError
from nlfit.models.base import Model
from nlfit.models.shared import GlobalModel

MAX_JACOBIAN = 50_000_000  # rows x parameters of a global fit (400 MB of float64)


def separate_start(dataset, glob: GlobalModel, options, p0=None) -> np.ndarray | None:
    """The global fit's start from separate fits: the base model fitted to every group on its
    own (one batched solve, each group with the multistart), then each group's parameters
    from its own fit and a shared one the median of the groups' estimates; a group whose fit
    failed gets its default start. ``dataset``: the grouped data (before ``global_problem``);
    ``options``: the fit's, their --p0, --fix and --bounds by base name kept. None when no
    group could be fitted."""
    from nlfit.batch import solve_only
    from nlfit.prepare import group_rows
    from nlfit.solvers.status import Status

    def by_base(table):
        return {k: v for k, v in table.items() if k in glob.base.param_names} if table else table

    plain = dataclasses.replace(options, bounds=by_base(options.bounds), fix=by_base(options.fix))
    params, statuses, _ = solve_only(dataset, glob.base, None, plain, p0=by_base(p0) if isinstance(p0, dict) else None)
    usable = np.array([Status(int(code)).success for code in statuses]) & np.all(np.isfinite(params), axis=1)
    if not np.any(usable):
        return None
    with np.errstate(all="ignore"):
        typical = np.nanmedian(np.where(usable[:, None], params, np.nan), axis=0)
    where = {key: g for g, key in enumerate(group_rows(dataset).keys)}
    own = np.array([where[label] for label in glob.groups])  # each group of the global fit in the separate fits
    per_group = np.where(usable[own, None], params[own], typical[None, :])  # (G, n_base): a failed group gets the median
    start = np.empty(len(glob.param_names))
    start[glob.positions()] = per_group.T  # a shared parameter's one position is written by every group: set it after
    for j, (_, common, at) in enumerate(glob.layout):
        if common:
            start[at] = typical[j]
    return start


def global_problem(dataset, model: Model, share: str, group_by: str):
    """(dataset, GlobalModel): all rows with the group code as a last predictor column."""
    from nlfit.prepare import group_rows

    shared = tuple(name.strip() for name in share.split(",") if name.strip())
    twice = next((name for name in shared if shared.count(name) > 1), None)
    if twice is not None:
        raise OptionError(f"--share names {twice} twice")
    unknown = [name for name in shared if name not in model.param_names]
    if unknown:
        raise OptionError(f"--share names unknown parameter(s) {', '.join(unknown)}; the parameters of '{model.spec}' are {', '.join(model.param_names)}")
    rows = group_rows(dataset)
    labels = tuple(str(key) for key, count in zip(rows.keys, rows.counts, strict=True) if count > 0)
    if len(labels) < 2:
        raise InputError(f"--share needs at least two groups in --group-by {group_by}; found {len(labels)}")
    import pandas as pd

    codes = pd.Index(labels).get_indexer(np.asarray(dataset.groups).astype(str))
    x = np.asarray(dataset.x, dtype=np.float64)
    x = np.column_stack([x.reshape(len(codes), -1), codes.astype(np.float64)])
    glob = GlobalModel(model, shared, labels, group_by, tuple(dataset.x_names))
    if x.shape[0] * len(glob.param_names) > MAX_JACOBIAN:
        raise InputError(
            f"a global fit of {len(labels)} groups has {len(glob.param_names)} parameters over {x.shape[0]} rows: "
            f"its dense Jacobian would exceed {MAX_JACOBIAN:,} values; share more parameters or fit fewer groups"
        )
    merged = dataclasses.replace(dataset, x=x, x_names=(*dataset.x_names, group_by), groups=None, empty_groups=(), dropped_by_group={})
    return merged, glob
