# Streaming z-scores over a sliding time window.

from obscore._native._types cimport float64_t, int64_t


cdef struct Moments:
    int64_t n         # finite values in the window
    float64_t ref     # shift: the sums below are of (x - ref), ref near the mean
    float64_t s1      # sum of (x - ref) over the window
    float64_t s2      # sum of (x - ref)**2 over the window
    float64_t last    # newest value added
    int64_t run       # how many of the newest values equal `last`; == n means constant
    int64_t ops       # adds and removes since the sums were last recomputed exactly


cdef class ZScoreState:
    cdef int64_t _window_ms         # look-back span in ms, > 0
    cdef int64_t _min_count         # window samples needed before a score is non-zero, >= 2
    cdef int64_t _capacity_hint     # initial ring size in samples, as given
    cdef int64_t _last_ts           # ts in ms of the newest scored sample, INT64_MIN before any
    cdef Moments _m                 # running moments of the window
    cdef int64_t* _ts               # ring of window ts in ms (malloc'd), oldest at _head
    cdef float64_t* _values         # ring of window values (malloc'd), same positions
    cdef int64_t _cap               # ring size in samples, a power of two
    cdef int64_t _head              # ring position of the oldest window sample

    cdef int _grow(self) except -1 nogil
    cdef Moments _recompute(self, Moments m, int64_t head) noexcept nogil
    cdef int64_t _update(self, const int64_t[::1] ts, const float64_t[::1] values,
                         float64_t[::1] scores) except -1 nogil
