"""Small data end to end, and start-up: whole processes, nlfit against a scipy script.

    python benchmarks/startup.py [--runs 5] [--big 1000000]

(a) ``nlfit fit runge200.csv --model rational --method lm --quiet --format json`` on the 200
    points of ``nlfit generate runge --seed 0``, against a short script that reads the same CSV
    with pandas and calls scipy.optimize.least_squares(method='lm') with the analytic
    Jacobian. Medians of RUNS whole-process runs; nlfit's first run with an empty compilation
    cache ("cold") is reported on its own. Then the cost of multistart: the same warm fit with
    ``--starts 1`` (one start) against the default ``--starts auto``.
(b) How many programs JAX compiles for that fit (JAX_LOG_COMPILES), for --max-iter 2 and
    100: the count must not grow with the iterations.
(c) ``nlfit --help``: median wall time.
(d) The extra time of multistart on BIG points (rational model, N(0, 0.5) noise on the
    Runge function): ``nlfit.fit`` in one process, after a first call that compiled, with
    ``starts=1`` and the default ``starts='auto'`` (which screens the starts on
    nlfit.multistart.SCREEN_ROWS rows, then fits the winner to all the data); medians of RUNS.
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
    parser.add_argument("--big", type=int, default=1_000_000, help="points for (d); 0 skips it")
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
    timed([*fit, "--starts", "1"], env)  # compile the one-start programs
    one = statistics.median(timed([*fit, "--starts", "1"], env) for _ in range(args.runs))
    auto = statistics.median(timed([*fit, "--starts", "auto"], env) for _ in range(args.runs))
    print(f"    nlfit warm, --starts 1:                                {one:.3f} s")
    print(f"    nlfit warm, --starts auto (the default):               {auto:.3f} s   auto / one start {auto / one:.2f}")

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
    if args.big:
        big(args.big, args.runs)


def big(points: int, runs: int) -> None:
    import numpy as np

    from nlfit import fit
    from nlfit.io.dataset import Dataset

    rng = np.random.default_rng(0)
    x = np.linspace(-1.0, 1.0, points)
    data = Dataset(x=x, y=1.0 / (1.0 + 10.0 * x * x) + rng.normal(0.0, 0.5, points), x_names=("x",), y_name="y")
    seconds = {}
    for starts in (1, "auto"):
        result = fit(data, "rational", starts=starts)  # compiles
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            result = fit(data, "rational", starts=starts)
            times.append(time.perf_counter() - began)
        seconds[starts] = (statistics.median(times), result)
    one, auto = seconds[1][0], seconds["auto"][0]
    summary = seconds["auto"][1].starts
    print(f"(d) {points:,} points, in one process, warm")
    print(f"    starts=1:    {one:.3f} s  ({seconds[1][1].status.label}, {seconds[1][1].counts['iterations']} iterations)")
    screened = f"{summary['tried']} starts screened on {summary['screened_rows']} rows"
    print(f"    starts=auto: {auto:.3f} s  ({screened})  extra {auto - one:+.3f} s, ratio {auto / one:.2f}")
    same = np.allclose(seconds[1][1].params, seconds["auto"][1].params, rtol=1e-8)
    print(f"    same parameters (rtol 1e-8): {same}")


if __name__ == "__main__":
    main()
