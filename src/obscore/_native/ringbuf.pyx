"""Ring buffers that keep the most recent samples of many series.

One ``RingBuffers`` object holds every series of the hot tier. Each series owns
a slot: a row of fixed capacity in one 2-D array of ts and one of values. A
push appends samples in order and overwrites the oldest sample of a full row.
"""

from __future__ import annotations

import numpy as np

from libc.stdint cimport INT64_MAX, INT64_MIN, uint8_t
from libc.string cimport memcpy

cimport numpy as cnp

from obscore._native._types cimport float64_t, int64_t, intp_t

# --- ringbuf: status codes and row layout ---

# The push loop and the move of staged samples into a row are in C
# (_ringbuf_push.h), with the status codes and layout constants.
cdef extern from "_ringbuf_push.h" nogil:
    enum:
        _STORED "OBS_STORED"              # the sample was appended
        _OUT_OF_ORDER "OBS_OUT_OF_ORDER"  # ts older than the last stored ts of its slot
        _DUPLICATE "OBS_DUPLICATE"        # ts equal to the last stored ts of its slot
        _LINE "OBS_LINE"                  # int64 or float64 items per 64-byte cache line
        _META "OBS_META"                  # int64 items per slot in the metadata table
        _STAGE "OBS_STAGE"                # samples a slot stages before they move to its row
    void _move_staged "obs_ring_move" (
        int64_t* m, int64_t k, int64_t* row_ts, float64_t* row_values,
        const int64_t* pairs, int64_t capacity)
    ctypedef struct _Rows "obs_ring_rows":
        int64_t* row_ts
        float64_t* row_values
        int64_t stride
        int64_t capacity
    bint _slots_ok "obs_ring_slots_ok" (const int64_t* slots, intp_t n, int64_t n_series)
    int64_t _push_rows "obs_ring_push" (
        const int64_t* in_slots, const int64_t* in_ts, const float64_t* in_values,
        uint8_t* out_status, intp_t n, int64_t* meta, int64_t* stage, const _Rows* rows)


cnp.import_array()

STORED = _STORED
OUT_OF_ORDER = _OUT_OF_ORDER
DUPLICATE = _DUPLICATE

# NOTE: rows are padded to an odd number of 64-byte cache lines. With a
# power-of-two row length the same position of every series maps to the same
# cache sets, and scattered appends over many series thrash them. Pushing 2M
# samples in shuffled series order into 20000 series of capacity 1024 ran at
# 11-15M samples/s padded against 7.5-8.5M unpadded on the 2-core dev machine
# (an earlier measurement there saw 2.5-3x); the benchmark is to land in
# benchmarks/test_ringbuf.py.

cdef inline int64_t _padded_stride(int64_t capacity) noexcept nogil:
    cdef int64_t lines = (capacity + _LINE - 1) // _LINE
    if lines % 2 == 0:
        lines += 1
    return lines * _LINE


# NOTE: a push stages each sample in a small per-slot buffer (_STAGE samples,
# all slots side by side) and moves a slot's staged samples into its row in
# one copy when the buffer fills, or before anything reads the slot. A scrape
# of 1000 series touches one 69 KB row per series and array, so every plain
# store hit another 4 KB page; on the KVM dev machine (EPYC, 2 cores) that
# cost about 19 ns per sample whether or not the rows were in cache (a
# C loop of bare stores: 18 ns with the rows cached, 5 ns with the same
# stores packed into few pages). Staged 16 deep: 6.5 ns in that C loop; the
# push of bench.py's ringbuf case went from 26 to 11 ns a sample (CPU time),
# 1.6x -> 4.0-4.9x the NumPy ring. Padding the NumPy ring's rows like ours
# changed its speed by under 5% there (8640 is not a power of two).
#
# NOTE: a full stage moves into its row with non-temporal stores when its
# place in the row is line aligned, so the row's lines (not in any cache: a
# hot tier's rows are far larger) are not read from memory only to be
# overwritten. Rows start on a 64-byte boundary (_zeros_rows), and a slot
# whose head is off a line boundary (after a wrap of a capacity that is not
# a multiple of 8, or a read that moved a partial stage) moves early, at the
# stage size that ends on one. With the loop in C as well (_ringbuf_push.h),
# bench.py's ringbuf case at 10M appends went from 6.9-7.1 to 4.6-4.9 ns a
# sample (thread CPU time, best of 5, load 3.6-3.8 on the 2-core KVM EPYC),
# 2.3-2.4x -> 3.3-3.5x the NumPy ring in the same runs (the reference at
# 57-63M samples/s; the 4.0-4.9x above was not reproduced). With the slot
# range check vectorized (_ringbuf_push.h): 4.0-4.2 ns, 3.9-4.15x (load ~5);
# with a sample staged as one (ts, value) pair: 3.8-4.4 ns, 3.65-4.45x
# (load 5.6-7, against 4.1-5.2 ns, 3.5-4.2x in the same runs).
# The price: a read of samples pushed moments ago finds them in memory, not
# in cache.


cdef inline bint _is_plain(object a, int typenum, bint writable):
    # A 1-D, C-contiguous, aligned, native-order ndarray of typenum's type
    # (writable when asked), whose data pointer can be used as it is.
    if not cnp.PyArray_Check(a):
        return False
    if cnp.PyArray_NDIM(a) != 1 or not cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(a), typenum):
        return False
    if writable:
        return cnp.PyArray_ISCARRAY(a)
    return cnp.PyArray_ISCARRAY_RO(a)


cdef inline int64_t _physical(int64_t head, int64_t count, int64_t capacity,
                              int64_t k) noexcept nogil:
    # Position in the row of the k-th oldest stored sample.
    cdef int64_t p = k
    if count == capacity:
        p += head
        if p >= capacity:
            p -= capacity
    return p


cdef int64_t _lower_bound(const int64_t* row, int64_t head, int64_t count,
                          int64_t capacity, int64_t ts_ms) noexcept nogil:
    # First logical index whose ts is >= ts_ms (count when there is none).
    cdef int64_t lo = 0
    cdef int64_t hi = count
    cdef int64_t mid
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if row[_physical(head, count, capacity, mid)] < ts_ms:
            lo = mid + 1
        else:
            hi = mid
    return lo


# NOTE: np.zeros takes fresh pages from the kernel, which map them only
# when first written. Growth copies only the filled part of each row (a row
# fills from position 0 until it wraps), so the pages a series never reached
# stay unmapped: 1,000,000 fresh label values at the default limit of 10,000
# series a metric keep 2 pages a series resident, not the whole 138 KB row.
cdef void _copy_filled(int64_t[:, ::1] old_ts, float64_t[:, ::1] old_values,
                       int64_t[:] counts, int64_t[:, ::1] new_ts,
                       float64_t[:, ::1] new_values, int64_t n) noexcept nogil:
    cdef int64_t s, k
    for s in range(n):
        k = counts[s]
        if k > 0:
            memcpy(&new_ts[s, 0], &old_ts[s, 0], k * sizeof(int64_t))
            memcpy(&new_values[s, 0], &old_values[s, 0], k * sizeof(float64_t))


cdef object _zeros_rows(int64_t n_rows, int64_t stride, object dtype):
    # A zeroed (n_rows, stride) array of 8-byte items whose rows start on
    # 64-byte boundaries (stride is a whole number of lines): a view into a
    # slightly longer np.zeros buffer, whose pages stay unmapped until
    # written, as the growth path relies on.
    buf = np.zeros(n_rows * stride + _LINE, dtype=dtype)
    skip = (-buf.ctypes.data % (_LINE * 8)) // 8
    return buf[skip:skip + n_rows * stride].reshape(n_rows, stride)


# --- ringbuf: per-series ring buffers of (ts, value) ---

cdef class RingBuffers:
    """Fixed-capacity ring buffers of samples, one per series slot.

    Parameters
    ----------
    capacity : int
        Samples kept per series, positive. A full series overwrites its
        oldest sample.
    n_series : int, default 0
        Slots to allocate up front; more come from :meth:`add_series`.

    Raises
    ------
    ValueError
        If ``capacity`` is not positive or ``n_series`` is negative.

    Notes
    -----
    Samples of one series are kept in strictly increasing ts order: a push
    whose ts is older than the last stored ts of its slot is rejected as out
    of order, one whose ts equals it is rejected as a duplicate. Values are
    stored as given, NaN and +-Inf included.

    Storage is one 2-D array per column (ts, values) with one row per slot,
    so memory is about ``16 * capacity * slots`` bytes plus padding, and 256
    bytes per slot where a push stages the newest 16 samples before moving
    them into the row. Every read moves them first, so reads, counts and
    pickles see every sample pushed.

    Examples
    --------
    >>> import numpy as np
    >>> rb = RingBuffers(capacity=3, n_series=1)
    >>> status = np.empty(4, dtype=np.uint8)
    >>> rb.push(np.zeros(4, dtype=np.int64), np.array([1, 2, 2, 3]),
    ...         np.array([1.0, 2.0, 9.0, 3.0]), status)
    3
    >>> status.tolist()
    [0, 0, 2, 0]
    >>> rb.read(0)[1].tolist()
    [1.0, 2.0, 3.0]
    """

    def __init__(self, capacity: int, n_series: int = 0):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity!r}")
        if n_series < 0:
            raise ValueError(f"n_series must be >= 0, got {n_series!r}")
        self._capacity = capacity
        self._stride = _padded_stride(self._capacity)
        self._n_series = 0
        self._n_alloc = 0
        self._reserve(max(n_series, 1))
        self._n_series = n_series

    @property
    def capacity(self) -> int:
        """Samples kept per series."""
        return self._capacity

    @property
    def n_series(self) -> int:
        """Slots handed out so far; valid slots are ``0 .. n_series - 1``."""
        return self._n_series

    cdef int _reserve(self, int64_t n_rows) except -1:
        # Make room for n_rows slots, doubling the slot table when it grows.
        cdef int64_t new_alloc
        if n_rows <= self._n_alloc:
            return 0
        new_alloc = max(n_rows, 2 * self._n_alloc, 8)
        ts_rows = _zeros_rows(new_alloc, self._stride, np.int64)
        value_rows = _zeros_rows(new_alloc, self._stride, np.float64)
        # head, count, last ts and staged count of a slot share one cache
        # line: a push reads them all per sample
        meta = np.zeros((new_alloc, _META), dtype=np.int64)
        meta[:, 2] = INT64_MIN
        heads, counts, last_ts = meta[:, 0], meta[:, 1], meta[:, 2]
        stage = np.zeros((new_alloc, 2 * _STAGE), dtype=np.int64)

        n = self._n_series
        if n > 0:
            self._flush_all()
            _copy_filled(self._ts, self._values, self._count, ts_rows, value_rows, n)
            heads[:n] = self._heads[:n]
            counts[:n] = self._counts[:n]
            last_ts[:n] = self._last_ts[:n]

        self._ts_rows, self._value_rows = ts_rows, value_rows
        self._heads, self._counts, self._last_ts = heads, counts, last_ts
        self._meta_rows = meta
        self._stage_rows = stage
        self._ts, self._values, self._meta = ts_rows, value_rows, meta
        self._stage = stage
        self._head, self._count, self._last = heads, counts, last_ts
        self._n_alloc = new_alloc
        return 0

    cdef void _flush(self, int64_t slot) noexcept nogil:
        # Move the staged samples of one slot into its row.
        cdef int64_t* m = &self._meta[slot, 0]
        if m[3] > 0:
            _move_staged(m, m[3], &self._ts[slot, 0], &self._values[slot, 0],
                         &self._stage[slot, 0], self._capacity)

    cdef void _flush_all(self) noexcept nogil:
        cdef int64_t s
        for s in range(self._n_series):
            self._flush(s)

    def add_series(self, n: int = 1) -> int:
        """Allocate ``n`` new empty series slots.

        Parameters
        ----------
        n : int, default 1
            Slots to add, >= 0.

        Returns
        -------
        int
            Index of the first new slot (``n_series`` before the call).

        Raises
        ------
        ValueError
            If ``n`` is negative.

        Notes
        -----
        The slot table doubles when it is full, so adding series one at a
        time costs amortized O(capacity) each; stored samples are kept.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n!r}")
        first = self._n_series
        self._reserve(first + n)
        self._n_series = first + n
        return first

    cdef int64_t _check_slot(self, object slot) except -1:
        if not 0 <= slot < self._n_series:
            raise IndexError(f"slot {slot!r} is outside [0, {self._n_series})")
        return slot

    def push(self, slots, ts, values, status) -> int:
        """Append samples to their series, in the order given.

        Parameters
        ----------
        slots : ndarray of int64, shape (n,)
            Slot of each sample, in ``[0, n_series)``.
        ts : ndarray of int64, shape (n,)
            Sample ts in ms.
        values : ndarray of float64, shape (n,)
            Sample values; NaN and +-Inf are stored as given.
        status : ndarray of uint8, shape (n,)
            Output: per row 0 = stored, 1 = rejected as out of order (ts
            older than the last stored ts of the slot), 2 = rejected as a
            duplicate (ts equal to it).

        Returns
        -------
        int
            Number of samples stored.

        Raises
        ------
        ValueError
            If the arrays differ in length.
        IndexError
            If a slot is outside ``[0, n_series)``; names the first bad row.
            Nothing is stored in that case.

        Notes
        -----
        Rows are applied one after the other, so a batch may hold several
        samples of one series as long as their ts increase. An empty batch
        stores nothing and returns 0. A full series drops its oldest sample
        for each new one; views returned earlier by :meth:`read` may see the
        overwrite.
        """
        cdef const int64_t[::1] slots_view
        cdef const int64_t[::1] ts_view
        cdef const float64_t[::1] values_view
        cdef uint8_t[::1] status_view
        cdef intp_t n

        # NOTE: plain ndarrays skip the typed-memoryview conversion, which
        # cost about 1.2 us per call for the four arguments (1.2 ns a sample
        # in scrapes of 1000); anything else goes through memoryviews, which
        # check dtype and layout and name what is wrong.
        if (_is_plain(slots, cnp.NPY_INT64, False) and _is_plain(ts, cnp.NPY_INT64, False)
                and _is_plain(values, cnp.NPY_FLOAT64, False)
                and _is_plain(status, cnp.NPY_UINT8, True)):
            n = cnp.PyArray_DIM(slots, 0)
            self._check_lengths(n, cnp.PyArray_DIM(ts, 0), cnp.PyArray_DIM(values, 0),
                                cnp.PyArray_DIM(status, 0))
            return self._push(<const int64_t*>cnp.PyArray_DATA(slots),
                              <const int64_t*>cnp.PyArray_DATA(ts),
                              <const float64_t*>cnp.PyArray_DATA(values),
                              <uint8_t*>cnp.PyArray_DATA(status), n)
        slots_view, ts_view, values_view, status_view = slots, ts, values, status
        n = slots_view.shape[0]
        self._check_lengths(n, ts_view.shape[0], values_view.shape[0], status_view.shape[0])
        if n == 0:
            return 0
        return self._push(&slots_view[0], &ts_view[0], &values_view[0], &status_view[0], n)

    cdef int _check_lengths(self, intp_t n, intp_t n_ts, intp_t n_values,
                            intp_t n_status) except -1:
        if n_ts != n or n_values != n or n_status != n:
            raise ValueError(
                f"slots, ts, values and status must have one length, got "
                f"{n}, {n_ts}, {n_values} and {n_status}"
            )
        return 0

    cdef int64_t _push(self, const int64_t* in_slots, const int64_t* in_ts,
                       const float64_t* in_values, uint8_t* out_status,
                       intp_t n) except -1:
        # push() on raw pointers to n rows.
        cdef intp_t i
        cdef intp_t bad = -1
        cdef int64_t n_series = self._n_series
        cdef int64_t stored = 0
        cdef _Rows rows
        rows.row_ts = &self._ts[0, 0]
        rows.row_values = &self._values[0, 0]
        rows.stride = self._stride
        rows.capacity = self._capacity

        # NOTE: plain pointers, not memoryviews (a memoryview's data pointer
        # and strides sit in a struct whose address escapes, so GCC reloads
        # them after stores), and a slot's head, count, last ts and staged
        # count in one cache line. The loop is in C (_ringbuf_push.h), where
        # its pointers stay in registers. One release of the GIL for the
        # check and the loop. Measured in benchmarks/test_kernels.py, ringbuf.
        with nogil:
            # a branch-free check first (vectorized); the bad row is looked
            # for only when there is one
            if not _slots_ok(in_slots, n, n_series):
                for i in range(n):
                    if in_slots[i] < 0 or in_slots[i] >= n_series:
                        bad = i
                        break
            elif n > 0:
                stored = _push_rows(in_slots, in_ts, in_values, out_status, n,
                                    &self._meta[0, 0], &self._stage[0, 0], &rows)
        if bad >= 0:
            raise IndexError(
                f"row {bad}: slot {in_slots[bad]} is outside [0, {n_series})"
            )
        return stored

    def count(self, slot: int) -> int:
        """Number of samples stored for ``slot`` (at most ``capacity``)."""
        cdef int64_t s = self._check_slot(slot)
        self._flush(s)
        return self._count[s]

    def last_ts(self, slot: int) -> int:
        """Last stored ts of ``slot`` in ms, or INT64_MIN when it is empty."""
        return self._last[self._check_slot(slot)]

    cdef void _range(self, int64_t slot, int64_t start_ms, int64_t end_ms,
                     int64_t* lo, int64_t* hi) noexcept nogil:
        cdef const int64_t* row = &self._ts[slot, 0]
        cdef int64_t head = self._head[slot]
        cdef int64_t count = self._count[slot]
        lo[0] = _lower_bound(row, head, count, self._capacity, start_ms)
        hi[0] = _lower_bound(row, head, count, self._capacity, end_ms)
        if hi[0] < lo[0]:
            hi[0] = lo[0]

    def read(self, slot: int, start_ms: int = INT64_MIN, end_ms: int = INT64_MAX):
        """Samples of one series with ``start_ms <= ts < end_ms``.

        Parameters
        ----------
        slot : int
            Series slot, in ``[0, n_series)``.
        start_ms, end_ms : int
            Half-open ts range in ms; the default reads everything.

        Returns
        -------
        ts : ndarray of int64
        values : ndarray of float64
            Oldest first. When the range is contiguous in the ring both are
            read-only views into the buffer (a later push may overwrite
            them; copy what you keep), otherwise fresh copies.

        Raises
        ------
        IndexError
            If ``slot`` is outside ``[0, n_series)``.

        Notes
        -----
        An empty series or range gives two empty arrays; ``start_ms >=
        end_ms`` is an empty range.
        """
        cdef int64_t s = self._check_slot(slot)
        cdef int64_t lo, hi, p0, m
        self._flush(s)
        self._range(s, start_ms, end_ms, &lo, &hi)
        m = hi - lo
        p0 = _physical(self._head[s], self._count[s], self._capacity, lo)

        if p0 + m <= self._capacity:
            ts_out = self._ts_rows[s, p0:p0 + m]
            values_out = self._value_rows[s, p0:p0 + m]
            ts_out.flags.writeable = False
            values_out.flags.writeable = False
            return ts_out, values_out

        first = self._capacity - p0
        ts_out = np.concatenate(
            (self._ts_rows[s, p0:self._capacity], self._ts_rows[s, :m - first])
        )
        values_out = np.concatenate(
            (self._value_rows[s, p0:self._capacity], self._value_rows[s, :m - first])
        )
        return ts_out, values_out

    def read_many(self, const int64_t[::1] slots, start_ms: int = INT64_MIN,
                  end_ms: int = INT64_MAX):
        """Samples of many series with ``start_ms <= ts < end_ms``, concatenated.

        Parameters
        ----------
        slots : ndarray of int64, shape (k,)
            Series slots, each in ``[0, n_series)``; a slot may repeat.
        start_ms, end_ms : int
            Half-open ts range in ms; the default reads everything.

        Returns
        -------
        index : ndarray of int64
            For each returned sample, its position in ``slots`` (so
            ``slots[index]`` is its slot; repeated slots stay apart).
        ts : ndarray of int64
        values : ndarray of float64
            Series in the order of ``slots``, each oldest first. Always
            fresh arrays; empty when nothing falls in the range.

        Raises
        ------
        IndexError
            If a slot is out of range; names the first bad position.
        """
        cdef intp_t k = slots.shape[0]
        cdef intp_t j, bad = -1
        cdef int64_t n_series = self._n_series
        cdef int64_t capacity = self._capacity
        cdef int64_t s, lo, hi, q, p, total = 0, out = 0
        cdef int64_t lo_ms = start_ms
        cdef int64_t hi_ms = end_ms

        with nogil:
            for j in range(k):
                if slots[j] < 0 or slots[j] >= n_series:
                    bad = j
                    break
        if bad >= 0:
            raise IndexError(
                f"slots[{bad}]: slot {slots[bad]} is outside [0, {n_series})"
            )

        with nogil:
            for j in range(k):
                self._flush(slots[j])
                self._range(slots[j], lo_ms, hi_ms, &lo, &hi)
                total += hi - lo

        index_arr = np.empty(total, dtype=np.int64)
        ts_arr = np.empty(total, dtype=np.int64)
        values_arr = np.empty(total, dtype=np.float64)
        cdef int64_t[::1] index_out = index_arr
        cdef int64_t[::1] ts_out = ts_arr
        cdef float64_t[::1] values_out = values_arr
        cdef int64_t[:, ::1] ts_rows = self._ts
        cdef float64_t[:, ::1] value_rows = self._values

        with nogil:
            for j in range(k):
                s = slots[j]
                self._range(s, lo_ms, hi_ms, &lo, &hi)
                for q in range(lo, hi):
                    p = _physical(self._head[s], self._count[s], capacity, q)
                    index_out[out] = j
                    ts_out[out] = ts_rows[s, p]
                    values_out[out] = value_rows[s, p]
                    out += 1
        return index_arr, ts_arr, values_arr

    def __reduce__(self):
        self._flush_all()
        n = self._n_series
        cap = self._capacity
        state = {
            "version": 1,
            "ts": self._ts_rows[:n, :cap].copy(),
            "values": self._value_rows[:n, :cap].copy(),
            "head": self._heads[:n].copy(),
            "count": self._counts[:n].copy(),
            "last_ts": self._last_ts[:n].copy(),
        }
        return (RingBuffers, (cap, n), state)

    def __setstate__(self, state):
        if state.get("version") != 1:
            raise ValueError(
                f"unknown RingBuffers state version {state.get('version')!r}"
            )
        n = self._n_series
        cap = self._capacity
        self._ts_rows[:n, :cap] = state["ts"]
        self._value_rows[:n, :cap] = state["values"]
        self._heads[:n] = state["head"]
        self._counts[:n] = state["count"]
        self._last_ts[:n] = state["last_ts"]
        self._meta_rows[:n, 3] = 0  # nothing staged
