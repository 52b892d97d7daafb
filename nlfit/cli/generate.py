"""``nlfit generate KIND``: synthetic data as CSV (numpy only; no JAX)."""

from __future__ import annotations

from typing import Annotated

import typer

from nlfit.cli.common import emit, handle_errors
from nlfit.errors import OptionError

GENERATORS = {
    "runge": "y = 1/(1 + 10 x^2) + N(0, noise^2), the lecture's Runge data",
}


@handle_errors
def generate(
    kind: Annotated[str, typer.Argument(help="What to generate: " + ", ".join(GENERATORS))],
    n: Annotated[int, typer.Option("--n", help="Number of points.")] = 200,
    noise: Annotated[float, typer.Option("--noise", help="Standard deviation of the Gaussian noise added to y.")] = 0.5,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (reproducible output).")] = None,
    x_min: Annotated[float, typer.Option("--x-min", help="Smallest x.")] = -1.0,
    x_max: Annotated[float, typer.Option("--x-max", help="Largest x.")] = 1.0,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to this file (atomically) instead of stdout.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Write synthetic x,y data as CSV.

    Examples:

      nlfit generate runge --noise 0.5 --seed 0 > runge.csv

      nlfit generate runge --n 1000 --x-min -2 --x-max 2 --output runge.csv
    """
    import numpy as np

    if kind not in GENERATORS:
        raise OptionError(f"unknown generator '{kind}'; choose from {', '.join(GENERATORS)}")
    if n < 1:
        raise OptionError(f"--n must be at least 1; got {n}")
    if not noise >= 0:
        raise OptionError(f"--noise must be non-negative; got {noise}")
    if not x_max > x_min:
        raise OptionError(f"--x-max ({x_max}) must be greater than --x-min ({x_min})")
    rng = np.random.default_rng(seed)
    x = np.linspace(x_min, x_max, n)
    y = 1.0 / (1.0 + 10.0 * x * x) + rng.normal(0.0, noise, n) if noise > 0 else 1.0 / (1.0 + 10.0 * x * x)
    emit(csv_text({"x": x, "y": y}), output)


def csv_text(columns: dict) -> str:
    """Columns of floats as CSV, each value printed so that it reads back exactly."""
    names = list(columns)
    rows = zip(*(columns[name] for name in names), strict=True)
    return ",".join(names) + "\n" + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows)
