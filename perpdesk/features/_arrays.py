"""Input coercion shared by the feature kernels."""

from __future__ import annotations

import numpy as np


def as_f64_1d(x: object, name: str) -> np.ndarray:
    """``x`` as a contiguous 1-d float64 array (a scalar becomes length 1)."""
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {a.shape}")
    return a
