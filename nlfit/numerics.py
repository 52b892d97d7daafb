"""Array helpers shared by the solve's callers and the checks after it (numpy only, no JAX).

They live below every stage that uses them, so that the checks (``nlfit.diagnostics``) and
the statistics need nothing from the layer that runs the fits.
"""

from __future__ import annotations

import numpy as np

LARGE_DATA_POINTS = 100_000  # rows per group from which statistics use the R factor of a streaming QR
SHAPE_GROWTH = 1.25  # a single fit's rows are padded to the next of sizes growing by this factor
SMALLEST_SHAPE = 16


ALIGNMENT = 64  # bytes: XLA:CPU takes a numpy array at this alignment as it is, and copies any other on every call


def aligned(values: np.ndarray) -> np.ndarray:
    """``values`` as float64 at ALIGNMENT bytes (a copy only where they are not): a compiled
    call then reads them in place. numpy's own arrays are aligned to 16 bytes, and each call
    copied them (10^7 values: 55 ms each, on every call of a large fit)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if values.ctypes.data % ALIGNMENT == 0:
        return values
    out = aligned_full(values.shape, None)
    out[...] = values
    return out


def aligned_full(shape: tuple, value: float | None) -> np.ndarray:
    """A float64 array of ``shape`` at ALIGNMENT bytes, filled with ``value`` (None: not filled)."""
    size = int(np.prod(shape))
    raw = np.empty(size + ALIGNMENT // 8, dtype=np.float64)
    start = (-raw.ctypes.data % ALIGNMENT) // 8
    out = raw[start : start + size].reshape(shape)
    if value is not None:
        out.fill(value)
    return out


def norms(values: np.ndarray, axis: int, squares: np.ndarray | None = None) -> np.ndarray:
    """Euclidean norms scaled by the largest entry (no overflow or underflow of the squares).
    Where every sum of squares is safely inside the float range, the scaling changes nothing,
    and the sums are taken in one pass with no temporary array of the data's size (``sum_squares``;
    ``squares``: those sums, where the caller has them already)."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(all="ignore"):
        squares = sum_squares(np.moveaxis(values, axis, -1)) if squares is None else squares
    if in_range(squares):
        return np.sqrt(squares)
    with np.errstate(all="ignore"):  # NaN or inf entries give NaN or inf, without warnings
        largest = np.max(np.abs(values), axis=axis, keepdims=True)
        safe = np.where((largest > 0) & np.isfinite(largest), largest, 1.0)
        return np.squeeze(largest, axis) * np.sqrt(np.sum((values / safe) ** 2, axis=axis))


def gram_condition(gram: np.ndarray, free: np.ndarray) -> float:
    """The condition number of J^T J over the parameters that move (free, nonzero column),
    equilibrated (unit diagonal): cond(J)^2 of the scaled Jacobian, up to a factor of n.
    inf where the matrix is not finite or is singular; 1 where nothing moves."""
    gram = np.asarray(gram, dtype=np.float64)
    if not np.all(np.isfinite(gram)):
        return float("inf")
    moving = np.asarray(free, dtype=bool) & (np.diag(gram) > 0)  # a parameter held at a bound has a zero column here
    if not np.any(moving):
        return 1.0
    gram = gram[np.ix_(moving, moving)]
    diagonal = np.sqrt(np.diag(gram))
    values = np.linalg.eigvalsh(gram / np.outer(diagonal, diagonal))
    return float(values[-1] / values[0]) if values[0] > 0 else float("inf")


def in_range(squares: np.ndarray) -> bool:
    """Whether sums of squares are all finite and far from under- and overflow: no square of
    an entry that matters can then have over- or underflowed (zero, from all-zero or tiny
    entries, is out of range too)."""
    with np.errstate(invalid="ignore"):
        return bool(np.all((squares > 1e-280) & (squares < 1e280)))


SQUARES_CHUNK = 1 << 16  # values squared at a time by ``sum_squares``: a temporary that stays in the cache


def divided_squares(raw: np.ndarray, factor: np.ndarray) -> np.ndarray | None:
    """``raw / factor**2`` for sums of squares ``raw`` of values that ``factor`` scales, where
    both ``raw`` and ``factor**2`` are safely inside the float range (``in_range``) and the
    quotient is finite; None where it cannot be trusted (the caller then divides each value
    first)."""
    with np.errstate(all="ignore"):
        squared = np.asarray(factor, dtype=np.float64) ** 2
        if not (in_range(raw) and in_range(squared)):
            return None
        quotient = raw / squared
    return quotient if np.all(np.isfinite(quotient)) else None


def centred_squares(y: np.ndarray, factor: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean (G,), sum of ((y - mean) / factor)^2 (G,)) of each row of y (G, L), every value
    weighted alike, in one pass over y; the sums None where they would over- or underflow
    (``divided_squares``: the caller then scales each value first)."""
    with np.errstate(all="ignore"):
        mean = np.sum(y, axis=1) / y.shape[1]
    return mean, divided_squares(sum_squares(y, mean), factor)


def sum_squares(values: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    """Sums of squares along the last axis (of ``values - centre[..., None]`` where a centre
    is given), pairwise within chunks of SQUARES_CHUNK values (the accuracy of ``np.sum``),
    without a temporary array of the data's size: on large data each such temporary cost its
    page faults again (10^7 values: 14 ms for the squares, more for the faults)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0:
        return values * values if centre is None else (values - centre) ** 2
    lead, length = values.shape[:-1], values.shape[-1]
    rows = values.reshape(int(np.prod(lead)), length)
    centres = np.zeros(rows.shape[0]) if centre is None else np.broadcast_to(np.asarray(centre, dtype=np.float64), lead).reshape(-1)
    total = np.zeros(rows.shape[0])
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):  # inf or 0: the callers check the range (``in_range``)
        _sum_squares_into(total, rows, centres, length)
    return total.reshape(lead)


def _sum_squares_into(total: np.ndarray, rows: np.ndarray, centres: np.ndarray, length: int) -> None:
    if length >= SQUARES_CHUNK:  # long rows: one row's chunk at a time (the temporary stays SQUARES_CHUNK values)
        for row in range(rows.shape[0]):
            for begin in range(0, length, SQUARES_CHUNK):
                part = rows[row, begin : begin + SQUARES_CHUNK] - centres[row]
                total[row] += np.sum(part * part)
    else:
        step = max(1, SQUARES_CHUNK // max(length, 1))
        for begin in range(0, rows.shape[0], step):
            part = rows[begin : begin + step] - centres[begin : begin + step, None]
            total[begin : begin + step] = np.sum(part * part, axis=1)


def on_real(values: np.ndarray, real: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """``np.where(real, values, fill)``, without the copy where every row is real (one fit's
    rows, unpadded: 10^7 of them made each such copy a pass over 80 MB)."""
    return values if np.all(real) else np.where(real, values, fill)


def cost(residuals: np.ndarray, loss: str, f_scale: np.ndarray) -> np.ndarray:
    """Each fit's loss in scaled units (1/2 sum r^2, or the robust cost), residuals (G, L)."""
    from nlfit.problem import rho

    if loss == "linear":
        return 0.5 * sum_squares(residuals)
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
    y = np.asarray(y, dtype=np.float64)
    with np.errstate(all="ignore"):
        same = uniform(sigma, real)
        largest = None
        if same is not None:  # one sigma per group, every row real: max |y| / sigma, without a quotient per row
            largest = np.maximum(np.max(y, axis=1), -np.min(y, axis=1)) / same
        if largest is None or not np.all(np.isfinite(largest)):  # (a NaN or inf y is left out below)
            values = np.abs(y / np.asarray(sigma, dtype=np.float64))
            largest = np.max(np.where(real & np.isfinite(values), values, 0.0), axis=1)
        power = np.maximum(2.0 ** np.floor(np.log2(np.where(largest > 0, largest, 1.0))), np.finfo(np.float64).tiny)
    return np.where(largest > 0, power, 1.0)


def uniform(sigma: np.ndarray, real: np.ndarray) -> np.ndarray | None:
    """(G,) each group's sigma where every row is real and each group's sigma is one value
    (no --sigma column: all ones), else None. Two passes with no temporary arrays: sums over
    large data then need no per-row weights."""
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 2 or sigma.shape[1] == 0 or not np.all(real):
        return None
    low, high = np.min(sigma, axis=1), np.max(sigma, axis=1)
    return low if np.all(low == high) and np.all(np.isfinite(low)) and np.all(low > 0) else None
