"""Slow, obvious implementations that the kernel tests use as oracles.

Each function here favours being plainly right over being fast: plain Python
loops over plain lists, one rule per line, no shared state with the kernels.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

INT64_MIN = -(2**63)


class RingModel:
    """A deque per series, with the push rules of ``RingBuffers``."""

    def __init__(self, capacity: int, n_series: int = 0) -> None:
        self.capacity = capacity
        self.series: list[deque[tuple[int, float]]] = [
            deque(maxlen=capacity) for _ in range(n_series)
        ]
        self.last: list[int | None] = [None] * n_series

    def add_series(self, n: int = 1) -> int:
        first = len(self.series)
        for _ in range(n):
            self.series.append(deque(maxlen=self.capacity))
            self.last.append(None)
        return first

    def push(self, slot: int, ts: int, value: float) -> int:
        """Return 0 stored, 1 out of order, 2 duplicate."""
        last = self.last[slot]
        if last is not None and ts < last:
            return 1
        if last is not None and ts == last:
            return 2
        self.series[slot].append((ts, value))
        self.last[slot] = ts
        return 0

    def read(self, slot: int, start_ms: int, end_ms: int) -> list[tuple[int, float]]:
        return [(t, v) for t, v in self.series[slot] if start_ms <= t < end_ms]

    def last_ts(self, slot: int) -> int:
        last = self.last[slot]
        return INT64_MIN if last is None else last


def step_start(ts: int, step_ms: int) -> int:
    """Start of the step holding ``ts``: floor division, also below zero."""
    return (ts // step_ms) * step_ms


def fold(
    groups: Sequence[int],
    ts: Sequence[int],
    values: Sequence[float],
    step_ms: int,
    is_counter: bool,
) -> dict[str, np.ndarray]:
    """Rollup rows per (group, step), one sample at a time."""
    rows: list[dict] = []
    prev: float | None = None
    for i, (g, t, v) in enumerate(zip(groups, ts, values)):
        start = step_start(int(t), step_ms)
        new_group = i == 0 or g != groups[i - 1]
        if new_group or rows[-1]["ts"] != start:
            rows.append(
                {
                    "group": g,
                    "ts": start,
                    "count": 0,
                    "sum": 0.0,
                    "min": math.nan,
                    "max": math.nan,
                    "last": math.nan,
                    "increase": 0.0 if is_counter else math.nan,
                }
            )
        if new_group:
            prev = None
        if math.isnan(v):
            continue
        row = rows[-1]
        row["count"] += 1
        row["sum"] += v
        if math.isnan(row["min"]) or v < row["min"]:
            row["min"] = v
        if math.isnan(row["max"]) or v > row["max"]:
            row["max"] = v
        row["last"] = v
        if is_counter:
            if prev is not None:
                row["increase"] += counter_delta(prev, v)
            prev = v
    return _columns(rows)


def counter_delta(prev: float, value: float) -> float:
    """Increase of a counter from ``prev`` to ``value``; a drop is a reset to 0."""
    if value >= prev:
        return value - prev
    return value


def counter_increase(values: Sequence[float]) -> float:
    """Total increase of one counter over consecutive non-NaN values."""
    total = 0.0
    prev = None
    for v in values:
        if math.isnan(v):
            continue
        if prev is not None:
            total += counter_delta(prev, v)
        prev = v
    return total


def _columns(rows: list[dict]) -> dict[str, np.ndarray]:
    ints = ("group", "ts", "count")
    names = ("group", "ts", "count", "sum", "min", "max", "last", "increase")
    return {
        name: np.array(
            [r[name] for r in rows], dtype=np.int64 if name in ints else np.float64
        )
        for name in names
    }


def zscores(
    ts: Sequence[int],
    values: Sequence[float],
    window_ms: int,
    min_count: int = 2,
) -> np.ndarray:
    """Z-score of each sample against its look-back window, recomputed from scratch.

    The window of a sample at (effective) ts ``t`` is every earlier joining
    sample with ``ts > t - window_ms``; out-of-order ts count as the newest
    ts seen; NaN samples score NaN and are ignored; +-Inf samples and those
    beyond 1e100 in magnitude are scored but never join the window.
    """
    seen: list[tuple[int, float]] = []
    out = np.empty(len(values))
    newest: int | None = None
    for i, (t, x) in enumerate(zip(ts, values)):
        if math.isnan(x):
            out[i] = math.nan
            continue
        t = int(t) if newest is None else max(int(t), newest)
        newest = t
        window = [v for (tp, v) in seen if tp > t - window_ms]
        out[i] = _score(window, x, min_count)
        if joins(x):
            seen.append((t, x))
    return out


def rolling_zscores(values: Sequence[float], window: int) -> np.ndarray:
    """Z-score against the previous ``window`` joining values (count window)."""
    seen: list[float] = []
    out = np.empty(len(values))
    for i, x in enumerate(values):
        if math.isnan(x):
            out[i] = math.nan
            continue
        out[i] = _score(seen[-window:], x, 2)
        if joins(x):
            seen.append(x)
    return out


def joins(x: float) -> bool:
    """Whether a value enters a z-score window: finite and at most 1e100."""
    return abs(x) <= 1e100


def _score(window: list[float], x: float, min_count: int) -> float:
    if len(window) < min_count:
        return 0.0
    if all(v == window[0] for v in window):
        mean, std = window[0], 0.0
    else:
        mean = float(np.mean(window))
        std = float(np.std(window, ddof=1))
    floor = max(1e-9 * abs(mean), 1e-12)
    return (x - mean) / max(std, floor)


def bucket_quantile(
    q: float, bounds: Sequence[float], cumulative: Sequence[float]
) -> float:
    """PromQL ``histogram_quantile`` on classic buckets, step by step.

    Written from the rules of Prometheus 2.42 (promql/quantile.go): bounds
    sorted with +Inf last, counts made monotonic by a running max, linear
    interpolation inside the bucket where rank ``q * total`` falls.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return math.nan
    if any(math.isnan(c) for c in cumulative):
        return math.nan
    counts = running_max(cumulative)
    total = counts[-1]
    if total == 0:
        return math.nan
    rank = q * total
    b = len(counts) - 1
    for j in range(len(counts) - 1):
        if counts[j] >= rank:
            b = j
            break
    if b == len(counts) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, count = 0.0, counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    if count == 0:
        return math.nan  # 0/0 (q = 0 on an empty first bucket): Go gives NaN
    return start + (bounds[b] - start) * (rank / count)


def running_max(values: Sequence[float]) -> list[float]:
    """Each value raised to the largest one before it, as PromQL fixes counts."""
    out: list[float] = []
    running = -math.inf
    for v in values:
        running = max(running, v)
        out.append(running)
    return out
