"""--bootstrap 2000 against a scipy loop doing the same resampling, whole commands.

MASS's wtloss example (3 parameters, 52 points, tests/data/r/profile/wtloss.csv). The scipy
script reads the CSV with pandas, fits once with ``least_squares`` (lm), draws the same row
indices as nlfit (``numpy.random.default_rng(seed).integers(0, m, size=(N, m))``), adds the
centred residuals so drawn to the fitted curve, refits every resample from the fit with
``least_squares`` (lm, analytic Jacobian) and takes the percentile intervals. Each command
runs in a fresh process (NLFIT_WORKER=off), alternating, after one warm-up of each; medians.

With ``--worker``, nlfit's commands go through its resident worker instead (what a user's
second command gets by default: ``nlfit worker start`` in a private NLFIT_WORKER_DIR, stopped
at the end); each nlfit command is still a fresh client process, timed whole.

    python benchmarks/bootstrap.py --n 2000 --repeat 3 [--worker]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "r" / "profile" / "wtloss.csv"

SCRIPT = r"""
import json, sys
import numpy as np, pandas as pd
from scipy.optimize import least_squares
frame = pd.read_csv(sys.argv[1]); n, seed, level = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
days, weight = frame["Days"].to_numpy(float), frame["Weight"].to_numpy(float)
def model(p, x): return p[0] + p[1] * 2.0 ** (-x / p[2])
def jac(p, x, y):
    e = 2.0 ** (-x / p[2])
    return np.column_stack([np.ones_like(x), e, p[1] * e * np.log(2.0) * x / p[2] ** 2])
fit = least_squares(lambda p: model(p, days) - weight, [90.0, 95.0, 120.0], jac=lambda p: jac(p, days, weight), method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
fitted = model(fit.x, days); residuals = weight - fitted; centred = residuals - residuals.mean()
picks = np.random.default_rng(seed).integers(0, len(weight), size=(n, len(weight)))
draws = []
for rows in picks:
    y = fitted + centred[rows]
    refit = least_squares(lambda p: model(p, days) - y, fit.x, jac=lambda p: jac(p, days, y), method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    if refit.success: draws.append(refit.x)
draws = np.array(draws)
low, high = np.quantile(draws, 0.5 - level / 2, axis=0), np.quantile(draws, 0.5 + level / 2, axis=0)
ci = {k: [float(a), float(b)] for k, a, b in zip(("b0", "b1", "th"), low, high)}
print(json.dumps({"ci": ci, "converged": len(draws), "stderr": draws.std(axis=0, ddof=1).tolist()}))
"""


def run(command: list[str], env: dict | None = None) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env or {**os.environ, "NLFIT_WORKER": "off"})
    return time.perf_counter() - began, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help="run nlfit's commands through a resident worker")
    args = parser.parse_args()
    if args.worker:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            os.chmod(folder, 0o700)
            env = {**os.environ, "NLFIT_WORKER": "on", "NLFIT_WORKER_DIR": folder}
            subprocess.run([sys.executable, "-m", "nlfit", "worker", "start"], check=True, env=env, capture_output=True)
            try:
                measure(args, env)
            finally:
                subprocess.run([sys.executable, "-m", "nlfit", "worker", "stop"], check=False, env=env, capture_output=True)
        return
    measure(args, None)


def measure(args, env: dict | None) -> None:
    nlfit = [sys.executable, "-m", "nlfit", "fit", str(DATA), "-m", "b0 + b1*2^(-Days/th)", "--y", "Weight", "--p0", "b0=90,b1=95,th=120",
             "--bootstrap", str(args.n), "--intervals", "bootstrap", "--seed", str(args.seed), "-f", "json", "-qq"]  # fmt: skip
    scipy = [sys.executable, "-c", SCRIPT, str(DATA), str(args.n), str(args.seed), "0.95"]
    run(nlfit, env), run(scipy)  # warm-up (nlfit's persistent compilation cache; the worker's programs)
    times = {"nlfit": [], "scipy": []}
    for _ in range(args.repeat):
        seconds, ours = run(nlfit, env)
        times["nlfit"].append(seconds)
        seconds, theirs = run(scipy)
        times["scipy"].append(seconds)
    ours, theirs = json.loads(ours), json.loads(theirs)
    boot = ours["bootstrap"]
    print(f"{args.n} resamples, residual bootstrap, seed {args.seed}; converged: nlfit {boot['converged']}, scipy {theirs['converged']}")
    for name in ("b0", "b1", "th"):
        a, b = boot["params"][name]["ci"], theirs["ci"][name]
        relative = max(abs(a[0] - b[0]), abs(a[1] - b[1])) / boot["params"][name]["stderr"]
        print(f"  {name}: nlfit [{a[0]:.6f}, {a[1]:.6f}]  scipy loop [{b[0]:.6f}, {b[1]:.6f}]  largest difference / bootstrap stderr {relative:.2e}")
    nl, sp = statistics.median(times["nlfit"]), statistics.median(times["scipy"])
    runs = {key: ", ".join(f"{t:.2f}" for t in values) for key, values in times.items()}
    print(f"whole commands{' (nlfit through its resident worker)' if env else ''}: nlfit {nl:.2f} s ({runs['nlfit']}), scipy loop {sp:.2f} s ({runs['scipy']})")
    print(f"nlfit / scipy loop: {nl / sp:.2f}x")


if __name__ == "__main__":
    main()
