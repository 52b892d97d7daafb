"""A Dask worker preload (``--preload nlfit.dask_preload``; nlfit's own LocalCluster uses
it): a new worker imports nlfit's reader before its first task, then the solver (JAX and
nlfit's fitting modules, ``nlfit.startup``) in a thread while its first tasks read the
files. Without it, each worker's first read and first fit paid these imports in turn."""

from __future__ import annotations


def dask_setup(worker) -> None:
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import nlfit.io.read  # noqa: F401
    from nlfit.startup import import_beside

    import_beside(["nlfit._jax", "nlfit.batch", "nlfit.report.formats"], "nlfit-warm")
