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


def as_ts_ns(x: object) -> np.ndarray:
    """``x`` as a contiguous 1-d int64 array of ns timestamps (a scalar becomes length 1);
    a float or non-1-d input is a ``ValueError``."""
    a = np.asarray(x)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(
            f"ts_ns must be a 1-d integer array (ns), got dtype {a.dtype} shape {a.shape}"
        )
    return np.ascontiguousarray(a, dtype=np.int64)
