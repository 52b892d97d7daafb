"""The one place nlfit configures JAX: float64 everywhere, one CPU device per usable core
(``nlfit.cores``) and the persistent compile cache.

Import ``jax`` and ``jnp`` from here so that the configuration is applied before any array
is made. The CLI imports this module only for commands that compute, so ``nlfit --help``,
``nlfit models`` and ``nlfit generate`` start without JAX.

Persistent compilation cache: under ``$NLFIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/nlfit/jax``
(default ``~/.cache/nlfit/jax``), so the second run of a problem shape skips compilation.
``NLFIT_NO_CACHE=1`` turns it off. nlfit's solver programs are kept there as executables
(``aot/``, ``nlfit.programs``), which a new process loads without tracing; JAX's own cache
(``xla/``) keeps the programs that run through ``jax.jit`` (a batch spread over devices) and
took at least ``CACHE_SECONDS`` to compile. Operations that compile in milliseconds (JAX's
eager operations) are left out of it: an executable from JAX's cache made programs compiled
after it, with kernels of the same name, serialize without their code, and its tiny
entries saved almost nothing. A cache that cannot be created or written never fails a fit:
JAX logs a warning and compiles as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

from nlfit import cores, signals

with signals.deferred():  # JAX's import runs C++ that cannot unwind an exception from a signal
    import jax
    import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)


def _set_devices() -> None:
    """One CPU device per usable core (``nlfit.cores``). Where JAX's backend has already
    started (a library user who computed with JAX first), its devices stay as they are."""
    count = cores.device_count()
    if count is None or count == jax.config.jax_num_cpu_devices:
        return
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # "should be updated before backends are initialized"
        pass


_set_devices()


def solve_devices() -> list:
    """The devices a batched solve may spread over: the CPU devices, at most
    ``cores.limit()`` of them (all when no limit is set: a user's XLA_FLAGS may make more
    devices than cores); the default device alone on another platform."""
    devices = jax.devices()
    if devices[0].platform != "cpu":
        return devices[:1]
    return devices[: cores.limit() or len(devices)]


def cache_dir() -> Path | None:
    """Where compiled programs are kept, or None when caching is switched off.

    Only absolute paths count (the XDG rule: a relative ``XDG_CACHE_HOME`` is ignored, so no
    folder appears in the working directory), and nlfit creates at most the folders below an
    existing anchor: the parent of ``NLFIT_CACHE_DIR``, ``XDG_CACHE_HOME`` itself or ``$HOME``.
    ``HOME=/nonexistent/x`` therefore means no cache, not a new tree of folders."""
    if os.environ.get("NLFIT_NO_CACHE", "").strip() not in ("", "0"):
        return None
    explicit = os.environ.get("NLFIT_CACHE_DIR")
    if explicit:
        path = Path(explicit).expanduser()
        return path if path.is_absolute() and path.parent.is_dir() else None
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "nlfit" / "jax" if Path(xdg).is_dir() else None
    home = os.environ.get("HOME") or str(Path.home())
    if not (Path(home).is_absolute() and Path(home).is_dir()):
        return None
    return Path(home) / ".cache" / "nlfit" / "jax"


CACHE_SECONDS = 0.1  # compile time from which JAX's cache keeps a program


def _enable_cache() -> None:
    base = cache_dir()
    if base is None:
        return
    path = base / "xla"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable cache directory means no cache, never a failed fit
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _repair_entries(path)


def _repair_entries(path: Path) -> None:
    """JAX warns on every run about each cache entry it cannot read (a corrupt file) or
    write (a read-only folder). nlfit deletes an unreadable entry, so that this run's
    compilation writes a good one, and says so once per run; a failed write is said once."""
    import re
    import warnings

    show = warnings.showwarning
    unreadable = re.compile(r"Error reading persistent compilation cache entry for '([A-Za-z0-9_.]+)'")

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        found = unreadable.search(text)
        if found:
            for entry in path.glob(f"{found.group(1)}-*-cache"):
                try:
                    entry.unlink()
                except OSError:
                    pass
            kind = "read"
        elif "Error writing persistent compilation cache entry" in text:
            kind = "write"
        else:
            return show(message, category, filename, lineno, file, line)
        cache_warning(kind, path.parent)

    warnings.showwarning = showwarning


_SAID: set = set()


def cache_warning(kind: str, path: Path) -> None:
    """One line per process for each ``kind`` of cache trouble: ``read`` (unreadable entries,
    removed so that this run writes good ones) or ``write`` (nothing can be kept)."""
    if kind in _SAID:
        return
    _SAID.add(kind)
    what = "had unreadable entries; they are replaced" if kind == "read" else "cannot be written; compiled programs are not kept"
    import sys

    sys.stderr.write(f"nlfit: warning: the compile cache {path} {what} (NLFIT_NO_CACHE=1 turns it off)\n")


_enable_cache()


__all__ = ["jax", "jnp", "cache_dir", "cache_warning", "solve_devices"]
