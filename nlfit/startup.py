"""Imports started in a thread while a process does other work (a fresh command's read, a new
Dask worker's first tasks): JAX's import (0.3-0.5 s) then overlaps work that runs without
the GIL (pyarrow's reader, the hash of the input).

What would make the two threads unsafe is done first, by the caller and here:

- the other thread's large imports where it knows them (the reader's pyarrow, a worker's
  reader), so that the threads mostly import different modules. Modules both still need
  (numpy's submodules, a few of the standard library's, nlfit's own) are imported once,
  whichever thread comes first, the other waiting on CPython's lock for that module. Two such
  waits could only block each other through an import cycle, and nlfit's modules have none
  (``tests/test_imports.py``);
- the two environment variables JAX's import sets, to the values it would set
  (``TF_CPP_MIN_LOG_LEVEL``, and ``TPU_SKIP_MDS_QUERY`` where no TPU is attached, JAX's own
  test): it then only replaces a value, and never grows the environment while the other
  thread's libraries may read it. Where a TPU may be attached, nothing is imported in a thread.

Signals reach the main thread only: an import in a thread cannot be interrupted midway, and an
exit meanwhile ends the process with ``os._exit``. ``nlfit._jax`` configures JAX afterwards,
before any array is made (importing JAX makes none)."""

from __future__ import annotations

import glob
import os
import sys
import threading

GOOGLE_PCI_VENDOR = "0x1ae0"  # a device of Google's may be a TPU, whose variables JAX's import sets otherwise


def import_beside(modules: list[str], name: str) -> bool:
    """Import ``modules`` in order in a daemon thread named ``name``, where JAX's import may
    run beside other work (see the module's text); False where it may not, or JAX is imported
    already. An import that fails is left to the main thread's own import, which reports it."""
    if "jax" in sys.modules:
        return False
    try:
        vendors = {open(path).read().strip() for path in glob.glob("/sys/bus/pci/devices/*/vendor")}  # noqa: SIM115
    except OSError:
        return False
    if GOOGLE_PCI_VENDOR in vendors:
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")

    def load() -> None:
        try:
            for module in modules:
                __import__(module)  # the interpreter's own import path, which -X importtime reports (importlib.import_module's is not)
        except Exception:
            pass

    threading.Thread(target=load, name=name, daemon=True).start()
    return True
