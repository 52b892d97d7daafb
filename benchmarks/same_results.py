"""Do two versions of nlfit give the same grouped fits? Parameters (norm-wise relative
difference per group) and statuses of four batches: rational, 2D Gaussian, a robust loss
(soft_l1, with outliers) and a bounded fit.

    PYTHONPATH=/path/to/old/tree python benchmarks/same_results.py --save old.npz
    python benchmarks/same_results.py --save new.npz
    python benchmarks/same_results.py --compare old.npz new.npz

Only ``nlfit.batch.fit_groups`` is used, which every version has.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

GROUPS = 2000


def batches():
    from batch import gauss2d, rational

    from nlfit.io.dataset import Dataset

    rng = np.random.default_rng(1)
    columns, y, starts = rational(GROUPS, rng)
    keys = np.repeat(np.arange(GROUPS).astype(str).astype(object), y.shape[1])
    rational_data = Dataset(x=columns["x"], y=y.ravel(), x_names=("x",), y_name="y", groups=keys)
    yield "rational", rational_data, "1/(c0 + c1*x + c2*x^2)", {"group_starts": starts, "starts": 1}
    columns, y, starts = gauss2d(GROUPS, rng)
    keys = np.repeat(np.arange(GROUPS).astype(str).astype(object), y.shape[1])
    data = Dataset(x=np.column_stack([columns["u"], columns["v"]]), y=y.ravel(), x_names=("u", "v"), y_name="y", groups=keys)
    yield "gauss2d", data, "a*exp(-((u-u0)^2 + (v-v0)^2)/(2*s^2)) + b", {"group_starts": starts, "starts": 1}
    noisy = np.array(rational_data.y)
    noisy[rng.random(noisy.size) < 0.05] += 3.0  # outliers
    robust = Dataset(x=rational_data.x, y=noisy, x_names=("x",), y_name="y", groups=rational_data.groups)
    yield "soft_l1", robust, "1/(c0 + c1*x + c2*x^2)", {"p0": [1.0, 0.0, 10.0], "loss": "soft_l1", "starts": 1}
    yield "bounded", rational_data, "1/(c0 + c1*x + c2*x^2)", {"p0": [1.0, 0.0, 10.0], "bounds": {"c0": (0.9, 2.0), "c2": (0.0, 12.0)}, "starts": 1}


def save(path: str) -> None:
    from nlfit.batch import fit_groups

    out = {}
    for name, data, formula, options in batches():
        result = fit_groups(data, formula, **options)
        out[f"{name}_params"] = np.asarray(result.params)
        out[f"{name}_status"] = np.asarray(result.statuses)
    np.savez(path, **out)


def compare(old: str, new: str) -> None:
    a, b = np.load(old), np.load(new)
    for name in ("rational", "gauss2d", "soft_l1", "bounded"):
        p, q = a[f"{name}_params"], b[f"{name}_params"]
        gap = np.linalg.norm(p - q, axis=1) / np.maximum(np.linalg.norm(p, axis=1), 1e-300)
        same = a[f"{name}_status"] == b[f"{name}_status"]
        print(f"{name:9s} groups {len(p):6d}   max norm-wise relative difference {np.max(gap):.2e}   statuses equal {int(same.sum())}/{len(same)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save")
    parser.add_argument("--compare", nargs=2)
    args = parser.parse_args()
    save(args.save) if args.save else compare(*args.compare)
