"""Small data end to end, and start-up: whole processes, nlfit against a scipy script.

    python benchmarks/startup.py [--runs 5]

(a) ``nlfit fit runge200.csv --model rational --method lm --quiet --format json`` on the 200
    points of ``nlfit generate runge --seed 0``, against a short script that reads the same CSV
    with pandas and calls scipy.optimize.least_squares(method='lm') with the analytic
    Jacobian. Medians of RUNS whole-process runs; nlfit's first run with an empty compilation
    cache ("cold") is reported on its own.
(b) How many programs JAX compiles for that fit (JAX_LOG_COMPILES), for --max-iter 2 and
    100: the count must not grow with the iterations.
(c) ``nlfit --help``: median wall time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCIPY_SCRIPT = """
import sys
import numpy as np
import pandas as pd
from scipy.optimize import least_squares
frame = pd.read_csv(sys.argv[1])
x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
def residuals(c):
    return 1.0 / (c[0] + c[1] * x + c[2] * x * x) - y
def jacobian(c):
    f2 = (1.0 / (c[0] + c[1] * x + c[2] * x * x)) ** 2
    return np.column_stack([-f2, -f2 * x, -f2 * x * x])
result = least_squares(residuals, [1.0, 0.0, 10.0], jac=jacobian, method="lm")
print(result.x)
"""


def timed(command: list[str], env: dict) -> float:
    began = time.perf_counter()
    subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    nlfit = [sys.executable, "-m", "nlfit"]
    work = Path(tempfile.mkdtemp(prefix="nlfit-bench-"))
    cache = work / "cache"
    env = {**os.environ, "NLFIT_CACHE_DIR": str(cache)}
    data = work / "runge200.csv"
    with open(data, "w") as handle:
        subprocess.run([*nlfit, "generate", "runge", "--seed", "0"], stdout=handle, check=True, env=env)
    script = work / "scipy_fit.py"
    script.write_text(SCIPY_SCRIPT)
    fit = [*nlfit, "fit", str(data), "--model", "rational", "--method", "lm", "--quiet", "--format", "json"]

    shutil.rmtree(cache, ignore_errors=True)
    cold = timed(fit, env)
    warm = statistics.median(timed(fit, env) for _ in range(args.runs))
    scipy = statistics.median(timed([sys.executable, str(script), str(data)], env) for _ in range(args.runs))
    print(f"cores: {os.cpu_count()}   runs: {args.runs} (medians)")
    print("(a) small data, whole processes")
    print(f"    scipy script (pandas + least_squares lm, analytic J): {scipy:.3f} s")
    print(f"    nlfit cold (empty compilation cache):                  {cold:.3f} s   ratio {cold / scipy:.2f}")
    print(f"    nlfit warm:                                            {warm:.3f} s   ratio {warm / scipy:.2f}")

    print("(b) programs compiled by JAX for one fit (fresh cache)")
    for max_iter in (2, 100):
        shutil.rmtree(cache, ignore_errors=True)
        done = subprocess.run([*fit, "--max-iter", str(max_iter)], env={**env, "JAX_LOG_COMPILES": "1"}, capture_output=True, text=True, check=False)
        names = [line.split("Compiling ")[1].split(" ")[0] for line in done.stderr.splitlines() if "Compiling " in line]
        print(f"    --max-iter {max_iter:3d}: {len(names)} compilations ({', '.join(sorted(set(names)))})")

    helps = [timed([*nlfit, "--help"], env) for _ in range(args.runs)]
    entry = shutil.which("nlfit")
    print("(c) start-up")
    print(f"    python -m nlfit --help: median {statistics.median(helps):.3f} s")
    if entry:
        print(f"    nlfit --help (console script): median {statistics.median(timed([entry, '--help'], env) for _ in range(args.runs)):.3f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
