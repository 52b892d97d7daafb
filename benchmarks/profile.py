"""The cost of --intervals profile: whole commands, the same fit with and without it.

MASS's wtloss example (3 parameters, 52 points, tests/data/r/profile/wtloss.csv), each
command in a fresh process (NLFIT_WORKER=off), the two alternated, after one warm-up run of
each (the persistent compilation cache then holds both programs); medians of --repeat runs.

    python benchmarks/profile.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "r" / "profile" / "wtloss.csv"
FIT = [sys.executable, "-m", "nlfit", "fit", str(DATA), "-m", "b0 + b1*2^(-Days/th)", "--y", "Weight", "--p0", "b0=90,b1=95,th=120", "-f", "json", "-qq"]


def seconds(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "NLFIT_WORKER": "off"})
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    plain, profiled = FIT, [*FIT, "--intervals", "profile"]
    seconds(plain), seconds(profiled)  # warm-up: compiles into the persistent cache
    times = {"wald": [], "profile": []}
    for _ in range(args.repeat):
        times["wald"].append(seconds(plain))
        times["profile"].append(seconds(profiled))
    wald, profile = statistics.median(times["wald"]), statistics.median(times["profile"])
    print(f"fit (wald intervals)   {wald:6.2f} s   runs: {', '.join(f'{t:.2f}' for t in times['wald'])}")
    print(f"fit --intervals profile {profile:6.2f} s   runs: {', '.join(f'{t:.2f}' for t in times['profile'])}")
    print(f"profile / fit: {profile / wald:.2f}x (whole commands)")


if __name__ == "__main__":
    main()
