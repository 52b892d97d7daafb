"""XLA:CPU's fusion emitters against its classic emitters (``nlfit.programs._emitters``): the
compile time of a first fit and the time of the same fit again, for each setting.

Each case runs in new processes with an empty compilation cache, ``--repeat`` times with
``NLFIT_XLA_EMITTERS=fusion`` (XLA's default) and as many with ``classic`` (nlfit's default on
jaxlib 0.10), the two settings alternating which goes first; medians are printed. The first
fit's wall time includes its compiles; "compile" is XLA's own backend compile time
(``/jax/core/compile/backend_compile_duration``, which also counts the small programs of
operations run one by one, compiled the same way under both settings); "again" is the fastest
of three more fits of the same data in that process. The caller's ``XLA_FLAGS`` are passed on
and printed; on a jaxlib other than 0.10 both settings are the same and the script says so.

    python benchmarks/compile_options.py [--cases rational,misra1a,...] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "rational": ("runge", 200, "rational", {}),
    "misra1a": ("nist", "Misra1a", None, {"method": "lm", "globalization": "trust-region", "starts": 1}),
    "chebyshev:11": ("runge", 20_000, "chebyshev:11", {}),
    "rational-1e6": ("runge", 1_000_000, "rational", {}),
    "formula-1e6": ("runge", 1_000_000, "b1/(1+b2*x^2)", {}),
}

CHILD = r"""
import json, sys, time, collections
import numpy as np
from jax import monitoring
seconds = collections.Counter()
monitoring.register_event_duration_secs_listener(lambda event, duration, **_: seconds.update({event: duration}))
from nlfit import fit, read_dataset
from nlfit.io.dataset import Dataset
kind, size, model, options = json.loads(sys.argv[1])
if kind == "runge":
    rng = np.random.default_rng(0)
    x = np.linspace(-1.0, 1.0, size)
    data = Dataset(x=x, y=1.0 / (1.0 + 10.0 * x * x) + rng.normal(0.0, 0.5, size), x_names=("x",), y_name="y")
    p0 = None
else:
    data = read_dataset(sys.argv[2] + f"/{size}.dat")
    model, p0 = data.nist.formula, data.nist.starts[2]
start = time.perf_counter()
result = fit(data, model, p0=p0, **options)
first = time.perf_counter() - start
again = []
for _ in range(3):
    start = time.perf_counter()
    fit(data, model, p0=p0, **options)
    again.append(time.perf_counter() - start)
compile_s = seconds["/jax/core/compile/backend_compile_duration"]
print(json.dumps({"first": first, "compile": compile_s, "again": min(again), "rss": result.stats["rss"]}))
"""


def run(case, emitters: str) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NLFIT_XLA_EMITTERS": emitters, "NLFIT_CACHE_DIR": cache, "NLFIT_WORKER": "off"}
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(case), str(ROOT / "data" / "nist")], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    import jaxlib

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"jaxlib {jaxlib.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, {args.repeat} run(s) per setting, medians")
    if not jaxlib.__version__.startswith("0.10."):
        print("this jaxlib is not 0.10: nlfit keeps XLA's default emitters, so both settings are the same")
    print(f"{'case':14s} {'first fit (fusion / classic)':>30s} {'XLA compile':>22s} {'fit again':>22s} {'ratio again':>11s}")
    for name in args.cases.split(","):
        runs: dict = {"fusion": [], "classic": []}
        for i in range(args.repeat):
            for emitters in ("fusion", "classic") if i % 2 == 0 else ("classic", "fusion"):
                runs[emitters].append(run(CASES[name], emitters))
        fusion, classic = ({key: statistics.median(r[key] for r in runs[e]) for key in ("first", "compile", "again", "rss")} for e in ("fusion", "classic"))
        print(
            f"{name:14s} {fusion['first']:12.2f} s / {classic['first']:6.2f} s {fusion['compile']:10.2f} / {classic['compile']:6.2f} s"
            f" {fusion['again']:10.3f} / {classic['again']:6.3f} s {classic['again'] / fusion['again']:10.2f}"
            f"   compile ratio {classic['compile'] / fusion['compile']:.2f}, rss rel. diff {abs(classic['rss'] - fusion['rss']) / fusion['rss']:.1e}"
        )


if __name__ == "__main__":
    main()
