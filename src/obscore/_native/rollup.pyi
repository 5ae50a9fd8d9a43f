"""Type stub for obscore._native.rollup (fold samples into steps)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

COLUMNS: tuple[str, ...]  # output keys: group, ts, count, sum, min, max, last, increase

def rollup_fold(
    groups: NDArray[np.int64],  # const int64_t[::1]
    ts: NDArray[np.int64],  # const int64_t[::1], ms
    values: NDArray[np.float64],  # const float64_t[::1]
    step_ms: int,  # int64_t, > 0
    is_counter: bool,  # bint
) -> dict[str, NDArray[Any]]: ...
def rollup_downsample(
    groups: NDArray[np.int64],  # const int64_t[::1]
    ts: NDArray[np.int64],  # const int64_t[::1], ms (fine step start)
    count: NDArray[np.int64],  # const int64_t[::1]
    sum_: NDArray[np.float64],  # const float64_t[::1]
    min_: NDArray[np.float64],  # const float64_t[::1]
    max_: NDArray[np.float64],  # const float64_t[::1]
    last: NDArray[np.float64],  # const float64_t[::1]
    increase: NDArray[np.float64],  # const float64_t[::1]
    step_ms: int,  # int64_t, > 0
) -> dict[str, NDArray[Any]]: ...
