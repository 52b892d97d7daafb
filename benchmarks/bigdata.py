"""Big data: the lecture's rational model on 10^6 and 10^7 points, nlfit against scipy.

    python benchmarks/bigdata.py [--sizes 1000000 10000000] [--tol 1e-12] [--csv]

Each solver runs in its own process (so peak memory is its own): nlfit's ``fit`` (LM,
trust region; from 100k points on only the R factor of a streaming QR is kept, not J) as
users run it (``nlfit``: --starts auto), with one start (``nlfit-1``: scipy's one start)
and with the normal equations (``nlfit-1-gram``: --factorization gram); and scipy.optimize.least_squares
with method 'lm' and 'trf' and the analytic Jacobian, all with ftol = xtol = gtol = TOL from
the same start (the lecture's [1, 0, 10]) on the same data (y = 1/(1 + 10x^2) + N(0, 0.5^2),
seed 0). Reported: time to converge (nlfit: warm, after one run that compiled; the compile
is reported too), iterations, time per iteration against one read pass over x and y (the
memory-bandwidth floor, a jitted sum(x*y)): the whole fit's, and for nlfit the solver's own
(``solve/it``: its first linearization and its iterations, without the preparation and the
statistics and checks after it), peak RSS, and the largest relative parameter
difference from scipy lm. With --csv the CSV read is timed too (nlfit's reader: pyarrow for a plain
file when installed; pandas.read_csv for the scipy script) and the end-to-end ratio printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy_script import SCRIPT

P0 = [1.0, 0.0, 10.0]
# nlfit as users run it (the default --starts auto: a multistart screened on a subsample), with
# the one start scipy has, and with the normal equations instead of the streaming QR
NLFIT_VARIANTS = {"nlfit": {}, "nlfit-1": {"starts": 1}, "nlfit-1-gram": {"starts": 1, "factorization": "gram"}}


def data(m: int):
    rng = np.random.default_rng(0)
    x = np.linspace(-1.0, 1.0, m)
    return x, 1.0 / (1.0 + 10.0 * x * x) + rng.normal(0.0, 0.5, m)


def worker(solver: str, m: int, tol: float) -> dict:
    x, y = data(m)
    out: dict = {}
    if solver.startswith("nlfit"):
        from nlfit import fit
        from nlfit._jax import jax, jnp
        from nlfit.io.dataset import Dataset

        dataset = Dataset(x=x, y=y, x_names=("x",), y_name="y")
        options = dict(p0=P0, ftol=tol, xtol=tol, gtol=tol, **NLFIT_VARIANTS[solver])
        began = time.perf_counter()
        fit(dataset, "rational", **options)
        out["first_run"] = time.perf_counter() - began
        began = time.perf_counter()
        result = fit(dataset, "rational", **options)
        out["seconds"] = time.perf_counter() - began
        out["solve_seconds"] = result.seconds  # the solver alone: its first linearization and its iterations
        out["iterations"] = result.counts["iterations"]
        out["evaluations"] = result.counts["nfev"] + result.counts["njev"]
        out["params"] = result.params.tolist()
        xj, yj = jnp.asarray(x), jnp.asarray(y)
        read = jax.jit(lambda a, b: jnp.sum(a * b))
        read(xj, yj).block_until_ready()
        began = time.perf_counter()
        for _ in range(20):
            read(xj, yj).block_until_ready()
        out["read_pass"] = (time.perf_counter() - began) / 20
    else:
        from scipy.optimize import least_squares

        def residuals(c):
            return 1.0 / (c[0] + c[1] * x + c[2] * x * x) - y

        def jacobian(c):
            f2 = (1.0 / (c[0] + c[1] * x + c[2] * x * x)) ** 2
            return np.column_stack([-f2, -f2 * x, -f2 * x * x])

        began = time.perf_counter()
        result = least_squares(residuals, P0, jac=jacobian, method=solver, ftol=tol, xtol=tol, gtol=tol)
        out["seconds"] = time.perf_counter() - began
        out["iterations"] = int(result.njev)  # one Jacobian per accepted iteration
        out["evaluations"] = int(result.nfev + result.njev)
        out["params"] = result.x.tolist()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# Runs the command as the child of a small fresh process and writes the command's peak RSS
# (os.wait4) to the file named first. The rusage of a child forked straight from this process
# would count this process's own pages, shared with the child until it starts its program:
# a child of a parent holding 1.2 GB reported 1,170 MB for ``python -c pass``.
LAUNCH = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _peak(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB of the command alone (``LAUNCH``), its stdout) of one command."""
    with tempfile.TemporaryFile("w+") as out, tempfile.NamedTemporaryFile("r") as rss:
        began = time.perf_counter()
        env = dict(os.environ, NLFIT_WORKER="off")
        done = subprocess.run([sys.executable, "-c", LAUNCH, rss.name, *command], stdout=out, stderr=subprocess.DEVNULL, env=env, check=False)
        seconds = time.perf_counter() - began
        if done.returncode not in (0, 1):
            raise SystemExit(f"{command[:3]} failed with exit code {done.returncode}")
        out.seek(0)
        return seconds, int(rss.read()) / 1024, out.read()


def _with_worker(command: list[str], folder: str) -> tuple[float, float]:
    """(wall seconds of the second of two runs, the worker's peak RSS in MB) of ``command``
    served by a resident worker of its own (``NLFIT_WORKER_DIR`` in ``folder``), which is
    started first and stopped after."""
    place = os.path.join(folder, "worker")
    os.makedirs(place, mode=0o700, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if key != "NLFIT_WORKER"}
    env["NLFIT_WORKER_DIR"] = place
    subprocess.run([command[0], "worker", "start"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(2):
            began = time.perf_counter()
            subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - began
        peak = 0.0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if place.encode() not in handle.read():
                        continue
                with open(f"/proc/{pid}/status") as handle:
                    for line in handle:
                        if line.startswith("VmHWM:"):
                            peak = max(peak, int(line.split()[1]) / 1024)
            except OSError:
                continue
    finally:
        subprocess.run([command[0], "worker", "stop"], env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return seconds, peak


def commands(m: int, tol: float) -> None:
    """Whole commands, each in a fresh process (imports, read, fit, output): ``nlfit fit FILE
    --model rational --p0 1,0,10 --starts 1 -f json`` against the pandas + scipy script of ``scipy_script.py``
    (read_csv or read_parquet, least_squares lm with the analytic Jacobian), from CSV and from
    Parquet, twice each (the second run reported: the file in the page cache, nlfit's programs
    compiled). Peak RSS: each command's own. Then nlfit's command again as users run it by
    default, served by its resident worker (``nlfit.worker``: JAX, pandas and the compiled
    programs already loaded), with that worker's peak RSS."""
    import pandas as pd

    x, y = data(m)
    nlfit = [os.path.join(os.path.dirname(sys.executable), "nlfit")]
    tols = ["--ftol", str(tol), "--xtol", str(tol), "--gtol", str(tol)]
    with tempfile.TemporaryDirectory() as folder:
        for kind in ("csv", "parquet"):
            path = os.path.join(folder, f"data.{kind}")
            frame = pd.DataFrame({"x": x, "y": y})
            frame.to_csv(path, index=False, float_format="%.17g") if kind == "csv" else frame.to_parquet(path, index=False)
            script = [sys.executable, "-c", SCRIPT, path, str(tol)]
            ours = [*nlfit, "fit", path, "--model", "rational", "--p0", "1,0,10", "--starts", "1", "-f", "json", "-q", *tols]
            for _ in range(2):
                theirs_seconds, theirs_peak, _ = _peak(script)
                ours_seconds, ours_peak, _ = _peak(ours)
            print(
                f"command from {kind} ({os.path.getsize(path) / 1e6:.0f} MB): nlfit {ours_seconds:.2f} s, script {theirs_seconds:.2f} s: "
                f"{theirs_seconds / ours_seconds:.2f}x;  peak RSS nlfit {ours_peak:.0f} MB, script {theirs_peak:.0f} MB"
            )
            served, worker_peak = _with_worker(ours, folder)
            print(
                f"  the same nlfit command served by its resident worker (as users run it; started before, second run): {served:.2f} s: "
                f"{theirs_seconds / served:.2f}x the script;  the worker's peak RSS {worker_peak:.0f} MB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**6, 10**7])
    parser.add_argument("--tol", type=float, default=1e-12)
    parser.add_argument("--csv", action="store_true", help="also time reading the data from CSV")
    parser.add_argument("--commands", action="store_true", help="also time whole commands from CSV and Parquet files (each in a fresh process)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.tol)))
        return
    print(f"cores: {os.cpu_count()}  tol: {args.tol:g}")
    for m in args.sizes:
        runs = {}
        for solver in (*NLFIT_VARIANTS, "lm", "trf"):
            done = subprocess.run([sys.executable, __file__, "--worker", solver, str(m), "--tol", str(args.tol)], capture_output=True, text=True, check=True)
            runs[solver] = json.loads(done.stdout.strip().splitlines()[-1])
        ours = runs["nlfit"]
        reference = np.array(runs["lm"]["params"])
        print(f"\nm = {m:,}   read pass over x and y: {ours['read_pass'] * 1e3:.2f} ms   nlfit compile+first run: {ours['first_run']:.2f} s")
        header = f"{'solver':12s} {'time s':>8s} {'iters':>6s} {'evals':>6s} {'ms/iter':>8s} {'x floor':>8s} {'solve/it':>9s} {'x floor':>8s} {'peak MB':>8s}"
        print(header + f" {'max rel diff vs lm':>19s} {'nlfit speed-up':>15s}")
        for solver, run in runs.items():
            per_iteration = run["seconds"] / max(run["iterations"], 1)
            difference = float(np.max(np.abs(np.array(run["params"]) - reference) / np.abs(reference)))
            speedup = run["seconds"] / ours["seconds"]
            solve = run.get("solve_seconds")  # nlfit only: the solver's own time, without preparation and post-processing
            solve_columns = f"{'-':>9s} {'-':>8s}"
            if solve is not None:
                solve_per_iteration = solve / max(run["iterations"], 1)
                solve_columns = f"{solve_per_iteration * 1e3:9.1f} {solve_per_iteration / ours['read_pass']:8.1f}"
            print(
                f"{solver:12s} {run['seconds']:8.3f} {run['iterations']:6d} {run['evaluations']:6d} {per_iteration * 1e3:8.1f} "
                f"{per_iteration / ours['read_pass']:8.1f} {solve_columns} {run['peak_rss_mb']:8.0f} {difference:19.2e} {speedup:14.1f}x"
            )
        if args.commands:
            commands(m, args.tol)
        if args.csv:
            from nlfit.cli.generate import csv_text
            from nlfit.io.read import read_dataset

            x, y = data(m)
            with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as handle:
                handle.write(csv_text({"x": x, "y": y}))
            import pandas as pd

            began = time.perf_counter()
            read_dataset(handle.name)
            ours_read = time.perf_counter() - began
            began = time.perf_counter()
            pd.read_csv(handle.name)
            pandas_read = time.perf_counter() - began
            size = os.path.getsize(handle.name) / 1e6
            print(f"CSV read ({size:.0f} MB): nlfit's reader {ours_read:.2f} s, pandas.read_csv {pandas_read:.2f} s")
            scipy_total = pandas_read + runs["lm"]["seconds"]
            for name in NLFIT_VARIANTS:
                total = ours_read + runs[name]["seconds"]
                print(
                    f"end to end (read + fit): {name} {total:.2f} s, scipy script (pandas + lm) {scipy_total:.2f} s: {scipy_total / total:.2f}x;"
                    f" fit only {runs['lm']['seconds'] / runs[name]['seconds']:.2f}x"
                )
            os.unlink(handle.name)


if __name__ == "__main__":
    main()
