"""What produced a result: the ``provenance`` object of the JSON contract, and ``nlfit refit``'s check.

A fit's JSON holds, under ``provenance``:

- ``nlfit``, and ``versions``: Python, JAX, jaxlib, numpy, scipy (from the installed
  packages' metadata);
- ``platform`` (the operating system and machine) and ``device`` (what JAX computed on);
- ``options``: every option of the fit after the config file and the flags were merged,
  defaults included: the fit's own (``FitOptions``) and the command's data options (model,
  columns, delimiter, the NIST start, the start given);
- ``seed``;
- ``inputs``: each input's path (as given and absolute), size and sha256 (for stdin, ``-``,
  the sha256 of what was read).

Timings stay in ``seconds``, outside it. A grouped fit's NDJSON rows carry ``compact``'s
short form: the versions, the seed, each input's path and sha256 (None with ``--engine
dask``, whose client does not read the data), and the sha256 of the options. ``nlfit refit`` (``nlfit.cli.refit``) re-runs a fit from this object alone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform

# The command's options a fit depends on (beside FitOptions'), as ``nlfit fit`` names them:
# which columns, how the file is read, which model, and where it starts.
DATA_OPTIONS = ("model", "x", "y", "sigma", "group_by", "share", "sep", "missing", "start", "p0")
DATA_DEFAULTS = {"missing": "drop"}  # the others' default (None) is 'detected' or 'none'

PACKAGES = ("jax", "jaxlib", "numpy", "scipy")


@functools.cache
def package_version(name: str) -> str | None:
    """The installed version of ``name`` (its metadata: nothing is imported), or None. Read
    once per process (2 ms a package): a worker reports the versions it has loaded."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def nlfit_version() -> str:
    """nlfit's version from the package metadata (the source's ``__version__`` when it runs
    from a checkout that was never installed)."""
    from nlfit import __version__

    return package_version("nlfit") or __version__


def versions() -> dict:
    return {"python": platform.python_version(), **{name: package_version(name) for name in PACKAGES}}


def device() -> str:
    """What JAX computes on, e.g. ``cpu`` or ``gpu (NVIDIA H100)``."""
    from nlfit._jax import jax

    first = jax.devices()[0]
    kind = getattr(first, "device_kind", "") or ""
    return first.platform if not kind or kind == first.platform else f"{first.platform} ({kind})"


def command_options(options: dict) -> dict:
    """The data options of a merged option dict, defaults filled in (None: detected or none)."""
    return {name: options.get(name) if options.get(name) is not None else DATA_DEFAULTS.get(name) for name in DATA_OPTIONS}


def build(inputs, command: dict, fit_options, with_device: bool = True) -> dict:
    """The provenance of a fit of the data read from ``inputs`` (``Dataset.inputs``) with the
    command's data options ``command`` and ``fit_options`` (a ``FitOptions``). Without
    ``with_device`` JAX is not asked (the Dask engine's client does not import it)."""
    return {
        "nlfit": nlfit_version(),
        "versions": versions(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": device() if with_device else None,
        "options": {**command, **fit_options.to_json()},
        "seed": fit_options.seed,
        "inputs": [dict(record) for record in inputs],
    }


def compact(full: dict) -> dict:
    """The short form a grouped fit's every row carries."""
    return {
        "nlfit": full["nlfit"],
        "versions": full["versions"],
        "seed": full["seed"],
        "options_sha256": options_digest(full["options"]),
        "inputs": [{"path": record["path"], "sha256": record.get("sha256")} for record in full["inputs"]],
    }


def file_records(paths) -> list[dict]:
    """Path and size of files that are not read here (the Dask engine's inputs, read on the
    workers): their sha256 is None."""
    import os

    return [{"path": str(p), "absolute": os.path.abspath(p), "size": os.path.getsize(p), "sha256": None} for p in paths]


def options_digest(options: dict) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


# refit: how closely a re-run must agree
BITWISE = 0.0
ELSEWHERE = 1e-10


def tolerance(saved: dict, now: dict) -> tuple[float, str]:
    """(relative tolerance, reason) for comparing a re-run with the saved fit: bitwise where
    nlfit, the versions, the platform, the machine and the device are the same (the same
    compiled programs on the same data give the same bits); else ``ELSEWHERE``."""
    keys = ("nlfit", "versions", "platform", "machine", "device")
    differ = [key for key in keys if saved.get(key) != now.get(key)]
    if not differ:
        return BITWISE, "the same nlfit, versions, platform, machine and device: the same bits"
    return ELSEWHERE, f"{', '.join(differ)} differ from the saved run's: agreement to a relative {ELSEWHERE:g}"
