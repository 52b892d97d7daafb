"""Robustness from far starts: nlfit at its defaults against scipy's three methods.

    python benchmarks/robustness.py [--nist DIR] [--only NAME] [--set nist|mgh|all] [--nlfit KEY=VALUE ...]

Problems (each from its standard start s, 10 s and 100 s):

- the NIST StRD files in DIR (default data/nist), from NIST's start 1, with the file's
  formula; solved when the parameters reach the certified values with LRE >= 6, or when the
  fitted curve does (the same fit with relabelled parameters: Lanczos' exponentials swapped;
  shown as "curve LRE");
- the curve-fitting problems of Moré, Garbow & Hillstrom (1981) in ``problems.py``, from
  their standard start x0; solved when the sum of squares reaches the published global
  minimum to a relative 1e-5 (or, for a zero minimum, 1e-12 of the sum at the start).

Runs: ``nlfit.fit`` with its defaults (exactly ``nlfit fit`` without options but the start),
and ``scipy.optimize.least_squares`` with method lm, trf and dogbox, each with the exact
Jacobian (JAX, the same function nlfit uses) and ftol = xtol = gtol = 1e-15, scipy's default
max_nfev. For every start nlfit misses, the table says whether it was loud about it
(``success: false`` or a warning that the fit may be wrong) or silent.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nist import lre  # noqa: E402
from problems import MGH  # noqa: E402

from nlfit import fit, read_dataset  # noqa: E402

SCIPY_METHODS = ("lm", "trf", "dogbox")
MULTIPLIERS = (1, 10, 100)


class Case:
    """One problem from one start: how to build it and how to judge a result."""

    def __init__(self, name, dataset, formula, p0: dict, judge):
        self.name, self.dataset, self.formula, self.p0, self.judge = name, dataset, formula, p0, judge


def curve_function(dataset, formula, names):
    """The model's values at the data for parameters given in NIST's order."""
    from nlfit.models.expression import evaluate_numpy
    from nlfit.models.registry import model_for

    model = model_for(formula, dataset)
    order = [list(names).index(n) for n in model.param_names]
    return lambda params: evaluate_numpy(model, np.asarray(params, float)[order], dataset.x)


def curve_lre(curve, params, certified) -> float:
    """LRE of the fitted curve against the certified one: equal curves are the same fit
    whatever the labels of the parameters."""
    if not np.all(np.isfinite(params)):
        return 0.0
    fitted, reference = curve(params), curve(certified)
    worst = float(np.max(np.abs(fitted - reference)) / np.max(np.abs(reference)))
    return 11.0 if worst == 0 else max(0.0, min(11.0, -math.log10(worst)))


def nist_cases(directory: Path, only: str | None):
    for path in sorted(directory.glob("*.dat")):
        dataset = read_dataset(str(path))
        info = dataset.nist
        if only and only.lower() not in info.name.lower():
            continue
        names = info.param_names
        certified = info.certified
        curve = curve_function(dataset, info.formula, names)

        def judge(params, sum_of_squares, certified=certified, curve=curve):
            score = lre(params, certified)
            if score >= 6:
                return True, f"LRE {score:4.1f}"
            # the same fitted curve with the parameters relabelled (Lanczos' exponentials swapped)
            same = curve_lre(curve, params, certified)
            return same >= 6, (f"LRE {score:4.1f}" if same < 6 else f"curve LRE {same:4.1f}")

        for k in MULTIPLIERS:
            p0 = {n: k * v for n, v in zip(names, info.starts[1], strict=True)}
            yield Case(f"{info.name} {k}x", dataset, info.formula, p0, judge)


def mgh_cases(only: str | None):
    for problem in MGH:
        if only and only.lower() not in problem.name.lower():
            continue
        dataset = problem.dataset()
        standard_sum = sum_of_squares_at(problem.formula, dataset, problem.p0)
        for k in MULTIPLIERS:
            p0 = {n: k * v for n, v in problem.p0.items()}

            def judge(params, sum_of_squares, problem=problem, scale=standard_sum):
                target = problem.target
                limit = target * (1 + 1e-5) if target > 0 else 1e-12 * scale
                ok = bool(np.isfinite(sum_of_squares) and sum_of_squares <= limit)
                ratio = sum_of_squares / target if target > 0 else sum_of_squares
                return ok, (f"F/F* {ratio:9.3g}" if target > 0 else f"F {ratio:9.2e}")

            yield Case(f"{problem.name} {k}x", dataset, problem.formula, p0, judge)


def sum_of_squares_at(formula, dataset, p0) -> float:
    """The sum of squares at the standard start: the scale for judging a zero minimum."""
    _, f, _, start = residual_functions(Case("", dataset, formula, p0, None))
    with np.errstate(all="ignore"):
        return float(np.sum(f(start) ** 2))


def residual_functions(case: Case):
    from nlfit import derivatives
    from nlfit._jax import jax, jnp
    from nlfit.models.registry import model_for
    from nlfit.problem import make_problem, residuals

    model = model_for(case.formula, case.dataset)
    problem = make_problem(model, case.dataset, scale=1.0)  # the residuals as written, for scipy and the judges
    fun = jax.jit(lambda p: residuals(p, problem))
    jac = jax.jit(lambda p: derivatives.jacobian(p, problem, "fwd")[1])
    start = np.array([case.p0[n] for n in model.param_names], dtype=float)
    return model, (lambda p: np.asarray(fun(jnp.asarray(p)))), (lambda p: np.asarray(jac(jnp.asarray(p)))), start


def is_loud(result) -> bool:
    """success false, or a warning that the fit may be wrong: a finding of nlfit.diagnostics
    or a rank-deficient Jacobian (a note that two parameters are correlated does not count)."""
    return (not result.success) or bool(result.findings) or any("rank-deficient" in w for w in result.warnings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nist", type=Path, default=Path(__file__).resolve().parent.parent / "data" / "nist")
    parser.add_argument("--set", choices=("nist", "mgh", "all"), default="all")
    parser.add_argument("--only", default=None, help="only problems whose name contains this")
    parser.add_argument("--nlfit", nargs="*", default=[], help="extra nlfit options, e.g. starts=1")
    args = parser.parse_args()
    options = {}
    for item in args.nlfit:
        key, _, value = item.partition("=")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    cases = []
    if args.set in ("nist", "all"):
        cases += list(nist_cases(args.nist, args.only))
    if args.set in ("mgh", "all"):
        cases += list(mgh_cases(args.only))
    runs = ("nlfit", *SCIPY_METHODS)
    solved = {run: 0 for run in runs}
    seconds = {run: 0.0 for run in runs}
    union = 0
    missed_where_scipy_solves, silent_misses = [], []
    print(f"cores: {os.cpu_count()}   nlfit options: {options or 'defaults'}")
    print(f"{'problem':22s} " + " ".join(f"{r:>22s}" for r in runs) + "  nlfit status")
    for case in cases:
        model, f, j, start = residual_functions(case)
        f(start), j(start)  # compile outside the timings
        cells, outcome = [], {}
        began = time.perf_counter()
        result = fit(case.dataset, case.formula, p0=case.p0, **options)
        seconds["nlfit"] += time.perf_counter() - began
        with np.errstate(all="ignore"):
            ss = float(np.sum(f(result.params) ** 2)) if np.all(np.isfinite(result.params)) else math.inf
        ok, text = case.judge(result.params, ss)
        outcome["nlfit"] = ok
        cells.append(("✓ " if ok else "· ") + text)
        for method in SCIPY_METHODS:
            began = time.perf_counter()
            with np.errstate(all="ignore"):
                try:
                    fitted = least_squares(f, start, jac=j, method=method, ftol=1e-15, xtol=1e-15, gtol=1e-15)
                    params = fitted.x
                except (ValueError, np.linalg.LinAlgError):
                    params = np.full(start.size, np.nan)
                ss_s = float(np.sum(f(params) ** 2)) if np.all(np.isfinite(params)) else math.inf
            seconds[method] += time.perf_counter() - began
            ok_s, text_s = case.judge(params, ss_s)
            outcome[method] = ok_s
            cells.append(("✓ " if ok_s else "· ") + text_s)
        for run in runs:
            solved[run] += outcome[run]
        any_scipy = any(outcome[m] for m in SCIPY_METHODS)
        union += any_scipy
        loud = is_loud(result)
        if not outcome["nlfit"]:
            if any_scipy:
                missed_where_scipy_solves.append(case.name)
            if not loud:
                silent_misses.append(case.name)
        note = result.status.label + ("" if outcome["nlfit"] else ("  (loud)" if loud else "  (SILENT)"))
        print(f"{case.name:22s} " + " ".join(f"{c:>22s}" for c in cells) + f"  {note}", flush=True)
    total = len(cases)
    print()
    for run in runs:
        print(f"{run:8s} solved {solved[run]:3d} of {total}   time {seconds[run]:7.2f} s")
    print(f"any scipy method: {union} of {total}")
    print(f"nlfit misses that a scipy method solves: {len(missed_where_scipy_solves)} {missed_where_scipy_solves}")
    print(f"nlfit misses without a warning or success false: {len(silent_misses)} {silent_misses}")


if __name__ == "__main__":
    main()
