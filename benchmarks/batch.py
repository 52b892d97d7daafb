"""Grouped fits: Parquet in, NDJSON out, against a scipy loop's compute, on 1 core and on all.

    python benchmarks/batch.py [--groups 10000 100000] [--problems rational gauss2d] [--scipy-groups ...] [--repeat N] [--runs N]

Problems (the same data for both, seed 0), written as long Parquet files (id, x..., y):

- rational: 1/(c0 + c1 x + c2 x^2), 100 points per group on [-1, 1], true parameters drawn
  per group, noise 0.01; every group starts from [1, 0, 10];
- gauss2d: Gpufit's benchmark problem, a exp(-((u-u0)^2 + (v-v0)^2)/(2 s^2)) + b on a 5 x 5
  pixel grid (25 points, 5 parameters), Poisson-like noise; each group starts from its true
  values times U(0.9, 1.1) (as Gpufit's benchmark does), given to both as per-group starts.

Each measurement runs in its own process, pinned with ``taskset -c 0`` for "1 core" and
unpinned for "all"; start-up and compiling are excluded: the process imports everything and
runs each size once before the timed runs (``--runs N``, default 1; the fastest of the N
counts, as ``timeit`` takes the least disturbed run, for nlfit and the scipy loop alike: a
marginal rate is the difference of two timings, so one slow run moves it by a third on this
kind of shared machine). Timed, for each size:

- nlfit: what ``nlfit fit FILE.parquet --group-by id -f json`` does after its imports:
  ``read_dataset`` of the Parquet file, ``GroupFits`` (LM, trust region, the defaults but
  ``--starts`` as given; default 1, the scipy loop's one start) and the NDJSON rows (with
  the short provenance, by the CLI's own ``block_rows``: a helper process formats the rows
  of the blocks it solves, as in the CLI), written to /dev/null. "solve" is the time inside the batched
  solve alone (``nlfit.fitting.solve_groups``), beside it; "helpers" where the run used
  helper processes (``nlfit.procs``: from 10^6 points on, with more than one core), whose
  solves this process does not see. Both sizes should then use them (e.g. ``--groups 50000
  100000`` for gauss2d's 25 points), or the margin mixes the two ways;
- scipy: the compute alone (no I/O, the groups already split into arrays):
  ``least_squares(method='lm', ftol=xtol=gtol=1e-12)`` with the analytic Jacobian, one call
  per group, pinned to core 0.

Reported: fits/s at each size, and the marginal rate between the two sizes (what one more
group costs: fixed costs removed), nlfit's over scipy's, and all cores' over 1 core's (with
``--repeat N``, N pairs of runs, 1 core then all, and the median and range of the ratio: on a
shared machine the speed drifts from one run to the next); the largest relative parameter
difference from scipy over the groups where both converged, and in how many of those groups
nlfit's loss exceeds scipy's by more than a relative 1e-12.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

TOL = 1e-12
LOSS_ROUNDING = 1e-12  # relative loss differences below this are rounding: the same minimum
GRID = np.arange(5.0)


def rational(groups: int, rng):
    x = np.linspace(-1.0, 1.0, 100)
    truth = np.column_stack([rng.uniform(0.5, 1.5, groups), rng.uniform(-0.3, 0.3, groups), rng.uniform(5, 15, groups)])
    y = 1.0 / (truth[:, :1] + truth[:, 1:2] * x + truth[:, 2:3] * x * x) + rng.normal(0, 0.01, (groups, x.size))
    columns = {"x": np.tile(x, groups)}
    return columns, y, np.tile([1.0, 0.0, 10.0], (groups, 1))


def gauss2d(groups: int, rng):
    u, v = (a.ravel() for a in np.meshgrid(GRID, GRID, indexing="ij"))
    ranges = [(80, 120), (1.5, 2.5), (1.5, 2.5), (0.8, 1.2), (8, 12)]
    truth = np.column_stack([rng.uniform(low, high, groups) for low, high in ranges])
    clean = truth[:, :1] * np.exp(-((u - truth[:, 1:2]) ** 2 + (v - truth[:, 2:3]) ** 2) / (2 * truth[:, 3:4] ** 2)) + truth[:, 4:5]
    y = clean + rng.normal(0, 1, clean.shape) * np.sqrt(clean)
    return {"u": np.tile(u, groups), "v": np.tile(v, groups)}, y, truth * rng.uniform(0.9, 1.1, truth.shape)


PROBLEMS = {
    "rational": (rational, "1/(c0 + c1*x + c2*x^2)", ["x"]),
    "gauss2d": (gauss2d, "a*exp(-((u-u0)^2 + (v-v0)^2)/(2*s^2)) + b", ["u", "v"]),
}


def scipy_functions(name: str):
    """residuals(c, x, y) and jacobian(c, x, y) of the problem, x as (points, k)."""
    if name == "rational":

        def residuals(c, x, y):
            return 1.0 / (c[0] + c[1] * x[:, 0] + c[2] * x[:, 0] ** 2) - y

        def jacobian(c, x, y):
            t = x[:, 0]
            f2 = (1.0 / (c[0] + c[1] * t + c[2] * t * t)) ** 2
            return np.column_stack([-f2, -f2 * t, -f2 * t * t])

        return residuals, jacobian

    def residuals(c, x, y):
        return c[0] * np.exp(-((x[:, 0] - c[1]) ** 2 + (x[:, 1] - c[2]) ** 2) / (2 * c[3] ** 2)) + c[4] - y

    def jacobian(c, x, y):
        u, v = x[:, 0], x[:, 1]
        e = np.exp(-((u - c[1]) ** 2 + (v - c[2]) ** 2) / (2 * c[3] ** 2))
        return np.column_stack(
            [
                e,
                c[0] * e * (u - c[1]) / c[3] ** 2,
                c[0] * e * (v - c[2]) / c[3] ** 2,
                c[0] * e * ((u - c[1]) ** 2 + (v - c[2]) ** 2) / c[3] ** 3,
                np.ones_like(u),
            ]
        )

    return residuals, jacobian


def write(folder: str, name: str, sizes: list[int]) -> list[tuple[str, str]]:
    """The problem's Parquet file and its per-group starts (.npy) at each size. The data are
    drawn once for the largest size and every size takes the first groups of it, so group g
    is the same at every size and results compare across sizes."""
    import pandas as pd

    build, _, x_names = PROBLEMS[name]
    columns, y, starts = build(max(sizes), np.random.default_rng(0))
    points = y.shape[1]
    files = []
    for groups in sizes:
        path = os.path.join(folder, f"{name}-{groups}.parquet")
        rows = groups * points
        frame = {"id": np.repeat(np.arange(groups), points), **{c: columns[c][:rows] for c in x_names}, "y": y[:groups].ravel()}
        pd.DataFrame(frame).to_parquet(path, index=False)
        np.save(path + ".starts.npy", starts[:groups])
        files.append((path, path + ".starts.npy"))
    return files


def run_nlfit(name: str, files: list[tuple[str, str]], starts_option: str, runs: int = 1) -> list[dict]:
    import nlfit.fitting
    from nlfit import procs, provenance
    from nlfit.batch import GroupFits, concatenate
    from nlfit.cli.fit import block_rows
    from nlfit.io.read import read_dataset
    from nlfit.options import FitOptions
    from nlfit.report.formats import Json

    _, formula, x_names = PROBLEMS[name]
    options = FitOptions(starts="auto" if starts_option == "auto" else int(starts_option))
    solving = [0.0]
    inner = nlfit.fitting.solve_groups

    def timed_solve(*args, **kwargs):
        began = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            solving[0] += time.perf_counter() - began

    nlfit.fitting.solve_groups = timed_solve
    started = [0]
    helpers_init = procs.Helpers.__init__

    def counted_helpers(self, *args, **kwargs):
        started[0] += 1
        helpers_init(self, *args, **kwargs)

    procs.Helpers.__init__ = counted_helpers
    out = []
    for path, starts_path in files:
        starts = np.load(starts_path)
        best = None
        for run in range(1 + runs):  # the first run compiles this size; the fastest timed run counts
            solving[0], started[0] = 0.0, 0
            began = time.perf_counter()
            data = read_dataset(path, x_columns=x_names, y_column="y", group_column="id")
            fits = GroupFits(data, formula, group_starts=starts, options=options)
            stamp = {"provenance": provenance.compact(provenance.build(data.inputs, {}, options))}
            parts, written = [], 0
            with open(os.devnull, "w") as sink:
                for block, (part, lines) in fits.blocks(functools.partial(block_rows, Json(), stamp)):  # as the CLI: helpers format their own rows
                    text = "".join(lines)
                    sink.write(text)
                    written += len(text)
                    parts.append((block, part))
            seconds = time.perf_counter() - began
            if run > 0 and (best is None or seconds < best[0]):
                best = (seconds, solving[0], started[0])
        seconds, solve_seconds, helpers = best
        order = np.argsort(np.concatenate([b for b, _ in parts]), kind="stable")
        result = concatenate([p for _, p in parts]).take(order)
        out.append(
            {
                "seconds": seconds,
                "solve": solve_seconds,
                "params": result.params.tolist(),
                "ok": result.success.tolist(),
                "loss": result.stats["loss"].tolist(),
                "bytes": written,
                "helpers": helpers > 0,
            }  # fmt: skip
        )
    return out


def run_scipy(name: str, files: list[tuple[str, str]], runs: int = 1) -> list[dict]:
    import pandas as pd
    from scipy.optimize import least_squares

    _, _, x_names = PROBLEMS[name]
    residuals, jacobian = scipy_functions(name)
    out = []
    for path, starts_path in files:
        starts = np.load(starts_path)
        frame = pd.read_parquet(path)
        groups = [(rows[x_names].to_numpy(), rows["y"].to_numpy()) for _, rows in frame.groupby("id", sort=False)]
        fastest = np.inf
        for _ in range(runs):  # the fastest run counts, as nlfit's
            params, ok, loss = [], [], []
            began = time.perf_counter()
            for g, (x, y) in enumerate(groups):
                fitted = least_squares(residuals, starts[g], jac=jacobian, args=(x, y), method="lm", ftol=TOL, xtol=TOL, gtol=TOL)
                params.append(fitted.x.tolist())
                ok.append(bool(fitted.status > 0))
                loss.append(float(fitted.cost))
            fastest = min(fastest, time.perf_counter() - began)
        out.append({"seconds": fastest, "params": params, "ok": ok, "loss": loss})
    return out


def measure(solver: str, name: str, files, starts: str, pin: bool, runs: int = 1) -> list[dict]:
    command = [sys.executable, __file__, "--child", solver, name, starts, str(runs), json.dumps(files)]
    if pin:
        command = ["taskset", "-c", "0", *command]
    env = dict(os.environ, NLFIT_WORKER="off")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{solver} {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def accuracy(ours: dict, theirs: dict) -> tuple[int, float, int]:
    """(groups where both converged, max relative parameter difference there, groups where
    nlfit's loss is above scipy's beyond rounding)."""
    count = min(len(ours["ok"]), len(theirs["ok"]))
    both = np.array(ours["ok"][:count]) & np.array(theirs["ok"][:count])
    p, q = np.array(ours["params"][:count])[both], np.array(theirs["params"][:count])[both]
    gap = float(np.max(np.abs(p - q) / np.maximum(np.abs(q), 1e-300))) if both.any() else float("nan")
    worse = int(np.sum(np.array(ours["loss"][:count])[both] > np.array(theirs["loss"][:count])[both] * (1 + LOSS_ROUNDING)))
    return int(both.sum()), gap, worse


def margin(sizes, seconds) -> float:
    return (sizes[-1] - sizes[0]) / (seconds[-1] - seconds[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--scipy-groups", type=int, nargs="+", default=None, help="the scipy loop's sizes (default: --groups)")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--starts", default="1", help="nlfit's --starts (1: one start, as the scipy loop; auto: nlfit's default)")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of 1-core and all-core runs, alternating (the ratio's median and range)")
    parser.add_argument("--runs", type=int, default=1, help="timed runs of each size in each process, after the compiling one: the fastest counts")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        solver, name, starts, runs, files = args.child
        files, runs = json.loads(files), int(runs)
        print(json.dumps(run_nlfit(name, files, starts, runs) if solver == "nlfit" else run_scipy(name, files, runs)))
        return
    scipy_sizes = args.scipy_groups or args.groups
    print(f"cores: {os.cpu_count()}   nlfit --starts {args.starts}, Parquet in, NDJSON out   scipy: least_squares lm, analytic J, tol {TOL:g}, compute only")
    head = f"{'problem':9s} {'cores':>5s} {'groups':>7s} {'nlfit fits/s':>13s} {'solve fits/s':>13s} {'scipy fits/s':>13s} {'ratio':>7s}"
    print(f"{head} {'both ok':>8s} {'max |dp|/|p|':>13s} {'loss worse':>10s}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.problems:
            sizes = sorted(set(args.groups) | set(scipy_sizes))
            files = write(folder, name, sizes)
            ours_files = [f for f, g in zip(files, sizes, strict=True) if g in args.groups]
            theirs_files = [f for f, g in zip(files, sizes, strict=True) if g in scipy_sizes]
            theirs = measure("scipy", name, theirs_files, args.starts, True, args.runs)
            scipy_rate = margin(scipy_sizes, [t["seconds"] for t in theirs]) if len(scipy_sizes) > 1 else scipy_sizes[0] / theirs[0]["seconds"]
            ratios = []
            for _ in range(args.repeat):  # the 1-core and all-core runs alternate: the machine's speed drifts between runs
                rates = {}
                for label, pin in (("1", True), ("all", False)):
                    ours = measure("nlfit", name, ours_files, args.starts, pin, args.runs)
                    for groups, a in zip(args.groups, ours, strict=True):
                        reference = theirs[scipy_sizes.index(groups)] if groups in scipy_sizes else theirs[-1]
                        both, gap, worse = accuracy(a, reference)
                        rate = groups / a["seconds"]
                        solved = "helpers" if a["helpers"] else f"{groups / a['solve']:.0f}"
                        print(f"{name:9s} {label:>5s} {groups:7d} {rate:13.0f} {solved:>13s} {'':13s} {'':7s} {both:8d} {gap:13.1e} {worse:10d}")
                    if len(args.groups) > 1:
                        rates[label] = margin(args.groups, [a["seconds"] for a in ours])
                        solve = "helpers" if any(a["helpers"] for a in ours) else f"{margin(args.groups, [a['solve'] for a in ours]):.0f}"
                        print(f"{name:9s} {label:>5s} {'margin':>7s} {rates[label]:13.0f} {solve:>13s} {scipy_rate:13.0f} {rates[label] / scipy_rate:6.1f}x")
                if len(rates) == 2:
                    ratios.append(rates["all"] / rates["1"])
                    print(f"{name:9s} all cores / 1 core (marginal fits/s): {ratios[-1]:.2f}x")
            if len(ratios) > 1:
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}x"
                print(f"{name:9s} all cores / 1 core over {len(ratios)} alternating pairs: median {np.median(ratios):.2f}x, {spread}")


if __name__ == "__main__":
    main()
