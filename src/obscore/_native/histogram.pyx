"""Classic (fixed-bucket) histograms: bucketize values, quantiles from buckets.

Buckets follow Prometheus: each bucket is named by its upper bound ``le``, a
value falls in the first bucket whose bound is >= the value, and the last
bucket is ``+Inf``. Quantiles follow PromQL's ``histogram_quantile`` on
cumulative bucket counts.
"""

from __future__ import annotations

import numpy as np

from libc.math cimport INFINITY, NAN, ceil, exp, fabs, isinf, isnan, log
from libc.stdint cimport INT64_MAX, INT64_MIN
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

from obscore._native._types cimport float64_t, int64_t, intp_t


cdef enum:
    _SMALL = 16   # bounds up to this many use a branch-free compare count


# --- histogram: bucketize values ---

# NOTE: unweighted batches with up to 16 bounds take a two-step path: the
# bucket index of a block of values is computed branch-free in C
# (_hist_index.h, vectorized, built for AVX-512, AVX2 and baseline x86-64 and
# picked at load), then counted into four partial integer tables so a run of
# values into one bucket is not a chain of dependent adds. On 10M lognormal
# latencies into the 6 default bounds that runs at ~1.1G values/s against
# ~0.3G for the scalar compare count kept below for weighted input (numpy's
# searchsorted + bincount: ~80M/s; benchmarks/test_kernels.py, histogram).

cdef inline intp_t _bucket_8(const float64_t* b, float64_t v) noexcept nogil:
    # Number of bounds below v, over a table padded with +Inf (never below any
    # v, +Inf included). The fixed trip count unrolls into compares and adds.
    cdef intp_t j, idx = 0
    for j in range(8):
        idx += v > b[j]
    return idx


cdef inline intp_t _bucket_16(const float64_t* b, float64_t v) noexcept nogil:
    cdef intp_t j, idx = 0
    for j in range(16):
        idx += v > b[j]
    return idx


cdef inline intp_t _bucket_search(const float64_t* b, intp_t nb, float64_t v) noexcept nogil:
    # First j with v <= b[j] (nb when none), by binary search.
    cdef intp_t lo = 0, hi = nb, mid
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if v > b[mid]:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef enum:
    _BLK = 256    # values per block of the unweighted fast path
    _LANES = 4    # partial count tables, so runs into one bucket do not chain


cdef extern from "_hist_index.h" nogil:
    # bucket index of each value of a block; NaN gets 9 (8 bounds) or 17 (16)
    void obs_block_index_8(const float64_t* v, intp_t m, const float64_t* t, int64_t* idx)
    void obs_block_index_16(const float64_t* v, intp_t m, const float64_t* t, int64_t* idx)


cdef intp_t _bucketize_unweighted(const float64_t* v, intp_t n, const float64_t* table,
                                  intp_t nb, float64_t* counts) noexcept nogil:
    # Unweighted counts for nb <= _SMALL bounds: indices a block at a time,
    # then integer adds into _LANES partial tables. Returns the NaN count.
    cdef int64_t idx[_BLK]
    cdef int64_t partial[_LANES * 2 * _SMALL]
    cdef intp_t start, m, j, width = 2 * _SMALL
    cdef intp_t nan_slot = 9 if nb <= 8 else 17
    cdef int64_t n_nan = 0
    memset(partial, 0, sizeof(partial))
    start = 0
    while start < n:
        m = n - start if n - start < _BLK else _BLK
        if nb <= 8:
            obs_block_index_8(v + start, m, table, idx)
        else:
            obs_block_index_16(v + start, m, table, idx)
        j = 0
        while j + _LANES <= m:
            partial[idx[j]] += 1
            partial[width + idx[j + 1]] += 1
            partial[2 * width + idx[j + 2]] += 1
            partial[3 * width + idx[j + 3]] += 1
            j += _LANES
        while j < m:
            partial[idx[j]] += 1
            j += 1
        start += m
    for j in range(nb + 1):
        counts[j] += (partial[j] + partial[width + j] + partial[2 * width + j]
                      + partial[3 * width + j])
    for j in range(_LANES):
        n_nan += partial[j * width + nan_slot]
    return n_nan


cdef intp_t _bucketize(const float64_t[::1] values, const float64_t[::1] bounds,
                       float64_t[::1] counts, const float64_t* weights) noexcept nogil:
    cdef intp_t n = values.shape[0]
    cdef intp_t nb = bounds.shape[0]
    cdef intp_t i, j, idx, n_nan = 0
    cdef float64_t v, w = 1.0
    cdef float64_t table[_SMALL]

    for j in range(_SMALL):
        table[j] = bounds[j] if j < nb else INFINITY
    if weights == NULL and nb <= _SMALL and n > 0:
        return _bucketize_unweighted(&values[0], n, table, nb, &counts[0])
    for i in range(n):
        v = values[i]
        if isnan(v):
            n_nan += 1
            continue
        if weights != NULL:
            w = weights[i]
        if nb <= 8:
            idx = _bucket_8(table, v)
        elif nb <= _SMALL:
            idx = _bucket_16(table, v)
        else:
            idx = _bucket_search(&bounds[0], nb, v)
        counts[idx] += w
    return n_nan


def hist_bucketize(
    const float64_t[::1] values,
    const float64_t[::1] bounds,
    float64_t[::1] counts,
    weights=None,
) -> int:
    """Add values to classic histogram bucket counts.

    Parameters
    ----------
    values : ndarray of float64, shape (n,)
        Observed values.
    bounds : ndarray of float64, shape (b,)
        Finite, strictly increasing bucket upper bounds, without ``+Inf``.
    counts : ndarray of float64, shape (b + 1,)
        Per-bucket (not cumulative) counts, the last one the ``+Inf``
        bucket. Added to, not cleared.
    weights : ndarray of float64, shape (n,), optional
        Weight of each value; default 1.

    Returns
    -------
    int
        Number of NaN values skipped.

    Raises
    ------
    ValueError
        If the shapes disagree or ``bounds`` are not finite and strictly
        increasing.

    Notes
    -----
    A value goes to the first bucket whose bound is >= the value (PromQL's
    ``le``); values above the last bound and +Inf go to the ``+Inf`` bucket,
    -Inf to the first. NaN values are skipped and counted. Empty input adds
    nothing and returns 0.

    Weights are added as given, in input order (a NaN weight makes its
    bucket NaN).

    Examples
    --------
    >>> import numpy as np
    >>> counts = np.zeros(3)
    >>> hist_bucketize(np.array([0.5, 1.0, 7.0, np.nan]), np.array([1.0, 5.0]), counts)
    1
    >>> counts.tolist()
    [2.0, 0.0, 1.0]
    """
    cdef intp_t nb = bounds.shape[0]
    cdef intp_t j, n_nan
    cdef const float64_t[::1] w_view
    cdef const float64_t* w_ptr = NULL

    if counts.shape[0] != nb + 1:
        raise ValueError(
            f"counts must have len(bounds) + 1 = {nb + 1} entries, got {counts.shape[0]}"
        )
    for j in range(nb):
        if isnan(bounds[j]) or isinf(bounds[j]) or (j > 0 and bounds[j] <= bounds[j - 1]):
            raise ValueError(
                f"bounds must be finite and strictly increasing; bounds[{j}] = "
                f"{bounds[j]!r} breaks that"
            )
    if weights is not None:
        w_view = weights
        if w_view.shape[0] != values.shape[0]:
            raise ValueError(
                f"weights must match values in length, got {w_view.shape[0]} "
                f"and {values.shape[0]}"
            )
        if w_view.shape[0] > 0:
            w_ptr = &w_view[0]

    with nogil:
        n_nan = _bucketize(values, bounds, counts, w_ptr)
    return n_nan


def hist_cumulative(const float64_t[::1] counts):
    """Running sum of per-bucket counts, as PromQL's ``_bucket`` series hold.

    Parameters
    ----------
    counts : ndarray of float64, shape (b,)
        Per-bucket counts.

    Returns
    -------
    ndarray of float64, shape (b,)
        ``out[j] = counts[0] + ... + counts[j]``. A NaN count makes it and
        every later entry NaN; empty input gives an empty array.
    """
    cdef intp_t n = counts.shape[0]
    cdef intp_t j
    cdef float64_t acc = 0.0
    out = np.empty(n, dtype=np.float64)
    cdef float64_t[::1] o = out
    with nogil:
        for j in range(n):
            acc += counts[j]
            o[j] = acc
    return out


# --- histogram: quantiles from cumulative buckets ---

cdef float64_t _quantile(float64_t q, const float64_t* bounds, const float64_t* cum,
                         intp_t n) noexcept nogil:
    # PromQL histogram_quantile over classic buckets; see hist_quantile.
    cdef intp_t j, b
    cdef float64_t total, rank, running, below, start, count

    if isnan(q):
        return NAN
    if q < 0:
        return -INFINITY
    if q > 1:
        return INFINITY
    if n < 2 or not (isinf(bounds[n - 1]) and bounds[n - 1] > 0):
        return NAN

    # The running max turns non-monotonic counts monotonic; its last value
    # is the total number of observations.
    total = -INFINITY
    for j in range(n):
        if isnan(cum[j]):
            return NAN
        if cum[j] > total:
            total = cum[j]
    if total == 0:
        return NAN
    rank = q * total

    # First bucket (among all but +Inf) whose monotonic count reaches rank.
    running = -INFINITY
    below = 0.0
    b = n - 1
    for j in range(n - 1):
        below = running
        if cum[j] > running:
            running = cum[j]
        if running >= rank:
            b = j
            break
    if b == n - 1:
        return bounds[n - 2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]

    start = 0.0
    count = running
    if b > 0:
        start = bounds[b - 1]
        count -= below
        rank -= below
    if count == 0:
        return NAN  # q = 0 on an empty first bucket: 0/0, NaN in PromQL too
    return start + (bounds[b] - start) * (rank / count)


def _check_quantile_shapes(intp_t n_bounds, intp_t n_cum):
    if n_bounds != n_cum:
        raise ValueError(
            f"bounds and cumulative counts must have one length, got {n_bounds} "
            f"and {n_cum}"
        )


def hist_quantile(
    q: float,
    const float64_t[::1] bounds,
    const float64_t[::1] cumulative,
) -> float:
    """Estimate a quantile from cumulative bucket counts, as PromQL does.

    Parameters
    ----------
    q : float
        Quantile, in [0, 1].
    bounds : ndarray of float64, shape (b,)
        Strictly increasing bucket upper bounds, the last one ``+Inf``.
        Buckets with equal bounds must be merged (their counts added)
        before the call.
    cumulative : ndarray of float64, shape (b,)
        Cumulative count of each bucket (observations <= its bound).

    Returns
    -------
    float
        The estimate, by linear interpolation inside the bucket where the
        rank ``q * total`` falls.

    Raises
    ------
    ValueError
        If ``bounds`` and ``cumulative`` differ in length.

    Notes
    -----
    Follows ``histogram_quantile`` of Prometheus 2.42 on classic buckets:
    q < 0 gives -Inf, q > 1 gives +Inf, NaN q gives NaN; fewer than two
    buckets, a last bound that is not +Inf, or a total of zero give NaN.
    Counts that decrease are raised to the running max first. The lowest
    bucket interpolates from 0 when its bound is positive and returns its
    bound otherwise; a rank in the ``+Inf`` bucket returns the largest
    finite bound. A NaN count gives NaN (PromQL leaves that case undefined).

    Examples
    --------
    >>> import numpy as np
    >>> bounds = np.array([0.1, 0.2, 1.0, np.inf])
    >>> round(hist_quantile(0.5, bounds, np.array([50.0, 70.0, 110.0, 120.0])), 9)
    0.15
    """
    cdef float64_t result
    _check_quantile_shapes(bounds.shape[0], cumulative.shape[0])
    if bounds.shape[0] == 0:
        return NAN if not (q < 0 or q > 1) else (-INFINITY if q < 0 else INFINITY)
    result = _quantile(q, &bounds[0], &cumulative[0], bounds.shape[0])
    return result


def hist_quantile_many(
    q: float,
    const float64_t[::1] bounds,
    const float64_t[:, ::1] cumulative_2d,
):
    """One quantile per row of cumulative bucket counts.

    Parameters
    ----------
    q : float
        Quantile, in [0, 1].
    bounds : ndarray of float64, shape (b,)
        As for :func:`hist_quantile`, shared by every row.
    cumulative_2d : ndarray of float64, shape (m, b)
        Cumulative bucket counts, one histogram per row (C order).

    Returns
    -------
    ndarray of float64, shape (m,)
        ``hist_quantile(q, bounds, cumulative_2d[i])`` for each row; empty
        for zero rows.

    Raises
    ------
    ValueError
        If the number of columns differs from ``len(bounds)``.
    """
    cdef intp_t m = cumulative_2d.shape[0]
    cdef intp_t nb = bounds.shape[0]
    cdef intp_t i
    cdef float64_t qq = q
    _check_quantile_shapes(nb, cumulative_2d.shape[1])
    out = np.empty(m, dtype=np.float64)
    cdef float64_t[::1] o = out
    if nb == 0:
        o[:] = hist_quantile(qq, bounds, bounds)
        return out
    with nogil:
        for i in range(m):
            o[i] = _quantile(qq, &bounds[0], &cumulative_2d[i, 0], nb)
    return out


def _check_bounds(const float64_t[::1] bounds):
    cdef intp_t j
    for j in range(bounds.shape[0]):
        if isnan(bounds[j]) or isinf(bounds[j]) or (j > 0 and bounds[j] <= bounds[j - 1]):
            raise ValueError(
                f"bounds must be finite and strictly increasing; bounds[{j}] = "
                f"{bounds[j]!r} breaks that"
            )


# --- histogram: one classic histogram, one call per observation ---

cdef class HistogramCell:
    """Bucket counts, count and sum of one classic histogram.

    The per-call path for instrumented code: :meth:`observe` adds one value
    in a few nanoseconds plus the cost of a Python call, so most of its time
    is the call itself. Batches go through :meth:`observe_many`.

    Parameters
    ----------
    bounds : ndarray of float64, shape (b,)
        Finite, strictly increasing bucket upper bounds, without ``+Inf``.

    Raises
    ------
    ValueError
        If ``bounds`` are not finite and strictly increasing.

    Notes
    -----
    Buckets follow :func:`hist_bucketize`: a value goes to the first bucket
    whose bound is >= the value; values above the last bound and +Inf go to
    the ``+Inf`` bucket, -Inf to the first. NaN is skipped and counted in
    :attr:`n_nan`; it changes neither the counts nor the sum. An infinite
    value makes the sum infinite, as in Prometheus.

    Examples
    --------
    >>> import numpy as np
    >>> cell = HistogramCell(np.array([10.0, 100.0]))
    >>> for v in (5.0, 50.0, 500.0, float("nan")):
    ...     cell.observe(v)
    >>> cell.bucket_counts.tolist(), cell.count, cell.sum, cell.n_nan
    ([1.0, 1.0, 1.0], 3.0, 555.0, 1)
    """

    def __cinit__(self, const float64_t[::1] bounds):
        cdef intp_t j, nb = bounds.shape[0]
        self._bounds = NULL
        self._counts = NULL
        _check_bounds(bounds)
        self._nb = nb
        self._bounds = <float64_t*>malloc((nb + 1) * sizeof(float64_t))
        self._counts = <float64_t*>malloc((nb + 1) * sizeof(float64_t))
        if self._bounds == NULL or self._counts == NULL:
            raise MemoryError(f"could not allocate a histogram of {nb + 1} buckets")
        for j in range(nb):
            self._bounds[j] = bounds[j]
        for j in range(_CELL_TABLE):
            self._table[j] = bounds[j] if j < nb else INFINITY
        memset(self._counts, 0, (nb + 1) * sizeof(float64_t))
        self._count = 0.0
        self._sum = 0.0
        self._n_nan = 0

    def __dealloc__(self):
        free(self._bounds)
        free(self._counts)

    cdef void _add(self, float64_t value, float64_t weight) noexcept nogil:
        cdef intp_t idx
        if isnan(value):
            self._n_nan += 1
            return
        if self._nb <= 8:
            idx = _bucket_8(self._table, value)
        elif self._nb <= _CELL_TABLE:
            idx = _bucket_16(self._table, value)
        else:
            idx = _bucket_search(self._bounds, self._nb, value)
        self._counts[idx] += weight
        self._count += weight
        self._sum += weight * value

    def observe(self, float64_t value):
        """Count one observation with weight 1.

        Parameters
        ----------
        value : float
            The observed value; NaN is skipped and counted.
        """
        self._add(value, 1.0)

    def observe_weighted(self, float64_t value, float64_t weight):
        """Count one observation with a weight (1 / sampling rate).

        Parameters
        ----------
        value : float
            The observed value; NaN is skipped and counted.
        weight : float
            Added to its bucket and the count; ``weight * value`` to the sum.
        """
        self._add(value, weight)

    def observe_many(self, const float64_t[::1] values, weights=None) -> int:
        """Count a batch of observations.

        Parameters
        ----------
        values : ndarray of float64, shape (n,)
            Observed values, in any order.
        weights : ndarray of float64, shape (n,), optional
            Weight of each value; default 1.

        Returns
        -------
        int
            Number of NaN values skipped in this batch.

        Raises
        ------
        ValueError
            If ``weights`` differs from ``values`` in length.
        """
        cdef intp_t i, n = values.shape[0]
        cdef int64_t before = self._n_nan
        cdef const float64_t[::1] w
        if weights is None:
            with nogil:
                for i in range(n):
                    self._add(values[i], 1.0)
        else:
            w = weights
            if w.shape[0] != n:
                raise ValueError(
                    f"weights must match values in length, got {w.shape[0]} and {n}"
                )
            with nogil:
                for i in range(n):
                    self._add(values[i], w[i])
        return self._n_nan - before

    @property
    def bounds(self):
        """ndarray of float64, shape (b,): the finite bucket bounds."""
        return np.array([self._bounds[j] for j in range(self._nb)], dtype=np.float64)

    @property
    def bucket_counts(self):
        """ndarray of float64, shape (b + 1,): per-bucket counts, last is ``+Inf``."""
        return np.array([self._counts[j] for j in range(self._nb + 1)], dtype=np.float64)

    @property
    def count(self) -> float:
        """Observations counted (sum of weights), NaN excluded."""
        return self._count

    @property
    def sum(self) -> float:
        """Sum of ``weight * value`` over the counted observations."""
        return self._sum

    @property
    def n_nan(self) -> int:
        """NaN observations skipped."""
        return self._n_nan

    def __reduce__(self):
        return (_cell_from_state, (self.bounds, self.bucket_counts, self._count,
                                   self._sum, self._n_nan))


def _cell_from_state(bounds, counts, count, sum_, n_nan):
    cdef HistogramCell cell = HistogramCell(bounds)
    cdef intp_t j
    for j in range(cell._nb + 1):
        cell._counts[j] = counts[j]
    cell._count = count
    cell._sum = sum_
    cell._n_nan = n_nan
    return cell


# --- histogram: exponential buckets (relative-error quantiles) ---

cdef inline void _store_init(KeyStore* s) noexcept nogil:
    s.counts = NULL
    s.lo = 0
    s.cap = 0
    s.min_key = INT64_MAX
    s.max_key = INT64_MIN


cdef int _store_reserve(KeyStore* s, int64_t key) except -1 nogil:
    # Make room for `key`, growing the dense range of keys on either side
    # (by at least doubling, so a run of growths costs O(1) per key).
    cdef int64_t new_lo, new_hi, new_cap, hi = s.lo + s.cap
    cdef float64_t* grown
    if s.cap > 0 and s.lo <= key < hi:
        return 0
    if s.cap == 0:
        new_lo = key - 32
        new_cap = 128
    else:
        new_lo = key if key < s.lo else s.lo
        new_hi = key + 1 if key >= hi else hi
        new_cap = 2 * s.cap
        if new_cap < new_hi - new_lo:
            new_cap = new_hi - new_lo
        if key < s.lo:
            new_lo = new_hi - new_cap   # grow downwards: the new room below
    grown = <float64_t*>malloc(new_cap * sizeof(float64_t))
    if grown == NULL:
        with gil:
            raise MemoryError(
                f"could not grow exponential histogram from {s.cap} to {new_cap} buckets"
            )
    memset(grown, 0, new_cap * sizeof(float64_t))
    if s.cap > 0:
        memcpy(grown + (s.lo - new_lo), s.counts, s.cap * sizeof(float64_t))
        free(s.counts)
    s.counts = grown
    s.lo = new_lo
    s.cap = new_cap
    return 0


cdef inline int _store_add(KeyStore* s, int64_t key, float64_t weight) except -1 nogil:
    if not (s.cap > 0 and s.lo <= key < s.lo + s.cap):
        _store_reserve(s, key)
    s.counts[key - s.lo] += weight
    if key < s.min_key:
        s.min_key = key
    if key > s.max_key:
        s.max_key = key
    return 0


cdef int _store_merge(KeyStore* into, const KeyStore* other) except -1 nogil:
    cdef int64_t k
    if other.min_key > other.max_key:
        return 0
    _store_reserve(into, other.min_key)
    _store_reserve(into, other.max_key)
    for k in range(other.min_key, other.max_key + 1):
        into.counts[k - into.lo] += other.counts[k - other.lo]
    if other.min_key < into.min_key:
        into.min_key = other.min_key
    if other.max_key > into.max_key:
        into.max_key = other.max_key
    return 0


cdef class ExpHistogram:
    """Exponential histogram: sparse buckets whose bounds grow by a factor.

    Bucket ``k`` of the positive values holds ``(gamma**(k-1), gamma**k]``
    with ``gamma = (1 + alpha) / (1 - alpha)``; negative values are kept
    the same way by magnitude, values nearer to zero than ``min_value`` in
    a zero bucket. Only the keys between the lowest and the highest seen are
    allocated, so memory follows the dynamic range of the data (about
    ``ln(max / min) / (2 * alpha)`` buckets), not the count. Two histograms
    with the same ``alpha`` merge exactly by adding bucket counts, so series
    and rollup steps combine without losing accuracy.

    Parameters
    ----------
    alpha : float, default 0.005
        Relative accuracy, in (0, 1): a quantile estimate is within
        ``alpha`` (relative) of an observed value of the right rank.
    min_value : float, default 1e-300
        Positive; values with ``|x| < min_value`` count as zero.

    Raises
    ------
    ValueError
        If ``alpha`` or ``min_value`` is out of range.

    Notes
    -----
    NaN is skipped and counted in :attr:`n_nan`. +Inf and -Inf are counted
    (they are the largest and smallest ranks) and make the sum infinite.
    Quantiles use the rank ``q * (count - 1)`` of the sorted observations
    and return the bucket's relative midpoint ``2 * gamma**k / (gamma + 1)``,
    clamped to the observed min and max; q = 0 and q = 1 return the exact
    min and max.

    Examples
    --------
    >>> import numpy as np
    >>> h = ExpHistogram(alpha=0.01)
    >>> h.add(np.arange(1.0, 1001.0))
    0
    >>> abs(h.quantile(0.5) / 500.0 - 1) < 0.01, h.count
    (True, 1000.0)
    """

    def __cinit__(self, float64_t alpha=0.005, float64_t min_value=1e-300):
        _store_init(&self._pos)
        _store_init(&self._neg)
        if not (0.0 < alpha < 1.0):
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if not (min_value > 0.0) or isinf(min_value):
            raise ValueError(f"min_value must be positive and finite, got {min_value!r}")
        self._alpha = alpha
        self._gamma = (1.0 + alpha) / (1.0 - alpha)
        self._inv_log_gamma = 1.0 / log(self._gamma)
        self._min_value = min_value
        self._zero = 0.0
        self._pos_inf = 0.0
        self._neg_inf = 0.0
        self._count = 0.0
        self._sum = 0.0
        self._min = INFINITY
        self._max = -INFINITY
        self._n_nan = 0

    def __dealloc__(self):
        free(self._pos.counts)
        free(self._neg.counts)

    cdef int _add(self, float64_t value, float64_t weight) except -1 nogil:
        cdef float64_t mag
        cdef int64_t key
        if isnan(value):
            self._n_nan += 1
            return 0
        self._count += weight
        self._sum += weight * value
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value
        mag = fabs(value)
        if mag < self._min_value:
            self._zero += weight
        elif isinf(value):
            if value > 0:
                self._pos_inf += weight
            else:
                self._neg_inf += weight
        else:
            key = <int64_t>ceil(log(mag) * self._inv_log_gamma)
            if value > 0:
                _store_add(&self._pos, key, weight)
            else:
                _store_add(&self._neg, key, weight)
        return 0

    def add(self, const float64_t[::1] values, weights=None) -> int:
        """Count a batch of observations.

        Parameters
        ----------
        values : ndarray of float64, shape (n,)
            Observed values, in any order.
        weights : ndarray of float64, shape (n,), optional
            Weight of each value (1 / sampling rate); default 1.

        Returns
        -------
        int
            Number of NaN values skipped in this batch.

        Raises
        ------
        ValueError
            If ``weights`` differs from ``values`` in length.
        """
        cdef intp_t i, n = values.shape[0]
        cdef int64_t before = self._n_nan
        cdef const float64_t[::1] w
        if weights is None:
            with nogil:
                for i in range(n):
                    self._add(values[i], 1.0)
        else:
            w = weights
            if w.shape[0] != n:
                raise ValueError(
                    f"weights must match values in length, got {w.shape[0]} and {n}"
                )
            with nogil:
                for i in range(n):
                    self._add(values[i], w[i])
        return self._n_nan - before

    def observe(self, float64_t value, float64_t weight=1.0):
        """Count one observation.

        Parameters
        ----------
        value : float
            The observed value; NaN is skipped and counted.
        weight : float, default 1.0
            Weight of the observation.
        """
        self._add(value, weight)

    def merge(self, ExpHistogram other not None):
        """Add the buckets of ``other`` into this histogram.

        Raises
        ------
        ValueError
            If the two were made with different ``alpha`` or ``min_value``.
        """
        if other._alpha != self._alpha or other._min_value != self._min_value:
            raise ValueError(
                f"cannot merge exponential histograms of alpha {other._alpha!r} / "
                f"min_value {other._min_value!r} into alpha {self._alpha!r} / "
                f"min_value {self._min_value!r}"
            )
        with nogil:
            _store_merge(&self._pos, &other._pos)
            _store_merge(&self._neg, &other._neg)
        self._zero += other._zero
        self._pos_inf += other._pos_inf
        self._neg_inf += other._neg_inf
        self._count += other._count
        self._sum += other._sum
        self._n_nan += other._n_nan
        if other._min < self._min:
            self._min = other._min
        if other._max > self._max:
            self._max = other._max

    cdef float64_t _value_of(self, int64_t key, int negative) noexcept nogil:
        cdef float64_t v = 2.0 * exp(key / self._inv_log_gamma) / (self._gamma + 1.0)
        if negative:
            v = -v
        if v < self._min:
            v = self._min
        if v > self._max:
            v = self._max
        return v

    def quantile(self, float64_t q) -> float:
        """Estimate the ``q`` quantile of the observations.

        Parameters
        ----------
        q : float
            Quantile, in [0, 1].

        Returns
        -------
        float
            The estimate; NaN when nothing was counted.

        Raises
        ------
        ValueError
            If ``q`` is not in [0, 1].
        """
        cdef float64_t rank, acc
        cdef int64_t k
        if not (0.0 <= q <= 1.0):
            raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        if self._count <= 0:
            return NAN
        if q == 0.0:
            return self._min  # the extremes are known exactly
        if q == 1.0:
            return self._max
        rank = q * (self._count - 1.0)
        acc = self._neg_inf
        if acc > rank:
            return -INFINITY
        if self._neg.min_key <= self._neg.max_key:
            for k in range(self._neg.max_key, self._neg.min_key - 1, -1):
                acc += self._neg.counts[k - self._neg.lo]
                if acc > rank:
                    return self._value_of(k, 1)
        acc += self._zero
        if acc > rank:
            return 0.0 if self._min <= 0.0 <= self._max else self._min
        if self._pos.min_key <= self._pos.max_key:
            for k in range(self._pos.min_key, self._pos.max_key + 1):
                acc += self._pos.counts[k - self._pos.lo]
                if acc > rank:
                    return self._value_of(k, 0)
        if self._pos_inf > 0:
            return INFINITY
        return self._max

    def quantiles(self, qs) -> list:
        """:meth:`quantile` for each of ``qs``."""
        return [self.quantile(q) for q in qs]

    @property
    def alpha(self) -> float:
        """Relative accuracy the buckets were made for."""
        return self._alpha

    @property
    def gamma(self) -> float:
        """Ratio of successive bucket bounds."""
        return self._gamma

    @property
    def min_value(self) -> float:
        """Magnitudes below this count in the zero bucket."""
        return self._min_value

    @property
    def count(self) -> float:
        """Observations counted (sum of weights), NaN excluded."""
        return self._count

    @property
    def sum(self) -> float:
        """Sum of ``weight * value`` over the counted observations."""
        return self._sum

    @property
    def min(self) -> float:
        """Smallest observed value; +Inf when empty."""
        return self._min

    @property
    def max(self) -> float:
        """Largest observed value; -Inf when empty."""
        return self._max

    @property
    def n_nan(self) -> int:
        """NaN observations skipped."""
        return self._n_nan

    @property
    def n_buckets(self) -> int:
        """Keys between the lowest and highest seen, both signs."""
        cdef int64_t n = 0
        if self._pos.min_key <= self._pos.max_key:
            n += self._pos.max_key - self._pos.min_key + 1
        if self._neg.min_key <= self._neg.max_key:
            n += self._neg.max_key - self._neg.min_key + 1
        return n

    def buckets(self) -> dict:
        """The non-empty buckets, for storage or inspection.

        Returns
        -------
        dict
            ``positive_keys``, ``positive_counts``, ``negative_keys``,
            ``negative_counts`` (int64 and float64 arrays, keys ascending),
            and ``zero``, ``pos_inf``, ``neg_inf``, ``count``, ``sum``,
            ``min``, ``max``, ``n_nan``.
        """
        cdef KeyStore* s
        out = {}
        for name in ("positive", "negative"):
            s = &self._pos if name == "positive" else &self._neg
            if s.min_key <= s.max_key:
                keys = np.arange(s.min_key, s.max_key + 1, dtype=np.int64)
            else:
                keys = np.empty(0, dtype=np.int64)
            counts = self._counts_of(name == "negative", keys)
            keep = counts != 0
            out[f"{name}_keys"] = keys[keep]
            out[f"{name}_counts"] = counts[keep]
        out.update(zero=self._zero, pos_inf=self._pos_inf, neg_inf=self._neg_inf,
                   count=self._count, sum=self._sum, min=self._min, max=self._max,
                   n_nan=self._n_nan)
        return out

    def _counts_of(self, bint negative, const int64_t[::1] keys):
        cdef KeyStore* s = &self._neg if negative else &self._pos
        cdef intp_t i
        out = np.empty(keys.shape[0], dtype=np.float64)
        cdef float64_t[::1] o = out
        for i in range(keys.shape[0]):
            o[i] = s.counts[keys[i] - s.lo]
        return out

    def __reduce__(self):
        return (_exp_from_buckets, (self._alpha, self._min_value, self.buckets()))


def _exp_from_buckets(alpha, min_value, state):
    cdef ExpHistogram h = ExpHistogram(alpha, min_value)
    cdef intp_t i
    cdef const int64_t[::1] keys
    cdef const float64_t[::1] counts
    for name in ("positive", "negative"):
        keys = np.ascontiguousarray(state[f"{name}_keys"], dtype=np.int64)
        counts = np.ascontiguousarray(state[f"{name}_counts"], dtype=np.float64)
        for i in range(keys.shape[0]):
            if name == "positive":
                _store_add(&h._pos, keys[i], counts[i])
            else:
                _store_add(&h._neg, keys[i], counts[i])
    h._zero = state["zero"]
    h._pos_inf = state["pos_inf"]
    h._neg_inf = state["neg_inf"]
    h._count = state["count"]
    h._sum = state["sum"]
    h._min = state["min"]
    h._max = state["max"]
    h._n_nan = state["n_nan"]
    return h
