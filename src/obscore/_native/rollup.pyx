"""Rollups: fold samples into fixed steps, and fine steps into coarser ones.

A rollup row holds, for one group and one step, the count, sum, min, max and
last value of the samples in the step, and for counters the increase with
counter resets handled. Both kernels read input sorted by (group, ts) and emit
one row per (group, step) that holds at least one input row.
"""

from __future__ import annotations

import numpy as np

from libc.math cimport NAN, isnan

from obscore._native._types cimport float64_t, int64_t, intp_t

COLUMNS = ("group", "ts", "count", "sum", "min", "max", "last", "increase")


cdef inline int64_t _step_start(int64_t ts_ms, int64_t step_ms) noexcept nogil:
    # floor(ts / step) * step, rounding towards -inf for negative ts as well.
    cdef int64_t r = ts_ms % step_ms
    if r < 0:
        r += step_ms
    return ts_ms - r


cdef intp_t _first_unsorted(const int64_t[::1] groups,
                            const int64_t[::1] ts) noexcept nogil:
    # Index of the first row that breaks (group, ts) order, or -1.
    cdef intp_t i
    for i in range(1, groups.shape[0]):
        if groups[i] < groups[i - 1] or (groups[i] == groups[i - 1] and ts[i] < ts[i - 1]):
            return i
    return -1


def _check_input(const int64_t[::1] groups, const int64_t[::1] ts, step_ms, lengths):
    cdef intp_t bad
    if step_ms <= 0:
        raise ValueError(f"step_ms must be positive, got {step_ms!r}")
    if any(m != groups.shape[0] for m in lengths):
        raise ValueError(
            f"input arrays must have one length, got {[groups.shape[0], *lengths]}"
        )
    with nogil:
        bad = _first_unsorted(groups, ts)
    if bad >= 0:
        raise ValueError(
            f"rows must be sorted by (group, ts): row {bad} (group {groups[bad]}, "
            f"ts {ts[bad]}) follows row {bad - 1} (group {groups[bad - 1]}, "
            f"ts {ts[bad - 1]})"
        )


def _alloc(intp_t n):
    return {
        "group": np.empty(n, dtype=np.int64),
        "ts": np.empty(n, dtype=np.int64),
        "count": np.empty(n, dtype=np.int64),
        "sum": np.empty(n, dtype=np.float64),
        "min": np.empty(n, dtype=np.float64),
        "max": np.empty(n, dtype=np.float64),
        "last": np.empty(n, dtype=np.float64),
        "increase": np.empty(n, dtype=np.float64),
    }


def _trim(dict out, intp_t n_rows):
    # Keep a view when most of the worst-case allocation is used; otherwise
    # copy, so a few rows never pin memory sized for the whole input.
    size = len(out["group"])
    if 2 * n_rows >= size:
        return {name: arr[:n_rows] for name, arr in out.items()}
    return {name: arr[:n_rows].copy() for name, arr in out.items()}


# --- rollup: fold samples into steps ---

def rollup_fold(
    const int64_t[::1] groups,
    const int64_t[::1] ts,
    const float64_t[::1] values,
    step_ms: int,
    is_counter: bool,
) -> dict:
    """Fold samples into one rollup row per (group, step).

    Parameters
    ----------
    groups : ndarray of int64, shape (n,)
        Group (series) of each sample.
    ts : ndarray of int64, shape (n,)
        Sample ts in ms. Rows must be sorted by (group, ts); equal ts are
        allowed.
    values : ndarray of float64, shape (n,)
        Sample values.
    step_ms : int
        Step width in ms, positive. A sample belongs to the step starting at
        ``floor(ts / step_ms) * step_ms`` (floor also for negative ts).
    is_counter : bool
        Whether the values are a monotonic counter; only then is
        ``increase`` computed.

    Returns
    -------
    dict of str to ndarray
        ``group`` int64, ``ts`` int64 (step start in ms), ``count`` int64,
        ``sum``, ``min``, ``max``, ``last``, ``increase`` float64; one row per
        (group, step) holding at least one sample, in input order.

    Raises
    ------
    ValueError
        If the arrays differ in length, ``step_ms`` is not positive, or the
        rows are not sorted; the message names the first out-of-order row.

    Notes
    -----
    NaN samples are skipped by every aggregate and not counted. A step whose
    samples are all NaN still gets a row: count 0, sum 0.0, min, max and
    last NaN, increase 0.0 for counters. +-Inf values are aggregated as
    IEEE arithmetic does (a step holding +Inf and -Inf sums to NaN).

    ``increase`` is NaN for non-counters. For counters it adds, over
    consecutive non-NaN samples of a group, ``v - prev`` when ``v >= prev``
    and ``v`` otherwise (a reset: the counter restarted from zero), booked
    to the step of the later sample; the first sample of a group adds 0.

    Empty input gives empty arrays. ts must lie at least ``step_ms`` away
    from the int64 limits. A first pass counts the output rows (and checks
    the order), so the output is allocated at its exact size.

    Examples
    --------
    >>> import numpy as np
    >>> out = rollup_fold(np.array([7, 7, 7]), np.array([0, 30_000, 60_000]),
    ...                   np.array([1.0, 3.0, 2.0]), 60_000, True)
    >>> out["ts"].tolist(), out["count"].tolist(), out["increase"].tolist()
    ([0, 60000], [2, 1], [2.0, 2.0])
    """
    cdef intp_t n = groups.shape[0]
    cdef int64_t step = step_ms
    cdef bint counter = is_counter
    cdef intp_t n_rows, bad = -1
    if step_ms <= 0:
        raise ValueError(f"step_ms must be positive, got {step_ms!r}")
    if ts.shape[0] != n or values.shape[0] != n:
        raise ValueError(
            f"input arrays must have one length, got {[n, ts.shape[0], values.shape[0]]}"
        )
    with nogil:
        n_rows = _count_steps(groups, ts, step, &bad)
    if bad >= 0:
        _raise_unsorted(groups, ts, bad)

    out = _alloc(n_rows)
    cdef int64_t[::1] o_group = out["group"]
    cdef int64_t[::1] o_ts = out["ts"]
    cdef int64_t[::1] o_count = out["count"]
    cdef float64_t[::1] o_sum = out["sum"]
    cdef float64_t[::1] o_min = out["min"]
    cdef float64_t[::1] o_max = out["max"]
    cdef float64_t[::1] o_last = out["last"]
    cdef float64_t[::1] o_increase = out["increase"]
    with nogil:
        _fold(groups, ts, values, step, counter, o_group, o_ts, o_count,
              o_sum, o_min, o_max, o_last, o_increase)
    return out


# NOTE: folding 10M samples of 1,000 series (10 s apart) into 1m steps, the
# first version (output sized for one row per sample, aggregates kept in the
# output arrays, a 64-bit modulo per sample) ran at 25M samples/s; counting
# the rows first, keeping the open step in locals and dividing only when a
# step closes runs at ~240M/s (benchmarks/test_kernels.py, rollup case).

cdef intp_t _count_steps(const int64_t[::1] groups, const int64_t[::1] ts, int64_t step,
                         intp_t* bad) noexcept nogil:
    # Rows the fold will emit; sets bad to the first row out of (group, ts)
    # order (and returns -1) when there is one.
    cdef intp_t i, n = groups.shape[0], rows = 0
    cdef int64_t g, t, g_prev = 0, t_prev = 0, end = 0
    for i in range(n):
        g = groups[i]
        t = ts[i]
        if i == 0 or g != g_prev:
            if i > 0 and g < g_prev:
                bad[0] = i
                return -1
            end = _step_start(t, step) + step
            rows += 1
        elif t >= end:
            end = _step_start(t, step) + step
            rows += 1
        elif t < t_prev:
            bad[0] = i
            return -1
        g_prev = g
        t_prev = t
    return rows


cdef void _fold(const int64_t[::1] groups, const int64_t[::1] ts,
                const float64_t[::1] values, int64_t step, bint counter,
                int64_t[::1] o_group, int64_t[::1] o_ts, int64_t[::1] o_count,
                float64_t[::1] o_sum, float64_t[::1] o_min, float64_t[::1] o_max,
                float64_t[::1] o_last, float64_t[::1] o_increase) noexcept nogil:
    # The open step lives in locals and is written out when the next opens.
    cdef intp_t i, n = groups.shape[0], k = -1
    cdef int64_t g, t, g_prev = 0, start = 0, end = 0, c_count = 0
    cdef float64_t v, prev = NAN, c_sum = 0.0, c_min = NAN, c_max = NAN, c_last = NAN
    cdef float64_t c_inc = 0.0
    cdef float64_t no_increase = 0.0 if counter else NAN
    for i in range(n):
        g = groups[i]
        t = ts[i]
        if i == 0 or g != g_prev or t >= end:
            if k >= 0:
                o_count[k] = c_count
                o_sum[k] = c_sum
                o_min[k] = c_min
                o_max[k] = c_max
                o_last[k] = c_last
                o_increase[k] = c_inc
            k += 1
            start = _step_start(t, step)
            end = start + step
            o_group[k] = g
            o_ts[k] = start
            c_count = 0
            c_sum = 0.0
            c_min = NAN
            c_max = NAN
            c_last = NAN
            c_inc = no_increase
            if i == 0 or g != g_prev:
                prev = NAN
            g_prev = g

        v = values[i]
        if isnan(v):
            continue
        c_count += 1
        c_sum += v
        if not v >= c_min:  # also true while min is still NaN
            c_min = v
        if not v <= c_max:
            c_max = v
        c_last = v
        if counter:
            if not isnan(prev):
                c_inc += v - prev if v >= prev else v
            prev = v
    if k >= 0:
        o_count[k] = c_count
        o_sum[k] = c_sum
        o_min[k] = c_min
        o_max[k] = c_max
        o_last[k] = c_last
        o_increase[k] = c_inc


def _raise_unsorted(const int64_t[::1] groups, const int64_t[::1] ts, intp_t bad):
    raise ValueError(
        f"rows must be sorted by (group, ts): row {bad} (group {groups[bad]}, "
        f"ts {ts[bad]}) follows row {bad - 1} (group {groups[bad - 1]}, "
        f"ts {ts[bad - 1]})"
    )


# --- rollup: downsample fine rollup rows into coarser steps ---

def rollup_downsample(
    const int64_t[::1] groups,
    const int64_t[::1] ts,
    const int64_t[::1] count,
    const float64_t[::1] sum_,
    const float64_t[::1] min_,
    const float64_t[::1] max_,
    const float64_t[::1] last,
    const float64_t[::1] increase,
    step_ms: int,
) -> dict:
    """Fold finer rollup rows into coarser steps (1m -> 5m -> 1h).

    Parameters
    ----------
    groups, ts : ndarray of int64, shape (n,)
        Group and step start in ms of each fine row, sorted by (group, ts).
    count : ndarray of int64, shape (n,)
    sum_, min_, max_, last, increase : ndarray of float64, shape (n,)
        The fine rollup columns, as :func:`rollup_fold` returns them.
    step_ms : int
        Coarse step width in ms, positive; should be a multiple of the fine
        step so that each fine row falls inside one coarse step.

    Returns
    -------
    dict of str to ndarray
        The same columns as :func:`rollup_fold`, one row per (group, coarse
        step) holding at least one fine row.

    Raises
    ------
    ValueError
        If the arrays differ in length, ``step_ms`` is not positive, or the
        rows are not sorted; the message names the first out-of-order row.

    Notes
    -----
    Counts, sums and increases add (a NaN increase, as non-counters carry,
    stays NaN); min and max skip NaN; last is the last non-NaN ``last`` of
    the coarse step, NaN if there is none. Empty input gives empty arrays.
    """
    cdef intp_t n = groups.shape[0]
    cdef int64_t step = step_ms
    _check_input(
        groups, ts, step_ms,
        (ts.shape[0], count.shape[0], sum_.shape[0], min_.shape[0],
         max_.shape[0], last.shape[0], increase.shape[0]),
    )

    out = _alloc(n)
    cdef int64_t[::1] o_group = out["group"]
    cdef int64_t[::1] o_ts = out["ts"]
    cdef int64_t[::1] o_count = out["count"]
    cdef float64_t[::1] o_sum = out["sum"]
    cdef float64_t[::1] o_min = out["min"]
    cdef float64_t[::1] o_max = out["max"]
    cdef float64_t[::1] o_last = out["last"]
    cdef float64_t[::1] o_increase = out["increase"]
    cdef intp_t i, k = -1
    cdef int64_t start

    with nogil:
        for i in range(n):
            start = _step_start(ts[i], step)
            if i == 0 or groups[i] != groups[i - 1] or start != o_ts[k]:
                k += 1
                o_group[k] = groups[i]
                o_ts[k] = start
                o_count[k] = 0
                o_sum[k] = 0.0
                o_min[k] = NAN
                o_max[k] = NAN
                o_last[k] = NAN
                o_increase[k] = 0.0

            o_count[k] += count[i]
            o_sum[k] += sum_[i]
            o_increase[k] += increase[i]
            if not min_[i] >= o_min[k] and not isnan(min_[i]):
                o_min[k] = min_[i]
            if not max_[i] <= o_max[k] and not isnan(max_[i]):
                o_max[k] = max_[i]
            if not isnan(last[i]):
                o_last[k] = last[i]
    return _trim(out, k + 1)
