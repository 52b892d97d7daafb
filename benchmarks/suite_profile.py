"""Where the test suite's time goes: a pytest plugin that records, per test, its wall time and
what JAX reports while it runs (XLA's backend compile time and count, tracing, lowering) and
the time spent in ``nlfit.programs.Program._first_call`` (compiling or loading a stored
executable); and, run as a script, a summary per module.

    rm -rf /tmp/suite-cache /tmp/suite-profile
    PYTHONPATH=benchmarks SUITE_PROFILE_DIR=/tmp/suite-profile NLFIT_CACHE_DIR=/tmp/suite-cache \\
        .venv/bin/python -m pytest -q -p suite_profile
    .venv/bin/python benchmarks/suite_profile.py /tmp/suite-profile

Each test process (each xdist worker) appends JSON lines to ``out-PID.jsonl`` in
``SUITE_PROFILE_DIR``. Commands a test runs in other processes are not seen: their time
counts in the test's wall time only.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path

COMPILE = "/jax/core/compile/backend_compile_duration"
TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"

_seconds: collections.Counter = collections.Counter()
_installed: list = []


def _install() -> None:
    if _installed:
        return
    from jax import monitoring

    from nlfit import programs

    def on_duration(event, duration, **_):
        _seconds[event] += duration
        _seconds[event + "#n"] += 1

    monitoring.register_event_duration_secs_listener(on_duration)
    first_call = programs.Program._first_call

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return first_call(self, *args, **kwargs)
        finally:
            _seconds["first_call"] += time.perf_counter() - start

    programs.Program._first_call = timed
    _installed.append(True)


def pytest_runtest_protocol(item, nextitem):  # noqa: ARG001 (pytest's hook signature)
    _install()
    _seconds.clear()
    _started.append(time.perf_counter())


_started: list = []


def pytest_runtest_logfinish(nodeid, location):  # noqa: ARG001
    if not _started:
        return
    record = {"test": nodeid, "wall": time.perf_counter() - _started.pop(), **_seconds}
    folder = Path(os.environ.get("SUITE_PROFILE_DIR", "suite-profile"))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"out-{os.getpid()}.jsonl", "a") as out:
        out.write(json.dumps(record) + "\n")


def summary(folder: str) -> None:
    rows = [json.loads(line) for path in Path(folder).glob("out-*.jsonl") for line in path.read_text().splitlines()]
    modules: dict = collections.defaultdict(collections.Counter)
    for row in rows:
        modules[row["test"].split("::")[0]].update({k: v for k, v in row.items() if k != "test"})
    total: collections.Counter = collections.Counter()
    print(f"{'module':48s} {'wall s':>8s} {'compile s':>10s} {'compiles':>9s} {'trace s':>8s} {'lower s':>8s} {'first call s':>13s}")

    def line(name, c):
        print(f"{name:48s} {c['wall']:8.1f} {c[COMPILE]:10.1f} {int(c[COMPILE + '#n']):9d} {c[TRACE]:8.1f} {c[LOWER]:8.1f} {c['first_call']:13.1f}")

    for name, c in sorted(modules.items(), key=lambda item: -item[1]["wall"]):
        line(name, c)
        total.update(c)
    line("all (worker-seconds)", total)


if __name__ == "__main__":
    summary(sys.argv[1] if len(sys.argv) > 1 else "suite-profile")
