"""Array helpers shared by the solve's callers and the checks after it (numpy only, no JAX).

They live below every stage that uses them, so that the checks (``nlfit.diagnostics``) and
the statistics need nothing from the layer that runs the fits.
"""

from __future__ import annotations

import numpy as np

LARGE_DATA_POINTS = 100_000  # rows per group from which statistics use the R factor of a streaming QR
SHAPE_GROWTH = 1.25  # a single fit's rows are padded to the next of sizes growing by this factor
SMALLEST_SHAPE = 16


def norms(values: np.ndarray, axis: int) -> np.ndarray:
    """Euclidean norms scaled by the largest entry (no overflow or underflow of the squares)."""
    with np.errstate(all="ignore"):  # NaN or inf entries give NaN or inf, without warnings
        largest = np.max(np.abs(values), axis=axis, keepdims=True)
        safe = np.where((largest > 0) & np.isfinite(largest), largest, 1.0)
        return np.squeeze(largest, axis) * np.sqrt(np.sum((values / safe) ** 2, axis=axis))


def on_real(values: np.ndarray, real: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """``np.where(real, values, fill)``, without the copy where every row is real (one fit's
    rows, unpadded: 10^7 of them made each such copy a pass over 80 MB)."""
    return values if np.all(real) else np.where(real, values, fill)


def cost(residuals: np.ndarray, loss: str, f_scale: np.ndarray) -> np.ndarray:
    """Each fit's loss in scaled units (1/2 sum r^2, or the robust cost), residuals (G, L)."""
    from nlfit.problem import rho

    if loss == "linear":
        return 0.5 * np.sum(residuals**2, axis=1)
    scale = f_scale[:, None]
    return 0.5 * f_scale**2 * np.sum(rho((residuals / scale) ** 2, loss, np)[0], axis=1)


def padded_size(rows: int) -> int:
    """The number of rows a single fit of ``rows`` points is computed on: the next size of a
    ladder growing by SHAPE_GROWTH (multiples of 8 from SMALLEST_SHAPE), so files of
    different lengths share one compiled solver (in a worker, and in the persistent cache).
    From LARGE_DATA_POINTS on, the rows themselves: there compiling is a small part."""
    size = SMALLEST_SHAPE
    while size < rows:
        size = -(-int(size * SHAPE_GROWTH) // 8) * 8
    return size if size < LARGE_DATA_POINTS else rows


def residual_scales(y: np.ndarray, sigma: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(G,) ``nlfit.problem.residual_scale`` of every group at once: the power of two at or
    below max |y / sigma| over its real, finite values (at least the smallest normal
    number), 1 where that maximum is zero."""
    with np.errstate(all="ignore"):
        values = np.abs(np.asarray(y, dtype=np.float64) / np.asarray(sigma, dtype=np.float64))
        largest = np.max(np.where(real & np.isfinite(values), values, 0.0), axis=1)
        power = np.maximum(2.0 ** np.floor(np.log2(np.where(largest > 0, largest, 1.0))), np.finfo(np.float64).tiny)
    return np.where(largest > 0, power, 1.0)
