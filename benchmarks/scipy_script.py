"""The pandas + scipy script that nlfit's whole commands are measured against
(``startup.py``, ``bigdata.py --commands``), as text to run in a fresh process:

    python -c SCRIPT FILE [TOL]

It reads FILE (CSV, or Parquet by its extension) with pandas and fits the rational model
1/(c0 + c1 x + c2 x^2) from [1, 0, 10] with ``least_squares(method='lm')`` and the analytic
Jacobian, ftol = xtol = gtol = TOL when given (scipy's defaults otherwise); it prints its own
seconds and the parameters."""

SCRIPT = """
import sys, time
began = time.perf_counter()
import numpy as np, pandas as pd
from scipy.optimize import least_squares
path = sys.argv[1]
tolerances = {} if len(sys.argv) < 3 else dict.fromkeys(("ftol", "xtol", "gtol"), float(sys.argv[2]))
frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
def residuals(c):
    return 1.0 / (c[0] + c[1] * x + c[2] * x * x) - y
def jacobian(c):
    f2 = (1.0 / (c[0] + c[1] * x + c[2] * x * x)) ** 2
    return np.column_stack([-f2, -f2 * x, -f2 * x * x])
fitted = least_squares(residuals, [1.0, 0.0, 10.0], jac=jacobian, method="lm", **tolerances)
print(time.perf_counter() - began, *fitted.x)
"""
