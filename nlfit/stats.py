"""Statistics at the solution: covariance, standard errors, goodness of fit.

Covariance = s^2 (J^T J)^-1 with s^2 = RSS / dof, where J is the Jacobian of the weighted
residuals at the solution. It is computed from the thin SVD J = U S V^T as
s^2 V diag(1/S^2) V^T, never by inverting J^T J, so its accuracy follows cond(J), not
cond(J)^2. Singular values below eps * max(m, n) * S_max mark directions of parameter
space the data do not determine; those are reported instead of huge numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Uncertainty:
    covariance: np.ndarray | None
    stderr: np.ndarray | None
    rank: int
    unidentifiable: list[list[str]]


def covariance_from_jacobian(jac: np.ndarray, rss: float, dof: int, param_names) -> Uncertainty:
    n = jac.shape[1]
    if not np.all(np.isfinite(jac)):
        return Uncertainty(None, None, 0, [])
    _, s, vt = np.linalg.svd(jac, full_matrices=False)
    cutoff = np.finfo(float).eps * max(jac.shape) * (s[0] if s.size else 0.0)
    keep = s > cutoff
    rank = int(np.count_nonzero(keep))
    null_vectors = vt[~keep] if rank < n else np.zeros((0, n))
    if rank < vt.shape[0] or n > vt.shape[0]:
        # also the directions missing from a wide J (fewer residuals than parameters)
        _, _, full_vt = np.linalg.svd(jac, full_matrices=True)
        null_vectors = full_vt[rank:]
    unidentifiable = [[param_names[j] for j in np.flatnonzero(np.abs(v) > 1e-3 * np.max(np.abs(v)))] for v in null_vectors]
    if dof <= 0 or rank < n:
        return Uncertainty(None, None, rank, unidentifiable)
    s2 = rss / dof
    v_scaled = vt.T / s
    covariance = s2 * (v_scaled @ v_scaled.T)
    return Uncertainty(covariance, np.sqrt(np.diag(covariance)), rank, unidentifiable)
