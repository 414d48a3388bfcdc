"""The predicted masks' figures."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from labelwise.inference.figures import _boundary


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 8), (5, 6, 7)])
def test_boundary_equals_scipy_erosion(shape):
    rng = np.random.default_rng(0)
    for density in (0.2, 0.6, 0.95, 1.0):
        mask = rng.random(shape) < density
        assert np.array_equal(_boundary(mask), mask & ~binary_erosion(mask, border_value=0))
