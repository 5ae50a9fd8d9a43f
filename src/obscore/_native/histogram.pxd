# Classic histograms (fixed buckets) and exponential histograms (sparse
# buckets whose bounds grow by a constant factor).

from obscore._native._types cimport float64_t, int64_t, intp_t


cdef enum:
    _CELL_TABLE = 16   # bounds a HistogramCell compares branch-free


cdef class HistogramCell:
    cdef intp_t _nb                       # finite bucket bounds, >= 0
    cdef float64_t _table[_CELL_TABLE]    # bounds padded with +Inf, for nb <= _CELL_TABLE
    cdef float64_t* _bounds               # the finite bounds (malloc'd), nb of them
    cdef float64_t* _counts               # per-bucket counts (malloc'd), nb + 1, last is +Inf
    cdef float64_t _count                 # observations counted (weights added), NaN excluded
    cdef float64_t _sum                   # sum of weight * value, NaN excluded
    cdef int64_t _n_nan                   # NaN observations skipped

    cdef void _add(self, float64_t value, float64_t weight) noexcept nogil


cdef struct KeyStore:
    float64_t* counts   # counts[k - lo] for keys lo .. lo + cap - 1 (malloc'd)
    int64_t lo          # key of counts[0]
    int64_t cap         # allocated keys
    int64_t min_key     # lowest key with a count, or INT64_MAX when empty
    int64_t max_key     # highest key with a count, or INT64_MIN when empty


cdef class ExpHistogram:
    cdef float64_t _alpha          # relative accuracy of quantiles, in (0, 1)
    cdef float64_t _gamma          # bucket bound ratio (1 + alpha) / (1 - alpha)
    cdef float64_t _inv_log_gamma  # 1 / ln(gamma)
    cdef float64_t _min_value      # |x| below this counts in the zero bucket
    cdef KeyStore _pos             # buckets of positive values: key k holds (gamma**(k-1), gamma**k]
    cdef KeyStore _neg             # buckets of negative values, keyed by |x|
    cdef float64_t _zero           # count of |x| < min_value
    cdef float64_t _pos_inf        # count of +Inf
    cdef float64_t _neg_inf        # count of -Inf
    cdef float64_t _count          # all counted observations (weights added), NaN excluded
    cdef float64_t _sum            # sum of weight * value over finite values
    cdef float64_t _min            # smallest observed value, +Inf when empty
    cdef float64_t _max            # largest observed value, -Inf when empty
    cdef int64_t _n_nan            # NaN observations skipped

    cdef int _add(self, float64_t value, float64_t weight) except -1 nogil
    cdef float64_t _value_of(self, int64_t key, int negative) noexcept nogil
