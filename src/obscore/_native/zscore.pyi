"""Type stub for obscore._native.zscore (streaming z-scores)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

class ZScoreState:
    def __init__(
        self,
        window_ms: int,  # int64_t, > 0
        min_count: int = 2,  # int64_t, >= 2
        capacity_hint: int = 1024,  # int64_t, > 0
    ) -> None: ...
    @property
    def window_ms(self) -> int: ...  # int64_t
    @property
    def min_count(self) -> int: ...  # int64_t
    @property
    def count(self) -> int: ...  # int64_t
    @property
    def mean(self) -> float: ...  # float64_t, NaN when empty
    @property
    def std(self) -> float: ...  # float64_t, NaN below 2 samples
    def update(
        self,
        ts: NDArray[np.int64],  # const int64_t[::1], ms
        values: NDArray[np.float64],  # const float64_t[::1]
        scores: NDArray[np.float64],  # float64_t[::1], written
    ) -> int: ...  # int64_t: non-NaN scores written
    def reset(self) -> None: ...
    def __reduce__(self) -> tuple[Any, ...]: ...
    def __setstate__(self, state: dict[str, Any]) -> None: ...

def zscore_rolling(
    values: NDArray[np.float64],  # const float64_t[::1]
    window: int,  # int64_t, >= 2
    scores: NDArray[np.float64],  # float64_t[::1], written
) -> int: ...  # intp_t: non-NaN scores written
