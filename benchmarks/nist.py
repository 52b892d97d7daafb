"""NIST StRD nonlinear regression: certified accuracy at default settings, against scipy.

    python benchmarks/nist.py DIR [--max-nfev N]

For every ``*.dat`` in DIR and both NIST starts, runs

- nlfit at its defaults (``nlfit.fit`` with the file's formula, exactly what
  ``nlfit fit FILE.dat --start S`` does),
- scipy.optimize.least_squares at its defaults except method='lm' (MINPACK with its
  default 2-point finite differences), as in the reference run of the issue,
- scipy.optimize.least_squares(method='trf') with the exact Jacobian from JAX (the same
  jitted function nlfit uses) and ftol = xtol = gtol = 1e-15,

and prints, per start, the LRE (log relative error of the parameters against the
certified values, minimum over parameters, capped at 11; solved at >= 6), the evaluations
(nfev + njev) and the wall time. Totals: starts solved, mean LRE, evaluations.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from nlfit import fit, read_dataset


def lre(estimate, certified) -> float:
    estimate, certified = np.asarray(estimate, float), np.asarray(certified, float)
    if not np.all(np.isfinite(estimate)):
        return 0.0
    worst = float(np.max(np.abs(estimate - certified) / np.abs(certified)))
    return 11.0 if worst == 0 else max(0.0, min(11.0, -math.log10(worst)))


def scipy_runs(dataset, model, start, max_nfev):
    from nlfit import derivatives
    from nlfit._jax import jax, jnp
    from nlfit.problem import make_problem, residuals

    problem = make_problem(model, dataset)
    fun = jax.jit(lambda p: residuals(p, problem))
    jac = jax.jit(lambda p: derivatives.jacobian(p, problem, "fwd")[1])

    def f(p):
        return np.asarray(fun(jnp.asarray(p)))

    def j(p):
        return np.asarray(jac(jnp.asarray(p)))

    f(np.asarray(start, float)), j(np.asarray(start, float))  # compile outside the timing
    out = {}
    for label, kwargs in (
        ("scipy lm fd", dict(method="lm")),
        ("trf jax 1e-15", dict(method="trf", jac=j, ftol=1e-15, xtol=1e-15, gtol=1e-15)),
    ):
        if max_nfev:
            kwargs["max_nfev"] = max_nfev
        began = time.perf_counter()
        with np.errstate(all="ignore"):
            try:
                result = least_squares(f, np.asarray(start, float), **kwargs)
                params, evals = result.x, result.nfev + (result.njev or 0)
            except (ValueError, np.linalg.LinAlgError):
                params, evals = np.full(len(start), np.nan), 0
        out[label] = (params, evals, time.perf_counter() - began)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--max-nfev", type=int, default=None, help="max_nfev for the scipy runs (default: scipy's)")
    args = parser.parse_args()
    files = sorted(args.directory.glob("*.dat"))
    if not files:
        sys.exit(f"no .dat files in {args.directory}")
    runs = ("nlfit", "scipy lm fd", "trf jax 1e-15")
    totals = {r: {"solved": 0, "lre": [], "evals": 0, "seconds": 0.0} for r in runs}
    print(f"cores: {os.cpu_count()}")
    header = f"{'dataset':10s} st " + " | ".join(f"{r:>13s} LRE  evals   time" for r in runs)
    print(header)
    print("-" * len(header))
    for path in files:
        dataset = read_dataset(str(path))
        info = dataset.nist
        for start in (1, 2):
            began = time.perf_counter()
            result = fit(dataset, info.formula, p0=info.starts[start])
            cells = {"nlfit": (result.params, result.counts["nfev"] + result.counts["njev"], time.perf_counter() - began)}
            cells.update(scipy_runs(dataset, result.model, info.starts[start], args.max_nfev))
            line = f"{info.name:10s} {start}  "
            for run in runs:
                params, evals, seconds = cells[run]
                score = lre(params, info.certified)
                total = totals[run]
                total["solved"] += score >= 6
                total["lre"].append(score)
                total["evals"] += evals
                total["seconds"] += seconds
                line += f"{'':>13s} {score:4.1f} {evals:6d} {seconds:6.3f} | "
            print(line.rstrip(" |"), flush=True)
    print()
    n = len(files) * 2
    for run in runs:
        t = totals[run]
        summary = f"solved {t['solved']:2d} of {n}  mean LRE {np.mean(t['lre']):5.2f}  evaluations {t['evals']:6d}"
        print(f"{run:14s} {summary}  time {t['seconds']:.2f} s")


if __name__ == "__main__":
    main()
