"""Shape buckets: a single fit runs on its rows padded to the next size of a ladder (rows
weighted zero exactly), so files of different lengths share one compiled solver. The result
is the unpadded fit's, to round-off, and the statistics count the real rows only."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NIST_DIR, lre, runge_data

from nlfit import fitting
from nlfit.fitting import fit, padded_size
from nlfit.io.dataset import Dataset
from nlfit.io.read import read_dataset


def test_the_ladder_grows_by_a_quarter_and_stops_at_large_data():
    sizes = sorted({padded_size(n) for n in range(1, 5000)})
    assert sizes[0] == 16 and all(s % 8 == 0 for s in sizes)
    assert all(1.0 < b / a <= (1.5 if a < 100 else 1.3) for a, b in zip(sizes, sizes[1:], strict=False))  # multiples of 8 at the bottom
    assert all(padded_size(n) >= n for n in (1, 17, 4999, 99_999, 100_000, 250_000))
    assert padded_size(100_000) == 100_000 and padded_size(123_457) == 123_457  # large data: no padding


def _weighted():
    x = np.linspace(0.1, 4.0, 37)
    sigma = 0.05 + 0.02 * x
    y = 2.5 * np.exp(-0.7 * x) + 0.3 + sigma * np.sin(13 * x)
    return Dataset(x=x, y=y, x_names=("x",), y_name="y", sigma=sigma)


CASES = {
    "rational, defaults (multistart)": (runge_data(n=201), "rational", {}),
    "gauss-newton, line search": (runge_data(n=150, seed=3), "rational", {"method": "gn", "starts": 1}),
    "gradient descent, trust region": (runge_data(n=50, seed=4), "polynomial:2", {"method": "gd", "globalization": "trust-region", "max_iter": 300}),
    "robust loss with bounds": (runge_data(n=77, seed=5), "rational", {"loss": "soft_l1", "bounds": "c0=0.5:2"}),
    "weighted formula, absolute sigma": (_weighted(), "a*exp(-b*x)+c", {"absolute_sigma": True}),
}


# What padding guarantees: the same problem, solved with its sums taken in another order. The
# two runs round differently, so they are equal to what the stopping rules promise, not to the
# last bit: the same minimum (parameters to the convergence tolerance, norm-wise), the same
# status, and iteration counts that may differ by one step taken or rejected at the end.
PARAMS_RTOL = 1e-7  # ||padded - plain|| / ||plain||: well inside xtol's 1e-8 per step times the few steps either may add
STATS_RTOL = 1e-9  # the loss at a minimum is second order in the parameters' difference


def _norm_close(actual, expected, rtol):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    return np.linalg.norm(actual - expected) <= rtol * max(np.linalg.norm(expected), np.finfo(float).tiny)


@pytest.mark.parametrize("name", list(CASES))
def test_a_padded_fit_is_the_unpadded_fit(name, monkeypatch):
    data, model, options = CASES[name]
    assert padded_size(data.n_points) > data.n_points  # the case is padded
    padded = fit(data, model, **options)
    monkeypatch.setattr(fitting, "padded_size", lambda rows: rows)
    plain = fit(data, model, **options)
    assert padded.status == plain.status
    for key in plain.counts:
        assert abs(padded.counts[key] - plain.counts[key]) <= 1, (key, padded.counts, plain.counts)
    assert _norm_close(padded.params, plain.params, PARAMS_RTOL), (padded.params, plain.params)
    assert _norm_close(padded.stderr, plain.stderr, 1e-6), (padded.stderr, plain.stderr)
    for key in ("n", "dof", "rss", "sigma", "aic", "bic"):
        assert padded.stats[key] == pytest.approx(plain.stats[key], rel=STATS_RTOL), key
    assert padded.stats["n"] == data.n_points and padded.stats["dof"] == data.n_points - len(padded.params)
    assert padded.history[0]["loss"] == pytest.approx(plain.history[0]["loss"], rel=1e-12)  # the same problem at the same start
    assert padded.history[-1]["loss"] == pytest.approx(plain.history[-1]["loss"], rel=STATS_RTOL)


def test_a_nist_file_is_padded_and_keeps_its_certified_answer():
    """The certified digits, as NIST scores them (LRE), not the last bits of one run."""
    data = read_dataset(str(NIST_DIR / "Misra1a.dat"))
    assert padded_size(data.n_points) > data.n_points
    result = fit(data, data.nist.formula, p0=data.nist.starts[1])
    assert lre(result.params, data.nist.certified) >= 7.0, result.params
    assert lre(result.stderr, data.nist.certified_sd) >= 5.0, result.stderr
    assert lre([result.stats["rss"]], [data.nist.certified_rss]) >= 7.0


def test_blocks_of_other_numbers_of_groups_share_their_size():
    """A bucket's blocks have a size on the ladder (at most the largest for the width), so
    fits of about as many groups, such as the partitions of a Dask job, share one compiled
    solver; every group is in one block, the last filled up with copies of its last group."""
    from nlfit.prepare import BLOCK_RESIDUALS, blocks

    sizes = set()
    for groups in (24_990, 25_000, 25_013, 24_873):
        cut = blocks(np.arange(groups), 100)
        assert len({len(block) for block in cut}) == 1 and len(cut[0]) <= BLOCK_RESIDUALS // 100
        every = np.concatenate(cut)
        np.testing.assert_array_equal(every[:groups], np.arange(groups))
        assert np.all(every[groups:] == groups - 1)
        sizes.add(len(cut[0]))
    assert len(sizes) == 1
    assert [len(block) for block in blocks(np.arange(300), 100)] == [300]  # one block: as it is
