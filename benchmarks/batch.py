"""Batched fitting throughput: one vmapped nlfit solve against a loop of scipy fits.

    python benchmarks/batch.py [--groups 10000]

Problems (same data for both, seed 0):

- rational: the lecture's 1/(c0 + c1 x + c2 x^2), 100 points per curve on [-1, 1], true
  parameters drawn per curve, noise 0.01, start [1, 0, 10];
- gauss2d: Gpufit's benchmark problem, a 2D Gaussian a exp(-((u-u0)^2 + (v-v0)^2)/(2 s^2)) + b
  on a 5 x 5 pixel grid (25 points, 5 parameters), Poisson-like noise, start near the truth
  (Gpufit's benchmark starts each fit from perturbed true values).

nlfit: ``nlfit.batch.fit_groups`` (LM, trust region, J^T J from JAX forward mode), timed on a
second run (the first compiles). scipy: ``least_squares(method='lm')`` with the analytic
Jacobian in a Python loop over the groups. Both use ftol = xtol = gtol = 1e-12. Reported:
fits per second, the ratio, and the largest relative parameter difference over groups where
both converged.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.optimize import least_squares

from nlfit.batch import fit_groups
from nlfit.io.dataset import Dataset

TOL = 1e-12


def rational(groups: int, rng):
    points = 100
    x = np.linspace(-1.0, 1.0, points)
    truth = np.column_stack([rng.uniform(0.5, 1.5, groups), rng.uniform(-0.3, 0.3, groups), rng.uniform(5, 15, groups)])
    y = 1.0 / (truth[:, :1] + truth[:, 1:2] * x + truth[:, 2:3] * x * x) + rng.normal(0, 0.01, (groups, points))
    starts = np.tile([1.0, 0.0, 10.0], (groups, 1))

    def residuals(c, yy):
        return 1.0 / (c[0] + c[1] * x + c[2] * x * x) - yy

    def jacobian(c, yy):
        f2 = (1.0 / (c[0] + c[1] * x + c[2] * x * x)) ** 2
        return np.column_stack([-f2, -f2 * x, -f2 * x * x])

    dataset = Dataset(x=np.tile(x, groups), y=y.ravel(), x_names=("x",), y_name="y", groups=np.repeat(np.arange(groups), points).astype(str))
    return dataset, "1/(c0 + c1*x + c2*x^2)", starts, y, residuals, jacobian


def gauss2d(groups: int, rng):
    grid = np.arange(5.0)
    u, v = np.meshgrid(grid, grid, indexing="ij")
    u, v = u.ravel(), v.ravel()
    truth = np.column_stack(
        [rng.uniform(80, 120, groups), rng.uniform(1.5, 2.5, groups), rng.uniform(1.5, 2.5, groups), rng.uniform(0.8, 1.2, groups), rng.uniform(8, 12, groups)]
    )

    def model(c):
        return c[0] * np.exp(-((u - c[1]) ** 2 + (v - c[2]) ** 2) / (2 * c[3] ** 2)) + c[4]

    clean = np.stack([model(t) for t in truth])
    y = clean + rng.normal(0, 1, clean.shape) * np.sqrt(clean)
    starts = truth * rng.uniform(0.9, 1.1, truth.shape)

    def residuals(c, yy):
        return model(c) - yy

    def jacobian(c, yy):
        e = np.exp(-((u - c[1]) ** 2 + (v - c[2]) ** 2) / (2 * c[3] ** 2))
        return np.column_stack(
            [
                e,
                c[0] * e * (u - c[1]) / c[3] ** 2,
                c[0] * e * (v - c[2]) / c[3] ** 2,
                c[0] * e * ((u - c[1]) ** 2 + (v - c[2]) ** 2) / c[3] ** 3,
                np.ones_like(u),
            ]
        )

    x = np.column_stack([np.tile(u, groups), np.tile(v, groups)])
    dataset = Dataset(x=x, y=y.ravel(), x_names=("u", "v"), y_name="z", groups=np.repeat(np.arange(groups), u.size).astype(str))
    return dataset, "a*exp(-((u-u0)^2 + (v-v0)^2)/(2*s^2)) + b", starts, y, residuals, jacobian


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=10_000)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}   groups: {args.groups}   tolerances: {TOL:g}")
    print(
        f"{'problem':9s} {'nlfit fits/s':>13s} {'scipy fits/s':>13s} {'ratio':>7s} {'converged (nlfit/scipy/both)':>29s}"
        f" {'max |dp_i|/|p_i|':>17s} {'max |dp|/|p|':>13s}"
    )
    for name, build in (("rational", rational), ("gauss2d", gauss2d)):
        rng = np.random.default_rng(0)
        dataset, formula, starts, ys, residuals, jacobian = build(args.groups, rng)
        options = dict(ftol=TOL, xtol=TOL, gtol=TOL)
        fit_groups(dataset, formula, p0=list(starts[0]), **options)  # compile
        began = time.perf_counter()
        # every group starts from its own point: p0 per group through the API's batch entry
        result = fit_groups(dataset, formula, p0=None, group_starts=starts, **options)
        ours = time.perf_counter() - began
        began = time.perf_counter()
        reference, converged = [], []
        for g in range(args.groups):
            fitted = least_squares(residuals, starts[g], jac=jacobian, args=(ys[g],), method="lm", ftol=TOL, xtol=TOL, gtol=TOL)
            reference.append(fitted.x)
            converged.append(fitted.status > 0)
        theirs = time.perf_counter() - began
        reference, converged = np.array(reference), np.array(converged)
        ok = np.array([s in (1, 2, 3) for s in result.statuses])
        both = ok & converged
        gap = np.abs(result.params[both] - reference[both])
        difference = np.max(gap / np.abs(reference[both])) if both.any() else float("nan")
        vector = np.max(np.linalg.norm(gap, axis=1) / np.linalg.norm(reference[both], axis=1)) if both.any() else float("nan")
        rate, scipy_rate = args.groups / ours, args.groups / theirs
        counts = f"{ok.sum()}/{converged.sum()}/{both.sum()}"
        print(f"{name:9s} {rate:13.0f} {scipy_rate:13.0f} {rate / scipy_rate:6.1f}x {counts:>29s} {difference:17.2e} {vector:13.2e}")


if __name__ == "__main__":
    main()
