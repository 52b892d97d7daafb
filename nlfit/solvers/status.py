"""Why a run ended: a code, a short name and a message for humans."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    RUNNING = 0
    GTOL = 1
    FTOL = 2
    XTOL = 3
    MAX_ITER = 4
    NONFINITE = 5
    STALLED = 6
    INTERRUPTED = 7
    TIMEOUT = 8
    TOO_FEW_POINTS = 9
    SUSPECT = 10  # the solver converged, but a check after it shows the result is wrong
    NO_DATA = 11  # a group whose every row was dropped (missing values): nothing to fit

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @property
    def success(self) -> bool:
        return self in (Status.GTOL, Status.FTOL, Status.XTOL)

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Status.RUNNING: "still running",
    Status.GTOL: "converged: the gradient is below gtol (the residuals are orthogonal to the Jacobian's columns)",
    Status.FTOL: "converged: the actual and predicted relative reductions of the loss are below ftol",
    Status.XTOL: "converged: the step (or the trust region) is below xtol relative to the parameters",
    Status.MAX_ITER: "stopped: the maximum number of iterations was reached before convergence",
    Status.NONFINITE: "stopped: the residuals, their derivatives or the step are not finite (at the start, or along every step tried)",
    Status.STALLED: "stopped: no step that lowers the loss could be found (line search or damping exhausted)",
    Status.INTERRUPTED: "stopped by Ctrl-C or SIGTERM; the best result so far is reported",
    Status.TIMEOUT: "stopped: the time limit was reached; the best result so far is reported",
    Status.TOO_FEW_POINTS: "not fitted: fewer data points than parameters",
    Status.SUSPECT: "the solver stopped as converged, but the result is known to be wrong",
    Status.NO_DATA: "not fitted: every row of this group has a missing value in the used columns",
}
