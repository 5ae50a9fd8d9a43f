# Fixed-capacity ring buffers, one per series, for the hot tier.

from libc.stdint cimport uint8_t

from obscore._native._types cimport float64_t, int64_t, intp_t


cdef class RingBuffers:
    cdef int64_t _capacity          # samples kept per series, > 0
    cdef int64_t _stride            # row length of the storage arrays, >= capacity (padded)
    cdef int64_t _n_series          # slots handed out by add_series
    cdef int64_t _n_alloc           # rows allocated in the storage arrays, >= n_series
    cdef object _ts_rows            # ndarray int64 (n_alloc, stride): ts in ms, ring order
    cdef object _value_rows         # ndarray float64 (n_alloc, stride): values, ring order
    cdef object _meta_rows          # ndarray int64 (n_alloc, 4): head, count, last ts, staged
    cdef object _stage_rows         # ndarray int64 (n_alloc, 2 * _STAGE): per slot the samples
                                    # not yet in the row, pairs of ts in ms and value's float64 bits
    cdef object _heads              # column 0 of _meta_rows: next write position in the row
    cdef object _counts             # column 1 of _meta_rows: samples in the row per slot
    cdef object _last_ts            # column 2 of _meta_rows: last stored ts in ms, or INT64_MIN
    cdef int64_t[:, ::1] _ts        # view of _ts_rows
    cdef float64_t[:, ::1] _values  # view of _value_rows
    cdef int64_t[:, ::1] _meta      # view of _meta_rows
    cdef int64_t[:, ::1] _stage     # view of _stage_rows
    cdef int64_t[:] _head           # view of _heads
    cdef int64_t[:] _count          # view of _counts
    cdef int64_t[:] _last           # view of _last_ts

    cdef int _reserve(self, int64_t n_rows) except -1
    cdef void _flush(self, int64_t slot) noexcept nogil
    cdef void _flush_all(self) noexcept nogil
    cdef int64_t _check_slot(self, object slot) except -1
    cdef int _check_lengths(self, intp_t n, intp_t n_ts, intp_t n_values,
                            intp_t n_status) except -1
    cdef int64_t _push(self, const int64_t* in_slots, const int64_t* in_ts,
                       const float64_t* in_values, uint8_t* out_status,
                       intp_t n) except -1
    cdef void _range(self, int64_t slot, int64_t start_ms, int64_t end_ms,
                     int64_t* lo, int64_t* hi) noexcept nogil
