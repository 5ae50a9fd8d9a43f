"""Parse the Prometheus text format 0.0.4 and OpenMetrics 1.0 text format.

:func:`parse` reads one exposition (the body of a ``/metrics`` response) into
flat columns, one entry per sample, plus a light record per metric family, so
that :meth:`ParseResult.to_batch` can hand the samples to the engine as one
sample batch without building an object per sample.

Metric types map onto obscore's metric kinds as follows:

================  ===================================================================
exposition type   obscore kind of each sample name
================  ===================================================================
counter           ``<name>_total`` (OpenMetrics) or ``<name>`` (0.0.4): counter;
                  ``<name>_created``: gauge (creation time, seconds)
gauge             gauge
histogram         histogram: ``_bucket`` (with ``le``), ``_sum``, ``_count``;
                  ``_created``: gauge
gaugehistogram    gauge for ``_bucket``, ``_gcount`` and ``_gsum``: these buckets
                  may go down, so rates over them mean nothing
summary           gauge for the quantile samples, counter for ``_sum`` and
                  ``_count``, gauge for ``_created``
info              gauge ``<name>_info``, always 1; the labels carry the data
stateset          gauge per state (0 or 1), the state in the label ``<name>``
unknown, untyped  gauge: nothing promises that the value only grows
================  ===================================================================
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from typing import Literal, NamedTuple

import numpy as np
import pyarrow as pa

from obscore._native.expo import (
    ExpoScan,
    expo_groups_ok,
    expo_has_long_line,
    expo_histogram_ok,
    expo_label_dicts,
    expo_samples,
)
from obscore.errors import InvalidSampleError
from obscore.model import MetricKind, MetricSpec, SeriesIndex, sample_table

logger = logging.getLogger(__name__)

Format = Literal["prometheus", "openmetrics"]

#: ``Accept`` header for a scrape: OpenMetrics first, then text 0.0.4.
ACCEPT_HEADER = (
    "application/openmetrics-text;version=1.0.0;q=0.9,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

# --- grammar pieces --------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LNAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_PLAIN_PAIR = _LNAME + r'="[^"\\]*"'

# NOTE: the line loop runs in obscore._native.expo.ExpoScan, which classifies
# each line as these two patterns' findall does (they are its specification,
# and tests/ingest/test_expo_rows.py holds it to them).  The first alternative
# takes sample lines whose label values hold no backslash or quote and whose
# tokens are separated by single spaces (every sample line of the four real
# dumps in shared/data/exposition/real), the second HELP/TYPE/UNIT lines.  The
# scan takes such a line into the columns when it passes every check of
# _Parser._line, and hands any other line (the last group, or one that fails a
# check) to _Parser._line, which reads it with the careful scanner
# (_scan_sample, _Parser._comment) and words the error; the same holds one
# level up for whole histogram families (expo_groups_ok, expo_histogram_ok
# pass only families the Python checks pass).  tests/ingest/test_expo_scan.py
# holds the scan to the Python loop.  On the 100,000-line synthetic exposition
# of benchmarks/test_exposition.py, parse() went from 0.51 s (Python loop over
# native rows) to 0.13 s of CPU time; see the benchmark for the ratios to
# prometheus_client.
_ROWS_PROM = re.compile(
    rf"^(?:(({_NAME})(?:\{{((?:{_PLAIN_PAIR}(?:,{_PLAIN_PAIR})*,?)?)\}})?)"
    r" ([0-9a-zA-Z.+-]+)(?: (-?[0-9]+))?"
    rf"|# (HELP|TYPE) ({_NAME}) (.*)"
    r"|(.*))$",
    re.MULTILINE,
)
_ROWS_OM = re.compile(
    rf"^(?:(({_NAME})(?:\{{((?:{_PLAIN_PAIR}(?:,{_PLAIN_PAIR})*)?)\}})?)"
    r" ([0-9a-zA-Z.+-]+)(?: ([0-9.eE+-]+))?"
    rf"|# (HELP|TYPE|UNIT) ({_NAME}) (.*)"
    r"|(.*))$",
    re.MULTILINE,
)
_NAME_RE = re.compile(_NAME)
_LNAME_RE = re.compile(_LNAME)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_BLANKS = re.compile(r"[ \t]*")
_VALUE_TOKEN = re.compile(r"[0-9a-zA-Z.+-]+")
_OM_TS_TOKEN = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PROM_TS_TOKEN = re.compile(r"-?[0-9]+")
_UNIT_RE = re.compile(r"[a-zA-Z0-9_:]*")
_ESCAPE = re.compile(r'\\([\\"n])')
_HELP_ESCAPE_PROM = re.compile(r"\\([\\n])")
_SURROGATE = re.compile("[\udc80-\udcff]")
_UNESCAPED = {"\\": "\\", '"': '"', "n": "\n"}

# Sample-name suffixes allowed in a family of each type.
_PLAIN = ("",)
_SUFFIXES_OM: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": _PLAIN,
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": _PLAIN,
    "unknown": _PLAIN,
}
_SUFFIXES_PROM: dict[str, tuple[str, ...]] = {
    "counter": _PLAIN,
    "gauge": _PLAIN,
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
    "untyped": _PLAIN,
}
_EMPTY: frozenset[str] = frozenset()
# Suffixes whose value must not be negative / must not be NaN, by type.
_NONNEG_OM = {
    "counter": frozenset({"_total"}),
    "histogram": frozenset({"_bucket", "_count", "_sum"}),
    "gaugehistogram": frozenset({"_bucket", "_gcount"}),
    "summary": frozenset({"", "_count", "_sum"}),
}
_NOTNAN_OM = {
    "counter": frozenset({"_total"}),
    "histogram": frozenset({"_bucket", "_count", "_sum"}),
    "gaugehistogram": frozenset({"_bucket", "_gcount", "_gsum"}),
    "summary": frozenset({"_count", "_sum"}),
}
_NONNEG_PROM = {
    "counter": frozenset({""}),
    "histogram": frozenset({"_bucket", "_count"}),
    "summary": frozenset({"_count"}),
}
# Types whose 0.0.4 families get a whole-family check when they close.
_CHECKED_PROM = frozenset({"histogram", "summary"})

_KIND = {"counter": MetricKind.COUNTER, "histogram": MetricKind.HISTOGRAM}

# False reads every line with _Parser._line instead of the native scan; the
# tests set it to hold the scan to the Python loop (same results, same errors).
_NATIVE_SCAN = True

# A line replaced by this marker was reported already (bad UTF-8, too long).
_SKIPPED = "\x00skipped\x00"


class ExpositionSample(NamedTuple):
    """One sample line: sample name, labels, value and time (ms, or None)."""

    name: str
    labels: dict[str, str]
    value: float
    ts_ms: int | None


class Exemplar(NamedTuple):
    """An OpenMetrics exemplar of the sample at position ``sample``."""

    line: int
    sample: int
    labels: dict[str, str]
    value: float
    ts_ms: int | None


class _Columns:
    """The samples of one exposition, one list per field, in line order.

    ``labels`` holds the text between the braces as written (a str) until a
    caller asks for the dict, which then replaces it.
    """

    __slots__ = ("keys", "labels", "lines", "names", "ts", "values")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.labels: list[str | dict[str, str]] = []
        self.values: list[float] = []
        self.ts: list[int | None] = []
        self.lines: list[int] = []
        self.keys: list[str] = []

    def label_dict(self, i: int) -> dict[str, str]:
        labels = self.labels[i]
        if isinstance(labels, str):
            (labels,) = expo_label_dicts(self.labels, i, i + 1)
        return labels

    def label_dicts(self, start: int, stop: int) -> list[dict[str, str]]:
        return expo_label_dicts(self.labels, start, stop)

    def truncate(self, n: int) -> None:
        for column in (
            self.names,
            self.labels,
            self.values,
            self.ts,
            self.lines,
            self.keys,
        ):
            del column[n:]


class Family:
    """A metric family: its metadata and the range of its samples.

    Attributes
    ----------
    name : str
        Family name as in ``# TYPE`` (for an untyped sample, its name).
    type : str
        Type as written; ``untyped`` (0.0.4) or ``unknown`` (OpenMetrics)
        when absent.
    help, unit : str
        Unescaped HELP text and UNIT, empty when absent.
    line : int
        Line where the family starts.
    start, stop : int
        Its samples are ``start:stop`` of the exposition's samples.
    """

    __slots__ = ("_columns", "help", "line", "name", "start", "stop", "type", "unit")

    def __init__(
        self,
        name: str,
        type: str,
        help: str,
        unit: str,
        line: int,
        start: int,
        stop: int,
        columns: _Columns,
    ) -> None:
        self.name, self.type, self.help, self.unit = name, type, help, unit
        self.line, self.start, self.stop, self._columns = line, start, stop, columns

    @property
    def kind(self) -> MetricKind:
        """obscore kind of the family (see the module notes)."""
        return _KIND.get(self.type, MetricKind.GAUGE)

    @property
    def samples(self) -> list[ExpositionSample]:
        """The family's samples, built on demand."""
        c = self._columns
        return expo_samples(
            ExpositionSample,
            c.names,
            c.labels,
            c.values,
            c.ts,
            self.start,
            self.stop,
        )

    def __len__(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return (
            f"Family(name={self.name!r}, type={self.type!r}, help={self.help!r}, "
            f"unit={self.unit!r}, line={self.line}, samples={len(self)})"
        )


class ParseResult:
    """What :func:`parse` read from one exposition.

    Attributes
    ----------
    format : str
        ``"prometheus"`` (text 0.0.4) or ``"openmetrics"``.
    errors : list of (int, str)
        ``(line number, message)`` of each rejected line or family; empty
        unless ``lenient=True``.
    exemplars : list of Exemplar
        OpenMetrics exemplars, kept apart from the samples.
    n_lines : int
        Lines read.
    default_ts_ms : int or None
        Time :meth:`to_batch` gives to samples written without one.
    """

    __slots__ = (
        "_columns",
        "_families",
        "_family_rows",
        "default_ts_ms",
        "errors",
        "exemplars",
        "format",
        "n_lines",
    )

    def __init__(
        self,
        format: str,
        family_rows: list[tuple[str, str, str, str, int, int, int]],
        errors: list[tuple[int, str]],
        exemplars: list[Exemplar],
        n_lines: int,
        default_ts_ms: int | None,
        columns: _Columns,
    ) -> None:
        self.format = format
        self.errors = errors
        self.exemplars = exemplars
        self.n_lines = n_lines
        self.default_ts_ms = default_ts_ms
        self._columns = columns
        self._family_rows = family_rows
        self._families: list[Family] | None = None

    def __repr__(self) -> str:
        return (
            f"ParseResult(format={self.format!r}, families={self.n_families}, "
            f"samples={self.n_samples}, errors={self.n_errors})"
        )

    @property
    def families(self) -> list[Family]:
        """Metric families in the order they appear."""
        if self._families is None:
            c = self._columns
            self._families = [Family(*row, c) for row in self._family_rows]
        return self._families

    @property
    def n_samples(self) -> int:
        return len(self._columns.values)

    @property
    def n_families(self) -> int:
        return len(self._family_rows)

    @property
    def n_errors(self) -> int:
        return len(self.errors)

    def samples(self) -> Iterator[ExpositionSample]:
        """Every sample, in line order."""
        c = self._columns
        samples = expo_samples(
            ExpositionSample, c.names, c.labels, c.values, c.ts, 0, len(c.values)
        )
        return iter(samples)

    def to_batch(
        self,
        index: SeriesIndex,
        default_ts_ms: int | None = None,
        *,
        cache: dict[str, int] | None = None,
    ) -> pa.Table:
        """Turn the samples into a sample batch, registering their series.

        Parameters
        ----------
        index : SeriesIndex
            Receives each series (sample name and labels) not yet in it.
        default_ts_ms : int, optional
            Time (ms since the epoch) of samples written without one;
            defaults to the ``default_ts_ms`` given to :func:`parse`.
        cache : dict, optional
            Maps the text of a series as written to its id.  Pass the same
            dict with the same ``index`` on every scrape of one target to skip
            hashing known series again; never share it across indexes.

        Returns
        -------
        pa.Table
            ``SAMPLE_SCHEMA`` rows in line order, NaN and +-Inf values kept;
            exemplars are left out.

        Raises
        ------
        InvalidSampleError
            When a sample has no timestamp and no default time is known, or a
            timestamp does not fit int64 milliseconds.
        """
        c = self._columns
        default = self.default_ts_ms if default_ts_ms is None else default_ts_ms
        n_missing = c.ts.count(None)
        if n_missing and default is None:
            i = c.ts.index(None)
            raise InvalidSampleError(
                f"line {c.lines[i]}: sample {c.names[i]!r} has no timestamp "
                "and no default_ts_ms was given"
            )
        if cache is None:
            cache = {}

        get, add, names, label_dict = cache.get, index.add, c.names, c.label_dict
        ids: list[int] = []
        append = ids.append
        for i, key in enumerate(c.keys):
            sid = get(key)
            if sid is None:
                sid = cache[key] = add(names[i], label_dict(i))
            append(sid)

        ts_list = c.ts if not n_missing else [default if t is None else t for t in c.ts]
        try:
            ts = np.array(ts_list, dtype=np.int64)
        except OverflowError:
            i = next(j for j, t in enumerate(ts_list) if not -(2**63) <= t < 2**63)  # type: ignore[operator]
            raise InvalidSampleError(
                f"line {c.lines[i]}: timestamp {ts_list[i]} ms does not fit int64 milliseconds"
            ) from None
        values = np.array(c.values, dtype=np.float64)
        return sample_table(np.array(ids, dtype=np.uint64), ts, values)

    def specs(self) -> list[MetricSpec]:
        """Metric specs that declare the sample names of this exposition.

        Returns
        -------
        list of MetricSpec
            One spec per sample name that occurs (one per family for
            histograms, whose ``_bucket``/``_sum``/``_count`` map to it), with
            the kind given in the module notes, the label names seen and, for
            histograms, the finite bucket bounds of the first series.
        """
        c = self._columns
        out: dict[str, MetricSpec] = {}
        for fam in self.families:
            label_names: dict[str, set[str]] = {}
            for i in range(fam.start, fam.stop):
                label_names.setdefault(c.names[i], set()).update(c.label_dict(i))
            if fam.type == "histogram":
                names = label_names.pop(f"{fam.name}_bucket", set()) - {"le"}
                for suffix in ("_sum", "_count"):
                    names |= label_names.pop(fam.name + suffix, set())
                out[fam.name] = MetricSpec(
                    fam.name,
                    MetricKind.HISTOGRAM,
                    tuple(sorted(names)),
                    fam.help,
                    fam.unit,
                    _first_bounds(fam),
                )
            for name, labels in label_names.items():
                kind = _sample_kind(fam, name)
                out[name] = MetricSpec(
                    name, kind, tuple(sorted(labels)), fam.help, fam.unit
                )
        return list(out.values())


def _sample_kind(fam: Family, name: str) -> MetricKind:
    suffix = name[len(fam.name) :]
    if fam.type == "counter" and suffix in ("_total", ""):
        return MetricKind.COUNTER
    if fam.type in ("summary", "histogram") and suffix in ("_sum", "_count"):
        return MetricKind.COUNTER
    return MetricKind.GAUGE


def _first_bounds(fam: Family) -> tuple[float, ...]:
    bounds: list[float] = []
    group = None
    for s in fam.samples:
        if s.name != f"{fam.name}_bucket":
            continue
        key = {k: v for k, v in s.labels.items() if k != "le"}
        if group is not None and key != group:
            break
        group = key
        le = float(s.labels["le"])
        if math.isfinite(le):
            bounds.append(le)
    return tuple(bounds)


class _Bad(Exception):
    """A line cannot be accepted; the message lacks the line number."""


class _BadFamily(Exception):
    """A family is inconsistent; args are (line, message)."""


def sniff_format(text: str) -> Format:
    """``"openmetrics"`` when the text ends with ``# EOF``, else ``"prometheus"``."""
    return "openmetrics" if text[-8:].endswith(("# EOF\n", "# EOF")) else "prometheus"


def format_from_content_type(content_type: str | None) -> Format | None:
    """The format a ``Content-Type`` header names, or None when it names neither."""
    if not content_type:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/openmetrics-text":
        return "openmetrics"
    if media == "text/plain":
        return "prometheus"
    return None


def parse(
    text: str | bytes,
    *,
    format: Format | None = None,
    lenient: bool = False,
    default_ts_ms: int | None = None,
    now_ms: int | None = None,
    max_future_ms: int = 600_000,
    max_line_length: int = 1 << 20,
) -> ParseResult:
    """Parse one exposition in the Prometheus text or OpenMetrics format.

    Parameters
    ----------
    text : str or bytes
        The exposition; bytes must be UTF-8.
    format : {"prometheus", "openmetrics"}, optional
        Text format 0.0.4 or OpenMetrics 1.0; None picks OpenMetrics when the
        text ends with ``# EOF`` (see :func:`sniff_format`).
    lenient : bool
        False raises on the first bad line.  True skips bad lines (and
        inconsistent families as a whole), keeps everything else and lists
        what it skipped in ``errors``.
    default_ts_ms : int, optional
        Kept on the result as the time of samples written without one.
    now_ms : int, optional
        The current time (ms); when given, a timestamp more than
        ``max_future_ms`` ahead of it is an error.
    max_future_ms : int
        How far ahead of ``now_ms`` a timestamp may be: 10 minutes by default.
    max_line_length : int
        Longest line accepted, in characters: 1 Mi by default.

    Returns
    -------
    ParseResult
        Families, samples in flat columns, exemplars and what was skipped.

    Raises
    ------
    InvalidSampleError
        Unless ``lenient``: the first bad line, with its number, what was
        expected and what was found.

    Notes
    -----
    Values are float64; NaN and +-Inf are kept.  Timestamps become integer
    milliseconds: OpenMetrics seconds are rounded to the nearest millisecond,
    so two timestamps less than 1 ms apart become equal.  Beyond the grammar,
    both formats reject:

    - a counter, histogram bucket or ``_count`` sample below zero;
    - histogram buckets out of ``le`` order, bucket counts that decrease, a
      series without an ``le="+Inf"`` bucket or whose ``_count`` differs from it;
    - a series written twice without a timestamp.  Series are compared as
      written, so the same labels in another order slip through here; the
      store drops the repeat (same series, same time) when the batch arrives;
    - a family whose lines are not contiguous, or that reuses the name of an
      earlier family.

    OpenMetrics also enforces its own rules (``# EOF`` last, no blank lines,
    metadata before samples, time never going back within a series,
    exemplars only on ``_total`` and ``_bucket``, ``_sum`` with ``_count``,
    ...).  The newer quoted (UTF-8) metric and label names are not read.

    Examples
    --------
    >>> r = parse('# TYPE up gauge\\nup{job="a"} 1\\n')
    >>> r.families[0].samples
    [ExpositionSample(name='up', labels={'job': 'a'}, value=1.0, ts_ms=None)]
    """
    errors: list[tuple[int, str]] = []
    lines = None
    if isinstance(text, (bytes, bytearray, memoryview)):
        text, lines = _decode(bytes(text), lenient, errors)
    fmt = sniff_format(text) if format is None else format
    if fmt not in ("prometheus", "openmetrics"):
        raise ValueError(
            f"format must be 'prometheus', 'openmetrics' or None, got {format!r}"
        )
    om = fmt == "openmetrics"

    if not om and "\r" in text:
        text = text.replace("\r\n", "\n")
        lines = None if lines is None else [line.removesuffix("\r") for line in lines]
    if len(text) > max_line_length and expo_has_long_line(text, max_line_length):
        lines = text.split("\n") if lines is None else lines
        _mark_long_lines(lines, max_line_length, lenient, errors)
    if lines is not None:
        text = "\n".join(lines)

    parser = _Parser(om, lenient, errors, now_ms, max_future_ms)
    n_lines = parser.run(text, fast=_NATIVE_SCAN)
    if om and not parser.eof:
        parser.report(
            n_lines + 1, "missing '# EOF' at the end of an OpenMetrics exposition"
        )

    result = ParseResult(
        fmt,
        parser.family_rows,
        errors,
        parser.exemplars,
        n_lines,
        default_ts_ms,
        parser.columns,
    )
    if errors:
        errors.sort(key=lambda e: e[0])
        logger.warning(
            "exposition: %d bad lines or families skipped, %d samples kept "
            "(first: line %d: %s)",
            len(errors),
            result.n_samples,
            errors[0][0],
            errors[0][1],
        )
    return result


def _decode(
    data: bytes, lenient: bool, errors: list[tuple[int, str]]
) -> tuple[str, list[str] | None]:
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        if not lenient:
            where, message = _utf8_problem(data, exc.start)
            raise InvalidSampleError(f"line {where}: {message}") from None
    # Keep every line that decodes; report each one that does not.
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    start = 0
    for i, line in enumerate(lines):
        bad = _SURROGATE.search(line)
        if bad is not None:
            offset = len(line[: bad.start()].encode("utf-8", "surrogateescape"))
            errors.append(_utf8_problem(data, start + offset))
            lines[i] = _SKIPPED
        start += len(line.encode("utf-8", "surrogateescape")) + 1
    return text, lines


def _utf8_problem(data: bytes, pos: int) -> tuple[int, str]:
    line = data.count(b"\n", 0, pos) + 1
    column = pos - (data.rfind(b"\n", 0, pos) + 1) + 1
    return line, (
        f"invalid UTF-8 at byte {column} of the line (0x{data[pos]:02x}); "
        "the exposition must be UTF-8 text"
    )


def _mark_long_lines(
    lines: list[str], limit: int, lenient: bool, errors: list[tuple[int, str]]
) -> None:
    for i, line in enumerate(lines):
        if len(line) > limit:
            message = (
                f"line is {len(line)} characters long, over the limit of {limit} "
                "(max_line_length)"
            )
            if not lenient:
                raise InvalidSampleError(f"line {i + 1}: {message}")
            errors.append((i + 1, message))
            lines[i] = _SKIPPED


def _parse_value(token: str, where: str) -> float:
    if "_" not in token and _VALUE_TOKEN.fullmatch(token) is not None:
        try:
            return float(token)
        except ValueError:
            pass
    raise _Bad(f"value {token!r} of {where} is not a number")


def _parse_ts(token: str, om: bool) -> int:
    if om:
        if _OM_TS_TOKEN.fullmatch(token) is None:
            raise _Bad(f"timestamp {token!r} is not a number of seconds")
        seconds = float(token)
        if not math.isfinite(seconds):
            raise _Bad(f"timestamp {token!r} is not a finite number of seconds")
        return round(seconds * 1000.0)
    if _PROM_TS_TOKEN.fullmatch(token) is None:
        raise _Bad(f"timestamp {token!r} is not an integer number of milliseconds")
    return int(token)


def _unescape(text: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPED[m.group(1)], text)


def _unescape_help(text: str, om: bool) -> str:
    if "\\" not in text:
        return text
    pattern = _ESCAPE if om else _HELP_ESCAPE_PROM
    return pattern.sub(lambda m: _UNESCAPED[m.group(1)], text)


def _series_text(name: str, labels: dict[str, str]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return f"{name}{{{body}}}" if labels else name


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _scan_labels(line: str, pos: int, om: bool) -> tuple[dict[str, str], int]:
    """Read a label set from just after ``{``; return it and the index after ``}``."""
    labels: dict[str, str] = {}
    blanks = (lambda p: p) if om else (lambda p: _BLANKS.match(line, p).end())  # type: ignore[union-attr]
    pos = blanks(pos)
    if line.startswith("}", pos):
        return labels, pos + 1
    while True:
        m = _LNAME_RE.match(line, pos)
        if m is None:
            raise _Bad(
                f"expected a label name at column {pos + 1}, found {line[pos : pos + 12]!r}"
            )
        lname = m.group()
        pos = blanks(m.end())
        if not line.startswith("=", pos):
            raise _Bad(f"expected '=' after label name {lname!r} at column {pos + 1}")
        pos = blanks(pos + 1)
        m = _QUOTED.match(line, pos)
        if m is None:
            raise _Bad(
                f"label {lname!r}: expected a value in double quotes at column {pos + 1}, "
                f"found {line[pos : pos + 12]!r}"
            )
        raw = m.group(1)
        if lname in labels:
            raise _Bad(f"label {lname!r} appears twice in one label set")
        labels[lname] = _unescape(raw) if "\\" in raw else raw
        pos = blanks(m.end())
        if line.startswith("}", pos):
            return labels, pos + 1
        if not line.startswith(",", pos):
            raise _Bad(
                f"expected ',' or '}}' after label {lname!r} at column {pos + 1}"
            )
        pos = blanks(pos + 1)
        if not om and line.startswith("}", pos):
            return labels, pos + 1


def _scan_exemplar(text: str, om: bool) -> tuple[dict[str, str], float, int | None]:
    if not text.startswith("{"):
        raise _Bad(
            f"exemplar must start with a label set in braces, found {text[:12]!r}"
        )
    labels, pos = _scan_labels(text, 1, om)
    size = sum(len(k) + len(v) for k, v in labels.items())
    if size > 128:
        raise _Bad(f"exemplar label set is {size} characters long; the limit is 128")
    tokens = text[pos:].split(" ")
    if tokens[0] != "" or len(tokens) not in (2, 3) or "" in tokens[1:]:
        raise _Bad(
            f"exemplar must be ' # {{labels}} value [timestamp]', found {text!r}"
        )
    value = _parse_value(tokens[1], "the exemplar")
    ts = _parse_ts(tokens[2], True) if len(tokens) == 3 else None
    return labels, value, ts


def _scan_sample(
    line: str, om: bool
) -> tuple[str, dict[str, str], str, str | None, str | None]:
    """The careful path: name, labels, value token, ts token, exemplar text."""
    m = _NAME_RE.match(line)
    if m is None:
        if line.lstrip(" \t").startswith("#") or not line.strip():
            raise _Bad(
                f"expected a sample or a '# ' metadata line, found {line[:40]!r}"
            )
        raise _Bad(f"expected a metric name at column 1, found {line[:40]!r}")
    name = m.group()
    pos = m.end()
    labels: dict[str, str] = {}
    if not om:
        after_blanks = _BLANKS.match(line, pos).end()  # type: ignore[union-attr]
        if line.startswith("{", after_blanks):
            pos = after_blanks
    if line.startswith("{", pos):
        labels, pos = _scan_labels(line, pos + 1, om)
    rest = line[pos:]
    exemplar = None
    if rest and rest[0] not in " \t":
        after = "its labels" if labels or line[pos - 1] == "}" else "the metric name"
        raise _Bad(
            f"unexpected {rest[0]!r} at column {pos + 1} after {after} of {name!r}; "
            "expected a space and the value"
        )
    if om:
        if not rest.startswith(" ") or rest == " ":
            raise _Bad(f"sample {name!r} has no value")
        head, sep, exemplar = rest[1:].partition(" # ")
        if not sep:
            exemplar = None
        tokens = head.split(" ")
        if tokens[-1] == "#":
            raise _Bad(
                f"'#' after the value of {name!r} must be followed by ' {{labels}} value'"
            )
        if "" in tokens or len(tokens) > 2:
            raise _Bad(
                f"expected 'value [timestamp]' separated by single spaces after {name!r}, "
                f"found {rest[1:]!r}"
            )
    else:
        tokens = rest.split()
        if not tokens:
            raise _Bad(f"sample {name!r} has no value")
        if len(tokens) > 2:
            raise _Bad(
                f"unexpected text {' '.join(tokens[2:])!r} after the timestamp of {name!r}"
            )
    return name, labels, tokens[0], tokens[1] if len(tokens) > 1 else None, exemplar


class _Parser:
    """One parse: the line loop, the columns it fills and the family checks."""

    def __init__(
        self,
        om: bool,
        lenient: bool,
        errors: list[tuple[int, str]],
        now_ms: int | None,
        max_future_ms: int,
    ) -> None:
        self.om = om
        self.lenient = lenient
        self.errors = errors
        self.now_ms = now_ms
        self.max_future_ms = max_future_ms
        self.columns = _Columns()
        self.family_rows: list[tuple[str, str, str, str, int, int, int]] = []
        self.exemplars: list[Exemplar] = []
        self.eof = False
        self.seen_names: set[str] = set()
        self.suffixes = _SUFFIXES_OM if om else _SUFFIXES_PROM

    def report(self, line: int, message: str) -> None:
        if not self.lenient:
            raise InvalidSampleError(f"line {line}: {message}")
        self.errors.append((line, message))

    # --- the line loop -----------------------------------------------------------

    def run(self, text: str, *, fast: bool = True) -> int:
        """Read every line of ``text``; return the number of lines.

        The native scan (:class:`obscore._native.expo.ExpoScan`) takes the
        plain lines that pass every check into the columns and hands the
        others to :meth:`_line`, one at a time.  The open family lives on the
        scan (``fam_*``, ``allowed``: sample name -> suffix, ``nonneg`` /
        ``notnan``: suffixes whose value is checked); :meth:`close` checks and
        records a family when the next one starts.  ``fast=False`` hands every
        line to :meth:`_line` (the tests compare both ways).
        """
        c = self.columns
        scan = ExpoScan(
            text,
            self.om,
            c.names,
            c.labels,
            c.values,
            c.ts,
            c.lines,
            c.keys,
            self.family_rows,
            self.seen_names,
            self.suffixes,
            _NONNEG_OM if self.om else _NONNEG_PROM,
            _NOTNAN_OM if self.om else {},
            _PLAIN,
            _EMPTY,
            _CHECKED_PROM,
            self.close,
            self.now_ms,
            self.max_future_ms,
            fast,
        )
        seen_series: dict[str, int] = scan.seen_series
        next_row, line = scan.next_row, self._line
        while (row := next_row()) is not None:
            try:
                if line(scan, row, scan.lineno, seen_series):
                    break
            except _Bad as exc:
                if not self.lenient:
                    raise InvalidSampleError(f"line {scan.lineno}: {exc}") from None
                self.errors.append((scan.lineno, str(exc)))
        if self.eof and scan.lineno < scan.n_rows:
            self.report(scan.lineno + 1, "text after '# EOF'; it must be the last line")
        if scan.fam_name is not None:
            self.close(
                scan.fam_name,
                scan.fam_type,
                scan.fam_help,
                scan.fam_unit,
                scan.fam_line,
                scan.fam_start,
            )
        return scan.n_rows

    def _line(
        self,
        s: ExpoScan,
        row: tuple[str, str, str, str, str, str, str, str, str],
        lineno: int,
        seen_series: dict[str, int],
    ) -> bool:
        """Read one line the scan handed back; True at ``# EOF``.

        Raises ``_Bad`` for a bad line, after which nothing of it is kept.
        """
        om = self.om
        values = self.columns.values
        key, name, body, vtok, ttok, keyword, meta_name, meta_text, other = row
        if name:
            # A plain sample line: the labels stay text until someone asks.
            labels: str | dict[str, str] = body
            if "," in body:
                # Values hold no quote here, so splitting at quotes
                # leaves ',name=' pieces; a repeat means a repeated label.
                pieces = ("," + body).split('"')[::2]
                if len(set(pieces)) != len(pieces):
                    raise _Bad(f"a label name appears twice in {key!r}")
            try:
                value = float(vtok)
            except ValueError:
                raise _Bad(f"value {vtok!r} of {key!r} is not a number") from None
            if not ttok:
                ts = None
            elif om:
                try:
                    ts = round(float(ttok) * 1000.0)
                except (ValueError, OverflowError):
                    ts = _parse_ts(ttok, om)
            else:
                ts = int(ttok)
            exemplar = None
        elif not keyword:
            if other == _SKIPPED:
                return False
            line = other if om else other.strip(" \t")
            if line and line[0] != "#":
                name, labels, vtok, ts_text, exemplar = _scan_sample(line, om)
                key = _series_text(name, labels)
                value = _parse_value(vtok, repr(key))
                ts = None if ts_text is None else _parse_ts(ts_text, om)
            else:
                meta = self._comment(line)
                if meta is None:
                    return False
                if meta is _EOF:
                    return True
                keyword, meta_name, meta_text = meta  # type: ignore[misc]
        if keyword:
            self._meta(s, keyword, meta_name, meta_text, lineno)
            return False

        role = s.allowed.get(name)
        if role is None:
            # A sample outside the open family starts an untyped one.
            self._open_family(s, name, lineno)
            role = ""
        if role in s.nonneg and value < 0:
            raise _Bad(
                f"{s.fam_type} {s.fam_name!r} sample {key!r} must not be negative, "
                f"got {value!r}"
            )
        if role in s.notnan and value != value:  # noqa: PLR0124 (NaN, no call)
            raise _Bad(f"{s.fam_type} {s.fam_name!r} sample {key!r} must not be NaN")
        if ts is None:
            first = seen_series.get(key)
            if first is not None:
                raise _Bad(
                    f"duplicate series {key!r}, first seen at line {first}; "
                    "a series may appear only once without a timestamp"
                )
            seen_series[key] = lineno
        elif self.now_ms is not None and ts - self.now_ms > self.max_future_ms:
            raise _Bad(
                f"timestamp {ts} ms of {key!r} is {ts - self.now_ms} ms ahead of now_ms "
                f"{self.now_ms}; the limit is {self.max_future_ms} ms (max_future_ms)"
            )
        if exemplar is not None:
            self._exemplar(exemplar, name, role, s.fam_name, s.fam_type, lineno)

        c = self.columns
        c.names.append(name)
        c.labels.append(labels)
        values.append(value)
        c.ts.append(ts)
        c.lines.append(lineno)
        c.keys.append(key)
        return False

    def _open_family(self, s: ExpoScan, name: str, lineno: int) -> None:
        """Close the open family, if any, and open an untyped one named ``name``."""
        if s.fam_name is not None:
            self.close(s.fam_name, s.fam_type, s.fam_help, s.fam_unit, s.fam_line, s.fam_start)
        s.fam_name, s.fam_line, s.fam_start = name, lineno, len(self.columns.values)
        s.fam_type = s.fam_help = s.fam_unit = None
        s.allowed, s.nonneg, s.notnan = {name: ""}, _EMPTY, _EMPTY

    def _meta(
        self, s: ExpoScan, keyword: str, meta_name: str, meta_text: str, lineno: int
    ) -> None:
        """Read a HELP, TYPE or UNIT line into the open family (or a new one)."""
        values = self.columns.values
        if meta_name != s.fam_name:
            self._open_family(s, meta_name, lineno)
        elif s.fam_start != len(values) and (self.om or keyword == "TYPE"):
            raise _Bad(
                f"'# {keyword}' for {meta_name!r} after its samples; "
                "metadata must come first"
            )
        if keyword == "HELP":
            if s.fam_help is not None:
                raise _Bad(f"second '# HELP' for {meta_name!r}")
            s.fam_help = (
                meta_text
                if "\\" not in meta_text
                else _unescape_help(meta_text, self.om)
            )
        elif keyword == "TYPE":
            if s.fam_type is not None:
                raise _Bad(f"second '# TYPE' for {meta_name!r}")
            suffixes = self.suffixes.get(meta_text)
            if suffixes is None:
                expected = ", ".join(sorted(self.suffixes))
                raise _Bad(
                    f"unknown type {meta_text!r} for {meta_name!r}; "
                    f"expected one of {expected}"
                )
            s.fam_type = meta_text
            if suffixes is not _PLAIN:
                s.allowed = {meta_name + x: x for x in suffixes}
            s.nonneg = (_NONNEG_OM if self.om else _NONNEG_PROM).get(meta_text, _EMPTY)
            s.notnan = (_NOTNAN_OM if self.om else {}).get(meta_text, _EMPTY)
        else:
            if s.fam_unit is not None:
                raise _Bad(f"second '# UNIT' for {meta_name!r}")
            if _UNIT_RE.fullmatch(meta_text) is None:
                raise _Bad(f"unit {meta_text!r} of {meta_name!r} is not a valid unit")
            s.fam_unit = meta_text

    def close(
        self,
        name: str,
        typ: str | None,
        help: str | None,
        unit: str | None,
        line: int,
        start: int,
    ) -> None:
        """Check a family that ended and keep it, or drop it when lenient."""
        typ = typ or ("unknown" if self.om else "untyped")
        row = (name, typ, help or "", unit or "", line, start, len(self.columns.values))
        try:
            seen = self.seen_names
            suffixes = self.suffixes[typ]
            if suffixes is _PLAIN:
                if name in seen:
                    raise _BadFamily(line, _clash(name, typ, name))
                seen.add(name)
            else:
                names = {name, *(name + s for s in suffixes)}
                for taken in sorted(names & seen):
                    raise _BadFamily(line, _clash(name, typ, taken))
                seen |= names
            if self.om or typ in _CHECKED_PROM or unit:
                self._check_family(Family(*row, self.columns))
        except _BadFamily as exc:
            bad_line, message = exc.args
            if not self.lenient:
                raise InvalidSampleError(f"line {bad_line}: {message}") from None
            self.errors.append((bad_line, f"{message}; family {name!r} dropped"))
            self.columns.truncate(start)
            while self.exemplars and self.exemplars[-1].sample >= start:
                self.exemplars.pop()
        else:
            self.family_rows.append(row)

    def _comment(self, line: str) -> tuple[str, str, str] | object | None:
        """Read a ``#`` or blank line the fast pattern left.

        Returns ``(keyword, name, text)`` for metadata, ``_EOF`` at ``# EOF``
        (OpenMetrics) and None for a comment or a blank line (0.0.4).
        """
        if self.om:
            if line == "# EOF":
                self.eof = True
                return _EOF
            if not line:
                raise _Bad("blank line; OpenMetrics allows none")
            parts = line.split(" ", 3)
            if (
                len(parts) < 3
                or parts[0] != "#"
                or parts[1] not in ("HELP", "TYPE", "UNIT")
            ):
                raise _Bad(
                    f"expected '# HELP', '# TYPE', '# UNIT' or '# EOF', found {line[:40]!r}"
                )
            if len(parts) < 4:
                raise _Bad(
                    f"'# {parts[1]}' needs a name and a text after one space each, "
                    f"found {line!r}"
                )
        else:
            parts = line.split(None, 3)
            if len(parts) < 3 or parts[0] != "#" or parts[1] not in ("HELP", "TYPE"):
                return None
            if len(parts) < 4:
                if parts[1] == "TYPE":
                    raise _Bad(f"'# TYPE' needs a name and a type, found {line!r}")
                parts.append("")
        _, keyword, name, text = parts
        if _NAME_RE.fullmatch(name) is None:
            raise _Bad(
                f"'# {keyword}' names an invalid metric {name!r}; use [a-zA-Z_:][a-zA-Z0-9_:]*"
            )
        return keyword, name, text

    def _exemplar(
        self,
        text: str,
        name: str,
        role: str,
        family: str | None,
        typ: str | None,
        lineno: int,
    ) -> None:
        if not (
            (typ == "counter" and role == "_total")
            or (typ in ("histogram", "gaugehistogram") and role == "_bucket")
        ):
            raise _Bad(
                f"exemplar on {name!r} of family {family!r} (type {typ or 'unknown'}); "
                "only counter '_total' and histogram '_bucket' samples may carry one"
            )
        labels, value, ts = _scan_exemplar(text, self.om)
        self.exemplars.append(
            Exemplar(lineno, len(self.columns.values), labels, value, ts)
        )

    # --- whole-family checks -----------------------------------------------------

    def _check_family(self, fam: Family) -> None:
        name, typ, om = fam.name, fam.type, self.om
        if fam.unit:
            if not name.endswith("_" + fam.unit):
                raise _BadFamily(
                    fam.line,
                    f"metric {name!r} does not end with its unit '_{fam.unit}'",
                )
            if typ in ("info", "stateset"):
                raise _BadFamily(fam.line, f"{typ} {name!r} cannot have a unit")
        if fam.start == fam.stop:
            return
        if om or typ == "histogram":
            self._check_groups(fam)
        if typ in ("histogram", "gaugehistogram"):
            _check_histogram(fam, om, self.columns)
        elif typ == "summary":
            _check_summary(fam, self.columns)
        elif om and typ in ("stateset", "info"):
            _check_state(fam, self.columns)

    def _check_groups(self, fam: Family) -> None:
        """Series of a family are contiguous and their time never goes back."""
        c = self.columns
        name, typ = fam.name, fam.type
        drop = {
            "histogram": "le",
            "gaugehistogram": "le",
            "summary": "quantile",
            "stateset": name,
        }.get(typ)
        bucket = name + "_bucket" if drop == "le" else name
        if expo_groups_ok(
            c.names, c.labels, c.ts, fam.start, fam.stop, drop, bucket, typ == "info"
        ):
            return  # the native check passes only families this loop passes
        group: object = None
        group_ts: int | None = None
        seen: set[object] = set()
        for i in range(fam.start, fam.stop):
            labels, ts = c.label_dict(i), c.ts[i]
            if typ == "info":
                key: object = ()
            elif drop is not None and c.names[i] == bucket:
                key = tuple(sorted((k, v) for k, v in labels.items() if k != drop))
            else:
                key = tuple(sorted(labels.items()))
            if key != group:
                if key in seen:
                    raise _BadFamily(
                        c.lines[i],
                        f"{typ} {name!r}: {c.keys[i]!r} resumes a series that other series "
                        "interrupted; the samples of a series must be contiguous",
                    )
                seen.add(key)
                group, group_ts = key, ts
                continue
            if (ts is None) != (group_ts is None):
                raise _BadFamily(
                    c.lines[i],
                    f"{typ} {name!r}: {c.keys[i]!r} mixes samples with and without timestamps",
                )
            if ts is not None and ts < group_ts and typ != "info":  # type: ignore[operator]
                raise _BadFamily(
                    c.lines[i],
                    f"{typ} {name!r}: timestamp of {c.keys[i]!r} goes back from {group_ts} ms to {ts} ms",
                )
            group_ts = ts


_EOF = object()


def _clash(name: str, typ: str, taken: str) -> str:
    return (
        f"family {name!r} ({typ}) reuses the name {taken!r} of an earlier family; "
        "a family's lines must be contiguous"
    )


def _check_histogram(fam: Family, om: bool, c: _Columns) -> None:
    name, typ = fam.name, fam.type
    gauge = typ == "gaugehistogram"
    if expo_histogram_ok(
        c.names, c.labels, c.values, c.ts, fam.start, fam.stop, name, gauge, om
    ):
        return  # the native check passes only families this loop passes
    bucket_name = name + "_bucket"
    count_name = name + ("_gcount" if gauge else "_count")
    sum_name = name + ("_gsum" if gauge else "_sum")
    group: object = None
    group_key: object = None
    state: dict[str, object] = {}

    def finish(line: int) -> None:
        where = f"{typ} {name!r} series {dict(group)!r}"  # type: ignore[call-overload]
        le, inf_count, count = state["le"], state["value"], state["count"]
        if le != math.inf:
            raise _BadFamily(line, f'{where} has no le="+Inf" bucket')
        if count is not None and count != inf_count:
            raise _BadFamily(
                line,
                f"{where}: {count_name[len(name) :]} {count!r} differs from the +Inf bucket {inf_count!r}",
            )
        if not om:
            return
        has_sum, negative = state["sum"] is not None, state["negative"]
        if has_sum and count is None:
            raise _BadFamily(
                line,
                f"{where} has {sum_name[len(name) :]} but no {count_name[len(name) :]}",
            )
        if count is not None and not has_sum:
            raise _BadFamily(
                line,
                f"{where} has {count_name[len(name) :]} but no {sum_name[len(name) :]}",
            )
        if not gauge and negative and has_sum:
            raise _BadFamily(
                line, f"{where} has negative buckets, so it cannot have _sum"
            )
        if gauge and not negative and has_sum and state["sum"] < 0:  # type: ignore[operator]
            raise _BadFamily(
                line, f"{where} has a negative _gsum without negative buckets"
            )

    last_line = fam.line
    for i in range(fam.start, fam.stop):
        sname, labels, value, line = (
            c.names[i],
            c.label_dict(i),
            c.values[i],
            c.lines[i],
        )
        if sname == name + "_created":
            continue
        key = (tuple(sorted((k, v) for k, v in labels.items() if k != "le")), c.ts[i])
        if key != group_key:
            if group_key is not None:
                finish(last_line)
            group_key, group = key, key[0]
            state = {
                "le": None,
                "value": 0.0,
                "count": None,
                "sum": None,
                "negative": False,
            }
        last_line = line
        if sname == bucket_name:
            le_text = labels.get("le")
            if le_text is None:
                raise _BadFamily(
                    line, f"{typ} {name!r}: bucket {c.keys[i]!r} has no 'le' label"
                )
            try:
                le = float(le_text) if "_" not in le_text else math.nan
            except ValueError:
                le = math.nan
            if math.isnan(le) or (om and math.isinf(le) and le_text != "+Inf"):
                raise _BadFamily(
                    line,
                    f"{typ} {name!r}: le={le_text!r} is not a bucket bound; write a number or '+Inf'",
                )
            if om and not value.is_integer():
                raise _BadFamily(
                    line,
                    f"{typ} {name!r}: bucket le={le_text!r} count {value!r} is not an integer",
                )
            prev = state["le"]
            if prev is not None and le <= prev:  # type: ignore[operator]
                raise _BadFamily(
                    line,
                    f"{typ} {name!r}: bucket le={le_text!r} comes after le={state['le_text']!r}; "
                    "buckets must be in increasing order of le",
                )
            if value < state["value"]:  # type: ignore[operator]
                raise _BadFamily(
                    line,
                    f"{typ} {name!r}: bucket le={le_text!r} count {value!r} is below the count "
                    f"{state['value']!r} of le={state['le_text']!r}; bucket counts are cumulative "
                    "and must not decrease",
                )
            state.update(
                le=le,
                le_text=le_text,
                value=value,
                negative=state["negative"] or le < 0,
            )
        elif sname == count_name:
            if om and not value.is_integer():
                raise _BadFamily(
                    line, f"{typ} {name!r}: {sname!r} {value!r} is not an integer"
                )
            state["count"] = value
        elif sname == sum_name:
            state["sum"] = value
    if group_key is not None:
        finish(last_line)


def _check_summary(fam: Family, c: _Columns) -> None:
    for i in range(fam.start, fam.stop):
        if c.names[i] != fam.name:
            continue
        q_text = c.label_dict(i).get("quantile")
        if q_text is None:
            raise _BadFamily(
                c.lines[i],
                f"summary {fam.name!r}: sample {c.keys[i]!r} has no 'quantile' label",
            )
        try:
            q = float(q_text) if "_" not in q_text else math.nan
        except ValueError:
            q = math.nan
        if not 0.0 <= q <= 1.0:
            raise _BadFamily(
                c.lines[i],
                f"summary {fam.name!r}: quantile={q_text!r} is not a number in [0, 1]",
            )


def _check_state(fam: Family, c: _Columns) -> None:
    for i in range(fam.start, fam.stop):
        value, line = c.values[i], c.lines[i]
        if fam.type == "stateset":
            if fam.name not in c.label_dict(i):
                raise _BadFamily(
                    line,
                    f"stateset {fam.name!r}: sample {c.keys[i]!r} has no label {fam.name!r}",
                )
            if value not in (0.0, 1.0):
                raise _BadFamily(
                    line, f"stateset {fam.name!r}: value {value!r} is not 0 or 1"
                )
        elif value != 1.0:
            raise _BadFamily(line, f"info {fam.name!r}: value {value!r} is not 1")
