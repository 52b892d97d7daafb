"""How many cores a batched solve runs on: one XLA host device per usable core.

XLA:CPU runs one program on one core. nlfit therefore asks for one host device per core
(``--xla_force_host_platform_device_count``) and runs a large batch as one loop per device
(``nlfit.solvers.loop``: ``shard_map`` over the members, each device its own ``while_loop``
and no collective inside it). The device count must be set before JAX starts its CPU
backend: ``nlfit._jax`` sets ``jax_num_cpu_devices`` from :func:`device_count` right after
``import jax`` (a config, not ``XLA_FLAGS``: the environment that child processes and the
worker's identity see is left alone). This module imports nothing heavy.

- Usable cores: ``os.sched_getaffinity`` (``taskset -c 0 nlfit ...`` gives 1).
- ``NLFIT_THREADS=N`` (environment, read when JAX starts): at most N devices are made.
- :func:`configure` (``nlfit fit --threads N``): at most N devices are *used* by later solves,
  whatever was made. The CLI calls it per command, so it also works in a process (the
  resident worker, a test) whose JAX started earlier with more devices.
- A user's own ``XLA_FLAGS`` with a device count wins: nlfit sets none.
"""

from __future__ import annotations

import contextlib
import os

ENV = "NLFIT_THREADS"
DEVICE_FLAG = "--xla_force_host_platform_device_count"
_configured: int | None = None


def usable() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # no affinity on this platform
        return max(os.cpu_count() or 1, 1)


def _from_environment() -> int | None:
    from nlfit.errors import OptionError

    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise OptionError(f"{ENV} must be a whole number >= 1; got '{text[:40]}'")
    return value


def configure(threads: int | None) -> None:
    """Use at most ``threads`` cores from now on (None: ``NLFIT_THREADS`` or every core)."""
    global _configured
    _configured = None if threads is None else max(int(threads), 1)


@contextlib.contextmanager
def limited(threads: int | None):
    """:func:`configure` for the duration of one command (a worker serves the next with its
    own), then the previous setting again."""
    global _configured
    before = _configured
    configure(threads)
    try:
        yield
    finally:
        _configured = before


def limit() -> int | None:
    """The most devices a solve may use: :func:`configure`'s value, else ``NLFIT_THREADS``;
    None when neither is set (every device JAX made)."""
    return _configured if _configured is not None else _from_environment()


def device_count() -> int | None:
    """How many CPU devices JAX should make (``jax_num_cpu_devices``): the usable cores, at
    most ``NLFIT_THREADS`` (or the configured count, when set before JAX starts); None where
    the user's ``XLA_FLAGS`` name a count of their own."""
    if DEVICE_FLAG in os.environ.get("XLA_FLAGS", ""):
        return None
    return min(limit() or usable(), usable())
