"""The query layer: select series by label matchers, evaluate functions over
time, aggregate by labels.  Results are Arrow tables.

Semantics follow Prometheus 2.42: an instant value is the newest sample in the
look-back (5m by default) at or before the evaluation time, unless that sample
is a staleness marker; range functions see the samples in ``[t - window, t]``,
both ends included, staleness markers left out; ``rate``/``increase``/``delta``
extrapolate to the window edges the way Prometheus does, and counters treat any
decrease as a reset.  The PromQL text layer (:mod:`obscore.store.promql`) is
built on the window functions here.

Staleness markers are :data:`obscore.store.hot.STALE_NAN`, the NaN with the
bit pattern ``0x7ff0000000000002`` that Prometheus uses; every other NaN is an
ordinary value.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from obscore._native.histogram import hist_quantile_many
from obscore.errors import UnknownMetricError
from obscore.model import LabelSet, MetricKind, MetricSpec, SeriesIndex
from obscore.store.hot import is_stale

DEFAULT_LOOKBACK_MS = 300_000

_OPS = ("=", "!=", "=~", "!~")


# --- label matchers ----------------------------------------------------------


_INLINE_FLAGS = re.compile(r"\(\?([imsU-]+)\)")


def _scope_inline_flags(pattern: str) -> str:
    """Rewrite RE2's ``(?i)`` inside a pattern as Python's scoped ``(?i:...)``.

    RE2 (Go) lets a flag group appear anywhere and apply to the rest of the
    enclosing group; Python only accepts global flags at the very start.  The
    flags are scoped to the rest of their group by opening ``(?i:`` and closing
    it just before the group's ``)``.
    """
    out: list[str] = []
    closers: list[int] = [0]  # per open group: scoped flag groups to close in it
    i, n, in_class = 0, len(pattern), False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
            out.append(ch)
        elif ch == "[":
            in_class = True
            out.append(ch)
            if pattern.startswith("^]", i + 1) or pattern.startswith("]", i + 1):
                j = i + (3 if pattern[i + 1] == "^" else 2)
                out.append(pattern[i + 1 : j])
                i = j
                continue
        elif ch == "(":
            flags = _INLINE_FLAGS.match(pattern, i)
            if flags is not None:
                out.append(f"(?{flags.group(1).replace('U', '')}:")
                closers[-1] += 1
                i = flags.end()
                continue
            closers.append(0)
            out.append(ch)
        elif ch == ")":
            out.append(")" * closers.pop() if len(closers) > 1 else "")
            out.append(ch)
        else:
            out.append(ch)
        i += 1
    out.append(")" * closers[0])
    return "".join(out)


def compile_label_regex(pattern: str) -> re.Pattern[str]:
    """Compile a PromQL label regex; use ``fullmatch`` (Prometheus anchors it).

    Raises
    ------
    ValueError
        When the pattern does not compile.
    """
    try:
        return re.compile(_scope_inline_flags(pattern))
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher: ``name op value`` with op one of = != =~ !~.

    Regexes are anchored at both ends, as in PromQL; a missing label matches
    as the empty string.
    """

    name: str
    op: str
    value: str
    _re: re.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"matcher operator {self.op!r} is not one of {_OPS!r}")
        if self.op in ("=~", "!~"):
            try:
                compiled = compile_label_regex(self.value)
            except ValueError as exc:
                raise ValueError(
                    f"matcher {self.name}{self.op}{self.value!r}: {exc}"
                ) from None
            object.__setattr__(self, "_re", compiled)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.matches_value(labels.get(self.name, ""))

    def matches_value(self, found: str) -> bool:
        """Whether a label value (``""`` for a missing label) satisfies the matcher."""
        if self.op == "=":
            return found == self.value
        if self.op == "!=":
            return found != self.value
        assert self._re is not None
        hit = self._re.fullmatch(found) is not None
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


# --- label index: series ids per label value --------------------------------


class LabelIndex:
    """Postings of a :class:`SeriesIndex`: the ids of the series per label value.

    ``__name__`` is indexed as a label.  A matcher is evaluated on the
    distinct values of its label, not on every series: equality is one
    lookup, a regex runs once per value, and the matchers' id sets are
    intersected, smallest first.  The postings follow the series index
    lazily: additions are indexed at the next selection, any discard
    rebuilds them.

    Parameters
    ----------
    index : SeriesIndex
        The series to index; it stays the source of truth.

    Notes
    -----
    As in Prometheus, a missing label matches as the empty string, so a
    matcher that accepts ``""`` (``a!="x"``, ``a=~"x|"``) is applied by
    taking away the series whose value it refuses.
    """

    def __init__(self, index: SeriesIndex) -> None:
        self.index = index
        self._generation = -1
        self._indexed = 0  # series of the index held in the postings
        self._postings: dict[str, dict[str, set[int]]] = {}
        self._named: dict[int, LabelSet] = {}  # label sets with __name__, as asked

    def _sync(self) -> None:
        gen = self.index.generation
        if gen == self._generation:
            return
        added = len(self.index) - self._indexed
        if self._generation < 0 or gen - self._generation != added:
            self._postings, self._named, self._indexed = {}, {}, 0
            new = iter(self.index)
        else:  # additions only: the newest entries of the index, in order
            new = itertools.islice(iter(self.index), self._indexed, None)
        postings, index = self._postings, self.index
        names = postings.setdefault("__name__", {})
        for sid in new:
            name = index.name(sid)
            ids = names.get(name)
            if ids is None:
                ids = names[name] = set()
            ids.add(sid)
            for lname, value in index.labels(sid).items_tuple:
                values = postings.get(lname)
                if values is None:
                    values = postings[lname] = {}
                ids = values.get(value)
                if ids is None:
                    ids = values[value] = set()
                ids.add(sid)
            self._indexed += 1
        self._generation = gen

    def labels(self, sid: int) -> LabelSet:
        """The label set of a series with its ``__name__``."""
        self._sync()
        return self._named_labels(sid)

    def _named_labels(self, sid: int) -> LabelSet:
        # NOTE: built when first asked for, not while indexing: with every
        # label set built, indexing the load benchmark's 10,000 series took
        # 0.44 s on a busy core; the postings alone take 0.055 s.
        named = self._named.get(sid)
        if named is None:
            named = self.index.labels(sid).with_(__name__=self.index.name(sid))
            self._named[sid] = named
        return named

    def values(self, name: str) -> list[str]:
        """The distinct values of a label over every series, sorted."""
        self._sync()
        return sorted(self._postings.get(name, ()))

    def series(self, matchers: Sequence[Matcher]) -> list[tuple[int, LabelSet]]:
        """``(series_id, labels)`` of the selected series, sorted by label set."""
        out = [(sid, self._named_labels(sid)) for sid in self.select(matchers)]
        out.sort(key=lambda pair: pair[1].items_tuple)
        return out

    def select(self, matchers: Sequence[Matcher]) -> set[int]:
        """Ids of the series satisfying every matcher (all of them without any)."""
        self._sync()
        take: list[set[int]] = []
        drop: list[set[int]] = []
        for m in matchers:
            values = self._postings.get(m.name, {})
            if m.op == "=" and m.value != "":
                take.append(values.get(m.value, set()))
            elif not m.matches_value(""):
                hits = [ids for v, ids in values.items() if m.matches_value(v)]
                take.append(set().union(*hits) if len(hits) != 1 else hits[0])
            else:
                misses = [ids for v, ids in values.items() if not m.matches_value(v)]
                drop.extend(misses)
        if take:
            take.sort(key=len)
            out = set(take[0])
            for ids in take[1:]:
                if not out:
                    break
                out &= ids
        else:
            out = set(self.index)
        for ids in drop:
            if not out:
                break
            out -= ids
        return out


# --- windows: the samples each evaluation time sees --------------------------


def instant_lookup(
    ts: np.ndarray, values: np.ndarray, refs: np.ndarray, lookback_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the sample each reference time sees, and whether it sees one.

    The sample is the newest at or before the reference time, no older than
    ``lookback_ms``; a staleness marker there means no sample.
    """
    idx = np.searchsorted(ts, refs, side="right") - 1
    ok = idx >= 0
    safe = np.where(ok, idx, 0)
    if len(ts):
        ok &= ts[safe] >= refs - lookback_ms
        ok &= ~is_stale(values[safe])
    return safe, ok


@dataclass(slots=True)
class Windows:
    """The samples of one series that each evaluation time's window holds.

    ``ts``/``v`` hold the series without staleness markers; window ``j`` is
    ``v[lo[j]:hi[j]]``, the samples in ``[start_ms[j], end_ms[j]]``.
    """

    ts: np.ndarray
    v: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    evals: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    window_ms: int

    @classmethod
    def of(
        cls,
        ts: np.ndarray,
        v: np.ndarray,
        evals: np.ndarray,
        window_ms: int,
        offset_ms: int = 0,
        at_ms: int | None = None,
    ) -> Windows:
        """Windows ending at each evaluation time (or at ``at_ms``) less the offset."""
        keep = ~is_stale(v)
        if not keep.all():
            ts, v = ts[keep], v[keep]
        end = (evals if at_ms is None else np.full(len(evals), at_ms)) - offset_ms
        start = end - window_ms
        lo = np.searchsorted(ts, start, side="left")
        hi = np.searchsorted(ts, end, side="right")
        return cls(ts, v, lo, hi, evals, start, end, int(window_ms))

    @property
    def count(self) -> np.ndarray:
        return self.hi - self.lo

    def positions(self):
        """Yield ``(active, x)``: the k-th sample of every window, k = 0, 1, ...

        Vectorized across windows; ``active`` says which windows have a k-th
        sample (``x`` is filler where they do not).
        """
        n = self.count
        last = max(len(self.v) - 1, 0)
        for k in range(int(n.max(initial=0))):
            active = k < n
            yield active, self.v[np.minimum(self.lo + k, last)]


def _kahan_inc(inc, total, comp):
    # One Kahan-Babuska-Neumaier step, as Prometheus' kahanSumInc.
    t = total + inc
    big = np.abs(total) >= np.abs(inc)
    return t, comp + np.where(big, (total - t) + inc, (inc - t) + total)


def _rate(w: Windows, is_counter: bool, is_rate: bool) -> tuple[np.ndarray, np.ndarray]:
    """``rate``, ``increase`` and ``delta``: Prometheus 2.42 extrapolation."""
    n = w.count
    ok = n >= 2
    out = np.zeros(len(n))
    if not ok.any():
        return out, ok
    first, last = w.lo[ok], w.hi[ok] - 1
    v, ts = w.v, w.ts
    # +-Inf and NaN are values: Inf - Inf is NaN here as in Prometheus, quietly.
    with np.errstate(invalid="ignore", over="ignore"):
        result = v[last] - v[first]
        if is_counter and len(v) > 1:
            # Add the value before each drop, in sample order, as Prometheus does.
            drops = np.flatnonzero(v[1:] < v[:-1]) + 1
            a = np.searchsorted(drops, first, side="right")
            b = np.searchsorted(drops, last, side="right")
            for k in range(int((b - a).max(initial=0))):
                has = a + k < b
                at = drops[np.minimum(a + k, len(drops) - 1)]
                result = np.where(has, result + v[at - 1], result)
    to_start = (ts[first] - w.start_ms[ok]) / 1000
    to_end = (w.end_ms[ok] - ts[last]) / 1000
    sampled = (ts[last] - ts[first]) / 1000
    avg_gap = sampled / (n[ok] - 1)
    if is_counter:
        with np.errstate(divide="ignore", invalid="ignore"):
            to_zero = sampled * (v[first] / result)
        use = (result > 0) & (v[first] >= 0) & (to_zero < to_start)
        to_start = np.where(use, to_zero, to_start)
    threshold = avg_gap * 1.1
    interval = sampled + np.where(to_start < threshold, to_start, avg_gap / 2)
    interval = interval + np.where(to_end < threshold, to_end, avg_gap / 2)
    # NOTE: the range divides the factor, not the result: that order matches a
    # live Prometheus 2.42 bit for bit (tests/store/test_promql_peer.py), the
    # other was one ulp off on 7 of its 36 answers.
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = interval / sampled
        if is_rate:
            factor = factor / (w.window_ms / 1000)
        result = result * factor
    out[ok] = result
    return out, ok


def _instant_change(w: Windows, is_rate: bool) -> tuple[np.ndarray, np.ndarray]:
    """``irate`` (counter resets handled) and ``idelta``: the last two samples."""
    ok = w.count >= 2
    out = np.zeros(len(ok))
    a, b = w.hi[ok] - 2, w.hi[ok] - 1
    diff = w.v[b] - w.v[a]
    if is_rate:
        diff = np.where(w.v[b] < w.v[a], w.v[b], diff)
        diff = diff / ((w.ts[b] - w.ts[a]) / 1000)
    out[ok] = diff
    return out, ok


def _sum_over_time(w: Windows) -> np.ndarray:
    total = np.zeros(len(w.lo))
    comp = np.zeros(len(w.lo))
    with np.errstate(invalid="ignore", over="ignore"):
        for active, x in w.positions():
            t, c = _kahan_inc(x, total, comp)
            total = np.where(active, t, total)
            comp = np.where(active, c, comp)
        return np.where(np.isinf(total), total, total + comp)


def _avg_over_time(w: Windows) -> np.ndarray:
    # Prometheus 2.42: an incremental mean with Kahan compensation, infinities kept.
    mean = np.zeros(len(w.lo))
    comp = np.zeros(len(w.lo))
    count = np.zeros(len(w.lo))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for active, x in w.positions():
            count = count + active
            keep = np.isinf(mean) & (
                (np.isinf(x) & ((mean > 0) == (x > 0))) | (~np.isinf(x) & ~np.isnan(x))
            )
            step = active & ~keep
            t, c = _kahan_inc(x / count - mean / count, mean, comp)
            mean = np.where(step, t, mean)
            comp = np.where(step, c, comp)
        return np.where(np.isinf(mean), mean, mean + comp)


def _var_over_time(w: Windows) -> np.ndarray:
    # Welford's update with Kahan compensation on both running sums.
    count = np.zeros(len(w.lo))
    mean, c_mean = np.zeros(len(w.lo)), np.zeros(len(w.lo))
    aux, c_aux = np.zeros(len(w.lo)), np.zeros(len(w.lo))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for active, x in w.positions():
            count = count + active
            delta = x - (mean + c_mean)
            m, cm = _kahan_inc(delta / count, mean, c_mean)
            mean, c_mean = np.where(active, m, mean), np.where(active, cm, c_mean)
            a, ca = _kahan_inc(delta * (x - (mean + c_mean)), aux, c_aux)
            aux, c_aux = np.where(active, a, aux), np.where(active, ca, c_aux)
        return (aux + c_aux) / count


def _extreme_over_time(w: Windows, is_max: bool) -> np.ndarray:
    # NaN loses to any number; a window of NaN only gives NaN.
    out = np.full(len(w.lo), np.nan)
    pick = np.fmax if is_max else np.fmin
    for active, x in w.positions():
        out = np.where(active, pick(out, x), out)
    return out


def quantile_of(q: float, values: np.ndarray) -> float:
    """PromQL's ``quantile``: linear interpolation between closest ranks.

    NaN values sort first; q < 0 gives -Inf, q > 1 gives +Inf, NaN q or no
    values give NaN.
    """
    if len(values) == 0 or np.isnan(q):
        return float("nan")
    if q < 0:
        return float("-inf")
    if q > 1:
        return float("inf")
    nan = np.isnan(values)
    ordered = np.concatenate([values[nan], np.sort(values[~nan])])
    rank = q * (len(ordered) - 1)
    lower = max(0, int(np.floor(rank)))
    upper = min(len(ordered) - 1, lower + 1)
    weight = rank - np.floor(rank)
    with np.errstate(invalid="ignore"):  # Inf * 0 is NaN, as in Go
        return float(ordered[lower] * (1 - weight) + ordered[upper] * weight)


def _linear_regression(w: Windows, intercept_ms: np.ndarray):
    """Least-squares slope and intercept per window, x in seconds from intercept_ms."""
    size = len(w.lo)
    n = np.zeros(size)
    sums = {k: (np.zeros(size), np.zeros(size)) for k in ("x", "y", "xy", "x2")}
    first = w.v[np.minimum(w.lo, max(len(w.v) - 1, 0))] if len(w.v) else np.zeros(size)
    const_y = np.ones(size, dtype=bool)
    last = max(len(w.ts) - 1, 0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for k, (active, y) in enumerate(w.positions()):
            if k > 0:
                const_y &= ~active | (y == first)
            n = n + active
            x = (w.ts[np.minimum(w.lo + k, last)] - intercept_ms) / 1e3
            for key, inc in (("x", x), ("y", y), ("xy", x * y), ("x2", x * x)):
                total, comp = sums[key]
                t, c = _kahan_inc(inc, total, comp)
                sums[key] = (np.where(active, t, total), np.where(active, c, comp))
        sx, sy, sxy, sx2 = (t + c for t, c in sums.values())
        cov = sxy - sx * sy / n
        var = sx2 - sx * sx / n
        slope = cov / var
        intercept = sy / n - slope * sx / n
    slope = np.where(const_y, np.where(np.isinf(first), np.nan, 0.0), slope)
    intercept = np.where(const_y, np.where(np.isinf(first), np.nan, first), intercept)
    return slope, intercept


def _changes(w: Windows, resets: bool) -> np.ndarray:
    v = w.v
    if len(v) < 2:
        return np.zeros(len(w.lo))
    if resets:
        hit = v[1:] < v[:-1]
    else:
        hit = (v[1:] != v[:-1]) & ~(np.isnan(v[1:]) & np.isnan(v[:-1]))
    cum = np.concatenate([[0], np.cumsum(hit)])
    # changes between positions lo..hi-1 are hits lo+1..hi-1: cum[hi-1] - cum[lo]
    hi = np.maximum(w.hi - 1, w.lo)
    return (cum[np.minimum(hi, len(v) - 1)] - cum[np.minimum(w.lo, len(v) - 1)]).astype(
        float
    )


def _holt_winters(w: Windows, sf: float, tf: float, j: int) -> float | None:
    y = w.v[w.lo[j] : w.hi[j]]
    if len(y) < 2:
        return None
    s0, s1, b = 0.0, float(y[0]), float(y[1] - y[0])
    for i in range(1, len(y)):
        x = sf * y[i]
        if i > 1:
            b = tf * (s1 - s0) + (1 - tf) * b
        s0, s1 = s1, x + (1 - sf) * (s1 + b)
    return s1


RANGE_FUNCTIONS = (
    "rate", "increase", "delta", "irate", "idelta", "deriv", "predict_linear",
    "avg_over_time", "min_over_time", "max_over_time", "sum_over_time",
    "count_over_time", "last_over_time", "quantile_over_time", "stddev_over_time",
    "stdvar_over_time", "present_over_time", "changes", "resets", "holt_winters",
)  # fmt: skip


def apply_range_function(
    fn: str, w: Windows, args: Sequence[np.ndarray] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate a range-vector function on every window of one series.

    Parameters
    ----------
    fn : str
        One of :data:`RANGE_FUNCTIONS`.
    w : Windows
        The series' windows, one per evaluation time.
    args : sequence of ndarray
        Scalar parameters, one value per evaluation time: the quantile of
        ``quantile_over_time``, the seconds of ``predict_linear``, the
        smoothing and trend factors of ``holt_winters``.

    Returns
    -------
    values, present : ndarray of float64, ndarray of bool
        One entry per evaluation time; ``present`` is False where Prometheus
        returns no sample (an empty window, or too few samples).

    Raises
    ------
    ValueError
        For an unknown function, or a ``holt_winters`` factor outside (0, 1).
    """
    n = w.count
    has = n >= 1
    if fn in ("rate", "increase", "delta"):
        return _rate(w, is_counter=fn != "delta", is_rate=fn == "rate")
    if fn in ("irate", "idelta"):
        return _instant_change(w, is_rate=fn == "irate")
    if fn in ("deriv", "predict_linear"):
        ok = n >= 2
        start = w.ts[np.minimum(w.lo, max(len(w.ts) - 1, 0))] if len(w.ts) else w.evals
        intercept_ms = start if fn == "deriv" else w.evals
        slope, intercept = _linear_regression(w, intercept_ms)
        if fn == "deriv":
            return slope, ok
        return slope * args[0] + intercept, ok
    if fn == "count_over_time":
        return n.astype(np.float64), has
    if fn == "present_over_time":
        return np.ones(len(n)), has
    if fn == "last_over_time":
        return w.v[np.maximum(w.hi - 1, 0)] if len(w.v) else np.zeros(len(n)), has
    if fn == "sum_over_time":
        return _sum_over_time(w), has
    if fn == "avg_over_time":
        return _avg_over_time(w), has
    if fn in ("stddev_over_time", "stdvar_over_time"):
        var = _var_over_time(w)
        return (np.sqrt(var) if fn == "stddev_over_time" else var), has
    if fn in ("min_over_time", "max_over_time"):
        return _extreme_over_time(w, is_max=fn == "max_over_time"), has
    if fn in ("changes", "resets"):
        return _changes(w, resets=fn == "resets"), has
    out = np.zeros(len(n))
    if fn == "quantile_over_time":
        for j in np.flatnonzero(has):
            out[j] = quantile_of(float(args[0][j]), w.v[w.lo[j] : w.hi[j]])
        return out, has
    if fn == "holt_winters":
        ok = np.zeros(len(n), dtype=bool)
        for j in np.flatnonzero(has):
            sf, tf = float(args[0][j]), float(args[1][j])
            if not 0 < sf < 1:
                raise ValueError(
                    f"invalid smoothing factor; expected 0 < sf < 1, got {sf}"
                )
            if not 0 < tf < 1:
                raise ValueError(f"invalid trend factor; expected 0 < tf < 1, got {tf}")
            value = _holt_winters(w, sf, tf, int(j))
            if value is not None:
                out[j], ok[j] = value, True
        return out, ok
    raise ValueError(
        f"unknown range function {fn!r}; supported: {', '.join(RANGE_FUNCTIONS)}"
    )


# --- the metric-name query API (Engine.query) --------------------------------

_OVER_TIME = (
    "avg_over_time", "sum_over_time", "min_over_time", "max_over_time",
    "count_over_time", "last_over_time", "stddev_over_time", "stdvar_over_time",
)  # fmt: skip
FUNCTIONS = ("rate", "increase", "delta", "irate", "idelta", "deriv", *_OVER_TIME)
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
    """Values of one series at each evaluation time; NaN where there is none.

    ``counter`` only matters for ``irate``: a gauge's drop is not a reset.
    """
    if fn is None:
        idx, ok = instant_lookup(ts, v, evals, lookback_ms)
        out = np.full(len(evals), np.nan)
        out[ok] = v[idx[ok]]
        return out
    if window_ms is None or window_ms <= 0:
        raise ValueError(
            f"function {fn!r} needs a positive window_ms, got {window_ms!r}"
        )
    if fn not in FUNCTIONS:
        raise ValueError(f"unknown function {fn!r}; supported: {', '.join(FUNCTIONS)}")
    w = Windows.of(ts, v, evals, window_ms)
    name = "idelta" if fn == "irate" and not counter else fn
    values, ok = apply_range_function(name, w)
    if fn == "irate" and not counter:
        dt = np.zeros(len(evals))
        dt[ok] = (w.ts[w.hi[ok] - 1] - w.ts[w.hi[ok] - 2]) / 1000
        values = np.where(ok, values / np.where(ok, dt, 1.0), values)
    return np.where(ok, values, np.nan)


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
            raise ValueError(
                f"unknown aggregation {agg!r}; supported: {', '.join(AGGREGATIONS)}"
            )
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
        ``read(series_id, start_ms, end_ms) -> (ts, values)``, sorted by ts,
        with ``start_ms <= ts < end_ms``.
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
        self.labels = LabelIndex(index)
        self._read = read
        self.specs = specs

    def read(
        self, sid: int, start_ms: int, end_ms: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(ts, values)`` of one series with ``start_ms <= ts <= end_ms``."""
        return self._read(sid, int(start_ms), int(end_ms) + 1)

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
        if not ms:
            return ids
        chosen = self.labels.select([Matcher("__name__", "=", metric), *ms])
        return [s for s in ids if s in chosen]

    def series(self, matchers: Sequence[Matcher]) -> list[tuple[int, LabelSet]]:
        """Series whose labels, ``__name__`` included, satisfy every matcher.

        Returns ``(series_id, labels)`` pairs sorted by label set, the order
        Prometheus' storage returns them in; the labels include ``__name__``.
        """
        return self.labels.series(matchers)

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
        if (
            spec is not None
            and spec.is_histogram
            and quantile is not None
            and agg is None
        ):
            return self._histogram_quantile(
                metric, evals, matchers, fn or "rate", window_ms or 300_000, quantile,
                by, without, lookback_ms,
            )  # fmt: skip
        ids = self.select(metric, matchers)
        counter = self.kind_of(metric) is MetricKind.COUNTER
        read_from = int(evals[0]) - max(window_ms or 0, lookback_ms)
        rows = []
        for sid in ids:
            ts, v = self._read(sid, read_from, int(evals[-1]) + 1)
            rows.append(
                evaluate_series(ts, v, evals, fn, window_ms, counter, lookback_ms)
            )
        labels = [self.index.labels(s) for s in ids]
        if agg is None:
            return _long_table(labels, evals, rows, drop_name=False, name=metric)
        keys, matrix_groups = _group(labels, rows, by, without)
        return _long_table(
            keys,
            evals,
            [_aggregate(np.vstack(g), agg, quantile) for g in matrix_groups],
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
        without_le: list[str] | None = [w for w in without or () if w != "le"]
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


def _long_table(
    keys, evals, rows, drop_name: bool = True, name: str | None = None
) -> pa.Table:
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
    arrays["ts"] = pa.array(
        np.concatenate(ts_parts) if ts_parts else np.empty(0, np.int64)
    )
    arrays["value"] = pa.array(np.concatenate(v_parts) if v_parts else np.empty(0))
    return pa.table(arrays)
