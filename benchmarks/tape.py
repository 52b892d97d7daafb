"""A formula from its tape against the formula's own compiled program: the same fits, and
what a formula nlfit has not seen costs in one process.

    python benchmarks/tape.py [--quick]

Every NIST StRD file in data/nist from both of NIST's starts, and the formulas of
tests/test_tape.py on generated data (noise 0.01, truth = the listed parameters, start: the
formula's default). Each case, with the defaults in one process:

- "bucket": the formula from its tape, as given (``tape.MAX_WORK`` unlimited): this compiles
  the tape program of its bucket (parameters, columns, length, rows) unless this process or
  the compilation cache already has it, which later formulas of the bucket share;
- "tape": the same formula with its parameters renamed (a text never seen), from the tape;
- "compiled": renamed again, from its own compiled program (``tape.MAX_WORK = -1``): the
  path every new formula took before the tape, compiling its solver.

Reported: the seconds of each, whether the two renamed fits' statuses agree, their norm-wise
relative parameter difference and the relative difference of their sums of squares, and
which path nlfit takes by default for that fit (``tape.runner_for``). The compilation
cache recognizes a program whatever its parameters are called: run this with an empty one
(``NLFIT_CACHE_DIR=$(mktemp -d)``) so that "compiled" is the cost of a formula never fitted.
``--quick``: NIST start 1 only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def cases(quick: bool):
    from test_tape import FORMULAS

    from nlfit import read_dataset
    from nlfit.io.dataset import Dataset
    from nlfit.models.expression import FormulaModel, evaluate_numpy

    for path in sorted((ROOT / "data" / "nist").glob("*.dat")):
        data = read_dataset(str(path))
        for start in (1,) if quick else (1, 2):
            yield f"{path.stem} start {start}", data, data.nist.formula, data.nist.starts[start]
    rng = np.random.default_rng(0)
    x = np.linspace(0.05, 2.0, 80)
    for text, params in FORMULAS:
        model = FormulaModel.parse(text)
        y = evaluate_numpy(model, np.array(params), x) + rng.normal(0.0, 0.01, x.size)
        yield text, Dataset(x=x, y=y, x_names=("x",), y_name="y"), text, None


def _renamed(data, formula: str, start, suffix: str):
    """The formula with every parameter renamed (NAME + suffix): a text never fitted before,
    of the same tape bucket; and the start by the new names."""
    import re

    from nlfit.models.expression import FormulaModel

    model = FormulaModel.parse(formula, x_names=data.x_names, y_name=data.y_name)
    names = model.param_names
    if data.nist is not None:
        names = tuple(f"b{i + 1}" for i in range(len(data.nist.certified)))
    text = re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: m.group(1) + suffix, formula)
    p0 = None if start is None else {n + suffix: float(v) for n, v in zip(names, start, strict=True)}
    return text, p0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from nlfit import fit
    from nlfit.models import tape
    from nlfit.models.expression import FormulaModel
    from nlfit.numerics import padded_size

    DEFAULT_WORK = tape.MAX_WORK

    rows = []
    import os

    print(f"compilation cache: {os.environ.get('NLFIT_CACHE_DIR', 'the default')}")
    print(f"{'fit':46s} {'default':>8s} {'bucket s':>8s} {'tape s':>7s} {'compiled s':>10s} {'status':>7s} {'|dp|/|p|':>9s} {'d rss':>9s}")
    for name, data, formula, start in cases(args.quick):
        tape.MAX_WORK = DEFAULT_WORK
        rows_padded = padded_size(data.n_points)
        default = "tape" if tape.runner_for(FormulaModel.parse(formula, x_names=data.x_names, y_name=data.y_name), rows_padded) else "compiled"
        tape.MAX_WORK = 1 << 40
        began = time.perf_counter()
        fit(data, formula, p0=start)  # compiles the tape program of this bucket, if it is new
        bucket_seconds = time.perf_counter() - began
        renamed, p0 = _renamed(data, formula, start, "_t")  # a formula this process has not seen, same bucket
        began = time.perf_counter()
        taped = fit(data, renamed, p0=p0)
        tape_seconds = time.perf_counter() - began
        tape.MAX_WORK = -1
        renamed, p0 = _renamed(data, formula, start, "_c")  # nor this one: it compiles its own solver
        began = time.perf_counter()
        direct = fit(data, renamed, p0=p0)
        direct_seconds = time.perf_counter() - began
        dp = float(np.linalg.norm(taped.params - direct.params) / max(np.linalg.norm(direct.params), 1e-300))
        drss = abs(taped.stats["rss"] - direct.stats["rss"]) / max(direct.stats["rss"], 1e-300)
        same = taped.status == direct.status
        rows.append((tape_seconds, direct_seconds, same, dp, drss))
        line = f"{bucket_seconds:8.2f} {tape_seconds:7.2f} {direct_seconds:10.2f} {'same' if same else 'DIFF':>7s} {dp:9.1e} {drss:9.1e}"
        print(f"{name[:46]:46s} {default:>8s} {line}", flush=True)
    tape_times, direct_times = [r[0] for r in rows], [r[1] for r in rows]
    worst_dp, worst_rss = max(r[3] for r in rows), max(r[4] for r in rows)
    print(f"\n{len(rows)} fits: statuses equal {sum(r[2] for r in rows)}/{len(rows)}, max |dp|/|p| {worst_dp:.1e}, max relative d rss {worst_rss:.1e}")
    tape_median, direct_median = statistics.median(tape_times), statistics.median(direct_times)
    print(f"median seconds of a new formula's fit (its bucket compiled before): tape {tape_median:.3f}, compiled {direct_median:.3f}")


if __name__ == "__main__":
    main()
