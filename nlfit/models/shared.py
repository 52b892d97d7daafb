"""Global fits: one model over every group of a long table, some parameters shared by all
groups and the others one per group (``nlfit fit --group-by COL --share p1,p2``).

This is R's ``nls`` with indexed parameters (``Asym[Seed] + (R0[Seed] - Asym[Seed]) *
exp(-exp(lrc) * age)``), Prism's "share" and Origin's share column. The parameter vector is
the base model's parameters in order, each either once (shared) or once per group, named
``NAME[GROUP]`` in the groups' order of first appearance: ``Asym[329] ... Asym[305], R0[329]
... R0[305], lrc``. The data are all rows, the group of each row a code in a last predictor
column, so the fit is one least-squares problem and its statistics (the covariance of the
shared and the per-group parameters together, the residual degrees of freedom
n - (shared + groups x per-group)) are those of R's indexed fit.

The base model is evaluated row by row with the parameters of the row's group (a gather and
``vmap``), so each row depends on the shared parameters and on its own group's. Two uses of
that structure: the start comes from separate fits (``nlfit.globalfit.separate_start``: the groups' own
multistarts in one batched solve, the shared values their median), and XLA's forward-mode
Jacobian of the gather is as cheap as the base model's own (0.007 s for 4,000 rows x 401
parameters; a hand-written block JVP was slower, 0.2 s). The solver's linear algebra treats
J as dense (m x P): fine for hundreds of groups of a few parameters (MASS's muscle: 60 x 43;
Loblolly: 84 x 29; 200 groups of 20 rows: 4,000 x 401, 7 to 14 s for the joint fit here);
``nlfit.globalfit.MAX_JACOBIAN`` bounds it.
``--share`` with no names fits every group separately, as one problem: the "separate
curves" side of ``nlfit compare``. Setting one up from data and its start from separate
fits: ``nlfit.globalfit``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nlfit.errors import OptionError
from nlfit.models.base import Model


@dataclass(frozen=True)
class GlobalModel(Model):
    """``base`` with the parameters in ``shared`` common to all groups and the others one per
    group of ``groups`` (their labels); x carries the group code (0 .. G-1) as its last column."""

    base: Model
    shared: tuple[str, ...]
    groups: tuple[str, ...]
    group_by: str
    x_names: tuple[str, ...] = ("x",)  # the base model's predictors (the group code comes after them)

    @property
    def spec(self) -> str:
        return self.base.spec

    @property
    def layout(self) -> list[tuple[str, bool, int]]:
        """(base name, shared, first position) of each base parameter, in the base's order."""
        out, at = [], 0
        for name in self.base.param_names:
            common = name in self.shared
            out.append((name, common, at))
            at += 1 if common else len(self.groups)
        return out

    @property
    def param_names(self) -> tuple[str, ...]:
        names = []
        for name, common, _ in self.layout:
            names += [name] if common else [f"{name}[{label}]" for label in self.groups]
        return tuple(names)

    def positions(self) -> np.ndarray:
        """(n_base, G): where group g's value of base parameter j sits in the vector."""
        return np.array([[at if common else at + g for g in range(len(self.groups))] for _, common, at in self.layout], dtype=np.int64)

    def _inner(self, x):
        return x[..., 0] if x.shape[-1] == 2 else x[..., :-1]

    def predict(self, params, x):
        from nlfit._jax import jax, jnp

        codes = x[..., -1].astype(jnp.int32)
        rows = params[jnp.asarray(self.positions())[:, codes]].T  # (m, n_base): each row's group's parameters
        return jax.vmap(lambda p, xi: self.base.predict(p, xi[None])[0])(rows, self._inner(x))

    @property
    def linear_params(self) -> tuple[bool, ...]:
        linear = []
        for (_, common, _), flag in zip(self.layout, self.base.linear_params, strict=True):
            linear += [flag] * (1 if common else len(self.groups))
        return tuple(linear)

    def default_p0(self, x, y):
        """Each group's own default start for its parameters; a shared one the median of the
        groups' (None where the base model has no default)."""
        x, y = np.asarray(x), np.asarray(y)
        codes = np.rint(x[:, -1]).astype(np.int64)
        inner = x[:, 0] if x.shape[1] == 2 else x[:, :-1]
        from nlfit.start import default_start

        per_group = []
        for g in range(len(self.groups)):
            rows = codes == g
            try:
                with np.errstate(all="ignore"):
                    start = default_start(self.base, inner[rows], y[rows]) if np.any(rows) else None
            except (np.linalg.LinAlgError, ValueError):
                start = None
            per_group.append(np.full(len(self.base.param_names), np.nan) if start is None else np.asarray(start, dtype=np.float64))
        starts = np.array(per_group)
        if np.all(np.isnan(starts)):
            return None
        with np.errstate(all="ignore"):
            typical = np.nanmedian(starts, axis=0)
        typical = np.where(np.isfinite(typical), typical, 1.0)
        starts = np.where(np.isfinite(starts), starts, typical)
        out = np.empty(len(self.param_names))
        for j, (_, common, at) in enumerate(self.layout):
            if common:
                out[at] = typical[j]
            else:
                out[at : at + len(self.groups)] = starts[:, j]
        return out

    @property
    def fits_response_as_given(self) -> bool:
        return self.base.fits_response_as_given

    def transform_response(self, y, x):
        return self.base.transform_response(y, self._inner(np.asarray(x)))

    def to_json(self) -> dict:
        own = {"x": list(self.x_names), "params": list(self.param_names), "group_by": self.group_by, "groups": list(self.groups), "shared": list(self.shared)}
        return {**self.base.to_json(), **own}

    def relabel(self, params: np.ndarray) -> np.ndarray:
        """The base model's label order (``NamedModel.relabel``) in each group, where the
        exchange moves no shared parameter (a shared label cannot follow one group)."""
        params = np.atleast_2d(np.asarray(params, dtype=np.float64))
        order = np.tile(np.arange(params.shape[1]), (params.shape[0], 1))
        relabel = getattr(self.base, "relabel", None)
        if relabel is None:
            return order
        positions = self.positions()  # (n_base, G)
        rows, n_base, groups = params.shape[0], positions.shape[0], positions.shape[1]
        own = relabel(np.swapaxes(params[:, positions], 1, 2).reshape(rows * groups, n_base)).reshape(rows, groups, n_base)  # every group at once
        shared = np.array([common for _, common, _ in self.layout])
        keep = np.any((own != np.arange(n_base)) & shared, axis=2)  # the exchange would move a shared label
        own = np.where(keep[:, :, None], np.arange(n_base), own)
        targets = np.broadcast_to(positions.T, (rows, groups, n_base))
        sources = np.take_along_axis(targets, own, axis=2)  # group g's base label j takes the value at positions[own[j], g]
        np.put_along_axis(order, targets.reshape(rows, -1), sources.reshape(rows, -1), axis=1)
        return order

    def expand(self, values: dict | None, option: str) -> dict | None:
        """--p0, --fix or --bounds given by base names (every group's copy) or full names."""
        if not values:
            return values
        full = set(self.param_names)
        out = {}
        for name, value in values.items():
            if name in full:
                out[name] = value
            elif name in self.base.param_names:
                out.update({n: value for n in self.param_names if n == name or n.startswith(f"{name}[")})
            else:
                raise OptionError(f"{option} names unknown parameter {name}; the parameters are {', '.join(self.base.param_names)} (or NAME[GROUP])")
        return out
