"""How far ``nlfit fit --engine dask`` scales on one machine, and what the client holds.

Writes about ``--size-gb`` of grouped data as part files (Parquet, uncompressed so that the
size on disk is the size of the numbers; or ``--format csv``): the rational model
1/(c0 + c1 x + c2 x^2) with ``--points`` (100) points per group and noise 0.01, x in
[-1, 1], each group's coefficients drawn at random (denominator > 0 on [-1, 1]). Then it
starts a LocalCluster of ``--workers`` (2) single-threaded worker processes, as ``--engine
dask`` starts one without ``--scheduler`` (``nlfit.dask_engine.local_cluster``), and runs the
CLI as a subprocess against it:

    nlfit fit --engine dask --scheduler ADDR 'DIR/*.parquet' --glob --group-by id -m rational -f json -q

(rows to /dev/null, or to part files with ``--output-dir``), and unless ``--skip-local``,
the same fit with ``--engine local`` (which reads everything into one process). The dask
command runs twice on the same cluster: the first on new workers (each imports JAX and loads
the stored programs), the second on workers that have done so, as every command after the
first on a long-lived ``--scheduler`` cluster. It reports
the data size, the client's peak RSS (``os.wait4``: the subprocess and nothing else; goal:
under 10 % of the data), the workers' peak RSS (``getrusage`` in each worker), and the wall
times. With ``--own-cluster``, also the command a user on one machine types, without
``--scheduler``: nlfit starts its own cluster, and its start and stop are in the time.
With ``--repeat N`` the warm dask command, the local one (and the own-cluster one) run N
times, alternating, and the ratios are of their medians. Run by hand:

    python benchmarks/dask_scale.py --size-gb 0.05
    python benchmarks/dask_scale.py --size-gb 0.24 --files 20 --repeat 3 --own-cluster
    python benchmarks/dask_scale.py --size-gb 2 --skip-local
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bigdata import LAUNCH

os.environ["NLFIT_WORKER"] = "off"  # the commands measured are their own processes, not a resident worker's clients

COLUMNS = 3  # id, x, y: 8 bytes each in uncompressed Parquet
FILE_BYTES = 64 * 2**20  # about this much per part file


def generate(folder: Path, size_gb: float, points: int, kind: str, seed: int = 0, files: int | None = None) -> tuple[int, int, int]:
    """Part files in ``folder`` (about FILE_BYTES each, or ``files`` of them); returns (groups, rows, bytes on disk)."""
    import pyarrow as pa

    target = size_gb * 1e9
    bytes_per_row = 8 * COLUMNS if kind == "parquet" else 44  # CSV: 'id,x,y' with full-precision numbers
    rows_total = int(target / bytes_per_row)
    groups = max(1, rows_total // points)
    per_file = max(1, int(FILE_BYTES / bytes_per_row / points)) if files is None else max(1, -(-groups // files))  # groups per file
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 1.0, points)
    written = 0
    for index, first in enumerate(range(0, groups, per_file)):
        count = min(per_file, groups - first)
        c0 = rng.uniform(1.0, 2.0, count)
        c1 = rng.uniform(-0.5, 0.5, count)
        c2 = rng.uniform(0.5, 2.0, count)
        y = 1.0 / (c0[:, None] + c1[:, None] * x + c2[:, None] * x * x) + rng.normal(0.0, 0.01, (count, points))
        table = pa.table({"id": np.repeat(np.arange(first, first + count, dtype=np.int64), points), "x": np.tile(x, count), "y": y.ravel()})
        path = folder / f"part-{index:05d}.{kind}"
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, path, compression="none", use_dictionary=False)
        else:
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, path, pcsv.WriteOptions(quoting_style="none"))
        written += path.stat().st_size
    return groups, groups * points, written


# The environment the commands run in, as a user's shell gives it: taken before the cluster
# starts, since Dask's nannies write their workers' settings (such as MALLOC_TRIM_THRESHOLD_)
# into this process's environment before they spawn them, where every later child would
# inherit them (the local engine ran 1.5x slower under Dask's malloc settings)
CLEAN = dict(os.environ)


def run(command: list[str], stdout) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in bytes, exit code) of ``command``, measured by os.wait4 in a
    small launcher process (``bigdata.LAUNCH``): forked straight from this process, which
    hosts the cluster's scheduler, the command's peak would count this process's own pages
    (276 MB for the client at 2 GB, of which the command's own were 153 MB)."""
    with tempfile.NamedTemporaryFile("r") as rss:
        began = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", LAUNCH, rss.name, *command], stdout=stdout, stderr=subprocess.PIPE, env=CLEAN)
        error = process.stderr.read().decode(errors="replace")
        process.wait()
        wall = time.perf_counter() - began
        peak = int(rss.read() or 0) * 1024
    if process.returncode not in (0, 1):
        sys.stderr.write(error)
        raise SystemExit(f"{' '.join(command)} ended with exit code {process.returncode}")
    return wall, peak, process.returncode


def worker_peaks(client) -> list[int]:
    def peak() -> int:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    return sorted(client.run(peak).values())


def median(runs) -> float:
    return float(np.median([r[0] for r in runs]))


def times(runs) -> str:
    walls = [r[0] for r in runs]
    return f"{median(runs):8.1f} s median of {len(walls)} ({', '.join(f'{w:.1f}' for w in walls)} s)"


def codes(runs) -> str:
    return "/".join(str(r[2]) for r in runs)


def pairs(ours, local) -> str:
    return ", ".join(f"{a[0] / b[0]:.2f}" for a, b in zip(ours, local, strict=True))


def mb(value: float) -> str:
    return f"{value / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="data to write, in GB (default 2)")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--points", type=int, default=100, help="points per group (default 100)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--files", type=int, help="write the data as this many part files (default: about 64 MB each)")
    parser.add_argument("--dir", help="write the data here (kept); default: a temporary folder, removed at the end")
    parser.add_argument("--output-dir", action="store_true", help="results as part files (-o DIR/) instead of stdout to /dev/null")
    parser.add_argument("--skip-local", action="store_true", help="do not run --engine local (all the data in one process)")
    parser.add_argument("--repeat", type=int, default=1, help="run the warm dask, local (and own-cluster) commands this many times, alternating (default 1)")
    parser.add_argument("--own-cluster", action="store_true", help="also time --engine dask without --scheduler (nlfit starts and stops its own cluster)")
    args = parser.parse_args()

    from distributed import Client

    from nlfit.dask_engine import local_cluster

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="nlfit-dask-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        began = time.perf_counter()
        groups, rows, size = generate(folder, args.size_gb, args.points, args.format, files=args.files)
        files = len(list(folder.glob(f"part-*.{args.format}")))
        print(f"data: {size / 1e9:.2f} GB on disk ({args.format}, {files} files), {rows:,} rows, {groups:,} groups of {args.points} points")
        print(f"  written in {time.perf_counter() - began:.1f} s to {folder}")
        pattern = str(folder / f"part-*.{args.format}")
        base = [sys.executable, "-m", "nlfit", "fit", pattern, "--glob", "--group-by", "id", "-m", "rational", "-f", "json", "-q"]
        results = folder / "results"
        with local_cluster(args.workers) as cluster, Client(cluster) as client:
            command = [*base, "--engine", "dask", "--scheduler", cluster.scheduler_address]
            if args.output_dir:
                command += ["-o", f"{results}/"]
            with open(os.devnull, "wb") as sink:
                wall, client_peak, code = run(command, sink)
            peaks = worker_peaks(client)
            warm, local, own = [], [], []
            for repeat in range(args.repeat):  # alternating, so that the machine's drift touches each command alike
                again = [*command[:-1], f"{results}-again{repeat}/"] if args.output_dir else command  # each run's part files in a folder of its own
                with open(os.devnull, "wb") as sink:
                    warm.append(run(again, sink))
                if not args.skip_local:
                    with open(os.devnull, "wb") as sink:
                        local.append(run([*base, "--engine", "local"], sink))
                if args.own_cluster:
                    with open(os.devnull, "wb") as sink:
                        own.append(run([*base, "--engine", "dask"], sink))
        print(f"dask ({args.workers} workers x 1 thread, LocalCluster started by the benchmark):")
        print(f"  wall time           {wall:8.1f} s   ({groups / wall:,.0f} groups/s), exit code {code}")
        print(f"  client peak RSS     {mb(client_peak):>10}   ({100 * client_peak / size:.1f} % of the data; goal < 10 %)")
        print(f"  worker peak RSS     {', '.join(mb(p) for p in peaks)}")
        print("  the same command again on the same cluster (its workers warm, as a long-lived --scheduler's after its first command):")
        print(f"  wall time           {times(warm)}, exit codes {codes(warm)}, client peak RSS {mb(max(r[1] for r in warm))}")
        if args.output_dir:
            parts = sorted(results.iterdir())
            print(f"  part files          {len(parts)} ({sum(p.stat().st_size for p in parts) / 1e9:.2f} GB)")
        if local:
            print("local (one process):")
            print(f"  wall time           {times(local)}, exit codes {codes(local)}")
            print(f"  peak RSS            {mb(max(r[1] for r in local)):>10}")
            print(f"  dask / local wall   {wall / median(local):8.2f}   (the first dask command, new workers, over the local median)")
            print(f"  warm / local wall   {median(warm) / median(local):8.2f}   (medians; each pair: {pairs(warm, local)})")
        if own:
            print("dask, its own cluster (nlfit starts and stops it: the one-machine user's command):")
            print(f"  wall time           {times(own)}, exit codes {codes(own)}")
            print(f"  peak RSS            {mb(max(r[1] for r in own)):>10}   (the command and its cluster's processes)")
            if local:
                print(f"  own cluster / local {median(own) / median(local):8.2f}   (medians; each pair: {pairs(own, local)})")
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
