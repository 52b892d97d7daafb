"""The built wheel installs into a fresh virtual environment outside the repository and runs.

Slow (it builds the wheel and installs nlfit with its dependencies from the package index
or pip's cache): deselected by default, run with ``python -m pytest -m wheel``. It catches
modules or data files missing from the package, which the editable install of the test
environment cannot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import USER_XLA_FLAGS

ROOT = Path(__file__).resolve().parents[1]


def _run(command, cwd, env, **kwargs):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200, **kwargs)
    assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-4000:])
    return done


@pytest.mark.wheel
def test_the_wheel_installs_and_runs_outside_the_repository(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        NLFIT_WORKER="off",
        XLA_FLAGS=USER_XLA_FLAGS,  # the compiler settings users get, not the suite's
        HOME=str(tmp_path),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        PIP_CACHE_DIR=os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip")),
    )
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], tmp_path, env)
    wheels = list(dist.glob("nlfit-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp_path / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], tmp_path, env)
    _run([str(venv / "bin" / "pip"), "install", "-q", str(wheels[0])], tmp_path, env)
    work = tmp_path / "work"  # outside the repository: nothing of the checkout can be imported
    work.mkdir()
    nlfit = str(venv / "bin" / "nlfit")
    version = _run([nlfit, "--version"], work, env).stdout
    assert version.startswith("nlfit 0.1.0") and "jax" in version
    assert _run([str(venv / "bin" / "python"), "-m", "nlfit", "--version"], work, env).stdout == version
    where = _run([str(venv / "bin" / "python"), "-c", "import nlfit; print(nlfit.__file__)"], work, env).stdout
    assert str(venv) in where and str(ROOT) not in where
    # the README's main job
    with open(work / "runge.csv", "w") as out:
        subprocess.run([nlfit, "generate", "runge", "--noise", "0.5", "--seed", "0"], cwd=work, env=env, stdout=out, check=True, timeout=300)
    fitted = json.loads(_run([nlfit, "fit", "runge.csv", "--model", "rational", "--method", "lm", "-f", "json", "-q"], work, env).stdout)
    assert fitted["success"] and fitted["provenance"]["nlfit"] == "0.1.0"
    # one NIST fit: the certified values of Misra1a
    nist = json.loads(_run([nlfit, "fit", str(ROOT / "data" / "nist" / "Misra1a.dat"), "-f", "json", "-q"], work, env).stdout)
    assert nist["success"]
    assert nist["params"]["b1"]["value"] == pytest.approx(2.3894212918e02, rel=1e-8)
    assert nist["params"]["b2"]["value"] == pytest.approx(5.5015643181e-04, rel=1e-8)
