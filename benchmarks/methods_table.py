"""Every method x globalization on the lecture's Runge rational problem (data/runge.csv, p0 = [1, 0, 10]).

    python benchmarks/methods_table.py [--max-iter N]

Prints a Markdown table: status, iterations, nfev, njev and final loss for each cell, with
the default tolerances.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nlfit import fit, read_dataset
from nlfit.solvers.catalog import GLOBALIZATIONS, METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-iter", type=int, default=1000)
    args = parser.parse_args()
    data = read_dataset(str(Path(__file__).resolve().parent.parent / "data" / "runge.csv"))
    print("| method | globalization | status | iterations | nfev | njev | final loss |")
    print("|---|---|---|---|---|---|---|")
    for method in METHODS:
        for globalization in GLOBALIZATIONS:
            result = fit(data, "rational", p0=[1.0, 0.0, 10.0], method=method, globalization=globalization, max_iter=args.max_iter)
            c = result.counts
            row = [method, globalization, result.status.label, c["iterations"], c["nfev"], c["njev"], f"{result.loss:.12g}"]
            print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    main()
