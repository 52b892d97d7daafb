"""``nlfit generate KIND``: synthetic data as CSV (numpy only; no JAX).

Each generator is a formula with default parameters and x range; ``expr`` takes any formula.
y = f(x, params) + N(0, noise^2), x evenly spaced on [x_min, x_max].
"""

from __future__ import annotations

import math
from typing import Annotated

import typer

from nlfit.cli.common import check_outputs, csv_text, emit_chunks, handle_errors
from nlfit.errors import OptionError
from nlfit.options import parse_p0

# name: (formula, default params, default x range, default noise, description)
GENERATORS = {
    "runge": ("1/(1 + 10*x*x)", {}, (-1.0, 1.0), 0.5, "1/(1 + 10x²), Runge's function on [-1, 1]"),
    "exp-decay": ("a*exp(-b*x)", {"a": 1.0, "b": 1.0}, (0.0, 5.0), 0.05, "a exp(-b x)"),
    "gaussian": ("a*exp(-(x-mu)^2/(2*s^2))", {"a": 1.0, "mu": 0.0, "s": 0.5}, (-2.0, 2.0), 0.05, "a exp(-(x-mu)²/(2 s²))"),
    "sine": ("a*sin(w*x + phi)", {"a": 1.0, "w": 3.0, "phi": 0.0}, (0.0, 2 * math.pi), 0.05, "a sin(w x + phi)"),
    "expr": (None, {}, (-1.0, 1.0), 0.05, "any formula in x (the FORMULA argument), parameters from --params"),
}


@handle_errors
def generate(
    kind: Annotated[str, typer.Argument(help="runge, exp-decay, gaussian, sine or expr.")],
    formula: Annotated[str | None, typer.Argument(help="For expr: the formula, e.g. 'a*exp(-b*x)'.")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of points.")] = 200,
    noise: Annotated[float | None, typer.Option("--noise", help="Std. deviation of the Gaussian noise (runge 0.5, others 0.05).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (reproducible output).")] = None,
    x_min: Annotated[float | None, typer.Option("--x-min", help="Smallest x (default per generator).")] = None,
    x_max: Annotated[float | None, typer.Option("--x-max", help="Largest x (default per generator).")] = None,
    params: Annotated[str | None, typer.Option("--params", help="Parameter values, e.g. a=2,b=0.5.")] = None,
    groups: Annotated[int, typer.Option("--groups", help="Write G groups (column 'group'), each with its own true parameters (columns true_*).")] = 1,
    spread: Annotated[float, typer.Option("--spread", help="With --groups: true parameters = values x U(1-spread, 1+spread).")] = 0.25,
    output_format: Annotated[str, typer.Option("--format", "-f", help="csv (Parquet is not supported).")] = "csv",
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to this file (atomically) instead of stdout.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Write synthetic x,y data as CSV: y = f(x) + N(0, noise²).

    Examples:

      nlfit generate runge --noise 0.5 --seed 0 > runge.csv

      nlfit generate exp-decay --params a=2,b=0.7 --seed 1 --n 50

      nlfit generate expr "a*x^2 + b" --params a=1,b=-0.5 --x-min 0 --x-max 3

      nlfit generate exp-decay --groups 1000 --n 50 --seed 2 > many.csv
    """
    import numpy as np

    from nlfit.models.expression import FormulaModel

    check_outputs({"--output": output}, [])
    if kind not in GENERATORS:
        raise OptionError(f"unknown generator '{kind}'; choose from {', '.join(GENERATORS)}")
    if output_format != "csv":
        raise OptionError(f"--format {output_format} is not supported; generate writes csv")
    text, defaults, (lo, hi), default_noise, _ = GENERATORS[kind]
    if kind == "expr":
        if not formula:
            raise OptionError("generate expr needs a FORMULA, e.g. nlfit generate expr 'a*exp(-b*x)' --params a=1,b=2")
        text = formula
    elif formula:
        raise OptionError(f"generator '{kind}' takes no FORMULA (use 'expr' for a formula)")
    noise = default_noise if noise is None else noise
    lo = lo if x_min is None else x_min
    hi = hi if x_max is None else x_max
    if n < 1:
        raise OptionError(f"--n must be at least 1; got {n}")
    if groups >= 1 and n * groups > MAX_ROWS:
        raise OptionError(f"--n x --groups is {n * groups:,} rows; at most {MAX_ROWS:,} (about {MAX_ROWS * 40 // 10**9} GB of CSV) are generated in one run")
    from nlfit.schema import check_option

    seed = check_option("seed", seed)
    if not (math.isfinite(noise) and noise >= 0):
        raise OptionError(f"--noise must be a non-negative number; got {noise}")
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(hi - lo)):
        raise OptionError(f"--x-min and --x-max must be finite numbers whose difference is finite; got {lo} and {hi}")
    if not hi > lo:
        raise OptionError(f"--x-max ({hi}) must be greater than --x-min ({lo})")
    given = parse_p0(params) or {}
    if not isinstance(given, dict):
        raise OptionError("--params must be name=value pairs, e.g. a=2,b=0.5")
    model = FormulaModel.parse(text, x_names=("x",), require_params=False)
    values = {**defaults, **given}
    unknown = [k for k in given if k not in model.param_names]
    if unknown:
        raise OptionError(f"--params names unknown parameter(s) {', '.join(unknown)}; the formula has {', '.join(model.param_names)}")
    missing = [k for k in model.param_names if k not in values]
    if missing:
        raise OptionError(f"--params must set {', '.join(missing)}")
    if groups < 1:
        raise OptionError(f"--groups must be at least 1; got {groups}")
    if not 0 <= spread < 1:
        raise OptionError(f"--spread must be in [0, 1); got {spread}")
    center = np.array([values[k] for k in model.param_names], dtype=float)
    table = Table(model, center, groups, n, lo, hi, noise, spread, seed)
    for _ in table.pieces():  # a first pass checks every value before anything is written
        pass
    emit_chunks(csv_chunks(table), output)


MAX_ROWS = 100_000_000  # generate's limit on --n x --groups (the CSV would be about 4 GB and more)
CHUNK_ROWS = 65_536


class Table:
    """The rows of ``generate``, made CHUNK_ROWS at a time: memory does not grow with the
    number of rows. The numbers are those of the whole table made at once with one random
    generator (x = linspace(lo, hi, n); each group's true parameters = center x U(1-spread,
    1+spread), drawn for all groups first; then the noise, group after group), so a seed
    gives the same file however the rows are cut: the true parameters and the noise come
    from two copies of the generator, the second advanced past the uniform draws (one
    64-bit draw each). ``pieces`` can be run again and gives the same numbers."""

    def __init__(self, model, center, groups, n, lo, hi, noise, spread, seed):
        import numpy as np

        self.model, self.center, self.groups, self.n = model, center, groups, n
        self.lo, self.hi, self.noise, self.spread = lo, hi, noise, spread
        self.seed = np.random.SeedSequence().entropy if seed is None else seed  # without --seed: one seed for both passes
        self.names = ["x", "y"] if groups == 1 else ["group", "x", "y", *[f"true_{name}" for name in model.param_names]]

    def _x(self, index):
        """x at positions ``index`` of np.linspace(lo, hi, n), bit for bit as linspace computes it."""
        import numpy as np

        if self.n == 1:
            return np.full(index.shape, float(self.lo))
        div, delta = self.n - 1, self.hi - self.lo
        step = delta / div
        x = (index / div * delta if step == 0 else index * step) + self.lo
        return np.where(index == div, float(self.hi), x)

    def pieces(self):
        """Columns (name -> array) of successive CHUNK_ROWS rows; OptionError at the first
        value that is not finite."""
        import numpy as np

        from nlfit.models.expression import evaluate_numpy

        first = np.random.default_rng(self.seed)
        truth_rng, noise_rng = (np.random.Generator(type(first.bit_generator)()) for _ in range(2))
        truth_rng.bit_generator.state = noise_rng.bit_generator.state = first.bit_generator.state
        width = self.center.size
        if self.groups > 1:
            noise_rng.bit_generator.advance(self.groups * width)
        truths = self.center[None, :]
        drawn = 0  # groups whose true parameters are in ``truths`` (their last rows)
        rows = self.groups * self.n
        for begin in range(0, rows, CHUNK_ROWS):
            index = np.arange(begin, min(begin + CHUNK_ROWS, rows))
            group, position = np.divmod(index, self.n)
            last = int(group[-1]) + 1
            if self.groups > 1 and last > drawn:
                fresh = self.center * truth_rng.uniform(1 - self.spread, 1 + self.spread, (last - drawn, width))
                truths = np.concatenate([truths[-1:], fresh]) if drawn else fresh
                offset, drawn = last - len(truths), last
            elif self.groups == 1:
                offset = 0
            x = self._x(position)
            y = evaluate_numpy(self.model, np.ascontiguousarray(truths[group - offset].T), x)  # each row with its group's parameters
            if self.noise > 0:
                y = y + noise_rng.normal(0.0, self.noise, len(index))
            if not np.all(np.isfinite(y)):
                raise OptionError("the formula gives non-finite values on this x range")
            if self.groups == 1:
                yield {"x": x, "y": y}
                continue
            columns = {"group": group, "x": x, "y": y}
            for i, name in enumerate(self.model.param_names):
                columns[f"true_{name}"] = truths[group - offset, i]
            yield columns


def csv_chunks(table: Table):
    """The CSV text of ``table`` in pieces of CHUNK_ROWS rows (the header first)."""
    yield ",".join(table.names) + "\n"
    for part in table.pieces():
        yield csv_text(part).split("\n", 1)[1]
