"""Type stub for obscore._native.ringbuf (per-series ring buffers)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

STORED: int  # push status: the sample was appended
OUT_OF_ORDER: int  # push status: ts older than the last stored ts of the slot
DUPLICATE: int  # push status: ts equal to the last stored ts of the slot

class RingBuffers:
    def __init__(
        self,
        capacity: int,  # int64_t, > 0
        n_series: int = 0,  # int64_t, >= 0
    ) -> None: ...
    @property
    def capacity(self) -> int: ...  # int64_t
    @property
    def n_series(self) -> int: ...  # int64_t
    def add_series(
        self,
        n: int = 1,  # int64_t, >= 0
    ) -> int: ...  # int64_t: first new slot
    def push(
        self,
        slots: NDArray[np.int64],  # const int64_t[::1]
        ts: NDArray[np.int64],  # const int64_t[::1], ms
        values: NDArray[np.float64],  # const float64_t[::1]
        status: NDArray[np.uint8],  # uint8_t[::1], written
    ) -> int: ...  # int64_t: samples stored
    def count(
        self,
        slot: int,  # int64_t
    ) -> int: ...  # int64_t
    def last_ts(
        self,
        slot: int,  # int64_t
    ) -> int: ...  # int64_t, INT64_MIN when empty
    # returns (ts, values); read-only views when contiguous in the ring
    def read(
        self,
        slot: int,  # int64_t
        start_ms: int = ...,  # int64_t, default INT64_MIN
        end_ms: int = ...,  # int64_t, default INT64_MAX
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]: ...
    # returns (position in slots, ts, values) for every sample read
    def read_many(
        self,
        slots: NDArray[np.int64],  # const int64_t[::1]
        start_ms: int = ...,  # int64_t, default INT64_MIN
        end_ms: int = ...,  # int64_t, default INT64_MAX
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]: ...
    def __reduce__(self) -> tuple[Any, ...]: ...
    def __setstate__(self, state: dict[str, Any]) -> None: ...
