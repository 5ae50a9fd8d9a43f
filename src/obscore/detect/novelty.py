"""The novelty detector: how unlike everything seen lately is the newest sample?

Three measures of novelty are taken at every sample of a series, each from
the samples before it only:

- **Value surprise.**  The tail probability of the value among the last
  ``history`` values: beyond the top (or bottom) ``tail`` fraction, the tail
  is modelled as exponential with the mean excess of those values, and the
  probability is never below the share of earlier values that reached it.
  Surprise is ``-ln p``, in nats.
- **Pattern surprise.**  The distance from the last ``pattern`` values to the
  nearest earlier stretch of the same length (not overlapping it) within the
  last ``history`` values, scored by the same tail model against the last
  ``novelty_history`` such distances: a shape never seen before, rated by how
  unusual that much novelty is for this series.
- **Material change.**  The root-mean-square distance from the last
  ``short_pattern`` values to their nearest earlier match, as a fraction of
  the range (max - min) of the last ``history`` values.  The first two are
  relative to the series' own noise and react to small but unusual moves in
  a quiet series; this one asks whether the change is large next to what the
  series has done, and ignores statistically odd wiggles of a noisy series.

The score is ``s / (1 + s)`` with ``s`` the largest of the value and pattern
surprise over ``surprise`` and the material change over ``materiality``, so
0.5 is the alerting threshold of every part.  One incident gives one short
burst of high scores: a value, a shape or a level stops being new as soon as
a few samples of it are in the history (a permanent level shift is learnt
within about ``tail * history`` samples), and
:func:`obscore.detect.stream.alert_decisions` turns a burst into one alert.

The kernel runs under Numba (the ``numba`` extra); it is compiled on first
use and cached on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from obscore.detect.base import register, split_series
from obscore.errors import ConfigError

# The one place that holds the Numba options of this module's kernels.  No
# fastmath: the kernels test for NaN.
NUMBA_OPTIONS: dict[str, bool] = {"nopython": True, "nogil": True, "cache": True}

# Fewer earlier values (or distances) than this give no surprise at all.
_MIN_HISTORY = 50
# Surprise is capped at this many nats: a tail probability below e**-700 is
# beyond float64 and means "never seen"; the cap keeps every score finite.
_MAX_NATS = 700.0
# The counters of a series state, by slot.
_POS, _NOV, _CNT_LONG, _CNT_SHORT, _PREV_LONG, _PREV_SHORT, _VCNT, _NCNT = range(8)

_kernel: Any = None

# NOTE: the defaults were chosen on NAB (standard profile, alert decisions at
# 0.5), one setting for all 58 files.  Moving one at a time: tail 0.01 / 0.05
# gives 67.1 / 63.8 (68.9 at 0.02); pattern 6 / 12: 66.7 / 68.9;
# short_pattern 3 / 6: 68.1 / 65.6; novelty_history 500 / 2000: 66.5 / 66.3;
# surprise 7 / 9: 67.4 / 63.7; materiality 0.12 / 0.17: 67.5 / 65.4; history
# 2000 / 4000: 65.8 / 67.4.  Dropping any one measure costs 3 to 8 points.


@register("novelty")
class NoveltyDetector:
    """Value, pattern and material-change novelty; see the module docstring.

    Parameters
    ----------
    history : int
        Samples of a series that the value distribution, the pattern memory
        and the range are taken from (3000: ten days at 5-minute steps).
    tail : float
        Fraction of ``history`` in each modelled tail, in (0, 0.5).
    pattern : int
        Length of the patterns compared for pattern surprise, >= 2.
    short_pattern : int
        Length of the patterns compared for material change, >= 1.
    novelty_history : int
        Pattern distances the pattern surprise is calibrated against.
    surprise : float
        Value or pattern surprise, in nats, that maps to score 0.5
        (8 nats: a tail probability of 1 in 3000).
    materiality : float
        Material change, as a fraction of the range, that maps to score 0.5.
    warmup : int
        Samples of a series scored 0 before any score may rise.

    Raises
    ------
    ConfigError
        If a parameter is out of range.
    ImportError
        On the first scoring, when Numba is not installed.

    Notes
    -----
    Samples are taken in row order per series; timestamps are not used, so
    the windows count samples, not milliseconds, and out-of-order rows are
    taken as they come.  NaN values score NaN and leave the state untouched.
    Scoring in chunks gives the same scores as scoring at once.

    Each series keeps about ``(2 * 2**ceil(log2(history + pattern + 2)) +
    5 * history + 2 * novelty_history) * 8`` bytes of state: 200 KiB with
    the defaults, so 10,000 series take 2 GiB.

    There is no notion of season: a value that is normal at noon but not at
    midnight goes unnoticed when the shape around it is familiar.

    On NAB (58 files, 365,558 rows, ``obscore eval nab``) the defaults score
    68.9 on the standard profile, 58.2 with few false positives rewarded and
    74.4 with few false negatives rewarded, finding 99 of 116 windows with
    231 false alerts; scoring the corpus takes about 5 s on one core.  The
    defaults were chosen on that corpus, one setting for every file.

    Examples
    --------
    >>> import numpy as np
    >>> from obscore.model import sample_table
    >>> values = np.full(300, 5.0)
    >>> values[-1] = 6.0
    >>> batch = sample_table(np.zeros(300, np.uint64), np.arange(300) * 1000, values)
    >>> scores = NoveltyDetector().score(batch).to_numpy()
    >>> bool(scores[:-1].max() < 0.5 < scores[-1])
    True
    """

    name = "novelty"

    def __init__(
        self,
        history: int = 3000,
        tail: float = 0.02,
        pattern: int = 8,
        short_pattern: int = 4,
        novelty_history: int = 1000,
        surprise: float = 8.0,
        materiality: float = 0.14,
        warmup: int = 100,
    ) -> None:
        checks = [
            ("history", history, history >= 2 * _MIN_HISTORY, ">= 100"),
            ("tail", tail, 0.0 < tail < 0.5, "in (0, 0.5)"),
            ("pattern", pattern, 2 <= pattern < history // 4, "in [2, history / 4)"),
            (
                "short_pattern",
                short_pattern,
                1 <= short_pattern < history // 4,
                "in [1, history / 4)",
            ),
            (
                "novelty_history",
                novelty_history,
                novelty_history >= 2 * _MIN_HISTORY,
                ">= 100",
            ),
            ("surprise", surprise, surprise > 0, "> 0"),
            ("materiality", materiality, materiality > 0, "> 0"),
            ("warmup", warmup, warmup >= 0, ">= 0"),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"novelty detector: {name}={value!r} is out of range; "
                    f"expected {expected}"
                )
        self.history = int(history)
        self.tail = float(tail)
        self.pattern = int(pattern)
        self.short_pattern = int(short_pattern)
        self.novelty_history = int(novelty_history)
        self.surprise = float(surprise)
        self.materiality = float(materiality)
        self.warmup = int(warmup)
        self._states: dict[int, _SeriesState] = {}

    def scores(self, batch: Any) -> np.ndarray:
        """Scores per row in [0, 1] (NaN for NaN values), learning as it goes."""
        kernel = _compiled()
        n = batch.num_rows if hasattr(batch, "num_rows") else len(batch)
        out = np.full(n, np.nan)
        params = np.array(
            [
                self.history,
                self.pattern,
                self.short_pattern,
                self.novelty_history,
                self.warmup,
            ],
            dtype=np.int64,
        )
        fparams = np.array([self.tail, self.surprise, self.materiality])
        for sid, rows, _ts, values in split_series(batch):
            state = self._states.get(sid)
            if state is None:
                state = self._states[sid] = _SeriesState.empty(self)
            scored = np.empty(len(values))
            kernel(values, scored, params, fparams, *state.arrays())
            out[rows] = scored
        return out

    def update(self, batch: Any) -> None:
        self.scores(batch)

    def score(self, batch: Any) -> pa.Array:
        return pa.array(self.scores(batch), type=pa.float64())


@dataclass
class _SeriesState:
    """Everything the kernel keeps for one series between batches."""

    counters: np.ndarray  # int64 [8], slots _POS.._NCNT
    values: np.ndarray  # float64 [2 * ring], the last samples by position, twice
    value_sorted: np.ndarray  # float64 [history], the value history sorted
    novelty_ring: np.ndarray  # float64 [novelty_history], distances by count
    novelty_sorted: np.ndarray  # float64 [novelty_history], the same sorted
    long_keys: np.ndarray  # float64 [history], pattern means, sorted
    long_ends: np.ndarray  # int64 [history], end position of each pattern
    short_keys: np.ndarray  # float64 [history]
    short_ends: np.ndarray  # int64 [history]

    @classmethod
    def empty(cls, det: NoveltyDetector) -> _SeriesState:
        # the ring reaches back to the oldest sample of the oldest pattern
        longest = max(det.pattern, det.short_pattern)
        ring = 1 << math.ceil(math.log2(det.history + longest + 2))
        counters = np.zeros(8, dtype=np.int64)
        counters[_PREV_LONG] = counters[_PREV_SHORT] = -1
        h, nh = det.history, det.novelty_history
        return cls(
            counters,
            np.zeros(2 * ring),
            np.zeros(h),
            np.zeros(nh),
            np.zeros(nh),
            np.zeros(h),
            np.zeros(h, dtype=np.int64),
            np.zeros(h),
            np.zeros(h, dtype=np.int64),
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (
            self.counters,
            self.values,
            self.value_sorted,
            self.novelty_ring,
            self.novelty_sorted,
            self.long_keys,
            self.long_ends,
            self.short_keys,
            self.short_ends,
        )


# --- kernels: plain Python here, compiled by _compiled() ---


def _lower_bound(keys, n, key):
    """First index in sorted ``keys[:n]`` whose key is not below ``key``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _sorted_add(keys, n, key):
    """Insert ``key`` into sorted ``keys[:n]`` (room for one more); its index."""
    at = _lower_bound(keys, n, key)
    for i in range(n, at, -1):
        keys[i] = keys[i - 1]
    keys[at] = key
    return at


def _sorted_replace(keys, n, old, new):
    """Replace one entry equal to ``old`` by ``new`` in sorted ``keys[:n]``.

    Only the entries between the two positions move, which on a smooth
    series is a few instead of half the array twice.
    """
    i = _lower_bound(keys, n, old)
    j = _lower_bound(keys, n, new)
    if j > i:
        for q in range(i, j - 1):
            keys[q] = keys[q + 1]
        keys[j - 1] = new
    else:
        for q in range(i, j, -1):
            keys[q] = keys[q - 1]
        keys[j] = new


def _index_add(keys, ends, n, key, end):
    """Insert a pattern (mean ``key``, end position ``end``) into the index."""
    at = _lower_bound(keys, n, key)
    for i in range(n, at, -1):
        keys[i] = keys[i - 1]
        ends[i] = ends[i - 1]
    keys[at] = key
    ends[at] = end


def _index_replace(keys, ends, n, old_key, old_end, key, end):
    """Replace the pattern ending at ``old_end`` by a new one, moving few entries."""
    i = _lower_bound(keys, n, old_key)
    while i < n - 1 and ends[i] != old_end:
        i += 1
    j = _lower_bound(keys, n, key)
    if j > i:
        for q in range(i, j - 1):
            keys[q] = keys[q + 1]
            ends[q] = ends[q + 1]
        j -= 1
    else:
        for q in range(i, j, -1):
            keys[q] = keys[q - 1]
            ends[q] = ends[q - 1]
    keys[j] = key
    ends[j] = end


def _tail_nats(ordered, n, v, tail, upper):
    """Surprise in nats of ``v`` in one tail of the sorted sample ``ordered[:n]``.

    Beyond the ``k = tail * n`` outermost values (at least 5) the tail is
    exponential with their mean excess as scale; the probability is never
    below the share of the sample at least as far out as ``v``.
    """
    k = max(int(tail * n), 5)
    k = min(k, n - 1)
    # the scale floor keeps a flat sample from dividing by zero
    floor = (ordered[n - 1] - ordered[0]) * 1e-3 + 1e-12
    if upper:
        edge = ordered[n - 1 - k]
        excess = v - edge
        if excess <= 0.0:
            return 0.0
        total = 0.0
        for i in range(n - k, n):
            total += ordered[i] - edge
        nats = -math.log(k / n) + excess / max(total / k, floor)
        i = n - 1
        while i >= n - k and ordered[i] >= v:
            i -= 1
        reached = n - 1 - i
    else:
        edge = ordered[k]
        excess = edge - v
        if excess <= 0.0:
            return 0.0
        total = 0.0
        for i in range(k):
            total += edge - ordered[i]
        nats = -math.log(k / n) + excess / max(total / k, floor)
        reached = 0
        while reached < k and ordered[reached] <= v:
            reached += 1
    if reached > 0:
        nats = min(nats, -math.log(reached / n))
    return min(nats, _MAX_NATS)


def _pattern_mean(values, mask, end, m):
    start = (end - m + 1) & mask
    total = 0.0
    for i in range(m):
        total += values[start + i]
    return total / m


def _nearest(values, mask, t, m, keys, ends, n, prev, lo_end, current):
    """Squared distance and end of the stored pattern nearest to the one ending at t.

    The index is sorted by pattern mean, and ``m * (mean difference)**2`` is a
    lower bound of the squared distance, so the search walks away from the
    current mean and stops once the bound exceeds the best distance.
    The successor of the previous match seeds the search.  ``values`` holds
    each sample twice (see :func:`_novelty_update`), so every pattern is
    contiguous from ``(end - m + 1) & mask``.
    """
    key = 0.0
    start = (t - m + 1) & mask
    for i in range(m):
        current[i] = values[start + i]
        key += current[i]
    key /= m
    best, best_end = np.inf, -1
    seed = prev + 1
    if prev >= 0 and lo_end <= seed <= t - m:
        start = (seed - m + 1) & mask
        best = 0.0
        for i in range(m):
            d = current[i] - values[start + i]
            best += d * d
        best_end = seed
    # one scan upwards from the current mean, then one downwards: each stops
    # where the bound passes the best distance so far
    first = _lower_bound(keys, n, key)
    for q in range(first, n):
        gap = keys[q] - key
        if m * gap * gap >= best:
            break
        start = (ends[q] - m + 1) & mask
        dist = 0.0
        for i in range(m):
            d = current[i] - values[start + i]
            dist += d * d
        if dist < best:
            best, best_end = dist, ends[q]
    for q in range(first - 1, -1, -1):
        gap = key - keys[q]
        if m * gap * gap >= best:
            break
        start = (ends[q] - m + 1) & mask
        dist = 0.0
        for i in range(m):
            d = current[i] - values[start + i]
            dist += d * d
        if dist < best:
            best, best_end = dist, ends[q]
    return best, best_end


def _index_step(values, mask, t, m, history, keys, ends, counters, cnt_slot):
    """Add the pattern ending ``m`` samples ago and drop the one out of reach."""
    n = counters[cnt_slot]
    new_end = t - m
    if new_end < m - 1:
        return n
    key = _pattern_mean(values, mask, new_end, m)
    old_end = t - history - 1
    if old_end >= m - 1:
        old_key = _pattern_mean(values, mask, old_end, m)
        _index_replace(keys, ends, n, old_key, old_end, key, new_end)
    else:
        _index_add(keys, ends, n, key, new_end)
        n += 1
        counters[cnt_slot] = n
    return n


def _novelty_update(
    x,
    out,
    params,
    fparams,
    counters,
    values,
    value_sorted,
    novelty_ring,
    novelty_sorted,
    long_keys,
    long_ends,
    short_keys,
    short_ends,
):
    """Score each sample of one series, then learn it.

    Parameters
    ----------
    x : np.ndarray
        float64 samples of one series, in order.
    out : np.ndarray
        float64, same length as ``x``, written: the score in [0, 1) per
        sample, NaN for a NaN sample.
    params : np.ndarray
        int64 ``[history, pattern, short_pattern, novelty_history, warmup]``.
    fparams : np.ndarray
        float64 ``[tail, surprise, materiality]``.
    counters, values, value_sorted, novelty_ring, novelty_sorted, long_keys,
    long_ends, short_keys, short_ends : np.ndarray
        The state of the series (see ``_SeriesState``), updated in place.

    Returns
    -------
    int
        Samples scored (the non-NaN ones).

    Notes
    -----
    A NaN sample changes nothing; an empty ``x`` returns 0.  Samples are
    taken in the order given, whatever their timestamps.
    """
    history, m_long, m_short, nov_history, warmup = (
        params[0],
        params[1],
        params[2],
        params[3],
        params[4],
    )
    tail, surprise, materiality = fparams[0], fparams[1], fparams[2]
    # each sample is stored at its ring slot and again one ring further on,
    # so any pattern shorter than the ring reads as one contiguous slice
    ring = len(values) // 2
    mask = ring - 1
    current = np.empty(max(m_long, m_short))
    written = 0
    for row in range(len(x)):
        v = x[row]
        if np.isnan(v):
            out[row] = np.nan
            continue
        t = counters[_POS]
        values[t & mask] = v
        values[(t & mask) + ring] = v

        # value surprise and range, against the values before this one
        vcnt = counters[_VCNT]
        value_nats, spread = 0.0, 0.0
        if vcnt >= _MIN_HISTORY:
            value_nats = max(
                _tail_nats(value_sorted, vcnt, v, tail, True),
                _tail_nats(value_sorted, vcnt, v, tail, False),
            )
        if vcnt > 0:
            spread = value_sorted[vcnt - 1] - value_sorted[0]
        if vcnt == history:
            _sorted_replace(value_sorted, vcnt, values[(t - history) & mask], v)
        else:
            _sorted_add(value_sorted, vcnt, v)
            counters[_VCNT] = vcnt + 1

        # nearest earlier patterns within the history
        lo_long = max(m_long - 1, t - history)
        n = _index_step(
            values, mask, t, m_long, history, long_keys, long_ends, counters, _CNT_LONG
        )
        pattern_nats = 0.0
        if t >= m_long - 1 and n > 0:
            best, match = _nearest(
                values,
                mask,
                t,
                m_long,
                long_keys,
                long_ends,
                n,
                counters[_PREV_LONG],
                lo_long,
                current,
            )
            counters[_PREV_LONG] = match
            dist = math.sqrt(best)
            ncnt = counters[_NCNT]
            if ncnt >= _MIN_HISTORY:
                pattern_nats = _tail_nats(novelty_sorted, ncnt, dist, tail, True)
            k = counters[_NOV]
            if ncnt == nov_history:
                old = novelty_ring[k % nov_history]
                _sorted_replace(novelty_sorted, ncnt, old, dist)
            else:
                _sorted_add(novelty_sorted, ncnt, dist)
                counters[_NCNT] = ncnt + 1
            novelty_ring[k % nov_history] = dist
            counters[_NOV] = k + 1

        lo_short = max(m_short - 1, t - history)
        n = _index_step(
            values,
            mask,
            t,
            m_short,
            history,
            short_keys,
            short_ends,
            counters,
            _CNT_SHORT,
        )
        change = 0.0
        if t >= m_short - 1 and n > 0:
            best, match = _nearest(
                values,
                mask,
                t,
                m_short,
                short_keys,
                short_ends,
                n,
                counters[_PREV_SHORT],
                lo_short,
                current,
            )
            counters[_PREV_SHORT] = match
            rms = math.sqrt(best / m_short)
            if spread > 0.0:
                change = rms / spread
            elif rms > 0.0:
                change = _MAX_NATS

        s = max(value_nats / surprise, pattern_nats / surprise, change / materiality)
        out[row] = s / (1.0 + s) if t >= warmup else 0.0
        counters[_POS] = t + 1
        written += 1
    return written


def _compiled():
    """The Numba-compiled kernel, compiled (or loaded from cache) on first use."""
    global _kernel, _lower_bound, _sorted_add, _sorted_replace, _index_add
    global _index_replace, _tail_nats, _pattern_mean, _nearest, _index_step
    if _kernel is not None:
        return _kernel
    try:
        import numba
    except ImportError:
        raise ImportError(
            "the 'novelty' detector needs Numba, which is not installed; "
            "install the numba extra: pip install 'obscore[numba]'"
        ) from None
    jit = numba.jit(**NUMBA_OPTIONS)
    # helpers first: the kernel binds whatever these module names hold
    _lower_bound = jit(_lower_bound)
    _sorted_add = jit(_sorted_add)
    _sorted_replace = jit(_sorted_replace)
    _index_add = jit(_index_add)
    _index_replace = jit(_index_replace)
    _tail_nats = jit(_tail_nats)
    _pattern_mean = jit(_pattern_mean)
    _nearest = jit(_nearest)
    _index_step = jit(_index_step)
    _kernel = jit(_novelty_update)
    return _kernel
