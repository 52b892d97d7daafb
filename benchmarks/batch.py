"""Grouped fits from a CSV file: nlfit against a loop of scipy fits, on 1 core and on all.

    python benchmarks/batch.py [--groups 2000 20000] [--problems rational gauss2d] [--starts 1]

Problems (the same data for both, seed 0), written as long CSV files (id, x..., y):

- rational: 1/(c0 + c1 x + c2 x^2), 100 points per group on [-1, 1], true parameters drawn
  per group, noise 0.01; every group starts from [1, 0, 10];
- gauss2d: Gpufit's benchmark problem, a exp(-((u-u0)^2 + (v-v0)^2)/(2 s^2)) + b on a 5 x 5
  pixel grid (25 points, 5 parameters), Poisson-like noise; each group starts from its true
  values times U(0.9, 1.1) (as Gpufit's benchmark does), given to both as per-group starts.

Each measurement runs in its own process, pinned with ``taskset -c 0`` for "1 core" and
unpinned for "all cores"; start-up is excluded: the process imports everything and runs
each size once before the timed run (nlfit compiles there). Timed, for each size:

- nlfit: ``read_dataset`` of the CSV, ``fit_groups`` (LM, trust region, the defaults but
  ``--starts`` as given; default 1, the scipy loop's one start) and the NDJSON rows, what
  ``nlfit fit FILE --group-by id -f json`` does after its imports;
- scipy: ``pandas.read_csv`` of the same file, a groupby, and
  ``least_squares(method='lm', ftol=xtol=gtol=1e-12)`` with the analytic Jacobian per group.

Reported: fits/s of each at each size, the ratio, the marginal rate between the two sizes
(what one more group costs, fixed costs removed), and the largest relative parameter
difference from scipy over groups where both converged, and in how many of those groups
nlfit's loss exceeds scipy's by more than a relative 1e-12 (where parameters differ but the
losses agree to rounding, the problem is flat there and both answers are the minimum).
"""

from __future__ import annotations

import argparse
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


def write(folder: str, name: str, groups: int) -> tuple[str, str]:
    """The problem's CSV file and its per-group starts (.npy)."""
    build, _, x_names = PROBLEMS[name]
    columns, y, starts = build(groups, np.random.default_rng(0))
    path = os.path.join(folder, f"{name}-{groups}.csv")
    ids = np.repeat(np.arange(groups), y.shape[1])
    table = np.column_stack([ids, *[columns[c] for c in x_names], y.ravel()])
    np.savetxt(path, table, delimiter=",", header=",".join(["id", *x_names, "y"]), comments="", fmt=["%d"] + ["%.17g"] * (len(x_names) + 1))
    np.save(path + ".starts.npy", starts)
    return path, path + ".starts.npy"


def run_nlfit(name: str, files: list[tuple[str, str]], starts_option: str) -> list[dict]:
    from nlfit.batch import fit_groups
    from nlfit.io.read import read_dataset
    from nlfit.report.formats import Json

    _, formula, x_names = PROBLEMS[name]
    count = "auto" if starts_option == "auto" else int(starts_option)
    out = []
    for path, starts_path in files:
        starts = np.load(starts_path)
        timed = None
        for _ in range(2):  # the first run compiles this size
            began = time.perf_counter()
            data = read_dataset(path, x_columns=x_names, y_column="y", group_column="id")
            result = fit_groups(data, formula, group_starts=starts, starts=count)
            text = Json().groups(result.rows(), result.param_names)
            timed = time.perf_counter() - began
        out.append(
            {
                "seconds": timed,
                "params": result.params.tolist(),
                "ok": [r.status.success for r in result.results],
                "loss": [r.loss for r in result.results],
                "bytes": len(text),
            }
        )
    return out


def run_scipy(name: str, files: list[tuple[str, str]]) -> list[dict]:
    import pandas as pd
    from scipy.optimize import least_squares

    _, _, x_names = PROBLEMS[name]
    residuals, jacobian = scipy_functions(name)
    out = []
    for path, starts_path in files:
        starts = np.load(starts_path)
        timed = None
        for _ in range(2):
            began = time.perf_counter()
            frame = pd.read_csv(path)
            params, ok, loss = [], [], []
            for g, (_, rows) in enumerate(frame.groupby("id", sort=False)):
                x, y = rows[x_names].to_numpy(), rows["y"].to_numpy()
                fitted = least_squares(residuals, starts[g], jac=jacobian, args=(x, y), method="lm", ftol=TOL, xtol=TOL, gtol=TOL)
                params.append(fitted.x.tolist())
                ok.append(bool(fitted.status > 0))
                loss.append(float(fitted.cost))
            timed = time.perf_counter() - began
        out.append({"seconds": timed, "params": params, "ok": ok, "loss": loss})
    return out


def measure(solver: str, name: str, files, starts: str, pin: bool) -> list[dict]:
    command = [sys.executable, __file__, "--child", solver, name, starts, json.dumps(files)]
    if pin:
        command = ["taskset", "-c", "0", *command]
    env = dict(os.environ, NLFIT_WORKER="off")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{solver} {name} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--starts", default="1", help="nlfit's --starts (1: one start, as the scipy loop; auto: nlfit's default)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        solver, name, starts, files = args.child
        files = json.loads(files)
        print(json.dumps(run_nlfit(name, files, starts) if solver == "nlfit" else run_scipy(name, files)))
        return
    print(f"cores: {os.cpu_count()}   nlfit --starts {args.starts}   scipy: least_squares lm, analytic J, tol {TOL:g}   (seconds include the CSV read)")
    head = f"{'problem':9s} {'cores':>5s} {'groups':>7s} {'nlfit fits/s':>13s} {'scipy fits/s':>13s} {'ratio':>7s} {'both ok':>8s}"
    print(f"{head} {'max |dp|/|p|':>13s} {'nlfit loss worse by > 1e-12':>28s}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.problems:
            files = [write(folder, name, groups) for groups in args.groups]
            for label, pin in (("1", True), ("all", False)):
                ours, theirs = measure("nlfit", name, files, args.starts, pin), measure("scipy", name, files, args.starts, pin)
                for groups, a, b in zip(args.groups, ours, theirs, strict=True):
                    both = np.array(a["ok"]) & np.array(b["ok"])
                    p, q = np.array(a["params"])[both], np.array(b["params"])[both]
                    gap = float(np.max(np.abs(p - q) / np.maximum(np.abs(q), 1e-300))) if both.any() else float("nan")
                    rate, scipy_rate = groups / a["seconds"], groups / b["seconds"]
                    ours_loss, their_loss = np.array(a["loss"])[both], np.array(b["loss"])[both]
                    worse = int(np.sum(ours_loss > their_loss * (1 + LOSS_ROUNDING)))
                    print(
                        f"{name:9s} {label:>5s} {groups:7d} {rate:13.0f} {scipy_rate:13.0f} {rate / scipy_rate:6.1f}x {int(both.sum()):8d} {gap:13.1e}"
                        f" {worse:>28d}"
                    )
                if len(args.groups) > 1:
                    extra = args.groups[-1] - args.groups[0]
                    margin = extra / (ours[-1]["seconds"] - ours[0]["seconds"])
                    scipy_margin = extra / (theirs[-1]["seconds"] - theirs[0]["seconds"])
                    print(f"{name:9s} {label:>5s} {'margin':>7s} {margin:13.0f} {scipy_margin:13.0f} {margin / scipy_margin:6.1f}x")


if __name__ == "__main__":
    main()
