"""Exposition text kernels for ``obscore.ingest.exposition``.

Two entry points share one line classifier:

- :func:`expo_split_rows` splits a whole text into one row per line: a 9-tuple
  of strings ``(key, name, body, value, ts, keyword, meta_name, meta_text,
  other)``.  The first five are set for a plain sample line (``name{body}
  value [ts]``, label values free of backslashes and quotes, single spaces
  between tokens), the next three for a ``# HELP``, ``# TYPE`` (or, in
  OpenMetrics, ``# UNIT``) line, and ``other`` holds any other line whole.
  Fields not set are empty strings.  The split is conservative: a line it is
  not sure of goes to ``other``, so it never accepts what the careful scanner
  of the parser would refuse.
- :class:`ExpoScan` runs the parser's line loop over such rows without
  building them: it takes every plain sample line and every plain HELP/TYPE
  line that passes the parser's checks straight into the caller's columns,
  and hands any other line back as its row for the caller to read.

The kernels know the grammar, not the rules of each metric type: those come
in as tables from the caller, and every message about bad input is the
caller's (a line that fails a check is handed back, not reported).
"""

from __future__ import annotations

from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM
from libc.string cimport memcmp
from libc.math cimport INFINITY, fabs, floor, isfinite, isinf, round as c_round


cdef extern from "Python.h":
    Py_UCS4 PyUnicode_READ(int kind, const void* data, Py_ssize_t index) noexcept nogil
    int PyUnicode_KIND(object s) noexcept
    const void* PyUnicode_DATA(object s) noexcept
    double PyOS_string_to_double(const char* s, char** endptr,
                                 PyObject* overflow_exception) noexcept
    object PyLong_FromDouble(double v)
    object PyLong_FromLongLong(long long v)
    Py_ssize_t PyUnicode_FindChar(object s, Py_UCS4 ch, Py_ssize_t start,
                                  Py_ssize_t end, int direction) except -2
    PyObject* PyType_GenericAlloc(PyTypeObject* t, Py_ssize_t n) noexcept
    PyObject* PyErr_Occurred() noexcept
    void PyErr_Clear() noexcept


cdef enum:
    # Longest value or timestamp token read natively; a longer one is handed back.
    MAX_TOKEN = 63
    # Most label names checked for repeats natively; more are handed back.
    MAX_LABELS = 64

# |ts| and |now_ms| below this compare natively (their difference fits int64).
cdef long long TS_LIMIT = 4611686018427387904  # 2**62

cdef str _EMPTY_STR = u""


# --- classify: one line as a plain sample, a plain metadata line or other ---

cdef inline bint _name_start(Py_UCS4 c) noexcept nogil:
    return (c >= u"a" and c <= u"z") or (c >= u"A" and c <= u"Z") or c == u"_" or c == u":"


cdef inline bint _name_char(Py_UCS4 c) noexcept nogil:
    return _name_start(c) or (c >= u"0" and c <= u"9")


cdef inline bint _lname_start(Py_UCS4 c) noexcept nogil:
    return (c >= u"a" and c <= u"z") or (c >= u"A" and c <= u"Z") or c == u"_"


cdef inline bint _lname_char(Py_UCS4 c) noexcept nogil:
    return _lname_start(c) or (c >= u"0" and c <= u"9")


cdef inline bint _value_char(Py_UCS4 c) noexcept nogil:
    # [0-9a-zA-Z.+-]
    return ((c >= u"0" and c <= u"9") or (c >= u"a" and c <= u"z")
            or (c >= u"A" and c <= u"Z") or c == u"." or c == u"+" or c == u"-")


cdef inline bint _om_ts_char(Py_UCS4 c) noexcept nogil:
    # [0-9.eE+-]
    return (c >= u"0" and c <= u"9") or c == u"." or c == u"e" or c == u"E" or c == u"+" or c == u"-"


cdef bint _scan_sample(const void* d, int k, Py_ssize_t i, Py_ssize_t end, bint om,
                       Py_ssize_t* name_end, Py_ssize_t* key_end,
                       Py_ssize_t* value_end, Py_ssize_t* ts_start) noexcept nogil:
    # Match a plain sample line [i, end); true with the token bounds, or false
    # when it is not one (the careful scanner then takes it).
    cdef Py_ssize_t j = i
    cdef Py_UCS4 c
    if j >= end or not _name_start(PyUnicode_READ(k, d, j)):
        return False
    j += 1
    while j < end and _name_char(PyUnicode_READ(k, d, j)):
        j += 1
    name_end[0] = j
    if j < end and PyUnicode_READ(k, d, j) == u"{":
        j += 1
        while True:
            if j < end and PyUnicode_READ(k, d, j) == u"}":
                break
            if j >= end or not _lname_start(PyUnicode_READ(k, d, j)):
                return False
            j += 1
            while j < end and _lname_char(PyUnicode_READ(k, d, j)):
                j += 1
            if (j + 1 >= end or PyUnicode_READ(k, d, j) != u"="
                    or PyUnicode_READ(k, d, j + 1) != u'"'):
                return False
            j += 2
            while j < end:
                c = PyUnicode_READ(k, d, j)
                if c == u'"' or c == u"\\":
                    break
                j += 1
            if j >= end or PyUnicode_READ(k, d, j) != u'"':
                return False
            j += 1
            if j < end and PyUnicode_READ(k, d, j) == u",":
                j += 1
                if om and j < end and PyUnicode_READ(k, d, j) == u"}":
                    return False  # OpenMetrics allows no trailing comma
            elif j < end and PyUnicode_READ(k, d, j) != u"}":
                return False
        j += 1
    key_end[0] = j
    if j >= end or PyUnicode_READ(k, d, j) != u" ":
        return False
    j += 1
    if j >= end or not _value_char(PyUnicode_READ(k, d, j)):
        return False
    while j < end and _value_char(PyUnicode_READ(k, d, j)):
        j += 1
    value_end[0] = j
    ts_start[0] = -1
    if j == end:
        return True
    if PyUnicode_READ(k, d, j) != u" ":
        return False
    j += 1
    ts_start[0] = j
    if om:
        if j >= end or not _om_ts_char(PyUnicode_READ(k, d, j)):
            return False
        while j < end and _om_ts_char(PyUnicode_READ(k, d, j)):
            j += 1
    else:
        if j < end and PyUnicode_READ(k, d, j) == u"-":
            j += 1
        if j >= end or not (PyUnicode_READ(k, d, j) >= u"0" and PyUnicode_READ(k, d, j) <= u"9"):
            return False
        while j < end and PyUnicode_READ(k, d, j) >= u"0" and PyUnicode_READ(k, d, j) <= u"9":
            j += 1
    return j == end


cdef inline bint _word_at(const void* d, int k, Py_ssize_t i, const char* word) noexcept nogil:
    # Whether the 4 letters of word stand at i (the caller checked the length).
    cdef Py_ssize_t j
    for j in range(4):
        if PyUnicode_READ(k, d, i + j) != <Py_UCS4>word[j]:
            return False
    return True


cdef int _scan_meta(const void* d, int k, Py_ssize_t i, Py_ssize_t end, bint om,
                    Py_ssize_t* name_end) noexcept nogil:
    # Match '# HELP|TYPE|UNIT NAME TEXT': 'H', 'T' or 'U' for the keyword, with
    # the end of NAME, or 0 when the line is not one.
    cdef Py_ssize_t j
    cdef int kw
    if (end - i < 7 or PyUnicode_READ(k, d, i) != u"#" or PyUnicode_READ(k, d, i + 1) != u" "
            or PyUnicode_READ(k, d, i + 6) != u" "):
        return 0
    if _word_at(d, k, i + 2, b"HELP"):
        kw = c"H"
    elif _word_at(d, k, i + 2, b"TYPE"):
        kw = c"T"
    elif om and _word_at(d, k, i + 2, b"UNIT"):
        kw = c"U"
    else:
        return 0
    j = i + 7
    if j >= end or not _name_start(PyUnicode_READ(k, d, j)):
        return 0
    j += 1
    while j < end and _name_char(PyUnicode_READ(k, d, j)):
        j += 1
    if j >= end or PyUnicode_READ(k, d, j) != u" ":
        return 0
    name_end[0] = j
    return kw


cdef tuple _split_line(str text, const void* d, int k, Py_ssize_t start, Py_ssize_t end,
                       bint om):
    # The row of the line [start, end) (see the module docstring).
    cdef Py_ssize_t name_end = 0, key_end = 0, value_end = 0, ts_start = -1
    cdef str empty = _EMPTY_STR
    if _scan_sample(d, k, start, end, om, &name_end, &key_end, &value_end, &ts_start):
        return (
            text[start:key_end],
            text[start:name_end],
            text[name_end + 1:key_end - 1] if key_end > name_end else empty,
            text[key_end + 1:value_end],
            text[ts_start:end] if ts_start >= 0 else empty,
            empty, empty, empty, empty,
        )
    if _scan_meta(d, k, start, end, om, &name_end):
        return (
            empty, empty, empty, empty, empty,
            text[start + 2:start + 6],
            text[start + 7:name_end],
            text[name_end + 1:end],
            empty,
        )
    return (empty, empty, empty, empty, empty, empty, empty, empty, text[start:end])


def expo_split_rows(str text, bint om) -> list:
    """Split exposition text into one row per line (see the module docstring).

    Parameters
    ----------
    text : str
        The whole exposition.
    om : bool
        OpenMetrics rules (``# UNIT`` lines, no trailing comma in label
        sets, float timestamps) instead of the text format 0.0.4.

    Returns
    -------
    list of tuple of str
        One 9-tuple per ``"\\n"``-separated line, in order; a text ending in
        ``"\\n"`` gives a last, empty row (as ``str.split`` does).
    """
    cdef Py_ssize_t n = len(text)
    cdef Py_ssize_t start = 0, end
    cdef const void* d = PyUnicode_DATA(text)
    cdef int k = PyUnicode_KIND(text)
    cdef list rows = []
    while True:
        end = PyUnicode_FindChar(text, u"\n", start, n, 1)
        if end < 0:
            end = n
        rows.append(_split_line(text, d, k, start, end, om))
        if end == n:
            break
        start = end + 1
    return rows


def expo_has_long_line(str text, Py_ssize_t limit) -> bool:
    """Whether a ``"\\n"``-separated line of ``text`` has over ``limit`` characters."""
    cdef Py_ssize_t n = len(text), start = 0, end
    while True:
        end = PyUnicode_FindChar(text, u"\n", start, n, 1)
        if end < 0:
            return n - start > limit
        if end - start > limit:
            return True
        start = end + 1


# --- tokens: numbers and label names of a plain sample line ---

cdef inline bint _same_text(str s, const void* d, int k, Py_ssize_t start,
                            Py_ssize_t m) noexcept:
    # Whether s equals the m characters at start of the text (d, k).
    cdef int sk
    cdef const void* sd
    cdef Py_ssize_t j
    if len(s) != m:
        return False
    sk = PyUnicode_KIND(s)
    sd = PyUnicode_DATA(s)
    if sk == k:
        return memcmp(sd, <const char*>d + start * k, m * k) == 0
    for j in range(m):
        if PyUnicode_READ(sk, sd, j) != PyUnicode_READ(k, d, start + j):
            return False
    return True


cdef bint _read_double(const void* d, int k, Py_ssize_t a, Py_ssize_t b,
                       double* out) noexcept:
    # float() of the ASCII token [a, b), or false when it is not a number or
    # too long to read here.  PyOS_string_to_double is what float() calls
    # once blanks and underscores are dealt with, and the token has neither.
    cdef char buf[MAX_TOKEN + 1]
    cdef char* stop
    cdef Py_ssize_t n = b - a, j
    cdef Py_UCS4 c
    if n <= 0 or n > MAX_TOKEN:
        return False
    for j in range(n):
        c = PyUnicode_READ(k, d, a + j)
        if c > 127:
            return False
        buf[j] = <char>c
    buf[n] = 0
    out[0] = PyOS_string_to_double(buf, &stop, NULL)
    if PyErr_Occurred() != NULL:
        PyErr_Clear()
        return False
    return stop == buf + n


cdef bint _repeats_label(const void* d, int k, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # Whether a label name repeats in the plain label set [a, b), which holds
    # name="value" pairs with no quote inside a value; true also when there
    # are too many names to check here, so that the caller hands it back.
    cdef Py_ssize_t starts[MAX_LABELS]
    cdef Py_ssize_t lens[MAX_LABELS]
    cdef Py_ssize_t n = 0, j = a, s, m, p, q
    cdef bint same
    while j < b:
        s = j
        while PyUnicode_READ(k, d, j) != u"=":
            j += 1
        m = j - s
        for p in range(n):
            if lens[p] == m:
                same = True
                for q in range(m):
                    if PyUnicode_READ(k, d, starts[p] + q) != PyUnicode_READ(k, d, s + q):
                        same = False
                        break
                if same:
                    return True
        if n == MAX_LABELS:
            return True
        starts[n] = s
        lens[n] = m
        n += 1
        j += 2  # past '="'
        while PyUnicode_READ(k, d, j) != u'"':
            j += 1
        j += 2  # past '"' and ','
    return False


cdef dict _plain_labels(str body, list names):
    # name -> value of a plain label set (no quote or backslash in a value).
    # names holds the label names of the set before, by position: a name
    # equal to the one there is that object (its hash is known already).
    cdef dict out = {}
    cdef Py_ssize_t n = len(body), j = 0, eq, close, p = 0
    cdef const void* d = PyUnicode_DATA(body)
    cdef int k = PyUnicode_KIND(body)
    cdef object name
    while j < n:
        eq = PyUnicode_FindChar(body, u"=", j, n, 1)
        close = PyUnicode_FindChar(body, u'"', eq + 2, n, 1)
        if p < len(names) and _same_text(<str>names[p], d, k, j, eq - j):
            name = names[p]
        else:
            name = body[j:eq]
            if p < len(names):
                names[p] = name
            else:
                names.append(name)
        out[name] = body[eq + 2:close]
        p += 1
        j = close + 2
    return out


def expo_label_dicts(list labels, Py_ssize_t start, Py_ssize_t stop) -> list:
    """The label sets ``labels[start:stop]`` as dicts, each converted in place.

    Parameters
    ----------
    labels : list of str or dict
        A label set is either a dict already or the text between the braces of
        a plain sample line (``name="value"`` pairs separated by commas, a
        trailing comma allowed, no quote or backslash inside a value), which
        is replaced by its dict.

    Returns
    -------
    list of dict
        ``labels[start:stop]`` once converted, the same dict objects.
    """
    cdef list out = [], seen = []
    cdef Py_ssize_t i
    cdef object x
    for i in range(start, stop):
        x = labels[i]
        if type(x) is str:
            x = _plain_labels(<str>x, seen)
            labels[i] = x
        out.append(x)
    return out


def expo_samples(type cls, list names, list labels, list values, list ts,
                 Py_ssize_t start, Py_ssize_t stop) -> list:
    """One record per sample of ``start:stop``, label sets made dicts on the way.

    Parameters
    ----------
    cls : type
        A subclass of tuple with four fields and no ``__new__`` logic of its
        own that matters (a NamedTuple): each record is an instance holding
        ``(name, labels, value, ts)``, allocated and filled as
        ``tuple.__new__(cls, ...)`` would, without the call.
    names, labels, values, ts : list
        Sample columns (see :class:`ExpoScan`); a label set still in text is
        replaced by its dict in ``labels``, as :func:`expo_label_dicts` does.

    Returns
    -------
    list
        The records, in sample order.
    """
    cdef list out = [], seen = []
    cdef Py_ssize_t i
    cdef object x, rec
    cdef PyTypeObject* t = <PyTypeObject*>cls
    if not issubclass(cls, tuple):
        raise TypeError(f"cls must be a subclass of tuple, got {cls!r}")
    for i in range(start, stop):
        x = labels[i]
        if type(x) is str:
            x = _plain_labels(<str>x, seen)
            labels[i] = x
        rec = _record(t, names[i], x, values[i], ts[i])
        out.append(rec)
    return out


cdef object _record(PyTypeObject* t, object a, object b, object c, object d):
    # An instance of the tuple subclass t holding (a, b, c, d).
    cdef PyObject* p = PyType_GenericAlloc(t, 4)  # tuple's tp_alloc
    if p == NULL:
        raise MemoryError()
    cdef object rec = <object>p
    Py_DECREF(rec)  # <object> took a second reference
    Py_INCREF(a)
    PyTuple_SET_ITEM(rec, 0, a)
    Py_INCREF(b)
    PyTuple_SET_ITEM(rec, 1, b)
    Py_INCREF(c)
    PyTuple_SET_ITEM(rec, 2, c)
    Py_INCREF(d)
    PyTuple_SET_ITEM(rec, 3, d)
    return rec


# --- check: whole families whose label sets are all plain text ---

cdef object _series_key(str body, object drop, Py_ssize_t* drop_start,
                        Py_ssize_t* drop_stop):
    # A text equal for two plain label sets exactly when their label -> value
    # pairs, less the label drop (None: none dropped), are equal: the pairs
    # in name order, joined by commas.  Values hold no quote, so the text
    # says where each pair ends.  drop_start/drop_stop get the bounds of the
    # dropped label's value in body (-1 when absent); None comes back when
    # there are more labels than this reads.
    cdef Py_ssize_t ns[MAX_LABELS]
    cdef Py_ssize_t nl[MAX_LABELS]
    cdef Py_ssize_t pe[MAX_LABELS]
    cdef Py_ssize_t order[MAX_LABELS]
    cdef Py_ssize_t n = len(body), j = 0, m = 0, eq, close, a, b, x, y, q
    cdef const void* d = PyUnicode_DATA(body)
    cdef int k = PyUnicode_KIND(body)
    cdef bint dropped = False, moved = False, less
    cdef Py_ssize_t drop_len = -1 if drop is None else len(<str>drop)
    cdef str dropstr = drop
    drop_start[0] = drop_stop[0] = -1
    while j < n:
        eq = PyUnicode_FindChar(body, u"=", j, n, 1)
        close = PyUnicode_FindChar(body, u'"', eq + 2, n, 1)
        if eq - j == drop_len and body.startswith(dropstr, j):
            drop_start[0], drop_stop[0] = eq + 2, close
            dropped = True
        else:
            if m == MAX_LABELS:
                return None
            ns[m], nl[m], pe[m] = j, eq - j, close + 1
            # Insertion by name: names of one label set differ.
            order[m] = m
            x = m
            while x > 0:
                a, b = order[x - 1], m
                less = False
                q = 0
                while True:
                    if q == nl[a] or q == nl[b]:
                        less = nl[b] < nl[a]
                        break
                    if PyUnicode_READ(k, d, ns[a] + q) != PyUnicode_READ(k, d, ns[b] + q):
                        less = PyUnicode_READ(k, d, ns[b] + q) < PyUnicode_READ(k, d, ns[a] + q)
                        break
                    q += 1
                if not less:
                    break
                order[x] = a
                x -= 1
                moved = True
            order[x] = m
            m += 1
        j = close + 2
    if m == 0:
        return _EMPTY_STR
    if not dropped and not moved:
        return body[0:pe[m - 1]]
    return u",".join([body[ns[order[y]]:pe[order[y]]] for y in range(m)])


def expo_groups_ok(list names, list labels, list ts, Py_ssize_t start, Py_ssize_t stop,
                   object drop, str drop_name, bint info) -> bool:
    """Whether the series of a family are contiguous and their time never goes back.

    A fast, conservative form of the parser's group check: True only when
    that check would pass; False when it would fail, or when a sample's label
    set is not plain text (the caller then runs its own check).

    Parameters
    ----------
    names, labels, ts : list
        Sample columns (see :class:`ExpoScan`); the family is ``start:stop``.
    drop : str or None
        Label left out of the series of ``drop_name`` samples (``le`` of
        buckets, ``quantile``, the state label).
    drop_name : str
        Sample name whose series leave ``drop`` out.
    info : bool
        An info family: all samples are one series, whose time may go back.
    """
    cdef Py_ssize_t i, a, b
    cdef object group = None, group_ts = None, key, t, lab
    cdef set seen = set()
    cdef tuple no_labels = ()
    for i in range(start, stop):
        lab = labels[i]
        if info:
            key = no_labels
        elif type(lab) is not str:
            return False
        elif drop is not None and names[i] == drop_name:
            key = _series_key(<str>lab, drop, &a, &b)
        else:
            key = _series_key(<str>lab, None, &a, &b)
        if key is None:
            return False
        t = ts[i]
        if key != group:
            if key in seen:
                return False
            seen.add(key)
            group, group_ts = key, t
            continue
        if (t is None) != (group_ts is None):
            return False
        if t is not None and not info and t < group_ts:
            return False
        group_ts = t
    return True


cdef inline bint _is_integer(double v) noexcept nogil:
    return isfinite(v) and floor(v) == v


cdef struct _HistState:
    bint has_le       # a bucket was read
    double le         # upper bound of the last bucket
    double value      # count of the last bucket (0 before the first)
    bint has_count    # _count (_gcount) was read
    double count      # its value
    bint has_sum      # _sum (_gsum) was read
    double total      # its value
    bint negative     # a bucket bound is below zero


cdef bint _hist_finish(_HistState* st, bint om, bint gauge) noexcept nogil:
    if not st.has_le or st.le != INFINITY:
        return False
    if st.has_count and st.count != st.value:
        return False
    if om:
        if st.has_sum != st.has_count:
            return False
        if not gauge and st.negative and st.has_sum:
            return False
        if gauge and not st.negative and st.has_sum and st.total < 0:
            return False
    return True


def expo_histogram_ok(list names, list labels, list values, list ts, Py_ssize_t start,
                      Py_ssize_t stop, str name, bint gauge, bint om) -> bool:
    """Whether each series of a histogram family is a well-formed histogram.

    A fast, conservative form of the parser's histogram check: True only when
    that check would pass (bucket bounds increasing up to ``+Inf``, counts
    that never decrease, ``_count`` equal to the ``+Inf`` bucket and, in
    OpenMetrics, integer counts and ``_sum`` with ``_count``); False when it
    would fail, or when a label set is not plain text or a bound is not
    plain ASCII (the caller then runs its own check).

    Parameters
    ----------
    names, labels, values, ts : list
        Sample columns (see :class:`ExpoScan`); the family is ``start:stop``.
    name : str
        Family name.
    gauge : bool
        A gauge histogram (``_gcount``, ``_gsum``; negative buckets allowed).
    om : bool
        OpenMetrics rules.
    """
    cdef str bucket_name = name + u"_bucket"
    cdef str count_name = name + (u"_gcount" if gauge else u"_count")
    cdef str sum_name = name + (u"_gsum" if gauge else u"_sum")
    cdef str created_name = name + u"_created"
    cdef Py_ssize_t i, a, b
    cdef object group_key = None, group_ts = None, key, t, lab, sname
    cdef bint open_ = False
    cdef double v, le
    cdef _HistState st
    st.has_le = st.has_count = st.has_sum = st.negative = False
    st.le = st.value = st.count = st.total = 0.0
    for i in range(start, stop):
        sname = names[i]
        if sname == created_name:
            continue
        lab = labels[i]
        if type(lab) is not str:
            return False
        key = _series_key(<str>lab, u"le", &a, &b)
        if key is None:
            return False
        t = ts[i]
        if not open_ or key != group_key or t != group_ts:
            if open_ and not _hist_finish(&st, om, gauge):
                return False
            open_ = True
            group_key, group_ts = key, t
            st.has_le = st.has_count = st.has_sum = st.negative = False
            st.le = st.count = st.total = 0.0
            st.value = 0.0
        v = values[i]
        if sname == bucket_name:
            if a < 0:
                return False
            if not _read_double(PyUnicode_DATA(lab), PyUnicode_KIND(lab), a, b, &le):
                return False
            if le != le:
                return False
            if om and isinf(le) and (<str>lab)[a:b] != u"+Inf":
                return False
            if om and not _is_integer(v):
                return False
            if st.has_le and le <= st.le:
                return False
            if v < st.value:
                return False
            st.has_le, st.le, st.value = True, le, v
            st.negative = st.negative or le < 0
        elif sname == count_name:
            if om and not _is_integer(v):
                return False
            st.has_count, st.count = True, v
        elif sname == sum_name:
            st.has_sum, st.total = True, v
    if open_ and not _hist_finish(&st, om, gauge):
        return False
    return True


# --- scan: the parser's line loop over plain lines ---

cdef class ExpoScan:
    """The parser's line loop over plain lines, filling the caller's columns.

    :meth:`next_row` reads lines until one it does not take and returns that
    line's row (as :func:`expo_split_rows` gives it) for the caller to read;
    the caller may update the open family's attributes before calling again.
    A line is taken when it is a plain sample line, or a ``# HELP``/``# TYPE``
    line in plain form, that passes every check the caller would make: the
    value and timestamp are numbers, no label name repeats, the value suits
    its sample's role (``nonneg``, ``notnan``), a series without timestamp is
    new (``seen_series``) and a timestamp is not more than ``max_future_ms``
    ahead of ``now_ms``.  A line that fails a check, or that the scan cannot
    judge, is handed back untouched, so the caller reports it.

    Parameters
    ----------
    text : str
        The whole exposition, lines separated by ``"\\n"``.
    om : bool
        OpenMetrics rules (see :func:`expo_split_rows`; timestamps are seconds).
    names, labels, values, ts, lines, keys : list
        Columns a taken sample is appended to: sample name (str), label text
        between the braces (str), value (float), time (int ms, or None), line
        number (int, from 1) and series text as written (str).
    family_rows : list
        Receives ``(name, type, help, unit, line, start, stop)`` for each
        family closed here (text format 0.0.4 families of a type whose
        suffixes are ``plain``, with a new name and no whole-family check).
    seen_names : set of str
        Names taken by closed families; a family closed here adds its name.
    suffix_table : dict of str to tuple of str
        Known types and the suffixes of their sample names.
    nonneg_table, notnan_table : dict of str to frozenset of str
        By type, the suffixes whose value must not be negative, must not be NaN.
    plain : tuple
        The ``suffix_table`` value (compared by identity) of types whose one
        sample name is the family name.
    empty : frozenset
        The empty role set.
    checked : frozenset of str
        Types whose families ``close`` always gets.
    close : callable
        ``close(name, type, help, unit, line, start)``, called when a family
        ends that is not closed here; it may raise.
    now_ms : int or None
        The current time (ms), or None to skip the future check.
    max_future_ms : int
        How far ahead of ``now_ms`` a timestamp may be (ms).
    fast : bool
        False hands every line back (the caller's own loop then reads all).

    Attributes
    ----------
    lineno : int
        Number (from 1) of the last line read; equals ``n_rows`` at the end.
    n_rows : int
        Lines in the text (a last empty line after a final newline excluded).
    fam_name, fam_type, fam_help, fam_unit, fam_line, fam_start
        The open family: its name (None before the first), type, unescaped
        HELP and UNIT (None until given), first line and first sample index.
    allowed : dict of str to str
        Sample names of the open family, each to its suffix (role).
    nonneg, notnan : frozenset of str
        Roles of the open family whose value must not be negative / NaN.
    seen_series : dict of str to int
        Series text written without timestamp -> line first seen.
    """

    cdef str text
    cdef const void* data
    cdef int kind
    cdef Py_ssize_t n, pos
    cdef bint om, fast, has_now, now_native
    cdef long long now, max_future
    cdef list names, labels, values, ts, lines, keys, family_rows
    cdef set seen_names
    cdef dict suffix_table, nonneg_table, notnan_table
    cdef object plain, empty, checked, close
    cdef str last_name, untyped

    cdef public Py_ssize_t lineno
    cdef public object fam_name, fam_type, fam_help, fam_unit
    cdef public Py_ssize_t fam_line, fam_start
    cdef public dict allowed, seen_series
    cdef public object nonneg, notnan

    def __init__(self, str text, bint om, list names, list labels, list values,
                 list ts, list lines, list keys, list family_rows, set seen_names,
                 dict suffix_table, dict nonneg_table, dict notnan_table, object plain,
                 object empty, object checked, object close, object now_ms,
                 object max_future_ms, bint fast=True):
        self.text = text
        self.data = PyUnicode_DATA(text)
        self.kind = PyUnicode_KIND(text)
        self.n = len(text)
        self.pos = 0
        self.om = om
        self.fast = fast
        self.names, self.labels, self.values = names, labels, values
        self.ts, self.lines, self.keys = ts, lines, keys
        self.family_rows, self.seen_names = family_rows, seen_names
        self.suffix_table, self.nonneg_table = suffix_table, nonneg_table
        self.notnan_table = notnan_table
        self.plain, self.empty, self.checked, self.close = plain, empty, checked, close
        self.untyped = u"unknown" if om else u"untyped"
        self.last_name = None

        self.has_now = now_ms is not None
        self.now_native = False
        if self.has_now and -TS_LIMIT < now_ms < TS_LIMIT and 0 <= max_future_ms < TS_LIMIT:
            self.now, self.max_future = now_ms, max_future_ms
            self.now_native = True

        self.lineno = 0
        self.fam_name = self.fam_type = self.fam_help = self.fam_unit = None
        self.fam_line = self.fam_start = 0
        self.allowed = {}
        self.seen_series = {}
        self.nonneg = self.notnan = empty

    def next_row(self):
        """Take lines up to the next one not taken; return its row, or None at the end.

        Returns
        -------
        tuple of str or None
            The row of line ``lineno`` (see :func:`expo_split_rows`), which
            the scan left untouched, or None once every line is read.

        Raises
        ------
        Exception
            Whatever ``close`` raises for a family that ended here.
        """
        cdef Py_ssize_t start, end, name_end = 0, key_end = 0, value_end = 0, ts_start = -1
        cdef int kw
        cdef const void* d = self.data
        cdef int k = self.kind
        # A line starts at every pos before the end: the empty line after a
        # final newline is no line, as in the caller's count.
        while self.pos < self.n:
            start = self.pos
            end = PyUnicode_FindChar(self.text, u"\n", start, self.n, 1)
            if end < 0:
                end = self.n
            self.pos = end + 1
            self.lineno += 1
            if not self.fast:
                return _split_line(self.text, d, k, start, end, self.om)
            if _scan_sample(d, k, start, end, self.om, &name_end, &key_end, &value_end,
                            &ts_start):
                if self._take_sample(start, end, name_end, key_end, value_end, ts_start):
                    continue
            else:
                kw = _scan_meta(d, k, start, end, self.om, &name_end)
                if kw and self._take_meta(kw, start, end, name_end):
                    continue
            return _split_line(self.text, d, k, start, end, self.om)
        return None

    @property
    def n_rows(self) -> int:
        """Lines in the text (a last empty line after a final newline excluded)."""
        if self.pos >= self.n:
            return self.lineno
        return self.lineno + self.text.count(u"\n", self.pos) + (
            0 if self.text.endswith(u"\n") else 1
        )

    cdef str _name(self, Py_ssize_t start, Py_ssize_t stop):
        # The sample name [start, stop), the object of the line before when
        # it is the same name (its hash is then known already).
        cdef str last = self.last_name
        if last is not None and _same_text(last, self.data, self.kind, start, stop - start):
            return last
        last = self.text[start:stop]
        self.last_name = last
        return last

    cdef bint _take_sample(self, Py_ssize_t start, Py_ssize_t end, Py_ssize_t name_end,
                           Py_ssize_t key_end, Py_ssize_t value_end,
                           Py_ssize_t ts_start) except -1:
        cdef const void* d = self.data
        cdef int k = self.kind
        cdef double value, seconds, ms, r
        cdef long long ts = 0
        cdef bint has_ts = ts_start >= 0, ts_native = True, negative
        cdef object ts_obj = None, role, lineno
        cdef Py_ssize_t j
        cdef str name, key

        # Checks first: a line handed back must leave everything as it was.
        if key_end - name_end > 2 and _repeats_label(d, k, name_end + 1, key_end - 1):
            return False
        if not _read_double(d, k, key_end + 1, value_end, &value):
            return False
        if has_ts:
            if self.om:
                if not _read_double(d, k, ts_start, end, &seconds):
                    return False
                ms = seconds * 1000.0
                if not isfinite(ms):
                    return False
                # round() of a float: half to even, as the caller's round() does.
                r = c_round(ms)
                if fabs(ms - r) == 0.5:
                    r = 2.0 * c_round(ms / 2.0)
                ts_obj = PyLong_FromDouble(r)
                ts_native = -TS_LIMIT < r < TS_LIMIT
                if ts_native:
                    ts = <long long>r
            else:
                negative = PyUnicode_READ(k, d, ts_start) == u"-"
                j = ts_start + 1 if negative else ts_start
                if end - j <= 18:
                    while j < end:
                        ts = ts * 10 + (<long long>PyUnicode_READ(k, d, j) - 48)  # '0' is 48
                        j += 1
                    if negative:
                        ts = -ts
                    ts_obj = PyLong_FromLongLong(ts)
                    ts_native = -TS_LIMIT < ts < TS_LIMIT
                else:
                    ts_obj = int(self.text[ts_start:end])
                    ts_native = False

        name = self._name(start, name_end)
        role = self.allowed.get(name)
        if role is not None:
            if value < 0 and role in self.nonneg:
                return False
            if value != value and role in self.notnan:
                return False
        key = self.text[start:key_end]
        lineno = self.lineno
        if not has_ts:
            # The last check: a new series is entered now (the changes
            # below cannot hand the line back).
            if self.seen_series.setdefault(key, lineno) is not lineno:
                return False
        elif self.has_now:
            if not (self.now_native and ts_native):
                return False
            if ts - self.now > self.max_future:
                return False

        # Then the changes, in the caller's order.
        if role is None:
            # A sample outside the open family starts an untyped one.
            if self.fam_name is not None:
                self._close()
            self.fam_name, self.fam_line, self.fam_start = name, self.lineno, len(self.values)
            self.fam_type = self.fam_help = self.fam_unit = None
            self.allowed = {name: _EMPTY_STR}
            self.nonneg = self.notnan = self.empty
        self.names.append(name)
        self.labels.append(self.text[name_end + 1:key_end - 1] if key_end > name_end
                           else _EMPTY_STR)
        self.values.append(value)
        self.ts.append(ts_obj)
        self.lines.append(lineno)
        self.keys.append(key)
        return True

    cdef bint _take_meta(self, int kw, Py_ssize_t start, Py_ssize_t end,
                         Py_ssize_t name_end) except -1:
        cdef const void* d = self.data
        cdef int k = self.kind
        cdef Py_ssize_t j
        cdef bint new
        cdef object suffixes = None, s
        cdef str meta_name, text
        if kw == c"U":
            return False  # UNIT lines are rare: the caller reads them
        meta_name = self._name(start + 7, name_end)
        new = meta_name != self.fam_name
        if not new and self.fam_start != len(self.values) and (self.om or kw == c"T"):
            return False
        if kw == c"H":
            if not new and self.fam_help is not None:
                return False
            if PyUnicode_FindChar(self.text, u"\\", name_end + 1, end, 1) >= 0:
                return False
        elif not new and self.fam_type is not None:
            return False
        text = self.text[name_end + 1:end]
        if kw == c"T":
            suffixes = self.suffix_table.get(text)
            if suffixes is None:
                return False

        if new:
            if self.fam_name is not None:
                self._close()
            self.fam_name, self.fam_line, self.fam_start = meta_name, self.lineno, len(self.values)
            self.fam_type = self.fam_help = self.fam_unit = None
            self.allowed = {meta_name: _EMPTY_STR}
            self.nonneg = self.notnan = self.empty
        if kw == c"H":
            self.fam_help = text
        else:
            self.fam_type = text
            if suffixes is not self.plain:
                self.allowed = {meta_name + s: s for s in suffixes}
            self.nonneg = self.nonneg_table.get(text, self.empty)
            self.notnan = self.notnan_table.get(text, self.empty)
        return True

    cdef int _close(self) except -1:
        # Close the open family: here when nothing needs checking, else by
        # the caller's close.
        cdef object name = self.fam_name
        cdef object typ = self.fam_type if self.fam_type is not None else self.untyped
        if (not self.om and self.fam_unit is None and typ not in self.checked
                and self.suffix_table[typ] is self.plain and name not in self.seen_names):
            self.seen_names.add(name)
            self.family_rows.append((
                name, typ, self.fam_help if self.fam_help is not None else _EMPTY_STR,
                _EMPTY_STR, self.fam_line, self.fam_start, len(self.values),
            ))
            return 0
        self.close(name, self.fam_type, self.fam_help, self.fam_unit, self.fam_line,
                   self.fam_start)
        return 0
