"""Compiled programs kept on disk (``nlfit.programs``): a later process loads the executable
instead of tracing, gets the same numbers, and never the program of another signature.

Each check runs in a fresh process with an empty cache folder of its own: what a process
may store depends on what it loaded before (see ``programs._without_jax_cache``), so a test
process that has run other tests would not say what a user's process does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SUITE_XLA_FLAGS, USER_XLA_FLAGS

from nlfit import programs

COMMON = """
import json, sys
import numpy as np
from nlfit import programs
from nlfit._jax import jnp

def scaled(x, factor, *, power):
    return factor * x**power

def files():
    return sorted(p.name for p in programs._folder().glob("scaled-*.exe"))

def no_tracing(*args, **kwargs):
    raise AssertionError("traced although the executable was stored")
"""

STORE = (
    COMMON
    + """
x = jnp.linspace(0.0, 1.0, 5)
first = programs.Program(scaled, ("power",))
out, order = {}, []
def new_file():
    order.extend(sorted(set(files()) - set(order)))
out["squares"] = first(x, 2.0, power=2).tolist(); new_file()
out["cubes"] = first(x, 2.0, power=3).tolist(); new_file()
first(jnp.ones(4), 2.0, power=2); new_file()
first(jnp.ones(4, dtype=jnp.int32), 2, power=2); new_file()
out["files"], out["order"] = files(), order
print(json.dumps(out))
"""
)

LOAD = (
    COMMON
    + """
x = jnp.linspace(0.0, 1.0, 5)
again = programs.Program(scaled, ("power",))
again.jitted.lower = no_tracing
print(json.dumps({"squares": again(x, 2.0, power=2).tolist(), "cubes": again(x, 2.0, power=3).tolist(),
                  "keyword": again(x, factor=3.0, power=2).tolist(), "files": files()}))
"""
)


def _run(script: str, cache) -> dict:
    env = {**os.environ, "NLFIT_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A cache folder after one process stored four signatures of ``scaled``."""
    cache = tmp_path_factory.mktemp("programs") / "cache"
    return cache, _run(STORE, cache)


def test_each_signature_is_stored_under_its_own_name(stored):
    _, first = stored
    # power 2 and 3 (a static argument), 4 points instead of 5, int32 instead of float64
    assert len(first["files"]) == 4 and len(first["order"]) == 4


def test_a_stored_program_is_loaded_without_tracing(stored):
    cache, first = stored
    again = _run(LOAD, cache)
    assert again["files"] == first["files"]  # nothing new compiled
    assert again["squares"] == first["squares"] and again["cubes"] == first["cubes"]  # bit for bit
    np.testing.assert_array_equal(again["keyword"], 1.5 * np.asarray(first["squares"]))


def test_damaged_or_wrong_entries_are_replaced_by_compiled_ones(stored, tmp_path):
    """Garbage, and another signature's executable under this one's name (it loads but
    cannot run these arguments): both are removed and the program compiled again."""
    cache, first = stored
    copy = tmp_path / "cache"
    subprocess.run(["cp", "-r", str(cache), str(copy)], check=True)
    squares, cubes, four, _ = (copy / "aot" / name for name in first["order"])  # the files in the order stored
    size = squares.stat().st_size
    squares.write_bytes(four.read_bytes())  # loads, but takes 4 points, not 5
    cubes.write_bytes(b"not an executable")
    again = _run(STORE, copy)
    assert again["squares"] == first["squares"] and again["cubes"] == first["cubes"]
    assert again["files"] == first["files"]
    assert squares.stat().st_size == size and cubes.read_bytes() != b"not an executable"


def test_a_folder_others_may_write_to_is_not_used(tmp_path, monkeypatch):
    base = tmp_path / "cache"
    base.mkdir()
    (base / "aot").mkdir(mode=0o777)
    os.chmod(base / "aot", 0o777)  # the umask may have removed write rights for others
    monkeypatch.setattr(programs, "cache_dir", lambda: base)
    assert programs._make_folder() is None


LAPACK = """
import json
import numpy as np
from nlfit import programs
from nlfit._jax import jnp
from nlfit.derivatives import qr_linearize_jit
from nlfit.models.registry import build_model
from nlfit.problem import Problem

x = np.linspace(-1.0, 1.0, 50)
y = 1.0 / (1.0 + 10.0 * x * x)
problem = Problem(x=jnp.asarray(x), y=jnp.asarray(y), sigma=jnp.ones(50), model=build_model("rational", x))
r, factor, qtr, grad = qr_linearize_jit(jnp.asarray([1.0, 0.5, 8.0]), problem, "fwd")
import sys
before = "scipy.linalg" in sys.modules
import scipy.linalg  # after the preparation took its two modules from their files
q, r = scipy.linalg.qr(np.vander(x, 3))
_, updated = scipy.linalg.qr_update(q, r, np.ones(50), np.ones(3))  # scipy's own use of cython_blas
print(json.dumps({"factor": np.asarray(factor).tolist(), "files": len(list(programs._folder().glob("qr_linearize-*.exe"))),
                  "scipy_linalg_before": before, "updated": updated[:3].tolist(),
                  "reference": np.linalg.qr(np.vander(x, 3) + np.outer(np.ones(50), np.ones(3)))[1].tolist()}))
"""


def test_a_loaded_program_that_calls_lapack_runs_in_a_fresh_process(tmp_path):
    """A loaded executable skips JAX's lowering, which sets up LAPACK's kernels: without
    ``programs._prepare`` its first QR crashed the process (SIGSEGV). The preparation takes
    scipy's two Cython LAPACK modules from their files, without importing scipy.linalg;
    scipy.linalg imported afterwards works as usual."""
    stored, loaded = (_run(LAPACK, tmp_path / "cache") for _ in range(2))
    assert stored["files"] == 1 and loaded["files"] == 1
    assert loaded["factor"] == stored["factor"]
    assert np.all(np.isfinite(loaded["factor"]))
    assert not loaded["scipy_linalg_before"]
    np.testing.assert_allclose(np.abs(loaded["updated"]), np.abs(loaded["reference"]), rtol=1e-12, atol=1e-12)


NAMES = """
import json
import numpy as np
from nlfit import fit, programs
from nlfit.io.dataset import Dataset
from nlfit.models import tape
from nlfit.models.expression import FormulaModel

if {compiled}:
    tape.MAX_WORK = 0
x = np.linspace(0.0, 4.0, 40)
data = Dataset(x=x, y=0.5 * x + 2.0, x_names=("x",), y_name="y")
result = fit(data, FormulaModel.parse("b2*x + b1", order={order}))
print(json.dumps({{"names": list(result.param_names), "params": np.asarray(result.params).tolist(),
                   "files": len(list(programs._folder().glob("*.exe")))}}))
"""


@pytest.mark.parametrize("compiled", [False, True], ids=["tape", "compiled"])
def test_the_same_formula_in_another_parameter_order_gets_its_own_names_from_stored_programs(tmp_path, compiled):
    """The file name hashes the model itself (its parameter order included) or, on the tape,
    the tape is an argument: a fit whose programs come from disk names its parameters right."""
    cache = tmp_path / "cache"
    for order, names, expected in ((None, ["b2", "b1"], [0.5, 2.0]), (("b1", "b2"), ["b1", "b2"], [2.0, 0.5]), (None, ["b2", "b1"], [0.5, 2.0])):
        out = _run(NAMES.format(compiled=compiled, order=order), cache)
        assert out["names"] == names
        np.testing.assert_allclose(out["params"], expected, rtol=1e-8)
        assert out["files"] > 0


OTHER_FORMULA = """
import json
import numpy as np
from nlfit import fit, programs
from nlfit.io.dataset import Dataset

def compiled(*args, **kwargs):
    raise AssertionError("a program was compiled for a formula of a stored bucket")

if {strict}:
    programs._without_jax_cache = compiled  # entered only to compile a Program's executable
x = np.linspace(0.0, 4.0, 40)
result = fit(Dataset(x=x, y={truth}, x_names=("x",), y_name="y"), "{formula}", starts=1)
print(json.dumps({{"params": np.asarray(result.params).tolist(), "success": bool(result.success),
                   "files": sorted(p.name for p in programs._folder().glob("*.exe"))}}))
"""


def test_a_new_formula_of_a_stored_bucket_compiles_nothing_in_a_new_process(tmp_path):
    """The tape's programs are named by the bucket, not by the formula the runner carries: a
    second process fitting another formula of the same bucket loads every program. One start:
    whether the default multistart's winner goes on alone (one more program) depends on how
    its starts converge."""
    cache = tmp_path / "cache"
    first = _run(OTHER_FORMULA.format(strict=False, truth="2.0 * (1 - np.exp(-0.7 * x))", formula="b1*(1-exp(-b2*x))"), cache)
    second = _run(OTHER_FORMULA.format(strict=True, truth="3.0 * np.exp(-0.4 * x)", formula="A*exp(-k*x)"), cache)
    assert first["success"] and second["success"]
    np.testing.assert_allclose(second["params"], [3.0, 0.4], rtol=1e-8)
    assert second["files"] == first["files"]


@pytest.fixture(scope="module")
def main_jobs(runge_csv):
    """The README's main job under the suite's XLA settings and under the users' (with
    ``-X importtime``, whose lines on stderr name every module the command imported)."""
    runs = []
    for flags in (SUITE_XLA_FLAGS, USER_XLA_FLAGS):
        env = {**os.environ, "XLA_FLAGS": flags}
        command = [sys.executable, "-X", "importtime", "-m", "nlfit", "fit", str(runge_csv), "--model", "rational", "--method", "lm", "-f", "json", "-q"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
        runs.append((json.loads(done.stdout), imported))
    return runs


def test_the_suites_compiler_settings_give_the_fit_users_get(main_jobs):
    """The suite compiles with XLA's cheap backend settings (conftest.SUITE_XLA_FLAGS); users'
    programs are fully optimized. The README's main job under both gives the same fit, to what
    the stopping rules guarantee (parameters norm-wise to 1e-7), and says so in its status."""
    payloads = [payload for payload, _ in main_jobs]
    suite, users = ([p["params"][k]["value"] for k in ("c0", "c1", "c2")] for p in payloads)
    assert payloads[0]["success"] and payloads[1]["success"]
    assert np.linalg.norm(np.subtract(suite, users)) <= 1e-7 * np.linalg.norm(users)


def test_a_quiet_fit_imports_nothing_its_result_does_not_need(main_jobs):
    """What a new process spends before its first result (issue 26's cold path): scipy's
    subpackages (0.1-0.25 s: nlfit.quantiles, programs._lapack_modules), rich (0.08 s: no
    report or progress with -q) and pydantic (typer 0.29's, 0.15 s: pyproject caps typer)."""
    _, imported = main_jobs[1]
    assert "jax" in imported and "pandas" in imported  # the lines were read
    unwanted = {"scipy.linalg", "scipy.special", "scipy.stats", "rich", "rich.console", "pydantic"}
    assert not unwanted & imported
