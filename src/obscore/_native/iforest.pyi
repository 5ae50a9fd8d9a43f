"""Type stub for obscore._native.iforest (isolation forest scoring)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

HAVE_OPENMP: bool  # built with OpenMP: n_threads > 1 runs in parallel

class Forest:
    def __init__(
        self,
        feature: NDArray[np.int32],  # int32_t per node
        threshold: NDArray[np.float32],  # float32_t per node
        child: NDArray[np.int32],  # int32_t per node
        nan_right: NDArray[np.uint8],  # uint8_t per node
        leaf_value: NDArray[np.float64],  # float64_t per node
        tree_offset: NDArray[np.int64],  # int64_t per tree + 1
        tree_depth: NDArray[np.int32],  # int32_t per tree
        n_features: int,  # int64_t
        denominator: float,  # float64_t
    ) -> None: ...
    @staticmethod
    def from_sklearn(model: Any) -> Forest: ...  # a fitted sklearn IsolationForest
    @property
    def n_trees(self) -> int: ...  # int64_t
    @property
    def n_features(self) -> int: ...  # int64_t
    @property
    def max_depth(self) -> int: ...  # int64_t
    @property
    def arrays(self) -> dict[str, NDArray[Any]]: ...
    def score(
        self,
        columns: list[NDArray[np.float64]],  # each const float64_t[::1], equal length
        n_threads: int = 1,  # int
    ) -> NDArray[np.float64]: ...
    def __reduce__(self) -> tuple[Any, ...]: ...

def iforest_score(
    forest: Forest,  # Forest
    columns: list[NDArray[np.float64]],  # each const float64_t[::1], equal length
    scores: NDArray[np.float64],  # float64_t[::1], written
    n_threads: int = 1,  # int
) -> int: ...  # intp_t: rows holding a NaN feature
