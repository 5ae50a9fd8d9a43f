# Fixed-width C types shared by every kernel in obscore._native.
#
# Use the fixed widths for anything that is stored, returned to Python or
# pickled: int64_t for ts (milliseconds) and slot/group ids, float64_t for
# values, uint8_t for per-row status codes, float32_t only where a model was
# trained on float32 (the isolation forest). intp_t is for indexing and
# lengths inside loops only; it never reaches storage.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t

ctypedef double float64_t
ctypedef float float32_t
ctypedef Py_ssize_t intp_t
