"""Reader for NIST StRD nonlinear regression files (``.dat``).

A file holds the model formula, two starting points, the certified parameter values with
their certified standard deviations, the certified residual sum of squares and residual
standard deviation, and the data (response first, then predictors). Everything but the
data goes into ``Dataset.nist`` (a ``NistInfo``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from nlfit.errors import InputError
from nlfit.io.dataset import Dataset, NistInfo

_PARAM_LINE = re.compile(r"^\s*(b\d+)\s*=\s*(.*)$")


def read_nist(path: Path) -> Dataset:
    if not path.exists():
        raise InputError(f"data file not found: {path}")
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return _parse(lines, path)
    except (ValueError, IndexError, StopIteration) as exc:
        raise InputError(f"{path} is not a NIST StRD nonlinear regression file ({exc or 'no Model: section'})") from None


def _parse(lines: list[str], path: Path) -> Dataset:
    formula = _formula(lines)
    names, starts1, starts2, certified, certified_sd = [], [], [], [], []
    for line in lines:
        match = _PARAM_LINE.match(line)
        if match:
            fields = match.group(2).split()
            if len(fields) != 4:
                continue
            names.append(match.group(1))
            starts1.append(float(fields[0]))
            starts2.append(float(fields[1]))
            certified.append(float(fields[2]))
            certified_sd.append(float(fields[3]))
    if not names:
        raise ValueError("no parameter table")
    rss = _number_after(lines, "Residual Sum of Squares:")
    rsd = _number_after(lines, "Residual Standard Deviation:")
    dof = int(_number_after(lines, "Degrees of Freedom:"))
    header_index = max(i for i, line in enumerate(lines) if line.startswith("Data:"))
    columns = lines[header_index].split()[1:]
    rows = [line.split() for line in lines[header_index + 1 :] if line.strip()]
    data = np.array(rows, dtype=np.float64)
    # The same numbers parsed in extended precision: near an exact fit (Lanczos1) the float64
    # rounding of the data is as large as the residuals (nlfit.refine uses them).
    extended = np.array([[np.longdouble(v) for v in row] for row in rows], dtype=np.longdouble)
    if data.ndim != 2 or data.shape[1] != len(columns):
        raise ValueError("data table does not match its header")
    y = data[:, 0]
    x = data[:, 1] if data.shape[1] == 2 else data[:, 1:]
    name = path.stem
    return Dataset(
        x=x,
        y=y,
        x_names=tuple(columns[1:]),
        y_name=columns[0],
        source=str(path),
        nist=NistInfo(
            name=name,
            formula=formula,
            param_names=tuple(names),
            starts={1: tuple(starts1), 2: tuple(starts2)},
            certified=tuple(certified),
            certified_sd=tuple(certified_sd),
            certified_rss=rss,
            certified_rsd=rsd,
            dof=dof,
            long_x=extended[:, 1] if data.shape[1] == 2 else extended[:, 1:],
            long_y=extended[:, 0],
        ),
    )


def _formula(lines: list[str]) -> str:
    start = next(i for i, line in enumerate(lines) if line.startswith("Model:"))
    body = []
    for line in lines[start + 1 :]:
        if body and not line.strip():
            break
        if re.fullmatch(r"\s*[A-Za-z_]\w*\s*=\s*[-+0-9.Ee]+\s*", line):
            continue  # a constant's definition, such as Roszman1's 'pi = 3.1415...'
        if "=" in line or body:
            body.append(line.strip())
    text = " ".join(body)
    text = re.sub(r"\+\s*e\s*$", "", text).strip()
    return text.replace("[", "(").replace("]", ")")


def _number_after(lines: list[str], label: str) -> float:
    for line in lines:
        if line.strip().startswith(label):
            return float(line.split(":", 1)[1].split()[0])
    raise ValueError(f"no '{label}' line")
