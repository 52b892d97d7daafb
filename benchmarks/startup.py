"""One small fit end to end, as a shell user runs it: whole processes, nlfit against a scipy
script, in the same run; and a loop over many small files.

    python benchmarks/startup.py [--runs 10] [--loop 1000]

The fit: ``nlfit fit FILE --model rational --quiet --format json`` (the default method and
starts) on 200 points of the Runge function with noise (``nlfit generate runge --seed 0``).
The scipy script reads the same CSV with pandas and calls scipy.optimize.least_squares
(method 'lm', analytic Jacobian), then prints the parameters. Medians of RUNS processes:

- the scipy script;
- nlfit cold: no worker, an empty compilation cache (a new one for every run);
- nlfit with no worker and a warm compilation cache;
- nlfit with a warm worker (``nlfit.worker``, started beforehand, the file fitted once);
- the worker on a file of a length it has not seen (each run a new length; the lengths
  share one shape bucket, so nothing is compiled);
- the warm worker with ``--starts 1`` (the default tries several starts: see "Trustworthy
  answers" in the README), which shows what the fit's own computation costs;
- ``nlfit --help``, without and with the worker.

``--before DIR``: also time a source tree of an earlier nlfit (a ``git worktree`` of an older
commit) in the same run, cold and with a warm cache, to compare the paths without a worker.

``--formulas R``: formulas nlfit has not seen, through the warm worker: six shapes, each
with a random constant written into its text (so every text is new), R runs each, fitted with
the defaults; against a pandas + ``scipy.optimize.curve_fit`` script that fits the same
formula (written as numpy code, p0 = 1 as curve_fit's default). The first formula of each
parameter bucket (``nlfit.models.padded``: two to four parameters are one) is shown apart:
on an empty compilation cache it compiles the tape program of that bucket once
(``nlfit.models.tape``), which later formulas share. ``--formulas 0``
skips it.

``--loop N``: N files of N different lengths (50 to 50 + N - 1 points), fitted one after
the other by a shell loop (``for f in *.csv; do nlfit fit "$f" ...; done``), the worker on,
against the same loop with the scipy script. ``--loop 0`` skips it.

The worker and the caches live in a temporary folder; the worker is stopped at the end.
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

import numpy as np
from scipy_script import SCRIPT

from nlfit.models.padded import padded_count

# Runs nlfit from another source tree, whatever nlfit this interpreter has installed.
BEFORE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, {source!r})
sys.argv[0] = "nlfit"
from nlfit.cli.main import main
main()
"""


def runge_file(path: Path, points: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 1.0, points)
    y = 1.0 / (1.0 + 10.0 * x * x) + rng.normal(0.0, 0.5, points)
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist(), strict=True)))


def timed(command: list[str], env: dict) -> float:
    began = time.perf_counter()
    done = subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - began
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--loop", type=int, default=1000, help="files for the loop; 0 skips it")
    parser.add_argument("--formulas", type=int, default=5, help="runs of each new-formula shape; 0 skips them")
    parser.add_argument("--before", default=None, help="source tree of an earlier nlfit to time beside this one (no worker)")
    args = parser.parse_args()
    entry = shutil.which("nlfit") or str(Path(sys.executable).parent / "nlfit")
    work = Path(tempfile.mkdtemp(prefix="nlb", dir="/tmp"))  # short: the worker's socket lives here
    folder = work / "w"
    folder.mkdir(mode=0o700)
    # As on a user's machine, Python keeps its bytecode caches (pip writes them at install):
    # with PYTHONDONTWRITEBYTECODE (set on some development machines) every process would
    # compile nlfit's 60 modules from source again, 0.14 s, and the editable install's too.
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base = {**inherited, "NLFIT_WORKER_DIR": str(folder), "NLFIT_CACHE_DIR": str(work / "cache")}
    off = {**base, "NLFIT_WORKER": "off"}
    on = {**base, "NLFIT_WORKER": "on"}
    data = work / "runge200.csv"
    runge_file(data, 200, 0)
    script = work / "scipy_fit.py"
    script.write_text(SCRIPT)

    def fit(path):
        return [entry, "fit", str(path), "--model", "rational", "--quiet", "--format", "json"]

    rows = []
    try:
        scipy = statistics.median(timed([sys.executable, str(script), str(data)], off) for _ in range(args.runs))
        rows.append(("scipy script (pandas + least_squares lm, analytic J)", scipy))
        colds = []
        for run in range(args.runs):
            colds.append(timed(fit(data), {**off, "NLFIT_CACHE_DIR": str(work / f"cold{run}")}))
        rows.append(("nlfit cold: no worker, empty compilation cache", statistics.median(colds)))
        timed(fit(data), off)  # fills the cache
        rows.append(("nlfit, no worker, warm compilation cache", statistics.median(timed(fit(data), off) for _ in range(args.runs))))
        subprocess.run([entry, "worker", "start"], env=on, check=True, stdout=subprocess.DEVNULL)
        timed(fit(data), on)  # the worker traces and compiles this shape once
        rows.append(("nlfit, warm worker", statistics.median(timed(fit(data), on) for _ in range(args.runs))))
        news = []
        for run in range(args.runs):
            other = work / f"runge{201 + run}.csv"  # 201..210 points: new lengths, all padded to 240 rows
            runge_file(other, 201 + run, run + 1)
            news.append(timed(fit(other), on))
        rows.append(("nlfit, warm worker, a file of a new length", statistics.median(news)))
        one = [*fit(data), "--starts", "1"]
        timed(one, on)
        rows.append(("nlfit, warm worker, --starts 1 (one start)", statistics.median(timed(one, on) for _ in range(args.runs))))
        if args.before:
            before = [sys.executable, "-c", BEFORE.format(source=str(Path(args.before).resolve()))]
            olds = [timed([*before, *fit(data)[1:]], {**off, "NLFIT_CACHE_DIR": str(work / f"old-cold{run}")}) for run in range(args.runs)]
            rows.append((f"before ({Path(args.before).name}): cold, empty cache", statistics.median(olds)))
            timed([*before, *fit(data)[1:]], {**off, "NLFIT_CACHE_DIR": str(work / "old-cache")})
            warm = [timed([*before, *fit(data)[1:]], {**off, "NLFIT_CACHE_DIR": str(work / "old-cache")}) for _ in range(args.runs)]
            rows.append((f"before ({Path(args.before).name}): warm cache", statistics.median(warm)))
            rows.append((f"before ({Path(args.before).name}): --help", statistics.median(timed([*before, "--help"], off) for _ in range(args.runs))))
        if args.formulas:
            rows += new_formulas(args.formulas, work, entry, on, off)
        rows.append(("nlfit --help, no worker", statistics.median(timed([entry, "--help"], off) for _ in range(args.runs))))
        rows.append(("nlfit --help, worker", statistics.median(timed([entry, "--help"], on) for _ in range(args.runs))))
        print(f"cores: {os.cpu_count()}   medians of {args.runs} whole processes   fit: nlfit fit FILE --model rational -q -f json (200 points)")
        print(f"{'':55s} {'seconds':>8s} {'/ scipy':>8s}")
        for name, seconds in rows:
            if name.startswith("  "):  # a ratio, not a time
                print(f"{name:55s} {'':8s} {seconds:8.2f}")
            else:
                print(f"{name:55s} {seconds:8.3f} {seconds / scipy:8.2f}")
        if args.loop:
            loop(args.loop, work, entry, script, on, off)
    finally:
        subprocess.run([entry, "worker", "stop"], env=on, check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)


# (nlfit formula with {k} for the random constant, numpy body of the scipy script, parameters,
# the true parameters): the data are the formula at the truth plus noise 0.01.
SHAPES = [
    ("a*exp(-b*x) + {k}", "a*np.exp(-b*x) + {k}", "a,b", [2.0, 0.8]),
    ("a*x/(b + x) + {k}*x", "a*x/(b + x) + {k}*x", "a,b", [1.5, 0.7]),
    ("a/(1 + exp(-(x - m)/s)) + {k}", "a/(1 + np.exp(-(x - m)/s)) + {k}", "a,m,s", [2.0, 2.5, 0.6]),
    ("a*sin(w*x + {k}) + c", "a*np.sin(w*x + {k}) + c", "a,w,c", [1.2, 1.3, 0.4]),
    ("a*exp(-(x - m)^2/(2*s^2)) + {k}", "a*np.exp(-(x - m)**2/(2*s**2)) + {k}", "a,m,s", [3.0, 2.4, 0.7]),
    ("a*(1 - exp(-b*(x - {k})))", "a*(1 - np.exp(-b*(x - {k})))", "a,b", [2.5, 0.9]),
]

CURVE_FIT_SCRIPT = """
import sys
import numpy as np
import pandas as pd
from scipy.optimize import curve_fit
frame = pd.read_csv(sys.argv[1])
def model(x, {names}):
    return {body}
params, covariance = curve_fit(model, frame["x"].to_numpy(), frame["y"].to_numpy(), p0=np.ones({count}), maxfev=10000)
print(params, np.sqrt(np.diag(covariance)))
"""


def new_formulas(runs: int, work: Path, entry: str, on: dict, off: dict) -> list:
    """Rows: each run a new text of each shape, through the warm worker, and the curve_fit script."""
    rng = np.random.default_rng(7)
    x = np.linspace(0.1, 5.0, 100)
    firsts, later, scripts = [], [], []
    seen_buckets = set()
    for run in range(runs):
        for index, (formula, body, names, truth) in enumerate(SHAPES):
            k = round(float(rng.uniform(0.1, 0.9)), 6)
            text, code = formula.format(k=k), body.format(k=k)
            values = dict(zip(names.split(","), truth, strict=True))
            with np.errstate(all="ignore"):
                y = eval(code, {"np": np, "x": x, **values}) + rng.normal(0.0, 0.01, x.size)  # the benchmark's own text
            path = work / f"formula{run}_{index}.csv"
            path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist(), strict=True)))
            script = work / f"formula{run}_{index}.py"
            script.write_text(CURVE_FIT_SCRIPT.format(names=", ".join(names.split(",")), body=code, count=len(truth)))
            seconds = timed([entry, "fit", str(path), "--model", text, "--quiet", "--format", "json"], on)
            bucket = padded_count(len(truth))  # formulas of one parameter bucket share a program (nlfit.models.padded)
            (later if bucket in seen_buckets else firsts).append(seconds)
            seen_buckets.add(bucket)
            scripts.append(timed([sys.executable, str(script), str(path)], off))
    nlfit_new, scipy_new = statistics.median(later), statistics.median(scripts)
    return [
        ("nlfit, warm worker, first formula of a parameter bucket", statistics.median(firsts)),
        (f"nlfit, warm worker, a new formula (median of {len(later)})", nlfit_new),
        (f"curve_fit script on the same formulas (median of {len(scripts)})", scipy_new),
        ("  new formula: nlfit / curve_fit script", nlfit_new / scipy_new),
    ]


def loop(count: int, work: Path, entry: str, script: Path, on: dict, off: dict) -> None:
    files = work / "many"
    files.mkdir()
    for i in range(count):
        runge_file(files / f"f{i:05d}.csv", 50 + i, 1000 + i)
    nlfit_loop = f'for f in {files}/*.csv; do "{entry}" fit "$f" --model rational --quiet --format json > /dev/null; done'
    scipy_loop = f'for f in {files}/*.csv; do "{sys.executable}" "{script}" "$f" > /dev/null; done'
    results = {}
    for name, command, env in (("nlfit (worker on)", nlfit_loop, on), ("scipy script", scipy_loop, off)):
        began = time.perf_counter()
        subprocess.run(["bash", "-c", command], env=env, check=True, stderr=subprocess.DEVNULL)
        results[name] = time.perf_counter() - began
    print(f"\nloop over {count} files of {count} different lengths (50 to {50 + count - 1} points), one process per file:")
    for name, seconds in results.items():
        print(f"  {name:20s} {seconds:8.1f} s   {seconds / count * 1000:7.1f} ms per file")
    print(f"  nlfit / scipy: {results['nlfit (worker on)'] / results['scipy script']:.3f}")


if __name__ == "__main__":
    main()
