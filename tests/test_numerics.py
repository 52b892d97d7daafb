"""The array helpers under the checks and the statistics (``nlfit.numerics``) and the sums of
the checks over large data: the one-pass forms give what the careful forms give, and fall
back to them wherever the one-pass form could over- or underflow."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from nlfit import diagnostics, numerics


def _careful_norms(values, axis):
    largest = np.max(np.abs(values), axis=axis, keepdims=True)
    return np.squeeze(largest, axis) * np.sqrt(np.sum((values / largest) ** 2, axis=axis))


@pytest.mark.parametrize("size", [1.0, 1e-200, 1e200])
def test_norms_are_the_scaled_norms_at_any_magnitude(size):
    values = np.random.default_rng(0).normal(size=(3, 50, 4)) * size
    for axis in (0, 1, 2):
        np.testing.assert_allclose(numerics.norms(values, axis=axis), _careful_norms(values, axis), rtol=1e-14)
    assert np.all(numerics.norms(np.zeros((2, 5)), axis=1) == 0.0)
    with_nan = np.array([[1.0, np.nan], [3.0, 4.0]])
    norms = numerics.norms(with_nan, axis=1)
    assert np.isnan(norms[0]) and norms[1] == pytest.approx(5.0, rel=1e-15)


def test_uniform_sigma_is_one_value_per_group_on_real_rows_only():
    real = np.ones((2, 4), dtype=bool)
    np.testing.assert_array_equal(numerics.uniform(np.array([[1.0] * 4, [2.5] * 4]), real), [1.0, 2.5])
    assert numerics.uniform(np.array([[1.0, 1.0, 2.0, 1.0], [1.0] * 4]), real) is None
    padded = real.copy()
    padded[1, 3] = False  # a padded row (sigma = inf): the per-row forms are needed
    assert numerics.uniform(np.array([[1.0] * 4, [1.0, 1.0, 1.0, np.inf]]), padded) is None
    assert numerics.uniform(np.zeros((1, 0)), np.ones((1, 0), dtype=bool)) is None


def test_residual_scales_of_one_sigma_are_those_of_the_quotients():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(3, 40)) * np.array([[1.0], [1e-3], [7e5]])
    real = np.ones_like(y, dtype=bool)
    for sigma_value in (1.0, 0.3):
        sigma = np.full_like(y, sigma_value)
        expected = 2.0 ** np.floor(np.log2(np.max(np.abs(y / sigma), axis=1)))
        np.testing.assert_array_equal(numerics.residual_scales(y, sigma, real), expected)
    y[0, 5], y[1, 7] = np.nan, np.inf  # non-finite values are left out, as before
    expected = 2.0 ** np.floor(np.log2(np.max(np.where(np.isfinite(y), np.abs(y), 0.0), axis=1)))
    np.testing.assert_array_equal(numerics.residual_scales(y, np.ones_like(y), real), expected)


def _problems(y, sigma, scale):
    return SimpleNamespace(y=y, sigma=sigma, scale=scale, loss="linear", f_scale=np.ones(len(y)))


@pytest.mark.parametrize("offset", [0.0, 1e6, 1e200])
def test_the_best_constant_and_the_rounding_level_of_one_sigma_are_the_weighted_ones(offset):
    """With one sigma per group and every row real, the plain mean and one pass over the
    centred values; the same as the weighted sums over the rows (computed here with one
    padded row more, which takes the per-row forms)."""
    rng = np.random.default_rng(2)
    y = offset + rng.normal(size=(2, 30)) * max(1.0, offset * 1e-3)
    scale = np.array([1.0, 4.0]) * max(1.0, offset)
    sigma = np.full_like(y, 0.5)
    real = np.ones_like(y, dtype=bool)
    constants, losses = diagnostics.best_constants(_problems(y, sigma, scale), real)
    padded_y, padded_sigma = np.pad(y, ((0, 0), (0, 1)), mode="edge"), np.pad(sigma, ((0, 0), (0, 1)), constant_values=np.inf)
    padded_real = np.pad(real, ((0, 0), (0, 1)))
    weighted = _problems(padded_y, padded_sigma, scale)
    expected_constants, expected_losses = diagnostics.best_constants(weighted, padded_real)
    np.testing.assert_allclose(constants, expected_constants, rtol=1e-14)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-9)
    assert np.all(np.isfinite(losses))
    rounding = diagnostics._response_squares(_problems(y, sigma, scale), real)
    np.testing.assert_allclose(rounding, diagnostics._response_squares(weighted, padded_real), rtol=1e-13)
    assert np.all(np.isfinite(rounding) & (rounding > 0))


def test_aligned_arrays_are_read_in_place():
    values = np.arange(1001, dtype=np.float64)[1:]  # 8 bytes past an allocation: not at 64
    out = numerics.aligned(values)
    assert out.ctypes.data % numerics.ALIGNMENT == 0
    np.testing.assert_array_equal(out, values)
    assert numerics.aligned(out) is out
    matrix = numerics.aligned(np.ones((1, 7, 2)))
    assert matrix.shape == (1, 7, 2) and matrix.ctypes.data % numerics.ALIGNMENT == 0


@pytest.mark.parametrize("shape", [(2, 3 * numerics.SQUARES_CHUNK + 5), (5000, 30), (3, 0), (7,)])
def test_sums_of_squares_in_chunks_are_numpys(shape):
    values = np.random.default_rng(3).normal(size=shape)
    np.testing.assert_allclose(numerics.sum_squares(values), np.sum(values**2, axis=-1), rtol=1e-14)
    assert numerics.sum_squares(values).shape == shape[:-1]


def test_sums_of_squares_about_a_centre_are_numpys():
    values = np.random.default_rng(4).normal(size=(3, 2 * numerics.SQUARES_CHUNK + 1)) + 1e3
    centre = np.mean(values, axis=1)
    np.testing.assert_allclose(numerics.sum_squares(values, centre), np.sum((values - centre[:, None]) ** 2, axis=1), rtol=1e-12)
    small = values[:, :40]
    np.testing.assert_allclose(numerics.sum_squares(small, centre), np.sum((small - centre[:, None]) ** 2, axis=1), rtol=1e-12)


def test_the_best_constant_of_huge_values_close_together_is_not_lost_to_overflow():
    """The sums of squares of the deviations are in range while (sigma scale)^2 is not: the
    per-row forms, not a loss of 0 (and no overflow warning)."""
    y = np.where(np.arange(16) % 2 == 0, 1e155, np.nextafter(1e155, np.inf))[None, :]
    scale = numerics.residual_scales(y, np.ones_like(y), np.ones_like(y, dtype=bool))
    problems = _problems(y, np.ones_like(y), scale)
    constants, losses = diagnostics.best_constants(problems, np.ones_like(y, dtype=bool))
    weighted = _problems(np.pad(y, ((0, 0), (0, 1)), mode="edge"), np.pad(np.ones_like(y), ((0, 0), (0, 1)), constant_values=np.inf), scale)
    expected_constants, expected_losses = diagnostics.best_constants(weighted, np.pad(np.ones_like(y, dtype=bool), ((0, 0), (0, 1))))
    assert losses[0] > 0
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-9)
    np.testing.assert_allclose(constants, expected_constants, rtol=1e-15)


@pytest.mark.parametrize("magnitude", [1e155, 1e200, 1e-160, 1e-200])
def test_r_squared_does_not_depend_on_the_datas_magnitude(magnitude):
    """The total sum of squares of the statistics, at magnitudes whose squares over- or
    underflow: R^2 and its adjusted form as at magnitude 1."""
    from nlfit import fit
    from nlfit.io.dataset import Dataset

    x = np.linspace(0.0, 1.0, 192)  # a size on the padding ladder: every row real, the one-pass sums
    y = 1.0 + 2.0 * x + np.random.default_rng(5).normal(0.0, 0.1, x.size)
    plain = fit(Dataset(x=x, y=y, x_names=("x",), y_name="y"), "polynomial:1")
    scaled = fit(Dataset(x=x, y=y * magnitude, x_names=("x",), y_name="y"), "polynomial:1")
    for name in ("r2", "r2_adj"):
        assert scaled.stats[name] == pytest.approx(plain.stats[name], rel=1e-12), name
