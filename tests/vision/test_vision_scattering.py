"""medrag.vision.scattering: the numpy wavelet scattering transform."""

from __future__ import annotations

import numpy as np
import pytest

from medrag.errors import InputError
from medrag.vision.scattering import morlet_filters, scattering


def channels(scales: int, orientations: int) -> int:
    return 1 + scales * orientations + orientations**2 * scales * (scales - 1) // 2


def test_shape_order_zero_and_zero_mean_wavelets():
    rng = np.random.default_rng(0)
    x = rng.random((64, 64)).astype(np.float32)
    out = scattering(x, scales=3, orientations=4)
    assert out.shape == (channels(3, 4), 8, 8) and out.dtype == np.float32 and np.isfinite(out).all()
    # Order 0: the image averaged over 8 x 8 cells.
    assert np.allclose(out[0], x.reshape(8, 8, 8, 8).mean(axis=(1, 3)), atol=1e-6)
    # Wavelets have no DC: a constant image has no order 1 or 2 energy.
    flat = scattering(np.full((64, 64), 0.7, np.float32), scales=3, orientations=4)
    assert np.allclose(flat[0], 0.7) and np.abs(flat[1:]).max() < 1e-4
    assert all(abs(f[0, 0]) < 1e-3 for f in morlet_filters(64, 3, 4).values())
    assert np.array_equal(scattering(x, 3, 4), out)  # deterministic


def test_orientation_and_scale_selectivity():
    yy, xx = np.mgrid[0:64, 0:64]
    vertical_stripes = (np.sin(2 * np.pi * xx / 4) + 1).astype(np.float32)  # period 4 px: the finest scale
    out = scattering(vertical_stripes, scales=3, orientations=4)
    first = out[1:1 + 12].mean(axis=(1, 2)).reshape(3, 4)  # (scale, orientation)
    assert first[0].max() > 5 * first[0].min()  # one orientation answers, the orthogonal one hardly
    assert first[0].max() > first[2].max()  # fine stripes excite the fine scale more than the coarse one
    turned = scattering(np.ascontiguousarray(vertical_stripes.T), scales=3, orientations=4)[1:1 + 12].mean(axis=(1, 2)).reshape(3, 4)
    assert turned[0].argmax() != first[0].argmax()  # turned by 90 degrees: another orientation answers


def test_circular_shifts_by_whole_cells_shift_the_coefficients():
    x = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    out = scattering(x, scales=3, orientations=4)
    shifted = scattering(np.roll(x, 16, axis=1), scales=3, orientations=4)
    assert np.allclose(shifted, np.roll(out, 2, axis=2), atol=1e-4)


@pytest.mark.parametrize("shape", [(64, 48), (60, 60), (64,), (2, 64, 64)])
def test_bad_shapes_are_refused(shape):
    with pytest.raises(InputError, match="square image"):
        scattering(np.zeros(shape, np.float32), scales=3, orientations=4)
