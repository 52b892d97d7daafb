"""nlfit's CSV reader against pyarrow's own multithreaded ``read_csv`` of the same file.

    python benchmarks/read.py [--rows 10000000] [--repeat 7]

A file of x, y (the numbers of ``benchmarks/bigdata.py``, written with 17 significant
digits) is read alternately, in one process, after one read of each:

- ``pyarrow``: ``pyarrow.csv.read_csv(path)``, every column as pyarrow infers it;
- ``nlfit``: ``nlfit.io.read.read_dataset(path)``, as ``nlfit fit`` reads it: the columns
  checked and picked, the sha256 of the provenance taken, the dataset made; a large plain
  file is parsed from the file itself (``_read_direct``);
- ``nlfit, bytes first``: the same with the direct read turned off (the whole file read into
  memory, then parsed from there: the reader before the direct read).

Medians. Then the peak RSS of each nlfit way, each in a fresh process (its VmHWM, Linux).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = """
import sys
from nlfit.io import read
if sys.argv[2] == "bytes":
    read.DIRECT_BYTES = 1 << 62
read.read_dataset(sys.argv[1])
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def write(path: str, rows: int) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    x = np.linspace(-1.0, 1.0, rows)
    pd.DataFrame({"x": x, "y": 1.0 / (1.0 + 10.0 * x * x) + rng.normal(0.0, 0.5, rows)}).to_csv(path, index=False, float_format="%.17g")


def peak(path: str, way: str) -> float:
    """The peak RSS (MB) of a fresh process reading ``path``: its own VmHWM (Linux), which,
    unlike the rusage of a child, does not count the pages it shared with this process
    before it started its program."""
    done = subprocess.run([sys.executable, "-c", CHILD, path, way], env=dict(os.environ, NLFIT_WORKER="off"), capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    import pyarrow.csv as arrow_csv

    from nlfit.io import read

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "data.csv")
        write(path, args.rows)
        ways = {
            "pyarrow": lambda: arrow_csv.read_csv(path),
            "nlfit": lambda: read.read_dataset(path),
            "nlfit, bytes first": lambda: read.read_dataset(path),
        }
        direct = read.DIRECT_BYTES
        times = {name: [] for name in ways}
        for round_ in range(args.repeat + 1):
            for name, work in ways.items():
                read.DIRECT_BYTES = 1 << 62 if name == "nlfit, bytes first" else direct
                began = time.perf_counter()
                work()
                if round_:  # the first round warms the page cache and the imports
                    times[name].append(time.perf_counter() - began)
        read.DIRECT_BYTES = direct
        medians = {name: statistics.median(values) for name, values in times.items()}
        size = os.path.getsize(path) / 1e6
        print(f"{args.rows:,} rows, {size:.0f} MB; medians of {args.repeat}")
        for name, seconds in medians.items():
            print(f"  {name:20s} {seconds:.3f} s  ({', '.join(f'{t:.2f}' for t in times[name])})  {seconds / medians['pyarrow']:.2f}x pyarrow")
        print(f"peak RSS, fresh processes: nlfit {peak(path, 'direct'):.0f} MB, bytes first {peak(path, 'bytes'):.0f} MB")


if __name__ == "__main__":
    main()
