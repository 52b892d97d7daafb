"""What padding a built-in model's parameters costs and saves (``nlfit.models.padded``).

    NLFIT_CACHE_DIR=$(mktemp -d) python benchmarks/padded.py [--rows 200,2000,20000,90000] [--runs 3]

For each model and number of points, in one process with the defaults and an empty
compilation cache:

- "new degree, padded": the first fit of the model when a model of the same bucket was
  fitted just before (what a user trying degree after degree pays: no compile);
- "new degree, own": the first fit of the model computed with its own parameters (padding
  off), which compiles its solver;
- "warm, padded" / "warm, own": the median of ``--runs`` repeated fits of each, compiled:
  what padding costs once nothing is compiled.

Reported in seconds and as ratios (padded / own). Padding pays where the compile it saves
exceeds what it adds to every fit; ``prepare`` pads below ``numerics.LARGE_DATA_POINTS``
points (beyond, a fit streams its Jacobian in blocks and its cost grows with every column).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

# (the model measured, another model of its bucket fitted first)
MODELS = [("polynomial:4", "polynomial:6"), ("chebyshev:6", "chebyshev:8"), ("rational:2/2", "rational:3/1")]


def _data(rows: int, seed: int):
    from nlfit.io.dataset import Dataset

    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 1.0, rows)
    return Dataset(x=x, y=1 / (1 + 10 * x**2) + rng.normal(0.0, 0.05, rows), x_names=("x",), y_name="y")


def _seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="200,2000,20000,90000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from nlfit import fit
    from nlfit.models import padded

    for_model = padded.for_model
    try:
        _table(args, fit, padded, for_model)
    finally:
        padded.for_model = for_model


def _table(args, fit, padded, for_model) -> None:
    print(f"{'model':14} {'rows':>7} | {'new degree: padded':>18} {'own':>7} {'ratio':>6} | {'warm: padded':>12} {'own':>7} {'ratio':>6}")
    for rows in (int(r) for r in args.rows.split(",")):
        data = _data(rows, rows)
        for spec, sibling in MODELS:
            padded.for_model = for_model
            fit(data, sibling)  # the bucket's program, compiled
            new_padded = _seconds(lambda: fit(data, spec))  # noqa: B023
            warm_padded = statistics.median(_seconds(lambda: fit(data, spec)) for _ in range(args.runs))  # noqa: B023
            padded.for_model = lambda model: None
            new_own = _seconds(lambda: fit(data, spec))  # noqa: B023
            warm_own = statistics.median(_seconds(lambda: fit(data, spec)) for _ in range(args.runs))  # noqa: B023
            print(
                f"{spec:14} {rows:7d} | {new_padded:18.3f} {new_own:7.3f} {new_padded / new_own:6.2f} | "
                f"{warm_padded:12.3f} {warm_own:7.3f} {warm_padded / warm_own:6.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
