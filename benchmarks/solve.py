"""The batched solve alone: many small fits, solve time only, against a scipy loop.

    python benchmarks/solve.py [--groups 10000 30000] [--problems rational gauss2d] [--repeat 2]

The data are those of ``benchmarks/batch.py`` (the same generators, seed 0): the rational
model 1/(c0 + c1 x + c2 x^2) on 100 points per group, and Gpufit's 2D Gaussian on a 5 x 5
grid (5 parameters, starts = truth x U(0.9, 1.1)). Each group gets one start (``starts=1``),
Levenberg-Marquardt with a trust region (the defaults).

``nlfit.batch.fit_groups`` runs once to compile every shape; then it runs ``--repeat`` more
times with ``nlfit.fitting.solve_groups`` timed by a wrapper, so the figure is the solve
(multistart plan, the solver loop, the choice of winners) and excludes reading, starts,
statistics and the JSON rows. "first run s" is the whole first ``fit_groups`` (compiles
included; with a warm persistent cache only tracing and lowering). The best of the repeats is reported, as fits/s, with the
iterations per group (mean, max). The scipy figure is ``least_squares(method='lm')`` in a
loop with the analytic Jacobian, ftol = xtol = gtol = 1e-12, compute only (the data already
in arrays), on the same data and starts in the same process.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from batch import PROBLEMS, TOL, scipy_functions  # noqa: E402


def dataset_of(name: str, groups: int):
    """The problem's Dataset (long format, grouped by id) and its per-group starts."""
    from nlfit.io.dataset import Dataset

    build, _, x_names = PROBLEMS[name]
    columns, y, starts = build(groups, np.random.default_rng(0))
    points = y.shape[1]
    x = np.column_stack([columns[c] for c in x_names])
    ids = np.repeat(np.arange(groups), points)
    data = Dataset(x=x if x.shape[1] > 1 else x[:, 0], y=y.ravel(), x_names=tuple(x_names), y_name="y", groups=ids.astype(str))
    return data, starts, x.reshape(groups, points, -1), y


def time_nlfit(name: str, groups: int, repeat: int):
    """(best solve seconds, iterations per group, the BatchResult of the last run, seconds of
    the first, compiling run of ``fit_groups`` as a whole)."""
    import nlfit.fitting as fitting
    from nlfit.batch import fit_groups

    data, starts, _, _ = dataset_of(name, groups)
    formula = PROBLEMS[name][1]
    timings: list[float] = []
    iterations: list[np.ndarray] = []
    original = fitting.solve_groups

    def timed(*args, **kwargs):
        began = time.perf_counter()
        solved = original(*args, **kwargs)
        timings.append(time.perf_counter() - began)
        iterations.append(np.asarray(solved.state.iteration))
        return solved

    fitting.solve_groups = timed
    try:
        began = time.perf_counter()
        fit_groups(data, formula, group_starts=starts, starts=1)  # compiles
        first = time.perf_counter() - began
        best, result = np.inf, None
        for _ in range(repeat):
            timings.clear()
            iterations.clear()
            result = fit_groups(data, formula, group_starts=starts, starts=1)
            best = min(best, sum(timings))
    finally:
        fitting.solve_groups = original
    return best, np.concatenate(iterations)[:groups], result, first


def time_scipy(name: str, groups: int, limit: int):
    """(seconds per fit, params, ok) of the scipy loop over the first ``limit`` groups."""
    from scipy.optimize import least_squares

    _, starts, x, y = dataset_of(name, groups)
    residuals, jacobian = scipy_functions(name)
    count = min(groups, limit)
    params, ok = [], []
    began = time.perf_counter()
    for g in range(count):
        fitted = least_squares(residuals, starts[g], jac=jacobian, args=(x[g], y[g]), method="lm", ftol=TOL, xtol=TOL, gtol=TOL)
        params.append(fitted.x)
        ok.append(fitted.status > 0)
    return (time.perf_counter() - began) / count, np.array(params), np.array(ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, nargs="+", default=[10000, 30000])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--repeat", type=int, default=2, help="timed runs after the compiling one (the best is reported)")
    parser.add_argument("--scipy-groups", type=int, default=3000, help="groups the scipy loop fits (its rate is per fit)")
    args = parser.parse_args()
    os.environ.setdefault("NLFIT_WORKER", "off")
    print(f"cores: {os.cpu_count()}   nlfit: lm, trust region, starts 1, solve only   scipy: least_squares lm, analytic J, tol {TOL:g}, compute only")
    head = f"{'problem':9s} {'groups':>7s} {'solve s':>8s} {'nlfit fits/s':>13s} {'scipy fits/s':>13s} {'ratio':>7s}"
    print(f"{head} {'iter mean':>10s} {'iter max':>9s} {'max |dp|/|p|':>13s} {'first run s':>12s}")
    for name in args.problems:
        for groups in args.groups:
            seconds, iterations, result, first = time_nlfit(name, groups, args.repeat)
            per_fit, params, ok = time_scipy(name, groups, args.scipy_groups)
            ours = result.params[: len(params)]
            both = ok & np.array([r.status.success for r in result.results[: len(params)]])
            gap = np.linalg.norm(ours[both] - params[both], axis=1) / np.linalg.norm(params[both], axis=1)
            rate, scipy_rate = groups / seconds, 1.0 / per_fit
            print(
                f"{name:9s} {groups:7d} {seconds:8.3f} {rate:13.0f} {scipy_rate:13.0f} {rate / scipy_rate:6.1f}x"
                f" {iterations.mean():10.2f} {int(iterations.max()):9d} {float(np.max(gap, initial=0.0)):13.1e} {first:12.2f}"
            )


if __name__ == "__main__":
    main()
