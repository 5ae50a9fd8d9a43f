"""Metric kinds, specs, label sets, series ids and the Arrow schemas.

Every Arrow input enters obscore through :func:`as_sample_table`, which checks
the columns by name and type; every schema obscore returns is declared here.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from obscore.errors import SchemaError

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("series_id", pa.uint64(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
    ]
)

ROLLUP_SCHEMA = pa.schema(
    [
        pa.field("series_id", pa.uint64()),
        pa.field("ts", pa.int64()),
        pa.field("count", pa.int64()),
        pa.field("sum", pa.float64()),
        pa.field("min", pa.float64()),
        pa.field("max", pa.float64()),
        pa.field("last", pa.float64()),
        pa.field("increase", pa.float64()),
    ]
)

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MetricKind(enum.Enum):
    """What a metric measures and how its samples combine."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A declared metric: its name, kind, label names and, for histograms, bounds.

    ``bounds`` are the finite upper bounds of the buckets; ``+Inf`` is implied.
    ``group`` is one of ``system``, ``application``, ``business``.
    """

    name: str
    kind: MetricKind
    labels: tuple[str, ...] = ()
    help: str = ""
    unit: str = ""
    bounds: tuple[float, ...] = ()
    group: str = "application"
    weight: float = 1.0

    @property
    def is_counter(self) -> bool:
        return self.kind is MetricKind.COUNTER

    @property
    def is_histogram(self) -> bool:
        return self.kind is MetricKind.HISTOGRAM


class LabelSet(Mapping[str, str]):
    """An immutable, sorted set of label name -> value pairs.

    >>> LabelSet({"b": "2", "a": "1"})
    LabelSet({'a': '1', 'b': '2'})
    """

    __slots__ = ("_items", "_hash")

    def __init__(self, labels: Mapping[str, str] | Iterable[tuple[str, str]] = ()):
        items = dict(labels).items() if not isinstance(labels, dict) else labels.items()
        self._items: tuple[tuple[str, str], ...] = tuple(
            sorted((str(k), str(v)) for k, v in items)
        )
        self._hash = hash(self._items)

    def __getitem__(self, key: str) -> str:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LabelSet):
            return self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"LabelSet({dict(self._items)!r})"

    @property
    def items_tuple(self) -> tuple[tuple[str, str], ...]:
        return self._items

    def without(self, *names: str) -> LabelSet:
        return LabelSet((k, v) for k, v in self._items if k not in names)

    def only(self, names: Iterable[str]) -> LabelSet:
        keep = set(names)
        return LabelSet((k, v) for k, v in self._items if k in keep)

    def with_(self, **extra: str) -> LabelSet:
        merged = dict(self._items)
        merged.update(extra)
        return LabelSet(merged)


class Sample(NamedTuple):
    """One observation of one series."""

    series_id: int
    ts: int
    value: float


def series_id(name: str, labels: Mapping[str, str]) -> int:
    """Stable 64-bit id of a series: a BLAKE2b hash of the name and sorted labels.

    The id does not depend on the process, the platform or label order.

    >>> series_id("up", {"job": "a"}) == series_id("up", {"job": "a"})
    True
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(name.encode())
    for k, v in sorted(labels.items()):
        h.update(b"\xff")
        h.update(k.encode())
        h.update(b"\xfe")
        h.update(v.encode())
    return int.from_bytes(h.digest(), "little")


def check_metric_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"metric name {name!r} is not valid; use [a-zA-Z_:][a-zA-Z0-9_:]*")
    return name


def check_label_name(name: str) -> str:
    if not _LABEL.match(name):
        raise ValueError(f"label name {name!r} is not valid; use [a-zA-Z_][a-zA-Z0-9_]*")
    return name


@dataclass(slots=True)
class SeriesIndex:
    """Maps series ids to their metric name and label set, and back.

    Picklable; holds no references to the store.
    """

    _names: dict[int, str] = field(default_factory=dict)
    _labels: dict[int, LabelSet] = field(default_factory=dict)
    _by_name: dict[str, list[int]] = field(default_factory=dict)
    # one count per series added and per series discarded (see `generation`)
    _generation: int = 0

    def add(self, name: str, labels: Mapping[str, str]) -> int:
        """Register a series (idempotent) and return its id."""
        sid = series_id(name, labels)
        if sid not in self._names:
            self._names[sid] = name
            self._labels[sid] = labels if isinstance(labels, LabelSet) else LabelSet(labels)
            self._by_name.setdefault(name, []).append(sid)
            self._generation += 1
        return sid

    @property
    def generation(self) -> int:
        """Series added plus series discarded so far.

        A reader caching what it derived from the index compares this number:
        when it grew by exactly as much as ``len(self)``, the only changes were
        additions, the newest entries in iteration order.
        """
        return self._generation

    def __contains__(self, sid: object) -> bool:
        return sid in self._names

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[int]:
        return iter(self._names)

    def name(self, sid: int) -> str:
        return self._names[sid]

    def labels(self, sid: int) -> LabelSet:
        return self._labels[sid]

    def ids(self, name: str) -> list[int]:
        return list(self._by_name.get(name, ()))

    @property
    def metric_names(self) -> list[str]:
        return sorted(self._by_name)

    def describe(self, sid: int) -> str:
        """``name{a="1",b="2"}``, the Prometheus way of writing a series."""
        labels = ",".join(f'{k}="{v}"' for k, v in self._labels[sid].items_tuple)
        return f"{self._names[sid]}{{{labels}}}"

    def discard(self, ids: Iterable[int]) -> int:
        """Forget the series of ``ids`` (those not held are skipped); how many went."""
        gone = {sid for sid in ids if sid in self._names}
        for name in {self._names[sid] for sid in gone}:
            kept = [sid for sid in self._by_name[name] if sid not in gone]
            if kept:
                self._by_name[name] = kept
            else:
                del self._by_name[name]
        for sid in gone:
            del self._names[sid], self._labels[sid]
        self._generation += len(gone)
        return len(gone)

    def merge(self, other: SeriesIndex) -> None:
        for sid in other:
            if sid not in self._names:
                self.add(other.name(sid), other.labels(sid))

    def to_table(self) -> pa.Table:
        """The index as an Arrow table: series_id, name, labels (map)."""
        ids = list(self._names)
        return pa.table(
            {
                "series_id": pa.array(ids, pa.uint64()),
                "name": pa.array([self._names[i] for i in ids], pa.string()),
                "labels": pa.array(
                    [list(self._labels[i].items_tuple) for i in ids],
                    pa.map_(pa.string(), pa.string()),
                ),
            }
        )


def as_sample_table(data: Any) -> pa.Table:
    """Normalise any Arrow-like input into a sample table.

    Accepts ``pa.Table``, ``pa.RecordBatch`` or any object exposing
    ``__arrow_c_stream__`` / ``__arrow_c_array__``.  Columns are found by name;
    ``series_id`` must be uint64 (int64 is accepted if non-negative), ``ts``
    int64 or a timestamp, ``value`` float64 (float32 and integers are widened).

    Raises
    ------
    SchemaError
        When a column is missing or of a type that cannot hold it.
    """
    if isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif isinstance(data, pa.Table):
        table = data
    elif hasattr(data, "__arrow_c_stream__"):
        table = pa.table(data)
    elif hasattr(data, "__arrow_c_array__"):
        table = pa.Table.from_batches([pa.record_batch(data)])
    else:
        raise SchemaError(
            f"expected an Arrow table or record batch, got {type(data).__name__}"
        )
    for name in ("series_id", "ts", "value"):
        if name not in table.column_names:
            raise SchemaError(
                f"column {name!r} is missing; found {table.column_names!r}"
            )
    sid, ts, value = table["series_id"], table["ts"], table["value"]
    if sid.type != pa.uint64():
        if pa.types.is_integer(sid.type):
            sid = sid.cast(pa.uint64())
        else:
            raise SchemaError(f"column 'series_id' must be uint64, got {sid.type}")
    if ts.type != pa.int64():
        if pa.types.is_timestamp(ts.type):
            ts = ts.cast(pa.timestamp("ms")).cast(pa.int64())
        elif pa.types.is_integer(ts.type):
            ts = ts.cast(pa.int64())
        else:
            raise SchemaError(f"column 'ts' must be int64, got {ts.type}")
    if value.type != pa.float64():
        if pa.types.is_floating(value.type) or pa.types.is_integer(value.type):
            value = value.cast(pa.float64())
        else:
            raise SchemaError(f"column 'value' must be float64, got {value.type}")
    return pa.Table.from_arrays([sid, ts, value], schema=SAMPLE_SCHEMA)


def sample_table(
    series_ids: np.ndarray, ts: np.ndarray, values: np.ndarray
) -> pa.Table:
    """Build a sample table from three NumPy arrays (no copy where possible).

    Parameters
    ----------
    series_ids : array of integers, shape (n,)
        Series ids, each in [0, 2**64).
    ts : array of integers, shape (n,)
        Milliseconds since the epoch, each in the int64 range.
    values : array of numbers, shape (n,)
        Widened to float64; NaN and +-Inf are kept.

    Raises
    ------
    ValueError
        When ``series_ids`` or ``ts`` is not an integer array (a float
        would be truncated) or holds a number out of its range (a negative
        id, a ts past int64), naming the argument and the first bad position.
        An empty array of any dtype is taken.
    """
    return pa.Table.from_arrays(
        [
            pa.array(_whole(series_ids, "series_ids", np.uint64)),
            pa.array(_whole(ts, "ts", np.int64)),
            pa.array(np.asarray(values, dtype=np.float64)),
        ],
        schema=SAMPLE_SCHEMA,
    )


def _whole(arr: Any, name: str, dtype: type[np.integer]) -> np.ndarray:
    """``arr`` as ``dtype``, refusing what the cast would truncate or wrap."""
    arr = np.asarray(arr)
    if arr.size == 0 or arr.dtype == dtype:
        return arr.astype(dtype, copy=False)
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must be an integer array ({np.dtype(dtype)}), got {arr.dtype}; "
            "a cast would cut off what is not whole"
        )
    # signed to unsigned wraps the negatives, unsigned to signed the top half
    if arr.dtype.kind == "i" and dtype is np.uint64:
        bad, rule = arr < 0, "at least 0 (uint64)"
    elif arr.dtype.kind == "u" and dtype is np.int64:
        top = int(np.iinfo(np.int64).max)
        bad, rule = arr > top, f"at most {top} (int64)"
    else:
        return arr.astype(dtype)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name} must be {rule}, got {arr[i]} at position {i} "
            f"({int(bad.sum())} such)"
        )
    return arr.astype(dtype)
