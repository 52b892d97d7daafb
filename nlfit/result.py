"""Results: :class:`Fits`, the columns of G fits (arrays with a leading group axis), and
:class:`FitResult`, one fit's view of them with the JSON contract (``to_json``).

Every fit ends as a ``Fits`` (``nlfit.postprocess``): a single fit is G = 1 and its
``FitResult`` is ``fits.result(0)``; a grouped fit's rows are written from the columns in
bulk (``nlfit.io.rows``), and hold the same JSON as ``result(g).to_json`` without the
history, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from nlfit.io.write import json_number
from nlfit.numerics import LARGE_DATA_POINTS  # noqa: F401 (re-exported: where statistics switch to the R factor)
from nlfit.solvers.status import Status
from nlfit.warning import FitWarning

NULLABLE_STATS = ("sigma", "r2", "r2_adj", "chi2", "reduced_chi2")  # None where a statistic is not defined
STAT_ORDER = ("rss", "n", "dof", "sigma", "r2", "r2_adj", "chi2", "reduced_chi2", "loglik", "aic", "bic")
INTEGER_STATS = ("n", "dof")
SIDES = (None, "lower", "upper")  # Fits.sides codes


@dataclass
class Fits:
    """G fits as columns (NaN where a number is not available). ``sides`` (G, n): 0 free, 1
    at its lower bound, 2 at its upper; ``termination`` (G,): what stopped the solver where
    ``status`` is SUSPECT, else -1; ``stats``: one column per statistic (``STAT_ORDER``,
    then ``conf_level``, ``t_quantile`` (NaN without a covariance) and ``loss``);
    ``warnings``: the groups that have any, {g: [FitWarning, ...]}; ``starts`` (per group, the
    multistart summary) and ``histories`` only where they exist."""

    model: object
    method: str
    globalization: str
    jac_mode: str
    loss_name: str
    param_names: tuple[str, ...]
    keys: list[str] | None
    params: np.ndarray
    stderr: np.ndarray
    covariance: np.ndarray
    correlation: np.ndarray
    tvalues: np.ndarray
    intervals: np.ndarray
    has_covariance: np.ndarray
    fixed: np.ndarray
    sides: np.ndarray
    status: np.ndarray
    termination: np.ndarray
    stats: dict
    iterations: np.ndarray
    nfev: np.ndarray
    njev: np.ndarray
    f_scale: np.ndarray
    warnings: dict = field(default_factory=dict)
    starts: list | None = None
    histories: list | None = None
    seconds: float = 0.0
    data_columns: dict = field(default_factory=dict)
    absolute_sigma: bool = False
    options: dict | None = None

    def __len__(self) -> int:
        return int(self.status.shape[0])

    @property
    def success(self) -> np.ndarray:
        return np.isin(self.status, [int(s) for s in Status if s.success])

    def messages(self) -> list[str]:
        """Each fit's message (a suspect one names its first fatal warning)."""
        labels = {int(s): s.message for s in Status}
        out = [labels[int(s)] for s in self.status.tolist()]
        for g in np.flatnonzero(self.status == Status.SUSPECT):
            out[g] = suspect_message(Status(int(self.termination[g])), self.warnings.get(int(g), []))
        return out

    def take(self, index) -> Fits:
        """The fits ``index`` (an array of positions) as a Fits of their own."""
        index = np.asarray(index)
        changes = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, np.ndarray):
                changes[item.name] = value[index]
        changes["stats"] = {name: column[index] for name, column in self.stats.items()}
        positions = {int(old): new for new, old in enumerate(index.tolist())}
        changes["warnings"] = {positions[g]: found for g, found in self.warnings.items() if g in positions}
        for name in ("keys", "starts", "histories"):
            values = getattr(self, name)
            changes[name] = None if values is None else [values[i] for i in index.tolist()]
        return dataclasses.replace(self, **changes)

    def unpadded(self, model) -> Fits:
        """The fits of a padded model (``nlfit.models.padded.Padded``, ``self.model``) as fits of
        its own ``model``: the padded parameters (fixed, so without statistics) dropped."""
        at = np.asarray(self.model.shown)
        names = set(model.param_names)

        def own(minimum: dict) -> dict:
            return {**minimum, "params": {k: v for k, v in minimum["params"].items() if k in names}}

        starts = None if self.starts is None else [s if s is None else {**s, "minima": [own(m) for m in s["minima"]]} for s in self.starts]
        square = np.ix_(np.arange(len(self)), at, at)
        return dataclasses.replace(
            self, model=model, param_names=tuple(model.param_names), params=self.params[:, at], stderr=self.stderr[:, at],
            covariance=self.covariance[square], correlation=self.correlation[square], tvalues=self.tvalues[:, at],
            intervals=self.intervals[:, at], fixed=self.fixed[:, at], sides=self.sides[:, at], starts=starts,
        )  # fmt: skip

    def result(self, g: int) -> FitResult:
        """Fit ``g`` as a :class:`FitResult`."""
        status = Status(int(self.status[g]))
        covariance = self.has_covariance[g]
        stats = {}
        for name, column in self.stats.items():
            if name in ("conf_level", "t_quantile") and not covariance:
                continue
            value = column[g].item()
            if name in INTEGER_STATS:
                value = int(value)
            elif name in NULLABLE_STATS and not np.isfinite(value):
                value = None
            stats[name] = value
        fixed = self.fixed[g]
        return FitResult(
            model=self.model,
            method=self.method,
            globalization=self.globalization,
            jac_mode=self.jac_mode,
            param_names=self.param_names,
            params=self.params[g],
            stderr=self.stderr[g] if covariance else None,
            covariance=np.where(np.isnan(self.covariance[g]), 0.0, self.covariance[g]) if covariance else None,
            correlation=self.correlation[g] if covariance else None,
            intervals=self.intervals[g] if covariance else None,
            tvalues=self.tvalues[g] if covariance else None,
            status=status,
            termination=Status(int(self.termination[g])) if self.termination[g] >= 0 else None,
            stats=stats,
            counts={"iterations": int(self.iterations[g]), "nfev": int(self.nfev[g]), "njev": int(self.njev[g])},
            history=self.histories[g] if self.histories is not None else [],
            seconds=self.seconds,
            warnings=list(self.warnings.get(int(g), [])),
            data_columns=self.data_columns,
            absolute_sigma=self.absolute_sigma,
            fixed=fixed,
            at_bound=[SIDES[s] for s in self.sides[g].tolist()],
            loss_name=self.loss_name,
            f_scale=float(self.f_scale[g]),
            starts=None if self.starts is None else self.starts[g],
            group=None if self.keys is None else self.keys[g],
            options=self.options,
        )


def suspect_message(termination: Status, warnings) -> str:
    fatal = [w.message for w in warnings if w.fatal]
    return f"{Status.SUSPECT.message} ({termination.label}): {fatal[0] if fatal else ''}".rstrip(": ")


@dataclass
class FitResult:
    """Everything a fit produced; ``to_json()`` gives the documented JSON contract."""

    model: object
    method: str
    globalization: str
    jac_mode: str
    param_names: tuple[str, ...]
    params: np.ndarray
    stderr: np.ndarray | None
    covariance: np.ndarray | None
    status: Status
    stats: dict
    counts: dict
    history: list[dict]
    seconds: float
    warnings: list[FitWarning] = field(default_factory=list)
    correlation: np.ndarray | None = None
    intervals: np.ndarray | None = None
    tvalues: np.ndarray | None = None
    data_columns: dict = field(default_factory=dict)
    absolute_sigma: bool = False
    fixed: np.ndarray | None = None
    at_bound: list | None = None
    loss_name: str = "linear"
    f_scale: float = 1.0
    termination: Status | None = None  # what stopped the solver, when ``status`` is SUSPECT
    starts: dict | None = None  # the multistart summary (None for one start)
    group: str | None = None
    options: dict | None = None  # every fit option in force, defaults included (FitOptions.to_json)

    @property
    def success(self) -> bool:
        return self.status.success

    @property
    def message(self) -> str:
        if self.status == Status.SUSPECT:
            return suspect_message(self.termination or self.status, self.warnings)
        return self.status.message

    @property
    def findings(self) -> list[FitWarning]:
        """The checks' warnings (``nlfit.diagnostics``)."""
        return list(self.warnings)

    @property
    def loss(self) -> float:
        """The minimized objective: 1/2 ||r||^2, or the robust cost 1/2 C^2 sum rho((r/C)^2)."""
        return self.stats["loss"]

    def to_json(self, history: bool = True, options: bool = True, model_info: dict | None = None) -> dict:
        """The JSON contract; ``history`` and the ``options`` echo are left out of a grouped
        fit's rows (``nlfit.io.rows``), which are one line each; ``model_info``: the
        model's description when the caller already has it (the rows of a grouped fit share it)."""
        n = len(self.param_names)
        values, stderr, tvalues = (_numbers(v, n) for v in (self.params, self.stderr, self.tvalues))
        intervals = None if self.intervals is None else np.asarray(self.intervals, dtype=np.float64)
        finite_intervals = None if intervals is None else np.all(np.isfinite(intervals), axis=1)
        fixed = [False] * n if self.fixed is None else np.asarray(self.fixed, dtype=bool).tolist()
        params = {}
        for i, name in enumerate(self.param_names):
            params[name] = {
                "value": values[i],
                "stderr": stderr[i],
                "ci": intervals[i].tolist() if intervals is not None and finite_intervals[i] else None,
                "tvalue": tvalues[i],
                "fixed": fixed[i],
                "at_bound": None if self.at_bound is None else self.at_bound[i],
            }

        def matrix(values):
            return None if values is None else _numbers(values, None)

        out = {} if self.group is None else {"group": self.group}
        out.update(
            {
                "success": self.success,
                "status": self.status.label,
                "message": self.message,
                "termination": (self.termination or self.status).label,
                "model": self.model.spec,
                "model_info": self.model.to_json() if model_info is None else model_info,
                "method": self.method,
                "globalization": self.globalization,
                "jac": self.jac_mode,
                "loss": self.loss_name,
                "f_scale": self.f_scale,
                "params": params,
                "data": self.data_columns,
                "absolute_sigma": self.absolute_sigma,
                "covariance": matrix(self.covariance),
                "correlation": matrix(self.correlation),
                "stats": {k: (json_number(v) if isinstance(v, float) else v) for k, v in self.stats.items()},
                "counts": self.counts,
                "starts": self.starts,
                "seconds": self.seconds,
                "warnings": [w.to_json() for w in self.warnings],
            }
        )
        if options and self.options is not None:
            out["options"] = self.options
        if history:
            out["history"] = [{k: (json_number(v) if isinstance(v, float) else v) for k, v in row.items()} for row in self.history]
        return out


def _numbers(values, n):
    """``values`` (any shape) as nested lists of JSON numbers (None for NaN and infinities,
    ``io.write.json_number``'s rule); all None when ``values`` is None and ``n`` is given."""
    if values is None:
        return None if n is None else [None] * n
    array = np.asarray(values, dtype=np.float64)
    if np.all(np.isfinite(array)):
        return array.tolist()
    return _nones(array.tolist())


def _nones(values):
    return [_nones(v) for v in values] if isinstance(values, list) else json_number(values)
