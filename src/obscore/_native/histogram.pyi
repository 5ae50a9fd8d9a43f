"""Type stub for obscore._native.histogram (classic buckets and quantiles)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

def hist_bucketize(
    values: NDArray[np.float64],  # const float64_t[::1]
    bounds: NDArray[np.float64],  # const float64_t[::1], finite, strictly increasing
    counts: NDArray[np.float64],  # float64_t[::1], len(bounds) + 1, added to
    weights: NDArray[np.float64] | None = None,  # const float64_t[::1] or None
) -> int: ...  # intp_t: NaN values skipped
def hist_cumulative(
    counts: NDArray[np.float64],  # const float64_t[::1]
) -> NDArray[np.float64]: ...
def hist_quantile(
    q: float,  # float64_t
    bounds: NDArray[np.float64],  # const float64_t[::1], last is +Inf
    cumulative: NDArray[np.float64],  # const float64_t[::1]
) -> float: ...  # float64_t
def hist_quantile_many(
    q: float,  # float64_t
    bounds: NDArray[np.float64],  # const float64_t[::1], last is +Inf
    cumulative_2d: NDArray[np.float64],  # const float64_t[:, ::1], a row each
) -> NDArray[np.float64]: ...
