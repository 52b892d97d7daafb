"""The one place nlfit configures JAX: float64 everywhere and the persistent compile cache.

Import ``jax`` and ``jnp`` from here so that the configuration is applied before any array
is made. The CLI imports this module only for commands that compute, so ``nlfit --help``,
``nlfit models`` and ``nlfit generate`` start without JAX.

Persistent compilation cache: compiled solver steps are stored under
``$NLFIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/nlfit/jax`` (default ``~/.cache/nlfit/jax``), so the
second run of a problem shape skips compilation. ``NLFIT_NO_CACHE=1`` turns it off. JAX only
caches programs that took at least ``jax_persistent_cache_min_compile_time_secs`` (1 s by
default) to compile; nlfit sets it to 0 because its kernels are small. A cache that cannot be
created or written never fails a fit: JAX logs a warning and compiles as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)


def cache_dir() -> Path | None:
    """Where compiled programs are kept, or None when caching is switched off."""
    if os.environ.get("NLFIT_NO_CACHE", "").strip() not in ("", "0"):
        return None
    explicit = os.environ.get("NLFIT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nlfit" / "jax"


def _enable_cache() -> None:
    path = cache_dir()
    if path is None:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # an unwritable cache directory means no cache, never a failed fit
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_enable_cache()

# Small problems are compiled with XLA's cheap settings: there compiling takes seconds and
# running milliseconds, so a 30-70 % shorter compile wins; large ones keep the full
# optimization (its kernels ran about twice as fast at 10^6 points).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
FAST_COMPILE_ELEMENTS = 1 << 17  # residuals x members up to which a problem counts as small
_JITTED: dict = {}


def compiled(function, static_argnames, elements: int):
    """``function`` jitted, with FAST_COMPILE options when ``elements`` (the size of the
    residual arrays of all members together) is small."""
    fast = elements <= FAST_COMPILE_ELEMENTS
    key = (function, fast)
    if key not in _JITTED:
        _JITTED[key] = jax.jit(function, static_argnames=static_argnames, compiler_options=FAST_COMPILE if fast else None)
    return _JITTED[key]


__all__ = ["jax", "jnp", "cache_dir", "compiled"]
