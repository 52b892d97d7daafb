"""Standard errors at scale, whatever the factorization: nlfit against SVD and curve_fit.

    python benchmarks/statistics_scale.py [--points 100000 1000000]

A degree-7 (and degree-8) polynomial in the monomial basis on x in [0, 10], N(0, 0.1)
noise: cond(J) is about 1e10 (1e11), so the normal equations J^T J (cond^2 ~ 1e20) alone
cannot give a single digit. For every --factorization (auto, svd, qr, gram) the standard
errors of ``nlfit.fit`` are compared with

- the SVD of the Vandermonde matrix computed here with numpy (C = V S^-2 V^T s^2), and
- scipy.optimize.curve_fit with the exact Jacobian (its pcov, from MINPACK's QR),

as the largest relative difference over the parameters, with nlfit's warnings (the notes
that neighbouring monomial coefficients are strongly correlated, true of this basis, left out).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.optimize import curve_fit

from nlfit import fit
from nlfit.io.dataset import Dataset

TRUTH = [1.0, -0.5, 0.2, -0.03, 0.002, -1e-4, 3e-6, -4e-8, 1e-9]


def data(points: int, degree: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 10.0, points)
    y = np.polynomial.polynomial.polyval(x, TRUTH[: degree + 1]) + rng.normal(0.0, 0.1, points)
    return Dataset(x=x, y=y, x_names=("x",), y_name="y")


def svd_reference(dataset: Dataset, degree: int):
    vander = np.polynomial.polynomial.polyvander(dataset.x, degree)
    u, s, vt = np.linalg.svd(vander, full_matrices=False)
    params = vt.T @ ((u.T @ dataset.y) / s)
    residuals = vander @ params - dataset.y
    errors = np.sqrt(np.sum((vt.T / s) ** 2, axis=1) * (residuals @ residuals) / (dataset.n_points - degree - 1))
    return params, errors, float(s[0] / s[-1])


def curve_fit_reference(dataset: Dataset, degree: int, start):
    def model(x, *c):
        return np.polynomial.polynomial.polyval(x, c)

    def jacobian(x, *c):
        return np.polynomial.polynomial.polyvander(x, degree)

    params, covariance = curve_fit(model, dataset.x, dataset.y, p0=start, jac=jacobian, method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    return params, np.sqrt(np.diag(covariance))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, nargs="*", default=[100_000, 1_000_000])
    args = parser.parse_args()
    print(f"{'points':>9s} deg {'factorization':>13s} {'cond(J)':>9s} {'vs SVD':>9s} {'vs curve_fit':>12s} {'time s':>7s}  warnings")
    for points in args.points:
        for degree in (7, 8):
            dataset = data(points, degree)
            params, errors, cond = svd_reference(dataset, degree)
            _, curve_errors = curve_fit_reference(dataset, degree, params)
            for factorization in ("auto", "svd", "qr", "gram"):
                began = time.perf_counter()
                result = fit(dataset, f"polynomial:{degree}", factorization=factorization)
                seconds = time.perf_counter() - began
                if result.stderr is None:
                    versus_svd = versus_curve_fit = float("inf")
                else:
                    versus_svd = float(np.max(np.abs(result.stderr - errors) / errors))
                    versus_curve_fit = float(np.max(np.abs(result.stderr - curve_errors) / curve_errors))
                warnings = "; ".join(w for w in result.warnings if "strongly correlated" not in w) or "none"
                print(
                    f"{points:9d} {degree:3d} {factorization:>13s} {cond:9.2e} {versus_svd:9.1e} {versus_curve_fit:12.1e} {seconds:7.2f}  {warnings}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
