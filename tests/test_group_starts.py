"""The default starts of a grouped fit come from one batched computation per size bucket
(``Model.default_p0_groups``), not one call per group; they equal the starts chosen group
by group (``start.choose_start``) to rounding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nlfit import prepare
from nlfit.io.read import read_dataset
from nlfit.models.registry import model_for


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """400 rational groups of 1 to 60 rows (every 7th of 100), some with x in the thousands,
    some with half their rows missing."""
    rng = np.random.default_rng(0)
    frames = []
    for g in range(400):
        n = int(rng.integers(1, 60)) if g % 7 else 100
        wide = 1e3 if g % 11 == 0 else 1.0
        x = np.sort(rng.uniform(-1, 1, n)) * wide
        t = x / wide
        y = 1 / (rng.uniform(0.5, 1.5) + rng.uniform(-0.3, 0.3) * t + rng.uniform(5, 15) * t * t) + rng.normal(0, 0.01, n)
        if g % 13 == 0:
            y[: n // 2] = np.nan
        frames.append(pd.DataFrame({"id": g, "x": x, "y": y}))
    path = tmp_path_factory.mktemp("starts") / "uneven.csv"
    pd.concat(frames).to_csv(path, index=False)
    return read_dataset(str(path), x_columns=["x"], y_column="y", group_column="id")


CASES = [("rational", None), ("rational", {"c1": 0.25}), ("rational:2/2", None), ("polynomial:3", None), ("a*exp(-b*x)+c", None)]


@pytest.mark.parametrize(("spec", "p0"), CASES)
def test_batched_default_starts_equal_the_ones_chosen_group_by_group(uneven, spec, p0, monkeypatch):
    model = model_for(spec, uneven)
    rows = prepare.group_rows(uneven)
    y = np.asarray(uneven.y)
    batched = prepare._default_starts(model, rows, np.asarray(uneven.x), y, len(model.param_names))
    assert batched is not None and np.count_nonzero(~batched[1]) > 300  # most groups batched; those with fewer rows than parameters not
    fast, given = prepare._group_starts(model, uneven, rows, y, p0, None)
    monkeypatch.setattr(prepare, "_default_starts", lambda *args: None)
    slow, _ = prepare._group_starts(model, uneven, rows, y, p0, None)
    assert given == (p0 is not None)
    np.testing.assert_allclose(fast, slow, rtol=1e-8, atol=1e-12)
    if p0:
        assert np.all(fast[:, 1] == 0.25)


def test_a_model_without_a_batched_start_goes_group_by_group(uneven):
    model = model_for("logistic", uneven)
    assert model.default_p0_groups(np.zeros((2, 3)), np.ones((2, 3)), np.ones((2, 3), dtype=bool)) is None
    assert prepare._default_starts(model, prepare.group_rows(uneven), np.asarray(uneven.x), np.asarray(uneven.y), 3) is None


def test_data_keys_hash_each_groups_bytes_in_place():
    """The seed of a group's random starts: the CRC of its rows' bytes, taken in place; equal
    to the CRC of a copy for one and several predictors, and for a group with no rows."""
    import zlib
    from types import SimpleNamespace

    from nlfit.fitting import data_keys

    rng = np.random.default_rng(5)
    for shape in [(3, 6), (3, 6, 2)]:
        problems = SimpleNamespace(x=rng.normal(size=shape), y=rng.normal(size=shape[:2]), sigma=np.ones(shape[:2]))
        counts = np.array([6, 0, 4])
        expected = []
        for g, count in enumerate(counts):
            key = 0
            for values in (problems.x, problems.y, problems.sigma):
                key = zlib.crc32(np.ascontiguousarray(values[g, :count]).tobytes(), key)
            expected.append(key)
        assert data_keys(problems, counts) == expected
