"""Shared fixtures: the lecture's Runge data and the NIST files shipped in data/nist."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

# Set before nlfit is imported, and inherited by every command a test runs: no resident
# worker (tests/test_worker.py starts its own).
os.environ["NLFIT_WORKER"] = "off"
# Most of the suite's time is XLA compiling programs that then run for milliseconds: every
# program here, and in the commands the tests run, is compiled with XLA's cheap backend settings,
# the ones nlfit itself uses for small problems (nlfit.programs.FAST_COMPILE). The programs
# nlfit fully optimizes (the solver's loop) then compile in about half the time and run slower;
# what they compute is the same up to rounding, and the tests compare with tolerances
# (tests/test_programs.py compares one fit under both settings). A developer's own XLA_FLAGS come
# after these, so they win; USER_XLA_FLAGS are those alone (xdist's workers inherit the flags
# this file set in the main process, hence the removal).
SUITE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
USER_XLA_FLAGS = " ".join(os.environ.get("XLA_FLAGS", "").replace(SUITE_XLA_FLAGS, "").split())
os.environ["XLA_FLAGS"] = f"{SUITE_XLA_FLAGS} {USER_XLA_FLAGS}".strip()

from nlfit.io.dataset import Dataset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NIST_DIR = ROOT / "data" / "nist"
NIST_NAMES = sorted(p.stem for p in NIST_DIR.glob("*.dat"))


def runge_data(n: int = 200, noise: float = 0.5, seed: int = 0) -> Dataset:
    """The same numbers as ``nlfit generate runge --n N --noise NOISE --seed SEED``."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 1.0, n)
    y = 1.0 / (1.0 + 10.0 * x * x) + rng.normal(0.0, noise, n)
    return Dataset(x=x, y=y, x_names=("x",), y_name="y")


@pytest.fixture(scope="session")
def runge() -> Dataset:
    return runge_data()


@pytest.fixture(scope="session")
def runge_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "runge.csv"
    data = runge_data()
    path.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(data.x, data.y, strict=True)))
    return path


def compile_events(work) -> dict:
    """The JAX traces and compiles that ``work()`` caused, by event name ({} when none)."""
    import collections

    from nlfit._jax import jax

    events = collections.Counter()

    def listen(event, duration, **_):
        events[event] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        work()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    return {name: count for name, count in events.items() if "trace" in name or "compile" in name}


def lre(estimate, certified) -> float:
    """NIST's log relative error, minimum over parameters, capped at 11."""
    estimate, certified = np.asarray(estimate, float), np.asarray(certified, float)
    with np.errstate(divide="ignore"):
        errors = np.abs(estimate - certified) / np.abs(certified)
    worst = np.max(errors)
    return 11.0 if worst == 0 else float(min(11.0, -np.log10(worst)))


def _release() -> None:
    import gc

    from nlfit import programs
    from nlfit._jax import jax

    jax.clear_caches()
    programs.clear()
    gc.collect()


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Each module compiles its own problems; drop them afterwards so memory stays bounded."""
    yield
    _release()


@pytest.fixture(autouse=True)
def _bounded_mappings():
    """Every compiled or loaded program holds memory mappings until it is dropped; a process at
    the kernel's limit (vm.max_map_count, 65,530 by default) crashes in the next compile or
    load. One module of many models reached it (test_wrong_answers_are_loud: 65,000 mappings
    after 38 tests, then a segmentation fault loading a stored program), so the programs are
    also dropped after any test that leaves more than a quarter of the limit."""
    yield
    from nlfit.worker import _mappings, _mappings_limit

    if _mappings() > _mappings_limit() // 2:
        _release()


@contextlib.contextmanager
def started(command, marker: str, env: dict, **streams):
    """``command`` as a process, yielded once it printed a stderr line starting with
    ``marker`` (tests synchronise on what nlfit prints, never on sleeps). The process is
    killed on the way out if it still runs, so a failed test leaves nothing behind."""
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, **streams)
    try:
        seen = []
        for line in process.stderr:  # ends at EOF if the process dies first
            seen.append(line)
            if line.startswith(marker):
                break
        else:
            process.wait(timeout=60)
            raise AssertionError(f"nlfit ended before '{marker}' (exit {process.returncode}): {''.join(seen)}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
