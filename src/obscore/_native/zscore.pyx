"""Streaming z-scores over a sliding window of earlier samples.

Each sample is scored against the mean and sample standard deviation of the
samples before it in a look-back window, then joins the window. The window
keeps sums of (x - ref) and (x - ref)**2 with ref near the mean, so adding
and removing a sample is O(1). The sums are recomputed exactly from the
window every 4n + 4096 updates, when the mean drifts far from ref, and when
a spike leaves the window, so rounding cannot pile up over long runs.
"""

from __future__ import annotations

import numpy as np

from libc.math cimport NAN, fabs, isnan, sqrt
from libc.stdint cimport INT64_MIN
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from obscore._native._types cimport float64_t, int64_t, intp_t


cdef int64_t _STALE = 1 << 62          # ops value that forces an exact recompute


# zscore_rolling's block passes (_zscore_block.h): built for AVX-512, AVX2
# and baseline x86-64, picked at load. The constants live there, so both
# sides use one value.
cdef extern from "_zscore_block.h" nogil:
    const float64_t _STD_REL_FLOOR "OBS_ZS_STD_REL_FLOOR"  # floor on std, relative to |mean|
    const float64_t _STD_ABS_FLOOR "OBS_ZS_STD_ABS_FLOOR"  # floor on std when the mean is near 0
    const float64_t _MAX_JOIN "OBS_ZS_MAX_JOIN"  # larger |x| are scored but never join
    enum:
        _BLOCK "OBS_ZS_MAX_RUN"  # values per block of zscore_rolling's passes
    ctypedef struct _FullMoments "obs_zs_moments":
        float64_t ref
        float64_t s1
        float64_t s2
        float64_t last
        int64_t run
        int64_t ops
    # dev / max(sqrt(max(var, 0)), flo) over a block; returns the non-NaN count
    intp_t _finish_scores "obs_zscore_finish" (
        const float64_t* dev, const float64_t* var, const float64_t* flo,
        float64_t* scores, intp_t n)
    intp_t _count_outcasts "obs_zscore_count_outcasts" (const float64_t* x, intp_t n)
    intp_t _full_block "obs_zscore_full_block" (
        _FullMoments* m, const float64_t* values, intp_t n, int64_t w,
        float64_t* scores, intp_t* not_nan, int* stale)


cdef inline bint _joins(float64_t x) noexcept nogil:
    # Whether a value may enter the window: not NaN, not +-Inf, and small
    # enough that its square cannot overflow the sums.
    return fabs(x) <= _MAX_JOIN


# --- zscore: moments of the window ---

cdef inline Moments _empty_moments() noexcept nogil:
    cdef Moments m
    m.n = 0
    m.ref = 0.0
    m.s1 = 0.0
    m.s2 = 0.0
    m.last = 0.0
    m.run = 0
    m.ops = 0
    return m


cdef inline void _add_moments(Moments* m, float64_t x) noexcept nogil:
    cdef float64_t d
    if m.n == 0:
        # An empty window re-centres the sums on its first value for free.
        m.ref = x
        m.s1 = 0.0
        m.s2 = 0.0
        m.ops = 0
    d = x - m.ref
    m.s1 += d
    m.s2 += d * d
    if m.n > 0 and x == m.last:
        m.run += 1
    else:
        m.run = 1
    m.last = x
    m.n += 1
    m.ops += 1


cdef inline void _remove_moments(Moments* m, float64_t x) noexcept nogil:
    cdef float64_t d = x - m.ref
    cdef float64_t dd = d * d
    m.s1 -= d
    m.s2 -= dd
    m.n -= 1
    m.ops += 1
    if m.run > m.n:
        m.run = m.n
    # A term far above the spread of what remains (a spike leaving) took the
    # low digits of the sums with it: ask for an exact recompute. Differences
    # at rounding level (1e-12 of the level) never count as spikes, so a
    # near-constant window does not recompute on every removal.
    if m.n > 0 and dd * m.n > 1e4 * (m.s2 * m.n - m.s1 * m.s1) and dd > 1e-24 * m.ref * m.ref:
        m.ops = _STALE


cdef inline float64_t _calc_zscore(const Moments* m, float64_t x,
                                   int64_t min_count) noexcept nogil:
    # (x - mean) / max(std, floor) over the window; 0.0 while it is too small.
    cdef float64_t mean, dev, var, std, floor
    if m.n < min_count:
        return 0.0
    if m.run == m.n:
        # Every value in the window is `last`: mean and std are exact.
        mean = m.last
        dev = x - mean
        std = 0.0
    else:
        mean = m.ref + m.s1 / m.n
        dev = (x - m.ref) - m.s1 / m.n
        var = (m.s2 - m.s1 * m.s1 / m.n) / (m.n - 1)
        std = sqrt(var) if var > 0 else 0.0
    floor = _STD_REL_FLOOR * fabs(mean)
    if floor < _STD_ABS_FLOOR:
        floor = _STD_ABS_FLOOR
    if std < floor:
        std = floor
    return dev / std


cdef inline float64_t _calc_zscore_inv(const Moments* m, float64_t x, float64_t inv_n,
                                       float64_t inv_nm1) noexcept nogil:
    # _calc_zscore for n >= 2 with 1/n and 1/(n - 1) given: multiplications
    # in place of the three divisions (within an ulp of them).
    cdef float64_t mean, dev, var, std, floor, off
    if m.run == m.n:
        mean = m.last
        dev = x - mean
        std = 0.0
    else:
        off = m.s1 * inv_n
        mean = m.ref + off
        dev = (x - m.ref) - off
        var = (m.s2 - m.s1 * off) * inv_nm1
        std = sqrt(var) if var > 0 else 0.0
    floor = _STD_REL_FLOOR * fabs(mean)
    if floor < _STD_ABS_FLOOR:
        floor = _STD_ABS_FLOOR
    if std < floor:
        std = floor
    return dev / std


cdef inline void _score_parts(const Moments* m, float64_t x, float64_t inv_n,
                              float64_t inv_nm1, float64_t* dev, float64_t* var,
                              float64_t* flo) noexcept nogil:
    # The parts of _calc_zscore (min_count 2) that _finish_scores combines
    # as dev / max(sqrt(max(var, 0)), flo); NaN x gives a NaN dev.
    cdef float64_t mean, off, floor
    if m.n < 2:
        dev[0] = 0.0 if x == x else x  # a score of 0 while too small; NaN stays NaN
        var[0] = 1.0
        flo[0] = 1.0
        return
    if m.run == m.n:
        mean = m.last
        dev[0] = x - mean
        var[0] = 0.0
    else:
        off = m.s1 * inv_n
        mean = m.ref + off
        dev[0] = (x - m.ref) - off
        var[0] = (m.s2 - m.s1 * off) * inv_nm1
    floor = _STD_REL_FLOOR * fabs(mean)
    flo[0] = floor if floor > _STD_ABS_FLOOR else _STD_ABS_FLOOR



cdef inline bint _is_stale_inv(const Moments* m, float64_t inv_n) noexcept nogil:
    # _is_stale with 1/n given.
    cdef float64_t dev2
    if m.ops > 4 * m.n + 4096:
        return True
    if m.ops > m.n and m.n > 1:
        dev2 = m.s2 - m.s1 * m.s1 * inv_n
        return m.s1 * m.s1 > 1e4 * m.n * dev2
    return False


cdef inline bint _is_stale(const Moments* m) noexcept nogil:
    # Time for an exact recompute: after 4n + 4096 updates, or sooner (but
    # not before n updates, to stay O(1) amortized) when the mean has moved
    # more than 100 std from ref, where S2 - S1**2/n starts losing digits.
    cdef float64_t dev2
    if m.ops > 4 * m.n + 4096:
        return True
    if m.ops > m.n and m.n > 1:
        dev2 = m.s2 - m.s1 * m.s1 / m.n
        return m.s1 * m.s1 > 1e4 * m.n * dev2
    return False


cdef void _span_sums(const float64_t* x, intp_t n, float64_t ref,
                     float64_t* s1, float64_t* s2) noexcept nogil:
    # Add sum(x - ref) and sum((x - ref)**2) over the x of a span that join.
    cdef intp_t i
    cdef float64_t d
    for i in range(n):
        if _joins(x[i]):
            d = x[i] - ref
            s1[0] += d
            s2[0] += d * d


cdef Moments _recompute_span(Moments m, const float64_t* a, intp_t na,
                             const float64_t* b, intp_t nb) noexcept nogil:
    # Exact sums over the window, given as the joining values of spans a, b.
    # Takes and returns the moments by value, so callers keep theirs in
    # registers (passing their address out made the hot loop 3x slower).
    cdef float64_t total = 0.0, unused = 0.0
    _span_sums(a, na, 0.0, &total, &unused)
    _span_sums(b, nb, 0.0, &total, &unused)
    m.ref = total / m.n
    m.s1 = 0.0
    m.s2 = 0.0
    _span_sums(a, na, m.ref, &m.s1, &m.s2)
    _span_sums(b, nb, m.ref, &m.s1, &m.s2)
    m.ops = 0
    return m


cdef inline int64_t _pow2_at_least(int64_t n) noexcept nogil:
    cdef int64_t c = 16
    while c < n:
        c *= 2
    return c


# --- zscore: time-window state ---

cdef class ZScoreState:
    """Streaming z-score of each sample against a look-back time window.

    Parameters
    ----------
    window_ms : int
        Look-back span in ms, positive. The window of a sample at ts ``t``
        holds the earlier samples with ``ts > t - window_ms``.
    min_count : int, default 2
        Samples the window needs before scores are computed; below it the
        score is 0.0. At least 2 (the sample std needs two).
    capacity_hint : int, default 1024
        Expected window size in samples; the ring starts there and doubles
        as needed.

    Raises
    ------
    ValueError
        If ``window_ms`` or ``capacity_hint`` is not positive or
        ``min_count`` is below 2.

    Notes
    -----
    The window of a sample excludes the sample itself and includes earlier
    samples with the same ts. On strictly increasing ts it equals pandas'
    ``rolling(f"{window_ms - 1}ms", closed="left")`` (integer ms ts); pandas
    also drops earlier samples with an equal ts, obscore keeps them.

    State is kept between :meth:`update` calls, so scoring a stream in
    chunks gives the same scores as scoring it at once. The object pickles
    exactly: a restored state continues bit for bit.

    Examples
    --------
    >>> import numpy as np
    >>> z = ZScoreState(window_ms=10_000)
    >>> scores = np.empty(5)
    >>> z.update(np.arange(5) * 1000, np.array([1.0, 2.0, 3.0, 2.0, 10.0]), scores)
    5
    >>> scores.round(3).tolist()
    [0.0, 0.0, 2.121, 0.0, 9.798]
    """

    def __cinit__(self):
        self._ts = NULL
        self._values = NULL

    def __init__(self, window_ms: int, min_count: int = 2, capacity_hint: int = 1024):
        if window_ms <= 0:
            raise ValueError(f"window_ms must be positive, got {window_ms!r}")
        if min_count < 2:
            raise ValueError(f"min_count must be at least 2, got {min_count!r}")
        if capacity_hint <= 0:
            raise ValueError(f"capacity_hint must be positive, got {capacity_hint!r}")
        self._window_ms = window_ms
        self._min_count = min_count
        self._capacity_hint = capacity_hint
        self._cap = _pow2_at_least(capacity_hint)
        self._ts = <int64_t*>malloc(self._cap * sizeof(int64_t))
        self._values = <float64_t*>malloc(self._cap * sizeof(float64_t))
        if self._ts == NULL or self._values == NULL:
            raise MemoryError(f"could not allocate a z-score window of {self._cap} samples")
        self.reset()

    def __dealloc__(self):
        free(self._ts)
        free(self._values)

    @property
    def window_ms(self) -> int:
        """Look-back span in ms."""
        return self._window_ms

    @property
    def min_count(self) -> int:
        """Window samples needed before scores are non-zero."""
        return self._min_count

    @property
    def count(self) -> int:
        """Samples in the window now."""
        return self._m.n

    @property
    def mean(self) -> float:
        """Mean of the window now; NaN when it is empty."""
        if self._m.n == 0:
            return NAN
        if self._m.run == self._m.n:
            return self._m.last
        return self._m.ref + self._m.s1 / self._m.n

    @property
    def std(self) -> float:
        """Sample std (ddof=1) of the window now, unfloored; NaN below 2 samples."""
        cdef float64_t var
        if self._m.n < 2:
            return NAN
        if self._m.run == self._m.n:
            return 0.0
        var = (self._m.s2 - self._m.s1 * self._m.s1 / self._m.n) / (self._m.n - 1)
        return sqrt(var) if var > 0 else 0.0

    def reset(self):
        """Empty the window and forget the last ts."""
        self._m = _empty_moments()
        self._head = 0
        self._last_ts = INT64_MIN

    cdef int _grow(self) except -1 nogil:
        # Double the ring, unrolling it so the oldest sample lands at 0.
        cdef int64_t new_cap = 2 * self._cap
        cdef int64_t first = self._cap - self._head
        cdef int64_t* new_ts = <int64_t*>malloc(new_cap * sizeof(int64_t))
        cdef float64_t* new_values = <float64_t*>malloc(new_cap * sizeof(float64_t))
        if new_ts == NULL or new_values == NULL:
            free(new_ts)
            free(new_values)
            with gil:
                raise MemoryError(
                    f"could not grow z-score window from {self._cap} to {new_cap} samples"
                )
        memcpy(new_ts, self._ts + self._head, first * sizeof(int64_t))
        memcpy(new_ts + first, self._ts, self._head * sizeof(int64_t))
        memcpy(new_values, self._values + self._head, first * sizeof(float64_t))
        memcpy(new_values + first, self._values, self._head * sizeof(float64_t))
        free(self._ts)
        free(self._values)
        self._ts = new_ts
        self._values = new_values
        self._cap = new_cap
        self._head = 0
        return 0

    cdef Moments _recompute(self, Moments m, int64_t head) noexcept nogil:
        cdef int64_t first = self._cap - head
        if first >= m.n:
            return _recompute_span(m, self._values + head, m.n, NULL, 0)
        return _recompute_span(m, self._values + head, first, self._values, m.n - first)

    cdef int64_t _update(self, const int64_t[::1] ts, const float64_t[::1] values,
                         float64_t[::1] scores) except -1 nogil:
        # The moments, ring head and pointers live in locals during the loop:
        # through self they would be reloaded after every store to scores.
        cdef Moments m = self._m
        cdef int64_t head = self._head
        cdef int64_t mask = self._cap - 1
        cdef int64_t last_ts = self._last_ts
        cdef int64_t window_ms = self._window_ms
        cdef int64_t min_count = self._min_count
        cdef int64_t* ring_ts = self._ts
        cdef float64_t* ring_values = self._values
        cdef intp_t i
        cdef int64_t t, cutoff, pos, written = 0
        cdef float64_t x, score

        for i in range(values.shape[0]):
            x = values[i]
            if isnan(x):
                scores[i] = NAN
                continue
            t = ts[i]
            if t < last_ts:
                t = last_ts
            last_ts = t

            cutoff = t - window_ms
            while m.n > 0 and ring_ts[head] <= cutoff:
                _remove_moments(&m, ring_values[head])
                head = (head + 1) & mask
            if m.ops >= _STALE and m.n > 0:
                m = self._recompute(m, head)

            score = _calc_zscore(&m, x, min_count)
            scores[i] = score
            written += not isnan(score)
            if not _joins(x):
                continue

            if m.n == mask + 1:
                self._m, self._head, self._last_ts = m, head, last_ts
                self._grow()
                head, mask = self._head, self._cap - 1
                ring_ts, ring_values = self._ts, self._values
            pos = (head + m.n) & mask
            ring_ts[pos] = t
            ring_values[pos] = x
            _add_moments(&m, x)
            if _is_stale(&m):
                m = self._recompute(m, head)

        self._m, self._head, self._last_ts = m, head, last_ts
        return written

    def update(
        self,
        const int64_t[::1] ts,
        const float64_t[::1] values,
        float64_t[::1] scores,
    ) -> int:
        """Score samples in order, then add each to the window.

        Parameters
        ----------
        ts : ndarray of int64, shape (n,)
            Sample ts in ms, expected non-decreasing.
        values : ndarray of float64, shape (n,)
            Sample values.
        scores : ndarray of float64, shape (n,)
            Output: ``(x - mean) / std`` over the window before each sample.

        Returns
        -------
        int
            Number of non-NaN scores written.

        Raises
        ------
        ValueError
            If the arrays differ in length.

        Notes
        -----
        A window holding fewer than ``min_count`` samples scores 0.0. The std
        is floored at ``max(1e-9 * |mean|, 1e-12)``, so a constant window
        scores the same value 0.0 and any other value a large finite score.

        NaN values score NaN and are otherwise ignored: they do not join the
        window and do not move time. +-Inf values, and finite values beyond
        1e100 in magnitude (whose squares could overflow the sums), are
        scored (+-Inf for infinities; 0.0 while the window is too small) and
        move time but never join the window, so one cannot poison later
        scores. Finite values below 1e150 in magnitude always score finite.

        A sample whose ts is older than the newest ts seen is treated as
        arriving at that newest ts. Empty input writes nothing and returns 0.
        """
        cdef int64_t written
        if ts.shape[0] != values.shape[0] or scores.shape[0] != values.shape[0]:
            raise ValueError(
                f"ts, values and scores must have one length, got {ts.shape[0]}, "
                f"{values.shape[0]} and {scores.shape[0]}"
            )
        with nogil:
            written = self._update(ts, values, scores)
        return written

    def __reduce__(self):
        n = self._m.n
        window_ts = np.empty(n, dtype=np.int64)
        window_values = np.empty(n, dtype=np.float64)
        for k in range(n):
            p = (self._head + k) & (self._cap - 1)
            window_ts[k] = self._ts[p]
            window_values[k] = self._values[p]
        state = {
            "version": 1,
            "last_ts": self._last_ts,
            "ts": window_ts,
            "values": window_values,
            "ref": self._m.ref,
            "s1": self._m.s1,
            "s2": self._m.s2,
            "last": self._m.last,
            "run": self._m.run,
            "ops": self._m.ops,
        }
        return (
            ZScoreState,
            (self._window_ms, self._min_count, self._capacity_hint),
            state,
        )

    def __setstate__(self, state):
        cdef const int64_t[::1] window_ts = state["ts"]
        cdef const float64_t[::1] window_values = state["values"]
        cdef int64_t n = window_ts.shape[0]
        if state.get("version") != 1:
            raise ValueError(f"unknown ZScoreState state version {state.get('version')!r}")
        while self._cap < n:
            self._grow()
        for k in range(n):
            self._ts[k] = window_ts[k]
            self._values[k] = window_values[k]
        self._head = 0
        self._last_ts = state["last_ts"]
        self._m.n = n
        self._m.ref = state["ref"]
        self._m.s1 = state["s1"]
        self._m.s2 = state["s2"]
        self._m.last = state["last"]
        self._m.run = state["run"]
        self._m.ops = state["ops"]


# --- zscore: count window, for benchmarks against pandas ---

cdef struct _Run:
    Moments m      # moments after the run
    intp_t next    # index of the first value the run did not take
    intp_t tail    # index of the oldest value in the window
    bint stale     # the moments need an exact recompute before values[next]


cdef _Run _full_window_run(Moments m, const float64_t* values, intp_t i, intp_t end,
                           intp_t tail, int64_t w, float64_t* dev, float64_t* var,
                           float64_t* flo) noexcept nogil:
    # zscore_rolling's loop over values[i:end] while its window is full (n ==
    # w >= 2): the operations of _score_parts, _remove_moments, _add_moments
    # and _is_stale_inv in the same order, so the same bits, less the
    # branches a full window never takes, with the moments in locals.
    # dev/var/flo[k] belong to values[i + k]. Stops after a value that leaves
    # the moments stale, or at end.
    cdef _Run r
    cdef float64_t inv_n = 1.0 / w
    cdef float64_t inv_nm1 = 1.0 / (w - 1)
    cdef int64_t nm1 = w - 1
    cdef int64_t max_ops = 4 * w + 4096
    cdef float64_t ref = m.ref, s1 = m.s1, s2 = m.s2, last = m.last
    cdef float64_t spike_floor = 1e-24 * ref * ref
    cdef int64_t run = m.run, ops = m.ops
    cdef float64_t x, d, dd, off, mean, floor
    cdef intp_t k = 0
    r.stale = False
    while i < end:
        x = values[i]
        if run == w:
            mean = last
            dev[k] = x - mean
            var[k] = 0.0
        else:
            off = s1 * inv_n
            mean = ref + off
            dev[k] = (x - ref) - off
            var[k] = (s2 - s1 * off) * inv_nm1
        floor = _STD_REL_FLOOR * fabs(mean)
        flo[k] = floor if floor > _STD_ABS_FLOOR else _STD_ABS_FLOOR
        i += 1
        k += 1
        if not _joins(x):
            continue

        while not _joins(values[tail]):
            tail += 1
        d = values[tail] - ref
        tail += 1
        dd = d * d
        s1 -= d
        s2 -= dd
        ops += 1
        if run > nm1:
            run = nm1
        if dd * nm1 > 1e4 * (s2 * nm1 - s1 * s1) and dd > spike_floor:
            ops = _STALE

        d = x - ref
        s1 += d
        s2 += d * d
        run = run + 1 if x == last else 1
        last = x
        ops += 1
        if ops > max_ops or (ops > w and s1 * s1 > 1e4 * w * (s2 - s1 * s1 * inv_n)):
            r.stale = True
            break
    m.s1, m.s2, m.last, m.run, m.ops = s1, s2, last, run, ops
    r.m, r.next, r.tail = m, i, tail
    return r


def zscore_rolling(
    const float64_t[::1] values,
    window: int,
    float64_t[::1] scores,
) -> int:
    """Z-score of each value against the previous ``window`` values.

    Parameters
    ----------
    values : ndarray of float64, shape (n,)
        Values in order.
    window : int
        Number of earlier finite values in the window, at least 2.
    scores : ndarray of float64, shape (n,)
        Output scores.

    Returns
    -------
    int
        Number of non-NaN scores written.

    Raises
    ------
    ValueError
        If ``window`` is below 2 or the arrays differ in length.

    Notes
    -----
    Same conventions as :meth:`ZScoreState.update` with ``min_count=2``:
    0.0 until two values are in the window, std floored, NaN values score
    NaN and are skipped, +-Inf and values beyond 1e100 in magnitude are
    scored but never join; the window is the previous ``window`` values
    that joined. On finite input it
    matches ``(x - s.rolling(window, min_periods=2).mean().shift())
    / s.rolling(window, min_periods=2).std().shift()`` in pandas. Empty
    input returns 0.
    """
    cdef intp_t n = values.shape[0]
    cdef int64_t w = window
    cdef intp_t i, tail = 0, written = 0
    cdef int64_t n_cached = -1
    cdef float64_t x, inv_n = 0.0, inv_nm1 = 0.0
    cdef Moments m = _empty_moments()
    if window < 2:
        raise ValueError(f"window must be at least 2, got {window!r}")
    if scores.shape[0] != n:
        raise ValueError(
            f"values and scores must have one length, got {n} and {scores.shape[0]}"
        )

    # NOTE: the loop runs in blocks of _BLOCK values: a serial pass keeps the
    # moments and writes each value's deviation, variance and std floor, then
    # a branch-free pass takes sqrt and divides, which the compiler turns
    # into SIMD. 1/n and 1/(n - 1) are cached while the window is full. With
    # five divisions per value in one pass this ran at 88M points/s (3.5x
    # pandas); see benchmarks/test_kernels.py, zscore case.
    # A block whose window is full and made of the w values before it, and
    # whose values all join (the steady state), goes to _full_block
    # (_zscore_block.h): the serial pass there only keeps the sums, and one
    # vector pass scores and finds the first value after which they must be
    # recomputed; other blocks keep the loop below, _full_window_run once the
    # window is full. Same bits as the loop alone (every clone, checked on
    # spikes, drift, constant runs, NaN/Inf). bench.py's zscore at 10M
    # points (thread CPU time, best of 5, load ~5, interleaved with the
    # previous build): 140-149M -> 253-255M points/s, 5.4-5.8x -> 9.5-9.7x
    # pandas rolling mean + std.
    cdef float64_t dev[_BLOCK]
    cdef float64_t var[_BLOCK]
    cdef float64_t flo[_BLOCK]
    cdef intp_t b0, b1, j, taken, not_nan
    cdef int stale
    cdef _Run r
    cdef _FullMoments full
    with nogil:
        b0 = 0
        while b0 < n:
            b1 = b0 + _BLOCK if b0 + _BLOCK < n else n
            if m.n == w and b0 - tail == w and _count_outcasts(&values[b0], b1 - b0) == 0:
                # the window is full, its values are the w before b0 and every
                # value of the block joins
                full.ref, full.s1, full.s2 = m.ref, m.s1, m.s2
                full.last, full.run, full.ops = m.last, m.run, m.ops
                i = b0
                while i < b1:
                    taken = _full_block(&full, &values[i], b1 - i, w, &scores[i],
                                        &not_nan, &stale)
                    i += taken
                    written += not_nan
                    if stale:
                        m.s1, m.s2, m.last, m.run = full.s1, full.s2, full.last, full.run
                        m = _recompute_span(m, &values[i - w], w, NULL, 0)
                        full.ref, full.s1, full.s2, full.ops = m.ref, m.s1, m.s2, m.ops
                m.ref, m.s1, m.s2 = full.ref, full.s1, full.s2
                m.last, m.run, m.ops = full.last, full.run, full.ops
                tail = b1 - w
                b0 = b1
                continue

            i = b0
            while i < b1:
                if m.n == w:
                    r = _full_window_run(m, &values[0], i, b1, tail, w, &dev[i - b0],
                                         &var[i - b0], &flo[i - b0])
                    m, i, tail = r.m, r.next, r.tail
                    if r.stale:
                        m = _recompute_span(m, &values[tail], i - tail, NULL, 0)
                    continue

                j = i - b0
                x = values[i]
                if m.n != n_cached:
                    n_cached = m.n
                    inv_n = 1.0 / n_cached if n_cached > 0 else 0.0
                    inv_nm1 = 1.0 / (n_cached - 1) if n_cached > 1 else 0.0
                _score_parts(&m, x, inv_n, inv_nm1, &dev[j], &var[j], &flo[j])
                i += 1
                if not _joins(x):
                    continue

                _add_moments(&m, x)
                n_cached = -1
                inv_n = 1.0 / m.n
                if _is_stale_inv(&m, inv_n):
                    m = _recompute_span(m, &values[tail], i - tail, NULL, 0)
            written += _finish_scores(dev, var, flo, &scores[b0], b1 - b0)
            b0 = b1
    return written
