"""NIST StRD certified values at default settings (the file's formula, NIST's starts).

The project ships the 16 datasets in data/nist, so this does not depend on ../shared.
"""

from __future__ import annotations

import pytest
from conftest import NIST_DIR, NIST_NAMES, lre

from nlfit import fit, read_dataset

_DATA: dict = {}


def dataset(name):
    if name not in _DATA:
        _DATA[name] = read_dataset(str(NIST_DIR / f"{name}.dat"))
    return _DATA[name]


# Known failures would be listed here as (name, start): reason, and marked xfail(strict=True).
KNOWN_FAILURES: dict = {}


@pytest.mark.parametrize(
    "name, start",
    [
        pytest.param(n, s, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[(n, s)])] if (n, s) in KNOWN_FAILURES else [])
        for n in NIST_NAMES
        for s in (1, 2)
    ],
)
def test_default_fit_reaches_certified_values(name, start):
    data = dataset(name)
    result = fit(data, data.nist.formula, p0=data.nist.starts[start])
    assert lre(result.params, data.nist.certified) >= 6.0, (result.status.label, result.params)
    assert result.success, result.message


@pytest.mark.parametrize("name, spec", [("Thurber", "rational:3/3"), ("Kirby2", "rational:2/2")])
@pytest.mark.parametrize("start", [1, 2])
def test_rational_models_reach_certified_values(name, spec, start):
    data = dataset(name)
    result = fit(data, spec, p0=data.nist.starts[start])
    assert lre(result.params, data.nist.certified) >= 6.0


def test_all_sixteen_datasets_are_shipped():
    assert len(NIST_NAMES) == 16
