"""Grouped fits on one core and on every core: the solve alone, in fits per second.

    python benchmarks/cores.py [--groups 10000 30000] [--repeat 3] [--starts 1]

The rational model 1/(c0 + c1 x + c2 x^2), 100 points per group on [-1, 1], true parameters
drawn per group (seed 0), noise 0.01, every group from [1, 0, 10] (as benchmarks/batch.py).
Each measurement runs in its own process: ``taskset -c 0`` (one usable core, so one XLA
device: nlfit.cores) and unpinned (one device per core, the batch spread over them). In each
process ``fit_groups`` runs twice and the second run is timed (the first compiles); only the
time inside ``nlfit.solvers.loop.solve_members`` counts (no reading, start-up, statistics or
rows). Reported: the best of ``--repeat`` processes for each, their ratio, and whether both
gave the same statuses and parameters (max relative difference, norm-wise per group).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def data(groups: int):
    rng = np.random.default_rng(0)
    x = np.linspace(-1.0, 1.0, 100)
    truth = np.column_stack([rng.uniform(0.5, 1.5, groups), rng.uniform(-0.3, 0.3, groups), rng.uniform(5, 15, groups)])
    y = 1.0 / (truth[:, :1] + truth[:, 1:2] * x + truth[:, 2:3] * x * x) + rng.normal(0, 0.01, (groups, x.size))
    return x, y


def child(groups: int, starts: int, out: str) -> None:
    """One measurement: solve seconds of the second run, the devices used, the results."""
    from nlfit.batch import fit_groups
    from nlfit.io.dataset import Dataset
    from nlfit.solvers import loop

    x, y = data(groups)
    dataset = Dataset(x=np.tile(x, groups), y=y.ravel(), x_names=("x",), y_name="y", groups=np.repeat(np.arange(groups).astype(str), x.size))
    spent = [0.0]
    solve = loop.solve_members

    def timed(*args, **kwargs):
        began = time.perf_counter()
        try:
            return solve(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - began

    loop.solve_members = timed
    for _ in range(2):
        spent[0] = 0.0
        result = fit_groups(dataset, "1/(c0 + c1*x + c2*x^2)", p0=[1.0, 0.0, 10.0], starts=starts)
    from nlfit._jax import solve_devices

    np.savez(out, params=result.params, statuses=result.statuses)
    print(json.dumps({"seconds": spent[0], "devices": len(solve_devices())}))


def measure(groups: int, starts: int, pinned: bool, out: str) -> dict:
    command = [sys.executable, __file__, "--child", str(groups), "--starts", str(starts), "--out", out]
    done = subprocess.run((["taskset", "-c", "0"] if pinned else []) + command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[10000, 30000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--starts", type=int, default=1)
    parser.add_argument("--child", type=int)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.starts, args.out)
    folder = Path(tempfile.mkdtemp(prefix="nlfit-cores-"))
    print(f"{'groups':>7} {'1 core fits/s':>14} {'all cores fits/s':>17} {'devices':>8} {'ratio':>6} {'statuses differ':>16} {'max rel diff':>13}")
    for groups in args.groups:
        best = {}
        for pinned in (True, False):
            runs = [measure(groups, args.starts, pinned, str(folder / f"{pinned}.npz")) for _ in range(args.repeat)]
            best[pinned] = min(runs, key=lambda run: run["seconds"])
        one, every = np.load(folder / "True.npz"), np.load(folder / "False.npz")
        scale = np.maximum(np.linalg.norm(one["params"], axis=1), 1e-300)
        relative = float(np.max(np.linalg.norm(one["params"] - every["params"], axis=1) / scale))
        differ = int(np.count_nonzero(one["statuses"] != every["statuses"]))
        rates = {pinned: groups / run["seconds"] for pinned, run in best.items()}
        ratio = rates[False] / rates[True]
        print(f"{groups:>7} {rates[True]:>14.0f} {rates[False]:>17.0f} {best[False]['devices']:>8} {ratio:>6.2f} {differ:>16} {relative:>13.1e}")


if __name__ == "__main__":
    main()
