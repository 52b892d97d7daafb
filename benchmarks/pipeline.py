"""Grouped fits with and without the helper threads of ``GroupFits.blocks`` (each block's
post-processing and rows beside the next block's solve), in one process, alternating.

    python benchmarks/pipeline.py [--groups 20000] [--problems rational gauss2d] [--repeat 4]

The work is ``benchmarks/batch.py``'s (Parquet in, NDJSON rows to /dev/null, --starts 1). "in
turn" runs every stage in the main thread (``nlfit.cores.usable`` set to 1 for the threads
alone: the solve still spreads over every device), "threads" as nlfit runs by default. Runs
alternate, after one that compiles; the medians are reported with their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=20_000)
    parser.add_argument("--problems", nargs="+", default=["rational", "gauss2d"])
    parser.add_argument("--repeat", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("NLFIT_WORKER", "off")
    import batch

    from nlfit import cores

    usable = cores.usable
    print(f"cores: {usable()}  groups: {args.groups}  runs: {args.repeat} each, alternating")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.problems:
            files = batch.write(folder, name, [args.groups])
            batch.run_nlfit(name, files, "1")  # compiles
            seconds = {"in turn": [], "threads": []}
            for _ in range(args.repeat):
                for label in seconds:
                    cores.usable = (lambda: 1) if label == "in turn" else usable
                    seconds[label].append(batch.run_nlfit(name, files, "1")[0]["seconds"])
            cores.usable = usable
            turn, threads = statistics.median(seconds["in turn"]), statistics.median(seconds["threads"])
            print(f"{name:9s} in turn {turn:6.3f} s   threads {threads:6.3f} s   {turn / threads:.2f}x   ({args.groups / threads:.0f} fits/s)")


if __name__ == "__main__":
    main()
