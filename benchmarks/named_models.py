"""Named self-starting models against the same models typed as formulas, on R's data.

Every case of ``tests/data/r/references.json`` that R's nls fitted (the selfStart models on
ChickWeight, DNase, Puromycin, Loblolly, CO2, Indometh and Theoph subsets) is fitted three
ways, none with start values:

- ``named``: the named model (``-m fol``) at its defaults (its start rule, then the multistart);
- ``rule alone``: the named model with ``starts=1``: its start rule and nothing else;
- ``formula``: the same model typed as a formula in R's names (every parameter starts at 1,
  then the multistart), as a user without the named model would.

A case is solved when the RSS is R's to 1e-6 (relative) and the parameters are R's to 1e-6,
allowing the model's own exchange of labels; "R order" counts the solved fits whose labels
are also in R's order (lKe < lKa, lrc1 > lrc2). An unsolved fit is "loud" when it says so
(success false, or a warning).

    python benchmarks/named_models.py            # the table
    python benchmarks/named_models.py --cases    # and one line per case
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
R_DIR = ROOT / "tests" / "data" / "r"
NAMED = {
    "SSlogis": "logistic", "SSfpl": "fpl", "SSgompertz": "gompertz", "SSweibull": "weibull", "SSmicmen": "micmen",
    "SSasymp": "asymp", "SSasympOff": "asympoff", "SSasympOrig": "asymporig", "SSbiexp": "biexp", "SSfol": "fol",
}  # fmt: skip


def subset(entry):
    from nlfit.io.dataset import Dataset

    column = entry["subset"]["column"]
    frame = pd.read_csv(R_DIR / entry["data"], dtype={column: str})
    frame = frame[frame[column] == entry["subset"]["value"]]
    if entry["filter"]:
        frame = frame.query(entry["filter"].replace("&", "and"))
    x = frame[entry["x"]].to_numpy(dtype=float)
    return Dataset(x=x[:, 0] if x.shape[1] == 1 else x, y=frame[entry["y"]].to_numpy(dtype=float), x_names=tuple(entry["x"]), y_name=entry["y"])


def judge(result, entry, model) -> tuple[bool, bool, bool]:
    """(solved, in R's label order, loud)."""
    reference = np.array(list(entry["params"].values()))
    params = np.asarray(result.params, dtype=float)
    relabel = getattr(model, "relabel", None)
    canonical = params[relabel(params[None])[0]] if relabel is not None else params
    with np.errstate(all="ignore"):
        rss_ok = abs(result.stats["rss"] - entry["rss"]) <= 1e-6 * entry["rss"]
        as_is = bool(np.all(np.abs(params - reference) <= 1e-6 * np.abs(reference)))
        exchanged = bool(np.all(np.abs(canonical - reference) <= 1e-6 * np.abs(reference)))
    solved = bool(rss_ok and (as_is or exchanged))
    return solved, solved and as_is, (not result.success) or bool(result.warnings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", action="store_true", help="one line per case")
    args = parser.parse_args()
    from nlfit import fit
    from nlfit.models.expression import FormulaModel
    from nlfit.models.named import CATALOGUE, formula_of
    from nlfit.models.registry import build_model

    entries = [e for e in json.loads((R_DIR / "references.json").read_text())["single"] if e["ok"]]
    ways = ("named", "rule alone", "formula")
    table = {name: {way: [0, 0, 0, 0, 0.0] for way in ways} for name in NAMED.values()}  # cases, solved, R order, loud of unsolved, seconds
    for entry in entries:
        data = subset(entry)
        name = NAMED[entry["selfstart"]]
        named = build_model(name, data.x, y_name=data.y_name, x_names=data.x_names)
        formula = FormulaModel.parse(formula_of(CATALOGUE[name], data.x_names), x_names=data.x_names, y_name=data.y_name)
        line = []
        for way, model, starts in (("named", named, "auto"), ("rule alone", named, 1), ("formula", formula, "auto")):
            began = time.perf_counter()
            result = fit(data, model, starts=starts)
            seconds = time.perf_counter() - began
            solved, ordered, loud = judge(result, entry, named)
            row = table[name][way]
            row[0] += 1
            row[1] += solved
            row[2] += ordered
            row[3] += (not solved) and loud
            row[4] += seconds
            line.append(f"{way}: {'solved' if solved else 'LOUD' if loud else 'WRONG'}{'' if ordered or not solved else ' (labels exchanged)'}")
        if args.cases:
            print(f"{entry['id']:42s} " + "; ".join(line), file=sys.stderr)
    header = f"{'model':10s} {'cases':>5s} | " + " | ".join(f"{way:>26s}" for way in ways)
    print(header)
    print(f"{'':10s} {'':>5s} | " + " | ".join(f"{'solved/R order/loud, s':>26s}" for _ in ways))
    totals = {way: [0, 0, 0, 0, 0.0] for way in ways}
    for name, rows in table.items():
        cells = []
        for way in ways:
            cases, solved, ordered, loud, seconds = rows[way]
            totals[way] = [a + b for a, b in zip(totals[way], rows[way], strict=True)]
            cells.append(f"{solved:>3d}/{ordered:>3d}/{loud:>3d}, {seconds:6.2f}")
        print(f"{name:10s} {rows['named'][0]:>5d} | " + " | ".join(f"{c:>26s}" for c in cells))
    cells = [f"{t[1]:>3d}/{t[2]:>3d}/{t[3]:>3d}, {t[4]:6.2f}" for t in totals.values()]
    print(f"{'all':10s} {totals['named'][0]:>5d} | " + " | ".join(f"{c:>26s}" for c in cells))


if __name__ == "__main__":
    main()
