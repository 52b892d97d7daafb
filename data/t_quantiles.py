"""Writes data/t_quantiles.json: Student t and normal quantiles to 40 digits with mpmath, the
reference of tests/test_quantiles.py (mpmath is not a dependency of nlfit or of its tests).

    python -m venv /tmp/mp && /tmp/mp/bin/pip install mpmath && /tmp/mp/bin/python data/t_quantiles.py

Each quantile is the root of F(t) = p, F(t) = 1 - I_x(v/2, 1/2) / 2 with x = v / (v + t^2)
(mpmath's regularized incomplete beta function), bracketed by doubling and found by the
Illinois method at 60 digits; p is the float as written (its exact binary value).
"""

import json
from pathlib import Path

import mpmath

mpmath.mp.dps = 60
DOFS = [0.5, 1, 1.5, 2, 3, 4, 5, 7, 10, 13, 30, 49, 50, 51, 100, 197, 500, 999, 1999, 2000, 2001, 1e4, 1e6, 1e9]
PROBABILITIES = [0.5000001, 0.50137, 0.6, 0.75, 0.9, 0.95, 0.975, 0.99, 0.995, 0.9995, 0.99995, 0.999999]
HEAVY = [(0.01, 0.6), (0.01, 0.975), (0.05, 0.975), (0.1, 0.999), (0.3, 0.999999)]


def t_quantile(v: float, p: float) -> str:
    v, p = mpmath.mpf(v), mpmath.mpf(p)

    def f(t):
        return 1 - mpmath.betainc(v / 2, mpmath.mpf(1) / 2, 0, v / (v + t * t), regularized=True) / 2 - p

    hi = mpmath.mpf(1)
    while f(hi) < 0:
        hi *= 2
    root = mpmath.findroot(f, (hi / 2 if hi > 1 else mpmath.mpf(0), hi), solver="illinois", tol=mpmath.mpf(10) ** -50, maxsteps=10000)
    return mpmath.nstr(root, 40)


def main() -> None:
    cases = [(v, p) for v in DOFS for p in PROBABILITIES] + HEAVY
    out = {
        "t": [[v, p, t_quantile(v, p)] for v, p in cases],
        "normal": [[p, mpmath.nstr(mpmath.sqrt(2) * mpmath.erfinv(2 * mpmath.mpf(p) - 1), 40)] for p in [1e-10, 0.025, *PROBABILITIES, 1 - 1e-10]],
    }
    lines = ",\n".join(f'  "{key}": [\n' + ",\n".join("    " + json.dumps(row) for row in rows) + "\n  ]" for key, rows in out.items())
    Path(__file__).with_suffix(".json").write_text("{\n" + lines + "\n}\n")


if __name__ == "__main__":
    main()
