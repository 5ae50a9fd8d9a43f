"""The query layer: select series by label matchers, evaluate functions over
time, aggregate by labels.  Results are Arrow tables.

Semantics follow Prometheus 2.x: an instant value is the newest sample in the
look-back (5m by default) at or before the evaluation time; range functions see
the samples in ``[t - window, t]``; ``rate``/``increase``/``delta`` extrapolate
to the window edges the way Prometheus does, and counters treat any decrease
as a reset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from obscore._native.histogram import hist_quantile_many
from obscore.errors import UnknownMetricError
from obscore.model import LabelSet, MetricKind, MetricSpec, SeriesIndex

DEFAULT_LOOKBACK_MS = 300_000

_OPS = ("=", "!=", "=~", "!~")


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher: ``name op value`` with op one of = != =~ !~."""

    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"matcher operator {self.op!r} is not one of {_OPS!r}")
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_re", re.compile(self.value))
            except re.error as exc:
                raise ValueError(f"matcher {self.name}{self.op}{self.value!r}: {exc}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        found = labels.get(self.name, "")
        if self.op == "=":
            return found == self.value
        if self.op == "!=":
            return found != self.value
        hit = re.fullmatch(self.value, found) is not None
        return hit if self.op == "=~" else not hit


def as_matchers(matchers) -> list[Matcher]:
    """Accept a mapping (equality), Matcher objects or ``(name, op, value)`` tuples."""
    if matchers is None:
        return []
    if isinstance(matchers, Mapping):
        return [Matcher(str(k), "=", str(v)) for k, v in matchers.items()]
    out = []
    for m in matchers:
        out.append(m if isinstance(m, Matcher) else Matcher(*m))
    return out


# --- range functions: one value per evaluation time ------------------------


def _window_bounds(ts: np.ndarray, evals: np.ndarray, window_ms: int):
    lo = np.searchsorted(ts, evals - window_ms, side="left")
    hi = np.searchsorted(ts, evals, side="right")
    return lo, hi


def _extrapolated(
    ts: np.ndarray, v: np.ndarray, evals: np.ndarray, window_ms: int, counter: bool, rate: bool
) -> np.ndarray:
    lo, hi = _window_bounds(ts, evals, window_ms)
    out = np.full(len(evals), np.nan)
    ok = (hi - lo) >= 2
    if not ok.any():
        return out
    first, last = lo[ok], hi[ok] - 1
    result = v[last] - v[first]
    if counter:
        drops = np.zeros(len(v))
        if len(v) > 1:
            dec = v[1:] < v[:-1]
            drops[1:] = np.where(dec, v[:-1], 0.0)
        cum = np.cumsum(drops)
        result = result + (cum[last] - cum[first])
    start = (evals[ok] - window_ms) / 1000.0
    end = evals[ok] / 1000.0
    t_first, t_last = ts[first] / 1000.0, ts[last] / 1000.0
    to_start = t_first - start
    to_end = end - t_last
    sampled = t_last - t_first
    avg_gap = sampled / (hi[ok] - lo[ok] - 1)
    if counter:
        with np.errstate(divide="ignore", invalid="ignore"):
            to_zero = np.where(
                (result > 0) & (v[first] >= 0), sampled * (v[first] / result), np.inf
            )
        to_start = np.minimum(to_start, to_zero)
    threshold = avg_gap * 1.1
    interval = sampled.copy()
    interval += np.where(to_start < threshold, to_start, avg_gap / 2)
    interval += np.where(to_end < threshold, to_end, avg_gap / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = result * (interval / sampled)
    if rate:
        result = result / (window_ms / 1000.0)
    out[ok] = result
    return out


def _irate(ts, v, evals, window_ms, counter):
    lo, hi = _window_bounds(ts, evals, window_ms)
    out = np.full(len(evals), np.nan)
    ok = (hi - lo) >= 2
    a, b = hi[ok] - 2, hi[ok] - 1
    diff = v[b] - v[a]
    if counter:
        diff = np.where(v[b] < v[a], v[b], diff)
    dt = (ts[b] - ts[a]) / 1000.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out[ok] = np.where(dt > 0, diff / dt, np.nan)
    return out


def _per_window(ts, v, evals, window_ms, reduce: Callable[[np.ndarray, np.ndarray], float]):
    lo, hi = _window_bounds(ts, evals, window_ms)
    out = np.full(len(evals), np.nan)
    for i in np.flatnonzero(hi > lo):
        out[i] = reduce(ts[lo[i] : hi[i]], v[lo[i] : hi[i]])
    return out


def _deriv(t: np.ndarray, y: np.ndarray) -> float:
    if len(t) < 2:
        return np.nan
    x = (t - t[0]) / 1000.0
    xm, ym = x.mean(), y.mean()
    den = ((x - xm) ** 2).sum()
    return float(((x - xm) * (y - ym)).sum() / den) if den > 0 else np.nan


_OVER_TIME: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "avg_over_time": lambda t, y: float(np.mean(y)),
    "sum_over_time": lambda t, y: float(np.sum(y)),
    "min_over_time": lambda t, y: float(np.min(y)),
    "max_over_time": lambda t, y: float(np.max(y)),
    "count_over_time": lambda t, y: float(len(y)),
    "last_over_time": lambda t, y: float(y[-1]),
    "stddev_over_time": lambda t, y: float(np.std(y)),
    "deriv": _deriv,
}

FUNCTIONS = ("rate", "increase", "delta", "irate", *_OVER_TIME)
AGGREGATIONS = ("sum", "avg", "min", "max", "count", "stddev", "quantile")


def evaluate_series(
    ts: np.ndarray,
    v: np.ndarray,
    evals: np.ndarray,
    fn: str | None,
    window_ms: int | None,
    counter: bool,
    lookback_ms: int = DEFAULT_LOOKBACK_MS,
) -> np.ndarray:
    """Values of one series at each evaluation time; NaN where there is none."""
    if fn is None:
        lo, hi = _window_bounds(ts, evals, lookback_ms)
        out = np.full(len(evals), np.nan)
        ok = hi > lo
        out[ok] = v[hi[ok] - 1]
        return out
    if window_ms is None or window_ms <= 0:
        raise ValueError(f"function {fn!r} needs a positive window_ms, got {window_ms!r}")
    if fn in ("rate", "increase"):
        return _extrapolated(ts, v, evals, window_ms, counter=True, rate=fn == "rate")
    if fn == "delta":
        return _extrapolated(ts, v, evals, window_ms, counter=False, rate=False)
    if fn == "irate":
        return _irate(ts, v, evals, window_ms, counter=True)
    if fn in _OVER_TIME:
        return _per_window(ts, v, evals, window_ms, _OVER_TIME[fn])
    raise ValueError(f"unknown function {fn!r}; supported: {', '.join(FUNCTIONS)}")


def _aggregate(matrix: np.ndarray, agg: str, quantile: float | None) -> np.ndarray:
    """Aggregate rows of a (series x evals) matrix, NaN meaning absent."""
    present = ~np.isnan(matrix)
    n = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if agg == "sum":
            out = np.nansum(matrix, axis=0)
        elif agg == "avg":
            out = np.nansum(matrix, axis=0) / n
        elif agg == "min":
            out = np.nanmin(np.where(present, matrix, np.inf), axis=0)
        elif agg == "max":
            out = np.nanmax(np.where(present, matrix, -np.inf), axis=0)
        elif agg == "count":
            out = n.astype(np.float64)
        elif agg == "stddev":
            mean = np.nansum(matrix, axis=0) / n
            out = np.sqrt(np.nansum((matrix - mean) ** 2, axis=0) / n)
        elif agg == "quantile":
            if quantile is None:
                raise ValueError("aggregation 'quantile' needs quantile=")
            out = np.full(matrix.shape[1], np.nan)
            for j in np.flatnonzero(n):
                out[j] = np.quantile(matrix[present[:, j], j], quantile)
        else:
            raise ValueError(f"unknown aggregation {agg!r}; supported: {', '.join(AGGREGATIONS)}")
    out = np.asarray(out, dtype=np.float64)
    out[n == 0] = np.nan
    return out


def _parse_le(text: str) -> float:
    return float("inf") if text in ("+Inf", "Inf", "inf") else float(text)


class QueryEngine:
    """Answers range queries from a source of series.

    Parameters
    ----------
    index : SeriesIndex
        Names and labels of every series.
    read : callable
        ``read(series_id, start_ms, end_ms) -> (ts, values)``, sorted by ts.
    specs : mapping of str to MetricSpec
        Declared metrics (kinds decide counter semantics and histograms).
    """

    def __init__(
        self,
        index: SeriesIndex,
        read: Callable[[int, int, int], tuple[np.ndarray, np.ndarray]],
        specs: Mapping[str, MetricSpec],
    ) -> None:
        self.index = index
        self._read = read
        self.specs = specs

    def kind_of(self, name: str) -> MetricKind | None:
        spec = self.specs.get(name)
        if spec is not None:
            return spec.kind
        for suffix in ("_bucket", "_sum", "_count"):
            base = self.specs.get(name.removesuffix(suffix))
            if name.endswith(suffix) and base is not None and base.is_histogram:
                return MetricKind.COUNTER
        if name.endswith("_total"):
            return MetricKind.COUNTER
        return None

    def select(self, metric: str, matchers=None) -> list[int]:
        """Ids of the series of ``metric`` whose labels satisfy every matcher."""
        ms = as_matchers(matchers)
        ids = self.index.ids(metric)
        if not ids and metric not in self.specs:
            raise UnknownMetricError(
                f"unknown metric {metric!r}; known: {', '.join(self.index.metric_names)}"
            )
        return [s for s in ids if all(m.matches(self.index.labels(s)) for m in ms)]

    def range(
        self,
        metric: str,
        *,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        matchers=None,
        fn: str | None = None,
        window_ms: int | None = None,
        agg: str | None = None,
        by: Sequence[str] | None = None,
        without: Sequence[str] | None = None,
        quantile: float | None = None,
        lookback_ms: int = DEFAULT_LOOKBACK_MS,
    ) -> pa.Table:
        """Evaluate a range query; see :meth:`obscore.Engine.query`."""
        if step_ms <= 0:
            raise ValueError(f"step_ms must be positive, got {step_ms!r}")
        if end_ms < start_ms:
            raise ValueError(f"end_ms {end_ms} is before start_ms {start_ms}")
        evals = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        spec = self.specs.get(metric)
        if spec is not None and spec.is_histogram and quantile is not None and agg is None:
            return self._histogram_quantile(
                metric, evals, matchers, fn or "rate", window_ms or 300_000, quantile,
                by, without, lookback_ms,
            )
        ids = self.select(metric, matchers)
        counter = self.kind_of(metric) is MetricKind.COUNTER
        read_from = int(evals[0]) - max(window_ms or 0, lookback_ms)
        rows = []
        for sid in ids:
            ts, v = self._read(sid, read_from, int(evals[-1]) + 1)
            rows.append(evaluate_series(ts, v, evals, fn, window_ms, counter, lookback_ms))
        labels = [self.index.labels(s) for s in ids]
        if agg is None:
            return _long_table(labels, evals, rows, drop_name=False, name=metric)
        keys, matrix_groups = _group(labels, rows, by, without)
        return _long_table(
            keys, evals, [_aggregate(np.vstack(g), agg, quantile) for g in matrix_groups]
        )

    def _histogram_quantile(
        self, metric, evals, matchers, fn, window_ms, q, by, without, lookback_ms
    ) -> pa.Table:
        bucket = f"{metric}_bucket"
        ids = self.select(bucket, matchers)
        read_from = int(evals[0]) - max(window_ms, lookback_ms)
        rows, labels = [], []
        for sid in ids:
            ts, v = self._read(sid, read_from, int(evals[-1]) + 1)
            rows.append(evaluate_series(ts, v, evals, fn, window_ms, True, lookback_ms))
            labels.append(self.index.labels(sid))
        by_le = None if by is None else [*by, "le"]
        # no grouping asked: keep every label, as histogram_quantile(rate(...)) does
        without_le = [] if without is None else [w for w in without if w != "le"]
        if by_le is not None:
            without_le = None
        keys, groups = _group(labels, rows, by_le, without_le)
        per_key: dict[LabelSet, list[tuple[float, np.ndarray]]] = {}
        for key, g in zip(keys, groups):
            le = _parse_le(key["le"])
            per_key.setdefault(key.without("le"), []).append(
                (le, _aggregate(np.vstack(g), "sum", None))
            )
        out_keys, out_rows = [], []
        for key, buckets in per_key.items():
            buckets.sort(key=lambda b: b[0])
            bounds = np.array([b for b, _ in buckets], dtype=np.float64)
            cum = np.ascontiguousarray(np.vstack([c for _, c in buckets]).T)
            vals = hist_quantile_many(float(q), bounds, np.nan_to_num(cum, nan=0.0))
            absent = np.all(np.isnan(np.vstack([c for _, c in buckets])), axis=0)
            vals[absent] = np.nan
            out_keys.append(key)
            out_rows.append(vals)
        return _long_table(out_keys, evals, out_rows)


def _group(labels, rows, by, without):
    groups: dict[LabelSet, list[np.ndarray]] = {}
    for lab, row in zip(labels, rows):
        if by is not None:
            key = lab.only(by)
        elif without is not None:
            key = lab.without(*without)
        else:
            key = LabelSet()
        groups.setdefault(key, []).append(row)
    keys = list(groups)
    return keys, [groups[k] for k in keys]


def _long_table(keys, evals, rows, drop_name: bool = True, name: str | None = None) -> pa.Table:
    """Long result: one column per label name, then ts and value; absent rows dropped."""
    names = sorted({k for key in keys for k in key})
    cols: dict[str, list] = {n: [] for n in names}
    ts_parts, v_parts = [], []
    for key, row in zip(keys, rows):
        ok = ~np.isnan(row)
        n = int(ok.sum())
        if n == 0:
            continue
        for lname in names:
            cols[lname].extend([key.get(lname)] * n)
        ts_parts.append(evals[ok])
        v_parts.append(row[ok])
    arrays = {n: pa.array(cols[n], pa.string()) for n in names}
    arrays["ts"] = pa.array(np.concatenate(ts_parts) if ts_parts else np.empty(0, np.int64))
    arrays["value"] = pa.array(np.concatenate(v_parts) if v_parts else np.empty(0))
    return pa.table(arrays)
