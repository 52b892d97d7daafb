"""A formula from its tape against the formula's own compiled program: the same fits, and
what a formula nlfit has not seen costs in one process.

    python benchmarks/tape.py [--quick]

Every NIST StRD file in data/nist from both of NIST's starts, and the formulas of
tests/test_tape.py on generated data (noise 0.01, truth = the listed parameters, start: the
formula's default). Each fit runs twice in this process with the defaults: from the tape
(``nlfit.models.tape``: the first formula of a parameter count compiles the tape program
once, the rest compile nothing), then from the compiled formula (``tape.MAX_WORK = -1``:
every formula compiles its own solver). Reported per fit: the seconds of each (the first fit
of that formula in the process, compiling included), whether the statuses agree, the
norm-wise relative parameter difference and the relative difference of the sums of squares.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from nlfit import fit
    from nlfit.models import tape

    rows = []
    print(f"{'fit':52s} {'tape s':>7s} {'compiled s':>10s} {'status':>7s} {'|dp|/|p|':>9s} {'d rss':>9s}")
    for name, data, formula, start in cases(args.quick):
        tape.MAX_WORK = 1 << 40
        began = time.perf_counter()
        taped = fit(data, formula, p0=start)
        tape_seconds = time.perf_counter() - began
        tape.MAX_WORK = -1
        began = time.perf_counter()
        direct = fit(data, formula, p0=start)
        direct_seconds = time.perf_counter() - began
        dp = float(np.linalg.norm(taped.params - direct.params) / max(np.linalg.norm(direct.params), 1e-300))
        drss = abs(taped.stats["rss"] - direct.stats["rss"]) / max(direct.stats["rss"], 1e-300)
        same = taped.status == direct.status
        rows.append((tape_seconds, direct_seconds, same, dp, drss))
        print(f"{name[:52]:52s} {tape_seconds:7.2f} {direct_seconds:10.2f} {'same' if same else 'DIFF':>7s} {dp:9.1e} {drss:9.1e}", flush=True)
    tape_times, direct_times = [r[0] for r in rows[1:]], [r[1] for r in rows[1:]]
    worst_dp, worst_rss = max(r[3] for r in rows), max(r[4] for r in rows)
    print(f"\n{len(rows)} fits: statuses equal {sum(r[2] for r in rows)}/{len(rows)}, max |dp|/|p| {worst_dp:.1e}, max relative d rss {worst_rss:.1e}")
    tape_median, direct_median = statistics.median(tape_times), statistics.median(direct_times)
    print(f"median seconds of a formula's first fit in this process (the first fit left out): tape {tape_median:.3f}, compiled {direct_median:.3f}")


if __name__ == "__main__":
    main()
