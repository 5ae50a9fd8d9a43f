"""Split exposition text into rows, one per line, for the parser above.

A row is a 9-tuple of strings ``(key, name, body, value, ts, keyword,
meta_name, meta_text, other)``: the first five are set for a plain sample
line (``name{body} value [ts]``, label values free of backslashes and
quotes, single spaces between tokens), the next three for a ``# HELP``,
``# TYPE`` (or, in OpenMetrics, ``# UNIT``) line, and ``other`` holds any
other line whole, for the parser's careful scanner. Fields not set are
empty strings. The split is conservative: a line it is not sure of goes to
``other``, so it never accepts what the careful scanner would refuse.
"""

from __future__ import annotations


cdef inline bint _name_start(Py_UCS4 c) noexcept:
    return (c >= u"a" and c <= u"z") or (c >= u"A" and c <= u"Z") or c == u"_" or c == u":"


cdef inline bint _name_char(Py_UCS4 c) noexcept:
    return _name_start(c) or (c >= u"0" and c <= u"9")


cdef inline bint _lname_start(Py_UCS4 c) noexcept:
    return (c >= u"a" and c <= u"z") or (c >= u"A" and c <= u"Z") or c == u"_"


cdef inline bint _lname_char(Py_UCS4 c) noexcept:
    return _lname_start(c) or (c >= u"0" and c <= u"9")


cdef inline bint _value_char(Py_UCS4 c) noexcept:
    # [0-9a-zA-Z.+-]
    return ((c >= u"0" and c <= u"9") or (c >= u"a" and c <= u"z")
            or (c >= u"A" and c <= u"Z") or c == u"." or c == u"+" or c == u"-")


cdef inline bint _om_ts_char(Py_UCS4 c) noexcept:
    # [0-9.eE+-]
    return (c >= u"0" and c <= u"9") or c == u"." or c == u"e" or c == u"E" or c == u"+" or c == u"-"


cdef Py_ssize_t _scan_sample(str text, Py_ssize_t i, Py_ssize_t end, bint om,
                             Py_ssize_t* name_end, Py_ssize_t* key_end,
                             Py_ssize_t* value_end, Py_ssize_t* ts_start) except -2:
    # Match a plain sample line text[i:end]; return 1 and the token bounds,
    # or 0 when it is not one (the careful scanner then takes it).
    cdef Py_ssize_t j = i
    cdef Py_UCS4 c
    if j >= end or not _name_start(text[j]):
        return 0
    j += 1
    while j < end and _name_char(text[j]):
        j += 1
    name_end[0] = j
    if j < end and text[j] == u"{":
        j += 1
        while True:
            if j < end and text[j] == u"}":
                break
            if j >= end or not _lname_start(text[j]):
                return 0
            j += 1
            while j < end and _lname_char(text[j]):
                j += 1
            if j + 1 >= end or text[j] != u"=" or text[j + 1] != u'"':
                return 0
            j += 2
            while j < end:
                c = text[j]
                if c == u'"' or c == u"\\":
                    break
                j += 1
            if j >= end or text[j] != u'"':
                return 0
            j += 1
            if j < end and text[j] == u",":
                j += 1
                if om and j < end and text[j] == u"}":
                    return 0  # OpenMetrics allows no trailing comma
            elif j < end and text[j] != u"}":
                return 0
        j += 1
    key_end[0] = j
    if j >= end or text[j] != u" ":
        return 0
    j += 1
    if j >= end or not _value_char(text[j]):
        return 0
    while j < end and _value_char(text[j]):
        j += 1
    value_end[0] = j
    ts_start[0] = -1
    if j == end:
        return 1
    if text[j] != u" ":
        return 0
    j += 1
    ts_start[0] = j
    if om:
        if j >= end or not _om_ts_char(text[j]):
            return 0
        while j < end and _om_ts_char(text[j]):
            j += 1
    else:
        if j < end and text[j] == u"-":
            j += 1
        if j >= end or not (text[j] >= u"0" and text[j] <= u"9"):
            return 0
        while j < end and text[j] >= u"0" and text[j] <= u"9":
            j += 1
    return 1 if j == end else 0


cdef Py_ssize_t _scan_meta(str text, Py_ssize_t i, Py_ssize_t end, bint om,
                           Py_ssize_t* kw_end, Py_ssize_t* name_end) except -2:
    # Match '# HELP|TYPE|UNIT NAME TEXT'; return 1 and bounds or 0.
    cdef Py_ssize_t j
    if end - i < 7 or text[i] != u"#" or text[i + 1] != u" ":
        return 0
    if text.startswith(u"HELP ", i + 2) or text.startswith(u"TYPE ", i + 2) or (
        om and text.startswith(u"UNIT ", i + 2)
    ):
        kw_end[0] = i + 6
    else:
        return 0
    j = i + 7
    if j >= end or not _name_start(text[j]):
        return 0
    j += 1
    while j < end and _name_char(text[j]):
        j += 1
    if j >= end or text[j] != u" ":
        return 0
    name_end[0] = j
    return 1


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
    cdef Py_ssize_t start = 0, end, name_end = 0, key_end = 0, value_end = 0
    cdef Py_ssize_t ts_start = -1, kw_end = 0
    cdef list rows = []
    cdef str empty = u""
    while True:
        end = text.find(u"\n", start)
        if end < 0:
            end = n
        if _scan_sample(text, start, end, om, &name_end, &key_end, &value_end, &ts_start):
            rows.append((
                text[start:key_end],
                text[start:name_end],
                text[name_end + 1:key_end - 1] if key_end > name_end else empty,
                text[key_end + 1:value_end],
                text[ts_start:end] if ts_start >= 0 else empty,
                empty, empty, empty, empty,
            ))
        elif _scan_meta(text, start, end, om, &kw_end, &name_end):
            rows.append((
                empty, empty, empty, empty, empty,
                text[start + 2:kw_end],
                text[kw_end + 1:name_end],
                text[name_end + 1:end],
                empty,
            ))
        else:
            rows.append((empty, empty, empty, empty, empty, empty, empty, empty,
                         text[start:end]))
        if end == n:
            break
        start = end + 1
    return rows
