"""Reading samples from files: CSV, Parquet, Arrow IPC and expositions.

:func:`read_csv` reads one ``timestamp,value`` series for ``obscore detect``.
:class:`SampleFile` reads any file ``obscore ingest`` takes as sample
batches, in two table layouts:

- narrow, the layout of the NAB corpus: columns ``timestamp,value`` (or
  ``ts,value``; a CSV may leave the header out), one series whose metric
  name is given or taken from the file name;
- long: ``ts``, ``metric`` (or ``name``), any label columns, ``value``; an
  empty or null label value means the label is absent.

Bad rows never take the good ones down: a malformed row is skipped and
reported with the file and line (CSV) or row (Parquet, Arrow) so the user
can find it.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from obscore.errors import InvalidSampleError, SchemaError
from obscore.model import (
    MetricKind,
    MetricSpec,
    SeriesIndex,
    check_label_name,
    check_metric_name,
    sample_table,
)

logger = logging.getLogger(__name__)

_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad row: where it is and what is wrong with it."""

    path: str
    line: int
    reason: str
    kept: bool
    unit: str = "line"  # "line" of a text file, or 1-based "row" of a table

    def __str__(self) -> str:
        action = "kept" if self.kept else "skipped"
        return f"{self.path} {self.unit} {self.line}: {self.reason}; row {action}"


@dataclass(slots=True)
class CsvSeries:
    """The rows of one CSV file that could be read, in file order."""

    path: str
    ts: np.ndarray  # int64 ms since the epoch
    values: np.ndarray  # float64, NaN kept
    lines: np.ndarray  # int64, the 1-based line of each row
    raw_ts: list[str]
    problems: list[Problem] = field(default_factory=list)


def _parse_ts(text: str) -> int:
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"timestamp {text!r} is not finite")
        # seconds before the year 2286, milliseconds beyond
        ms = int(number * 1000) if abs(number) < 1e10 else int(number)
        if not _INT64_MIN <= ms <= _INT64_MAX:
            raise ValueError(f"timestamp {text!r} does not fit int64 milliseconds")
        return ms
    try:
        return int(np.datetime64(text.replace("T", " ").rstrip("Z"), "ms").astype(np.int64))
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not a date, epoch seconds or milliseconds") from None


def read_csv(path: str | Path) -> CsvSeries:
    """Read a ``timestamp,value`` CSV file (header optional).

    Parameters
    ----------
    path : str or Path
        The file.  Timestamps are ISO dates (``2014-04-01 00:00:00``, UTC) or
        epoch seconds or milliseconds.

    Returns
    -------
    CsvSeries
        Every readable row in file order; ``problems`` lists each bad row with
        its line number.  Malformed rows (wrong field count, unreadable time or
        value, a value of +-Inf) are skipped; NaN values and repeated timestamps
        are kept and reported.
    """
    path = Path(path)
    name = str(path)
    ts, values, lines, raw = [], [], [], []
    problems: list[Problem] = []
    seen: set[int] = set()
    with path.open("r", encoding="utf-8", errors="replace", newline="") as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.split(",")
            if lineno == 1 and parts[0].strip().lower() in ("timestamp", "ts", "time"):
                continue
            if len(parts) != 2:
                problems.append(Problem(name, lineno, f"expected 2 fields, found {len(parts)}: {text[:60]!r}", False))
                continue
            try:
                t = _parse_ts(parts[0])
            except ValueError as exc:
                problems.append(Problem(name, lineno, str(exc), False))
                continue
            vtext = parts[1].strip()
            try:
                v = float(vtext)
            except ValueError:
                problems.append(Problem(name, lineno, f"value {vtext!r} is not a number", False))
                continue
            if math.isinf(v):
                problems.append(Problem(name, lineno, f"value {vtext!r} is infinite", False))
                continue
            if math.isnan(v):
                problems.append(Problem(name, lineno, "value is NaN", True))
            if t in seen:
                problems.append(Problem(name, lineno, f"timestamp {parts[0].strip()!r} repeats an earlier row", True))
            seen.add(t)
            ts.append(t)
            values.append(v)
            lines.append(lineno)
            raw.append(parts[0].strip())
    if problems:
        # rows that were skipped lose data: warn; kept oddities are only noted
        level = logging.WARNING if any(not p.kept for p in problems) else logging.INFO
        logger.log(level, "%s: %d bad rows (first: %s)", name, len(problems), problems[0])
    return CsvSeries(
        name,
        np.array(ts, dtype=np.int64),
        np.array(values, dtype=np.float64),
        np.array(lines, dtype=np.int64),
        raw,
        problems,
    )


def walk_csv(paths: list[str | Path]) -> list[tuple[Path, Path]]:
    """``(file, relative name)`` for each CSV under the given files and folders."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*.csv")):
                out.append((f, f.relative_to(p)))
        else:
            out.append((p, Path(p.name)))
    return out


# --- sample files: what obscore ingest reads -------------------------------------

#: Formats :class:`SampleFile` reads; ``None`` recognises one from the content.
FILE_FORMATS = ("prometheus", "openmetrics", "csv", "parquet", "arrow")

_TS_COLUMNS = ("ts", "timestamp", "time")
_METRIC_COLUMNS = ("metric", "name", "__name__")
_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".arrows": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}
_CSV_LINE = re.compile(rb"^[^{}\s,#]*,")  # a first field before any space or brace
_BAD_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_SECONDS_BELOW = 1e10  # epoch numbers below this are seconds (before 2286), else ms
_BLOCK_BYTES = 1 << 20


def sniff_file_format(head: bytes, name: str = "") -> str:
    """Recognise a file's format from its first bytes, then its name.

    Parameters
    ----------
    head : bytes
        The first bytes of the file (a few hundred are enough).
    name : str
        The file name; its suffix decides between text formats.

    Returns
    -------
    str
        ``"parquet"``, ``"arrow"`` (IPC file or stream), ``"csv"``, or
        ``"exposition"`` for Prometheus text or OpenMetrics, which the
        exposition parser tells apart.
    """
    if head[:4] == b"PAR1":
        return "parquet"
    if head[:6] == b"ARROW1" or head[:4] == b"\xff\xff\xff\xff":
        return "arrow"
    by_suffix = _SUFFIXES.get(Path(name).suffix.lower())
    if by_suffix is not None:
        return by_suffix
    first = next((ln for ln in head.splitlines() if ln.strip()), b"")
    return "csv" if _CSV_LINE.match(first.strip()) else "exposition"


#: Suffixes of the files a folder given to ``obscore ingest`` is walked for.
WALKED_SUFFIXES = (*_SUFFIXES, ".prom", ".om")


def walk_sample_files(paths: list[str]) -> list[str]:
    """The paths given, each folder replaced by the sample files under it.

    A folder is walked for the suffixes of :data:`WALKED_SUFFIXES`, in
    sorted order; other paths (``-`` too) are kept as they are.
    """
    out: list[str] = []
    for path in paths:
        if path != "-" and Path(path).is_dir():
            found = [
                f for f in Path(path).rglob("*")
                if f.is_file() and f.suffix.lower() in WALKED_SUFFIXES
            ]
            out.extend(str(f) for f in sorted(found))
        else:
            out.append(path)
    return out


def metric_from_file_name(path: str | Path) -> str:
    """A metric name made of a file's stem: other characters become ``_``.

    >>> metric_from_file_name("data/realKnownCause/nyc-taxi.csv")
    'nyc_taxi'
    """
    name = _BAD_NAME_CHARS.sub("_", Path(path).stem) or "_"
    return "_" + name if name[0].isdigit() else name


@dataclass(slots=True)
class _Pending:
    """A bad row before its line is known: ``pos`` is a CSV row number (as
    pyarrow counts rows, blank lines left out) or a 0-based data row."""

    pos: int
    is_csv_row: bool
    reason: str


class SampleFile:
    """Sample batches read from one file, with its bad rows.

    Parameters
    ----------
    path : str or Path
        The file, or a name for ``data``.
    data : bytes, optional
        The content, read instead of ``path`` (standard input).
    format : str, optional
        One of :data:`FILE_FORMATS`; None recognises it with
        :func:`sniff_file_format`.
    metric : str, optional
        Metric name of a narrow (``timestamp,value``) table; by default
        :func:`metric_from_file_name` of ``path``.
    strict : bool
        Raise at the first bad row instead of skipping it.
    on_read : callable, optional
        Called with the number of bytes each time some of the file is read
        (a progress bar).
    now_ms : int, optional
        Time of exposition samples written without a timestamp; a timestamp
        more than 10 minutes ahead of it is refused.

    Attributes
    ----------
    format : str
        The format read (an exposition reports ``prometheus`` or
        ``openmetrics`` once read).
    layout : str
        ``"narrow"``, ``"long"`` or ``"exposition"``; known once reading began.
    index : SeriesIndex
        The series of every batch read so far.
    problems : list of Problem
        The rows skipped, complete once :meth:`batches` is exhausted.
    n_rows : int
        Rows (samples) read, skipped ones included.

    Raises
    ------
    InvalidSampleError
        From :meth:`batches`: a header that fits no layout, a file that is not
        what its format says, or (``strict``) the first bad row, each naming
        the file and the line or row.

    Notes
    -----
    Timestamps may be ISO dates (UTC unless they carry an offset), epoch
    seconds or epoch milliseconds; a number below 1e10 is read as seconds.
    Values are float64; NaN and +-Inf are kept, an empty value is a bad row.
    CSV lines are numbered as if no field held a line break.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        data: bytes | None = None,
        format: str | None = None,
        metric: str | None = None,
        strict: bool = False,
        on_read: Callable[[int], object] | None = None,
        now_ms: int | None = None,
    ) -> None:
        if format is not None and format not in FILE_FORMATS:
            raise ValueError(f"format must be one of {FILE_FORMATS!r}, got {format!r}")
        self.path = Path(path)
        self.name = str(path)
        self._data = data
        self._metric = metric
        self.strict = strict
        self._on_read = on_read
        self.now_ms = now_ms
        self.index = SeriesIndex()
        self.problems: list[Problem] = []
        self.specs: list[MetricSpec] = []
        self.n_rows = 0
        self.layout = ""
        self._pending: list[_Pending] = []
        self._csv_invalid: list[int] = []
        self._csv_first_row = 1
        if format is None:
            format = sniff_file_format(self._head(), self.name)
        self.format = format

    # --- reading -------------------------------------------------------------------

    def batches(self) -> Iterator[pa.Table]:
        """Yield the file's samples as sample batches, in file order.

        Each batch's series are in :attr:`index`; the bad rows of the file are
        in :attr:`problems` once the iteration ends.
        """
        raw: BinaryIO
        raw = io.BytesIO(self._data) if self._data is not None else self.path.open("rb")
        fh = raw
        if self._on_read is not None:
            from tqdm.utils import CallbackIOWrapper

            fh = CallbackIOWrapper(self._on_read, raw, "read")  # type: ignore
        try:
            if self.format in ("prometheus", "openmetrics", "exposition"):
                yield self._exposition(fh.read())
            elif self.format == "csv":
                yield from self._tables(self._csv_batches(fh))
            elif self.format == "parquet":
                yield from self._tables(self._parquet_batches(fh))
            else:
                yield from self._tables(self._arrow_batches(fh))
        finally:
            raw.close()
        self.n_rows += len(self._csv_invalid)  # rows pyarrow skipped count too
        self._resolve()

    def _head(self) -> bytes:
        if self._data is not None:
            return self._data[:4096]
        with self.path.open("rb") as fh:
            return fh.read(4096)

    def _fail(self, where: str, reason: str) -> InvalidSampleError:
        return InvalidSampleError(f"{self.name}{' ' + where if where else ''}: {reason}")

    def _exposition(self, raw: bytes) -> pa.Table:
        from obscore.ingest.exposition import parse

        self.layout = "exposition"
        fmt = None if self.format == "exposition" else self.format
        try:
            parsed = parse(
                raw,
                format=fmt,  # type: ignore[arg-type]
                lenient=not self.strict,
                default_ts_ms=self.now_ms,
                now_ms=self.now_ms,
            )
        except InvalidSampleError as exc:
            raise InvalidSampleError(f"{self.name}: {exc}") from None
        self.format = parsed.format
        self.problems.extend(
            Problem(self.name, ln, why, False) for ln, why in parsed.errors
        )
        self.n_rows = parsed.n_samples + len(parsed.errors)
        self.specs = parsed.specs()
        return parsed.to_batch(self.index)

    # --- tables --------------------------------------------------------------------

    def _csv_batches(self, fh: BinaryIO) -> Iterator[pa.Schema | pa.RecordBatch]:
        import pyarrow.csv as pacsv

        first = next((ln for ln in self._head().splitlines() if ln.strip()), b"")
        if not first.strip():
            raise self._fail("line 1", "the file is empty; expected a header or rows")
        text = first.decode("utf-8", "replace")
        fields = [f.strip() for f in next(csv.reader([text]), [])]
        has_header = not (len(fields) == 2 and _is_sample(*fields))
        if has_header:
            names, self._csv_first_row = fields, 2
        else:  # a headerless timestamp,value file
            names, self._csv_first_row = ["timestamp", "value"], 1
        if len(set(names)) != len(names):
            raise self._fail("line 1", f"the header repeats a column name: {names!r}")

        def invalid(row: pacsv.InvalidRow) -> str:
            self._csv_invalid.append(row.number)
            self._pending.append(
                _Pending(
                    row.number,
                    True,
                    f"expected {row.expected_columns} fields, found "
                    f"{row.actual_columns}: {row.text[:60]!r}",
                )
            )
            return "skip"

        reader = pacsv.open_csv(
            _Utf8Checked(fh, self.name),
            read_options=pacsv.ReadOptions(
                use_threads=False,
                block_size=_BLOCK_BYTES,
                column_names=None if has_header else names,
            ),
            parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
        yield reader.schema
        try:
            yield from reader
        except pa.ArrowInvalid as exc:
            raise self._fail("", f"not a readable CSV file: {exc}") from None

    def _parquet_batches(self, fh: BinaryIO) -> Iterator[pa.Schema | pa.RecordBatch]:
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(fh)
            yield parquet.schema_arrow
            yield from parquet.iter_batches(batch_size=65_536)
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._fail("", f"not a readable Parquet file: {exc}") from None

    def _arrow_batches(self, fh: BinaryIO) -> Iterator[pa.Schema | pa.RecordBatch]:
        import pyarrow.ipc as ipc

        try:
            if fh.read(6) == b"ARROW1":
                fh.seek(0)
                reader = ipc.open_file(fh)
                yield reader.schema
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)
            else:
                fh.seek(0)
                stream = ipc.open_stream(fh)
                yield stream.schema
                yield from stream
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._fail("", f"not a readable Arrow IPC file: {exc}") from None

    def _tables(
        self, batches: Iterator[pa.Schema | pa.RecordBatch]
    ) -> Iterator[pa.Table]:
        """Sample batches of a table reader that yields its schema, then batches."""
        schema = next(batches)
        assert isinstance(schema, pa.Schema)
        roles = self._roles(schema.names)
        for batch in batches:
            if batch.num_rows:
                yield self._convert(batch, roles)  # type: ignore[arg-type]

    def _roles(self, names: list[str]) -> tuple[str, str | None, str, list[str]]:
        """The ts, metric (None when narrow), value and label columns."""
        where = "line 1" if self.format == "csv" else "schema"
        lower = {n.lower(): n for n in names}
        ts = next((lower[c] for c in _TS_COLUMNS if c in lower), None)
        metric = next((lower[c] for c in _METRIC_COLUMNS if c in lower), None)
        value = lower.get("value")
        if ts is None or value is None:
            raise self._fail(
                where,
                f"columns {names!r} fit no layout; expected 'timestamp,value' or "
                "'ts,metric,<labels...>,value'",
            )
        labels = [n for n in names if n not in (ts, metric, value)]
        if metric is None:
            if labels:
                raise self._fail(
                    where,
                    f"label columns {labels!r} need a 'metric' column naming the "
                    "metric of each row",
                )
            self.layout = "narrow"
            if self._metric is None and str(self.path) == "-":
                raise self._fail(
                    where,
                    "a 'timestamp,value' table read from standard input needs "
                    "--metric NAME (a file's name gives it otherwise)",
                )
            name = self._metric or metric_from_file_name(self.path)
            try:
                check_metric_name(name)
            except ValueError as exc:
                raise self._fail(where, str(exc)) from None
            self.specs = [MetricSpec(name, MetricKind.GAUGE)]
        else:
            self.layout = "long"
            if self._metric is not None:
                raise self._fail(
                    where,
                    f"--metric {self._metric!r} names the metric of a 'timestamp,value' "
                    "table; this one has a 'metric' column, which names each row's",
                )
            for label in labels:
                try:
                    check_label_name(label)
                except ValueError as exc:
                    raise self._fail(where, f"column {label!r}: {exc}") from None
        return ts, metric, value, labels

    def _convert(
        self, batch: pa.RecordBatch, roles: tuple[str, str | None, str, list[str]]
    ) -> pa.Table:
        ts_col, metric_col, value_col, label_cols = roles
        start, n = self.n_rows, batch.num_rows
        self.n_rows += n
        bad: dict[int, str] = {}
        ts = _to_ms(batch.column(ts_col), bad)
        values = _to_float(batch.column(value_col), bad)
        if metric_col is None:
            ids = np.full(n, self.index.add(self.specs[0].name, {}), np.uint64)
        else:
            ids = self._series_ids(batch, metric_col, label_cols, bad)
        if bad:
            for i in sorted(bad):
                self._pending.append(_Pending(start + i, False, bad[i]))
                if self.strict:
                    self._resolve()
                    raise InvalidSampleError(
                        str(self.problems[0]).removesuffix("; row skipped")
                    )
            keep = np.ones(n, bool)
            keep[list(bad)] = False
            ids, ts, values = ids[keep], ts[keep], values[keep]
        return sample_table(ids, ts, values)

    def _series_ids(
        self, batch: pa.RecordBatch, metric_col: str, label_cols: list[str], bad: dict
    ) -> np.ndarray:
        """Series id per row of a long table; rows with a bad metric get 0."""
        cols = [metric_col, *label_cols]
        codes, dicts = [], []
        for c in cols:
            arr = batch.column(c)
            if not _is_text(arr.type):
                arr = arr.cast(pa.string())
            enc = pc.dictionary_encode(pc.fill_null(arr, ""))
            codes.append(enc.indices.to_numpy(zero_copy_only=False))
            dicts.append(enc.dictionary.to_pylist())
        uniq, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        sids = np.zeros(len(uniq), np.uint64)
        reasons: dict[int, str] = {}
        for u, row in enumerate(uniq.tolist()):
            name = dicts[0][row[0]]
            try:
                check_metric_name(name)
            except ValueError as exc:
                reasons[u] = "metric is empty" if not name else str(exc)
                continue
            labels = {
                c: dicts[k][code]
                for k, (c, code) in enumerate(zip(label_cols, row[1:]), start=1)
                if dicts[k][code]
            }
            sids[u] = self.index.add(name, labels)
        if reasons:
            for i in np.flatnonzero(np.isin(inverse, list(reasons))).tolist():
                bad.setdefault(i, reasons[int(inverse[i])])
        return sids[inverse]

    # --- where the bad rows are ----------------------------------------------------

    def _resolve(self) -> None:
        """Turn the pending bad rows into problems with their line or row."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self.format != "csv":
            for p in pending:
                self.problems.append(
                    Problem(self.name, p.pos + 1, p.reason, False, "row")
                )
            return
        invalid = sorted(self._csv_invalid)
        numbers = [
            p.pos if p.is_csv_row else _csv_row(p.pos, self._csv_first_row, invalid)
            for p in pending
        ]
        lines = self._physical_lines(set(numbers))
        found = [
            Problem(self.name, lines.get(k, k), p.reason, False)
            for k, p in zip(numbers, pending)
        ]
        self.problems.extend(sorted(found, key=lambda q: q.line))

    def _physical_lines(self, numbers: set[int]) -> dict[int, int]:
        """Line number of each CSV row number (rows count non-blank lines)."""
        out: dict[int, int] = {}
        fh = io.BytesIO(self._data) if self._data is not None else self.path.open("rb")
        with fh:
            row = 0
            for lineno, line in enumerate(fh, start=1):
                if line.strip(b"\r\n"):
                    row += 1
                    if row in numbers:
                        out[row] = lineno
                        if len(out) == len(numbers):
                            break
        return out


class _Utf8Checked:
    """A binary reader that refuses bytes that are not UTF-8 as they are read.

    pyarrow's CSV reader decodes the text of a malformed row to hand it over
    and cannot recover from a decoding failure there, so the bytes are
    checked before pyarrow sees them.
    """

    def __init__(self, fh: BinaryIO, name: str) -> None:
        import codecs

        self._fh = fh
        self._name = name
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._offset = 0
        self._lines = 0
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        try:
            self._decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            line = self._lines + data.count(b"\n", 0, max(exc.start, 0)) + 1
            raise InvalidSampleError(
                f"{self._name} line {line}: invalid UTF-8 at byte "
                f"{self._offset + max(exc.start, 0)}"
            ) from None
        self._offset += len(data)
        self._lines += data.count(b"\n")
        return data

    def close(self) -> None:
        self.closed = True


def _is_sample(ts: str, value: str) -> bool:
    """Whether two fields read as a timestamp and a value (not a header)."""
    try:
        _parse_ts(ts)
        float(value)
    except ValueError:
        return False
    return True


def _csv_row(data_row: int, first_row: int, invalid: list[int]) -> int:
    """The CSV row number of the ``data_row``-th row pyarrow kept."""
    number = first_row + data_row
    for skipped in invalid:
        if skipped <= number:
            number += 1
        else:
            break
    return number


def _to_ms(arr: pa.Array, bad: dict[int, str]) -> np.ndarray:
    """Timestamps in ms since the epoch; rows that are no time go to ``bad``."""
    if pa.types.is_timestamp(arr.type) or pa.types.is_date(arr.type):
        if pa.types.is_date(arr.type):
            arr = arr.cast(pa.timestamp("ms"))
        ms = arr.cast(pa.timestamp("ms", tz=arr.type.tz)).cast(pa.int64())
        return _fill_nulls(ms, bad, "timestamp is empty").astype(np.int64)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return _epoch_ms(arr.cast(pa.float64()), bad)
    if not _is_text(arr.type):
        raise SchemaError(
            f"the timestamp column must hold times or numbers, got {arr.type}"
        )
    text = pc.utf8_trim_whitespace(arr)
    try:
        return _epoch_ms(text.cast(pa.float64()), bad)
    except pa.ArrowInvalid:
        pass
    for typ in (pa.timestamp("ms"), pa.timestamp("ms", tz="UTC")):
        try:
            ms = text.cast(typ).cast(pa.int64())
            return _fill_nulls(ms, bad, "timestamp is empty")
        except pa.ArrowInvalid:
            pass
    out = np.zeros(len(text), np.int64)  # mixed or bad rows: one at a time
    for i, item in enumerate(text.to_pylist()):
        if not item:
            bad.setdefault(i, "timestamp is empty")
            continue
        try:
            out[i] = _parse_ts(item)
        except ValueError as exc:
            try:
                zoned = pa.array([item]).cast(pa.timestamp("ms", tz="UTC"))
                out[i] = zoned.cast(pa.int64())[0].as_py()
            except pa.ArrowInvalid:
                bad.setdefault(i, str(exc))
    return out


def _epoch_ms(numbers: pa.Array, bad: dict[int, str]) -> np.ndarray:
    x = _fill_nulls(numbers, bad, "timestamp is empty")
    for i in np.flatnonzero(~np.isfinite(x)).tolist():
        bad.setdefault(i, f"timestamp {float(x[i])!r} is not finite")
    x = np.where(np.isfinite(x), x, 0.0)
    ms = np.where(np.abs(x) < _SECONDS_BELOW, x * 1000.0, x)
    too_big = np.abs(ms) >= 2.0**63
    for i in np.flatnonzero(too_big).tolist():
        bad.setdefault(i, f"timestamp {float(x[i])!r} does not fit int64 milliseconds")
    return np.round(np.where(too_big, 0.0, ms)).astype(np.int64)


def _to_float(arr: pa.Array, bad: dict[int, str]) -> np.ndarray:
    """Values as float64, NaN and +-Inf kept; rows that are no number go to ``bad``."""
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        return _fill_nulls(arr.cast(pa.float64()), bad, "value is empty")
    if not _is_text(arr.type):
        raise SchemaError(f"column 'value' must hold numbers, got {arr.type}")
    text = pc.utf8_trim_whitespace(arr)
    try:
        return _fill_nulls(text.cast(pa.float64()), bad, "value is empty")
    except pa.ArrowInvalid:
        pass
    out = np.zeros(len(text), np.float64)  # find the bad rows one at a time
    for i, item in enumerate(text.to_pylist()):
        try:
            out[i] = float(item)
        except (TypeError, ValueError):
            why = f"value {item!r} is not a number" if item else "value is empty"
            bad.setdefault(i, why)
    return out


def _is_text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _fill_nulls(arr: pa.Array, bad: dict[int, str], reason: str) -> np.ndarray:
    if arr.null_count:
        for i in np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False)).tolist():
            bad.setdefault(i, reason)
        arr = pc.fill_null(arr, 0)
    return arr.to_numpy(zero_copy_only=False)
