"""Type stub for obscore._native.histogram (classic buckets and quantiles)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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

class HistogramCell:
    def __init__(
        self,
        bounds: NDArray[np.float64],  # const float64_t[::1], finite, strictly increasing
    ) -> None: ...
    def observe(self, value: float) -> None: ...  # float64_t
    def observe_weighted(
        self,
        value: float,  # float64_t
        weight: float,  # float64_t
    ) -> None: ...
    def observe_many(
        self,
        values: NDArray[np.float64],  # const float64_t[::1]
        weights: NDArray[np.float64] | None = None,  # const float64_t[::1] or None
    ) -> int: ...  # int64_t: NaN values skipped
    @property
    def bounds(self) -> NDArray[np.float64]: ...
    @property
    def bucket_counts(self) -> NDArray[np.float64]: ...  # len(bounds) + 1, last is +Inf
    @property
    def count(self) -> float: ...  # float64_t
    @property
    def sum(self) -> float: ...  # float64_t
    @property
    def n_nan(self) -> int: ...  # int64_t

class ExpHistogram:
    def __init__(
        self,
        alpha: float = 0.005,  # float64_t, in (0, 1)
        min_value: float = 1e-300,  # float64_t, > 0
    ) -> None: ...
    def add(
        self,
        values: NDArray[np.float64],  # const float64_t[::1]
        weights: NDArray[np.float64] | None = None,  # const float64_t[::1] or None
    ) -> int: ...  # int64_t: NaN values skipped
    def observe(
        self,
        value: float,  # float64_t
        weight: float = 1.0,  # float64_t
    ) -> None: ...
    def merge(self, other: ExpHistogram) -> None: ...
    def quantile(self, q: float) -> float: ...  # float64_t in [0, 1] -> float64_t
    def quantiles(self, qs: Sequence[float]) -> list[float]: ...
    def buckets(self) -> dict[str, Any]: ...
    @property
    def alpha(self) -> float: ...
    @property
    def gamma(self) -> float: ...
    @property
    def min_value(self) -> float: ...
    @property
    def count(self) -> float: ...
    @property
    def sum(self) -> float: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...
    @property
    def n_nan(self) -> int: ...
    @property
    def n_buckets(self) -> int: ...  # int64_t
