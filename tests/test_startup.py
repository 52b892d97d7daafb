"""A fresh ``nlfit fit`` imports JAX in a thread beside the read (cli.fit.import_jax_beside),
only where that is safe: the reader's imports done first, and the environment variables JAX's
import sets already set to its values (so the threads never grow the environment together)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import glob, json, os, sys, threading
vendors, data = sys.argv[1], sys.argv[2]
if vendors:
    glob.glob = lambda pattern: [vendors]
seen = {}
start = threading.Thread.start
def spy(self):
    if self.name == "nlfit-import-jax":
        seen["env"] = {k: os.environ.get(k) for k in ("TF_CPP_MIN_LOG_LEVEL", "TPU_SKIP_MDS_QUERY")}
        seen["pyarrow"] = "pyarrow.parquet" in sys.modules and "pyarrow.csv" in sys.modules
        seen["jax"] = "jax" in sys.modules
    return start(self)
threading.Thread.start = spy
from nlfit.cli.fit import import_jax_beside
import_jax_beside(data)
import nlfit._jax
print(json.dumps(seen))
"""


def _probe(data, vendor_file: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TPU_SKIP_MDS_QUERY")}
    done = subprocess.run([sys.executable, "-c", PROBE, vendor_file, str(data)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _large(tmp_path):
    from nlfit.io.read import ARROW_BYTES

    path = tmp_path / "large.csv"
    with open(path, "wb") as handle:
        handle.truncate(ARROW_BYTES)  # its size is all that counts here (a sparse file)
    return path


def test_jax_is_imported_beside_the_read_once_the_environment_is_set(tmp_path):
    seen = _probe(_large(tmp_path))
    assert seen == {"env": {"TF_CPP_MIN_LOG_LEVEL": "1", "TPU_SKIP_MDS_QUERY": "1"}, "pyarrow": True, "jax": False}


def test_a_small_file_or_stdin_gets_no_import_thread(tmp_path):
    small = tmp_path / "small.csv"
    small.write_text("x,y\n1,2\n")
    assert _probe(small) == {}  # pandas parses it, holding the GIL: nothing to overlap
    assert _probe("-") == {}


def test_where_a_tpu_may_be_attached_jax_is_imported_the_usual_way(tmp_path):
    google = tmp_path / "vendor"
    google.write_text("0x1ae0\n")
    assert _probe(_large(tmp_path), str(google)) == {}


def test_a_dask_workers_preload_imports_the_reader_then_the_solver_beside():
    """nlfit's own Dask workers load ``nlfit.dask_preload``: the reader before any task, the
    solver's modules in a thread (joined here: no timing involved)."""
    from nlfit.dask_engine import LOCAL_CLUSTER

    assert LOCAL_CLUSTER["preload"] == ["nlfit.dask_preload"]
    code = (
        "import sys, threading; started = []; start = threading.Thread.start\n"
        "def spy(self):\n    started.append(self); return start(self)\n"
        "threading.Thread.start = spy\n"
        "from nlfit.dask_preload import dask_setup; dask_setup(None)\n"
        "reader = 'nlfit.io.read' in sys.modules and 'pyarrow.parquet' in sys.modules\n"
        "[t.join() for t in started if t.name == 'nlfit-warm']\n"
        "print(reader, [t.name for t in started], all(m in sys.modules for m in ('nlfit._jax', 'nlfit.batch')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "['nlfit-warm']", "True"]
