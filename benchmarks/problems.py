"""Classic least-squares test problems written as curve fits (formula + data), for
``benchmarks/robustness.py``.

Moré, Garbow & Hillstrom, "Testing unconstrained optimization software", ACM TOMS 7 (1981):
the problems of that collection that are data fits, or can be written as one with a column
of indices or indicator columns. Each has its standard start x0; robustness is measured from
x0, 10 x0 and 100 x0, as the paper does. ``target`` is the published smallest sum of squares
(sum r_i^2, no 1/2) of the global minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TestProblem:
    name: str
    formula: str
    columns: dict  # name -> values (the predictors)
    y: np.ndarray
    start: tuple
    target: float  # the global minimum's sum of squares

    @property
    def p0(self) -> dict:
        """The start by name (b1..bn; a formula's own order is that of first appearance)."""
        return {f"b{i + 1}": v for i, v in enumerate(self.start)}

    @property
    def x_names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def dataset(self):
        from nlfit.io.dataset import Dataset

        names = self.x_names
        x = np.asarray(self.columns[names[0]], float) if len(names) == 1 else np.column_stack([np.asarray(self.columns[n], float) for n in names])
        return Dataset(x=x, y=np.asarray(self.y, float), x_names=names, y_name="y", source=self.name)


def _bard():
    i = np.arange(1, 16, dtype=float)
    v = 16 - i
    w = np.minimum(i, v)
    y = [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39]
    return TestProblem("Bard", "b1 + u/(v*b2 + w*b3)", {"u": i, "v": v, "w": w}, np.array(y), (1.0, 1.0, 1.0), 8.21487e-3)


def _beale():
    i = np.arange(1, 4, dtype=float)
    return TestProblem("Beale", "b1*(1 - b2^i)", {"i": i}, np.array([1.5, 2.25, 2.625]), (1.0, 1.0), 0.0)


def _biggs():
    t = 0.1 * np.arange(1, 14)
    y = np.exp(-t) - 5 * np.exp(-10 * t) + 3 * np.exp(-4 * t)
    return TestProblem("BiggsEXP6", "b3*exp(-t*b1) - b4*exp(-t*b2) + b6*exp(-t*b5)", {"t": t}, y, (1.0, 2.0, 1.0, 1.0, 1.0, 1.0), 0.0)


def _box3d():
    t = 0.1 * np.arange(1, 11)
    return TestProblem("Box3D", "exp(-t*b1) - exp(-t*b2) - b3*(exp(-t) - exp(-10*t))", {"t": t}, np.zeros(10), (0.0, 10.0, 20.0), 0.0)


def _brown_dennis():
    t = np.arange(1, 21) / 5.0
    formula = "(b1 + t*b2 - exp(t))^2 + (b3 + b4*sin(t) - cos(t))^2"
    return TestProblem("BrownDennis", formula, {"t": t}, np.zeros(20), (25.0, 5.0, -5.0, -1.0), 85822.2)


def _freudenstein_roth():
    formula = "b1 + k1*((5 - b2)*b2 - 2)*b2 + k2*((b2 + 1)*b2 - 14)*b2"
    return TestProblem("FreudensteinRoth", formula, {"k1": [1.0, 0.0], "k2": [0.0, 1.0]}, np.array([13.0, 29.0]), (0.5, -2.0), 0.0)


def _gaussian():
    t = (8 - np.arange(1, 16)) / 2.0
    half = [0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989]
    y = np.array(half + half[-2::-1])
    return TestProblem("Gaussian", "b1*exp(-b2*(t - b3)^2/2)", {"t": t}, y, (0.4, 1.0, 0.0), 1.12793e-8)


def _gulf():
    t = np.arange(1, 100) / 100.0
    u = 25 + (-50 * np.log(t)) ** (2.0 / 3.0)
    return TestProblem("Gulf", "exp(-abs(u - b2)^b3/b1)", {"u": u}, t, (5.0, 2.5, 0.15), 0.0)


def _jennrich_sampson():
    i = np.arange(1, 11, dtype=float)
    return TestProblem("JennrichSampson", "exp(i*b1) + exp(i*b2)", {"i": i}, 2 + 2 * i, (0.3, 0.4), 124.362)


def _kowalik_osborne():
    y = [0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246]
    u = [4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625]
    return TestProblem("KowalikOsborne", "b1*(u^2 + u*b2)/(u^2 + u*b3 + b4)", {"u": np.array(u)}, np.array(y), (0.25, 0.39, 0.415, 0.39), 3.07505e-4)


def _meyer():
    t = 45 + 5 * np.arange(1, 17, dtype=float)
    y = [34780, 28610, 23650, 19630, 16370, 13720, 11540, 9744, 8261, 7030, 6005, 5147, 4427, 3820, 3307, 2872]
    return TestProblem("Meyer", "b1*exp(b2/(t + b3))", {"t": t}, np.array(y, float), (0.02, 4000.0, 250.0), 87.9458)


def _osborne1():
    t = 10.0 * np.arange(33)
    y = [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751, 0.718, 0.685, 0.658, 0.628, 0.603, 0.580,
         0.558, 0.538, 0.522, 0.506, 0.490, 0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406]  # fmt: skip
    return TestProblem("Osborne1", "b1 + b2*exp(-t*b4) + b3*exp(-t*b5)", {"t": t}, np.array(y), (0.5, 1.5, -1.0, 0.01, 0.02), 5.46489e-5)


def _osborne2():
    t = np.arange(65) / 10.0
    y = [1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746, 0.679, 0.608, 0.655, 0.616, 0.606, 0.602,
         0.626, 0.651, 0.724, 0.649, 0.649, 0.694, 0.644, 0.624, 0.661, 0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395, 0.375,
         0.372, 0.391, 0.396, 0.405, 0.428, 0.429, 0.523, 0.562, 0.607, 0.653, 0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591,
         0.559, 0.597, 0.625, 0.739, 0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054]  # fmt: skip
    formula = "b1*exp(-t*b5) + b2*exp(-(t - b9)^2*b6) + b3*exp(-(t - b10)^2*b7) + b4*exp(-(t - b11)^2*b8)"
    start = (1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5)
    return TestProblem("Osborne2", formula, {"t": t}, np.array(y), start, 4.01377e-2)


MGH = [
    _bard(), _beale(), _biggs(), _box3d(), _brown_dennis(), _freudenstein_roth(), _gaussian(), _gulf(),
    _jennrich_sampson(), _kowalik_osborne(), _meyer(), _osborne1(), _osborne2(),
]  # fmt: skip
