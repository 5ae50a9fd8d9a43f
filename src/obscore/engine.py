"""The engine: one object that wires configuration, store, pipeline and
diagnosis together.  Faces (the CLI, the server) talk only to it.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import re
import reprlib
import struct
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from obscore.alert import Alert, AlertBook
from obscore.alert.escalate import Escalator, Page, policies_from_config
from obscore.alert.lifecycle import AlertLifecycle
from obscore.catalogue import Catalogue, ChangeEvent, Service, from_config
from obscore.config import Config, load_config
from obscore.diagnose import Diagnosis, diagnose
from obscore.diagnose.patterns import load_patterns
from obscore.errors import (
    ConfigError,
    DroppedDataWarning,
    EngineClosedError,
    InvalidSampleError,
    StoreError,
    UnknownMetricError,
)
from obscore.ingest.limits import CardinalityGuard
from obscore.ingest.sampling import AdaptiveSampler
from obscore.model import (
    SAMPLE_SCHEMA,
    LabelSet,
    MetricKind,
    MetricSpec,
    SeriesIndex,
    as_sample_table,
    sample_table,
    series_id,
)
from obscore.pipeline import (
    Incident,
    PipelineResult,
    derive_signals,
    detect_runs,
    enrich,
    group_incidents,
    raise_alerts,
)
from obscore.runner import PipelineRunner, store_reader
from obscore.store.blocks import BlockStore, CompactResult, TierSettings
from obscore.store.hot import STALE_NAN, HotStore, IngestResult, without_nulls
from obscore.store.query import QueryEngine
from obscore.store.tiers import RollupTiers
from obscore.store.wal import WriteAheadLog

logger = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _fmt_le(bound: float) -> str:
    if bound == float("inf"):
        return "+Inf"
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


_STALE_BYTES = struct.pack("<d", STALE_NAN)


def _as_value(name: str, labels: Mapping[str, str], value: Any) -> float:
    """A recorded value as a float; InvalidSampleError when it is no real number.

    Strings are refused even when they spell a number: a value arrives as a
    number, or it is a bug of the caller.
    """
    if not isinstance(value, (str, bytes, bytearray)):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
        except OverflowError:  # an int past float64
            raise InvalidSampleError(
                f"metric {name!r} {dict(labels)!r}: value {reprlib.repr(value)} "
                f"({type(value).__name__}) is too large for a float64; nothing was "
                "recorded"
            ) from None
    raise InvalidSampleError(
        f"metric {name!r} {dict(labels)!r}: value must be a real number, got "
        f"{value!r} ({type(value).__name__}); nothing was recorded"
    )


_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def _as_ts(name: str, labels: Mapping[str, str], ts_ms: Any) -> int:
    """A recorded sample's ``ts_ms`` as an int; InvalidSampleError unless it is
    whole milliseconds (an integer, or a float without a fraction) in int64."""
    whole = isinstance(ts_ms, (int, np.integer)) or (
        isinstance(ts_ms, (float, np.floating)) and float(ts_ms).is_integer()
    )
    if whole and not isinstance(ts_ms, (bool, np.bool_)):
        if _INT64_MIN <= int(ts_ms) <= _INT64_MAX:
            return int(ts_ms)
    raise InvalidSampleError(
        f"metric {name!r} {dict(labels)!r}: ts_ms must be whole milliseconds since "
        f"the epoch within int64, got {reprlib.repr(ts_ms)} ({type(ts_ms).__name__}); "
        "nothing was recorded"
    )


def _check_value(
    spec: MetricSpec, name: str, labels: Mapping[str, str], value: Any
) -> float:
    """The value of a sample of ``name`` as a float, or InvalidSampleError.

    NaN is a gauge's value like any other; a counter's or a histogram's
    series takes no NaN but the staleness marker (``store.hot.STALE_NAN``).
    """
    x = _as_value(name, labels, value)
    if x == x or spec.kind is MetricKind.GAUGE:  # noqa: PLR0124 (NaN)
        return x
    if struct.pack("<d", x) == _STALE_BYTES:  # the marker that ends a series
        return x
    raise InvalidSampleError(
        f"metric {name!r} {dict(labels)!r}: a {spec.kind.value} sample must not "
        f"be NaN (only gauges take NaN); nothing was recorded"
    )


def _check_labels(spec: MetricSpec, name: str, labels: Mapping[str, str]) -> None:
    """Refuse label names that the config does not declare for the metric.

    Any subset of the declared names is fine (a label left out has no value);
    a metric declared without ``labels`` takes any names; a histogram's
    ``_bucket`` series take ``le`` too.
    """
    declared = spec.labels
    if not declared:
        return
    extra = sorted(k for k in labels if k not in declared)
    if extra and spec.is_histogram and name == f"{spec.name}_bucket":
        extra = [k for k in extra if k != "le"]
    if extra:
        names = ", ".join(repr(k) for k in extra)
        raise InvalidSampleError(
            f"metric {name!r} {dict(labels)!r}: label{'s' if len(extra) > 1 else ''} "
            f"{names} {'are' if len(extra) > 1 else 'is'} not declared (declared: "
            f"{list(declared)!r}); nothing was recorded; fix the name or declare it "
            f"in the config"
        )


class _Child:
    """One labelled series (or, for histograms, family) of a metric handle."""

    sampled = None  # a histogram's SampledHistogram, set in __init__

    def __init__(
        self, engine: Engine, spec: MetricSpec, labels: LabelSet, admitted: bool = True
    ) -> None:
        self._engine = engine
        self.spec = spec
        self.labels_set = labels
        self.value = 0.0
        if spec.is_histogram:
            self.bucket_counts = [0.0] * (len(spec.bounds) + 1)
            self.sum = 0.0
            self.count = 0.0
            # Live observations (no ts_ms) go through the metric's sampler and
            # are written at the next flush; timed ones are exact.  A refused
            # child has no sampler: each observation is written, and so
            # refused and counted, at once.
            self.sampled = engine.sampled_histogram(spec, labels) if admitted else None
            self._flushed_count = 0.0

    def inc(self, amount: float = 1.0, ts_ms: int | None = None) -> None:
        """Add ``amount`` to a counter and record its new value.

        Raises
        ------
        TypeError
            When the metric is not a counter.
        InvalidSampleError
            When ``amount`` is no real number, or is negative, NaN or
            infinite (an infinite increment would leave the counter infinite
            for good), or ``ts_ms`` is refused as :meth:`Engine.record` says.
            The counter is unchanged.
        """
        if self.spec.kind is not MetricKind.COUNTER:
            raise TypeError(f"metric {self.spec.name!r} is a {self.spec.kind.value}; inc() is for counters")
        if amount.__class__ is not float:
            amount = _as_value(self.spec.name, self.labels_set, amount)
        if not 0.0 <= amount < math.inf:
            raise InvalidSampleError(
                f"metric {self.spec.name!r} {dict(self.labels_set)!r}: counter increment "
                f"must be finite and non-negative, got {amount!r}; nothing was recorded"
            )
        if ts_ms is not None:
            ts_ms = _as_ts(self.spec.name, self.labels_set, ts_ms)
        self.value += amount
        self._engine._record(self.spec.name, self.labels_set, self.value, ts_ms)

    def set(self, value: float, ts_ms: int | None = None) -> None:
        """Record a gauge's value; NaN and +-Inf are values like any other.

        Raises
        ------
        TypeError
            When the metric is not a gauge.
        InvalidSampleError
            When ``value`` is no real number (a string is refused even when
            it spells one), or ``ts_ms`` is refused as :meth:`Engine.record`
            says.  Nothing is recorded.
        """
        if self.spec.kind is not MetricKind.GAUGE:
            raise TypeError(f"metric {self.spec.name!r} is a {self.spec.kind.value}; set() is for gauges")
        if value.__class__ is not float:
            value = _as_value(self.spec.name, self.labels_set, value)
        if ts_ms is not None:
            ts_ms = _as_ts(self.spec.name, self.labels_set, ts_ms)
        self.value = value
        self._engine._record(self.spec.name, self.labels_set, value, ts_ms)

    def observe(self, value: float, ts_ms: int | None = None) -> None:
        """Observe one value of a histogram.

        Without ``ts_ms`` the value goes through the series' sampler and is
        written at the next flush; with it, the buckets are written at once.
        A value goes to the first bucket whose bound is >= it; +Inf to the
        last bucket and -Inf to the first (both also reach the sum).

        Raises
        ------
        TypeError
            When the metric is not a histogram.
        InvalidSampleError
            When ``value`` is no real number, or is NaN (a NaN has no bucket
            and would make the sum NaN for good), or ``ts_ms`` is refused as
            :meth:`Engine.record` says.  The histogram is unchanged.
        """
        # The live path first and with as few lookups as can be: only
        # histogram children have a sampler, and a float equal to itself
        # (not NaN) needs no other check.
        sampled = self.sampled
        if sampled is not None and ts_ms is None:
            # NaN is the one float that differs from itself
            if value.__class__ is not float or value != value:  # noqa: PLR0124
                value = self._observation(value)
            sampled.observe(value)
            return
        if not self.spec.is_histogram:
            raise TypeError(f"metric {self.spec.name!r} is a {self.spec.kind.value}; observe() is for histograms")
        value = self._observation(value)
        if ts_ms is not None:
            ts_ms = _as_ts(self.spec.name, self.labels_set, ts_ms)
        i = bisect.bisect_left(self.spec.bounds, value)
        self.bucket_counts[i] += 1
        self.sum += value
        self.count += 1
        self._write(_now_ms() if ts_ms is None else ts_ms)

    def _observation(self, value: Any) -> float:
        """An observation as a float; InvalidSampleError for NaN and non-numbers."""
        x = _as_value(self.spec.name, self.labels_set, value)
        if x != x:
            raise InvalidSampleError(
                f"metric {self.spec.name!r} {dict(self.labels_set)!r}: a histogram "
                f"observation must not be NaN; nothing was recorded"
            )
        return x

    def _write(self, ts: int) -> None:
        """Record the cumulative buckets, sum and count: exact plus sampled estimates."""
        counts, total, count = self.bucket_counts, self.sum, self.count
        if self.sampled is not None:
            counts = [a + b for a, b in zip(counts, self.sampled.bucket_counts.tolist())]
            total += self.sampled.sum
            count += self.sampled.count
        name = self.spec.name
        cum = 0.0
        for bound, n in zip((*self.spec.bounds, float("inf")), counts):
            cum += n
            bucket = self.labels_set.with_(le=_fmt_le(bound))
            self._engine._record(f"{name}_bucket", bucket, cum, ts)
        self._engine._record(f"{name}_sum", self.labels_set, total, ts)
        self._engine._record(f"{name}_count", self.labels_set, count, ts)

    def _flush_sampled(self, ts: int) -> None:
        if self.sampled is not None and self.sampled.count != self._flushed_count:
            self._flushed_count = self.sampled.count
            self._write(ts)


class MetricHandle:
    """A declared metric; ``labels(...)`` gives the child that records."""

    def __init__(self, engine: Engine, spec: MetricSpec) -> None:
        self._engine = engine
        self.spec = spec
        self._children: dict[LabelSet, _Child] = {}

    def labels(self, **labels: str) -> _Child:
        """The child of one label set, creating its series on first use.

        A label set whose series would pass a series limit gets a child that
        is not kept: what it records is dropped and counted by the engine,
        and nothing is held for it (see :meth:`Engine.record`).

        Raises
        ------
        InvalidSampleError
            When a label name is not among those the config declares for
            the metric (any subset of them is fine; a metric declared
            without ``labels`` takes any).  No series is created.
        """
        key = LabelSet(labels)
        child = self._children.get(key)
        if child is not None:
            return child
        _check_labels(self.spec, self.spec.name, key)
        if not self._engine._claim(self.spec, key):
            return _Child(self._engine, self.spec, key, admitted=False)
        child = self._children[key] = _Child(self._engine, self.spec, key)
        if self.spec.is_histogram and child.sampled is not None:
            self._engine._sampled_children.append(child)
        return child

    def inc(self, amount: float = 1.0, ts_ms: int | None = None) -> None:
        self.labels().inc(amount, ts_ms)

    def set(self, value: float, ts_ms: int | None = None) -> None:
        self.labels().set(value, ts_ms)

    def observe(self, value: float, ts_ms: int | None = None) -> None:
        self.labels().observe(value, ts_ms)


class Engine:
    """The obscore engine, in memory or on a data directory.

    Parameters
    ----------
    data_dir : str or Path, optional
        Where samples, the series index and rollups are kept between runs.
        Every batch is written to a write-ahead log there before ``ingest``
        or ``flush`` returns; ``close`` checkpoints to Parquet.  None keeps
        everything in memory.
    config : Config, str or Path, optional
        A loaded :class:`~obscore.config.Config` or the path of a TOML file;
        None uses the defaults.
    dependencies : mapping, optional
        Service dependency graph (caller -> callees), when no catalogue says it.
    catalogue : Catalogue, optional
        Services with owners, regions, hosts and dependencies; by default the
        ``[[services]]`` of the config.  Used to enrich anomalies, group them
        into incidents and diagnose them.

    Examples
    --------
    >>> eng = Engine()
    >>> eng.gauge("cpu_usage").labels(host="a", service="web").set(42.0, ts_ms=1_000)
    >>> eng.query("cpu_usage", start_ms=1_000, end_ms=1_000, step_ms=1_000)["value"].to_pylist()
    [42.0]
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        config: Config | str | Path | None = None,
        dependencies: Mapping[str, Sequence[str]] | None = None,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.index = SeriesIndex()
        self.hot = HotStore(
            self.index,
            self.config.hot_capacity,
            self.config.out_of_order_ms,
            self.config.on_conflict,
            self.config.max_future_ms,
            _now_ms,
        )
        self.rollups = RollupTiers(
            self.config.rollup_steps_ms,
            self.data_dir / "rollups" if self.data_dir is not None else None,
        )
        self.queries = QueryEngine(self.index, self._read, self.config.metrics)
        self.catalogue = catalogue if catalogue is not None else from_config(self.config.raw)
        if dependencies:
            for name, callees in dependencies.items():
                old = self.catalogue.get(name) or Service(name)
                self.catalogue.add(replace(old, dependencies=tuple(callees)))
        self.alert_book = AlertBook(self.config.dedup_window_ms, self.config.dedup_similarity)
        self.patterns = load_patterns(self.config.pattern_files)
        self.incidents: list[Incident] = []
        self.change_lookback_ms = _pipeline_duration(self.config, "change_lookback", "1h")
        owner = self.config.raw.get("pipeline", {}).get("business_owner")
        if owner:
            self.catalogue.business_owner = str(owner)
        self._api_services: set[str] = set()
        self._events_mtime_ns: int | None = None
        self.last_result: PipelineResult | None = None
        self.dropped: dict[str, int] = {}
        self.samples_ingested = 0
        limits = self.config.raw.get("limits", {})
        self.guard = CardinalityGuard(
            per_metric=int(limits.get("series_per_metric", 10_000)),
            total=int(limits.get("series_total", 1_000_000)),
        )
        # one sampler per histogram series (metric name, label set)
        self._samplers: dict[tuple[str, LabelSet], AdaptiveSampler] = {}
        self._sampled_children: list[_Child] = []
        self._scrapers: list = []
        self._lock = threading.RLock()  # the scraper's thread ingests too
        self._handles: dict[str, MetricHandle] = {}
        self._pending: list[tuple[int, int, float]] = []
        self._series_cache: dict[str, int] = {}
        self.wal: WriteAheadLog | None = None
        self.wal_damage = None
        self.blocks: BlockStore | None = None  # the on-disk tiers, with a data_dir
        self._last_compact_ms: int | None = None
        self._logged_since_rewrite = 0  # samples in the log since it was rewritten
        self._flushed_since_rewrite = 0  # of them, samples since flushed to blocks
        self._runner: PipelineRunner | None = None
        self._ticker: threading.Thread | None = None
        self._ticker_stop = threading.Event()
        self.on_page: list = []  # callables given each escalation Page
        if self.data_dir is not None:
            self._load()
            self._restore_pipeline()
        self.escalator = Escalator(
            policies_from_config(self.config.raw),
            self._send_page,
            self.data_dir / "alerts" if self.data_dir is not None else None,
        )
        # rules, routing, notifiers, remediation from the config; state in data_dir/alerts
        self.alert_flow = AlertLifecycle.from_config(
            self.config, self.data_dir / "alerts" if self.data_dir is not None else None
        )
        self.guard.count_existing(self.index)
        logger.info("engine opened: data_dir=%s, %d series", self.data_dir, len(self.index))

    # --- metadata ------------------------------------------------------------

    def spec(self, name: str) -> MetricSpec:
        """The declared spec of a metric (``_bucket``/``_sum``/``_count`` map to it)."""
        spec = self.config.spec_of(name)
        if spec is None:
            raise UnknownMetricError(
                f"unknown metric {name!r}; declare it in the config "
                f"(known: {', '.join(sorted(self.config.metrics))})"
            )
        return spec

    def _handle(self, name: str, kind: MetricKind) -> MetricHandle:
        spec = self.spec(name)
        if spec.kind is not kind:
            raise TypeError(f"metric {name!r} is declared as a {spec.kind.value}, not a {kind.value}")
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = MetricHandle(self, spec)
        return handle

    def counter(self, name: str) -> MetricHandle:
        return self._handle(name, MetricKind.COUNTER)

    def gauge(self, name: str) -> MetricHandle:
        return self._handle(name, MetricKind.GAUGE)

    def histogram(self, name: str) -> MetricHandle:
        return self._handle(name, MetricKind.HISTOGRAM)

    def counter_ids(self) -> set[int]:
        out = set()
        for sid in self.index:
            name = self.index.name(sid)
            if self.queries.kind_of(name) is MetricKind.COUNTER:
                out.add(sid)
        return out

    # --- write ---------------------------------------------------------------

    def record(
        self, name: str, labels: Mapping[str, str], value: float, ts_ms: int | None = None
    ) -> None:
        """Record one sample; it is in the hot tier at the next flush (or query).

        Parameters
        ----------
        name : str
            A declared metric, or a histogram's ``_bucket``, ``_sum`` or
            ``_count`` series.
        labels : mapping of str to str
            The label set.  Its names must be among those the config
            declares for the metric (any subset of them; ``le`` too for a
            ``_bucket`` series); a metric declared without ``labels`` takes
            any names.
        value : float
            A real number (int, float, NumPy scalar; a string is refused
            even when it spells one).  NaN and +-Inf are a gauge's values
            like any other.  A counter's or histogram's sample must not be
            NaN, except the staleness marker ``store.hot.STALE_NAN``.
        ts_ms : int, optional
            Milliseconds since the epoch, whole (an int, a NumPy integer or a
            float without a fraction) and within int64; now by default.

        Raises
        ------
        UnknownMetricError
            When the config does not declare the metric.
        InvalidSampleError
            When the value, ``ts_ms`` or a label name is refused as above.  The message
            names the metric, the label set and what was wrong; nothing is
            recorded, and the samples recorded before are kept.

        Notes
        -----
        With a data directory the sample is written to the write-ahead log
        before this returns, so it survives a crash of the process; it is
        fsynced (survives a power loss) when :meth:`flush` returns, which a
        query and every 10,000th recorded sample do too.

        The label names are checked when the call would create a series: a
        series the engine already holds (ingested from a scrape or a file,
        whose labels no config lists) takes samples as it is.

        A sample of a new series that would pass a series limit is dropped,
        counted and warned about once per metric (see ``guard``).  A sample
        more than ``store.max_future`` ahead of the wall clock is dropped
        and counted at the flush (``too_far_ahead``), as every ingested one.
        """
        spec = self.spec(name)
        if value.__class__ is not float or value != value:  # noqa: PLR0124 (NaN)
            value = _check_value(spec, name, labels, value)
        if ts_ms is not None:
            ts_ms = _as_ts(name, labels, ts_ms)
        self._record(name, labels, value, ts_ms, spec)

    def _record(
        self,
        name: str,
        labels: Mapping[str, str],
        value: float,
        ts_ms: int | None = None,
        spec: MetricSpec | None = None,
    ) -> None:
        """:meth:`record` of a checked float value.

        ``spec`` is what a new series' label names are checked against; None
        when the caller (a metric handle's child) checked them already.
        """
        sid = series_id(name, labels)
        if sid not in self.index:
            if spec is not None:
                _check_labels(spec, name, labels)
            with self._lock:
                refused = self.guard.claim(name, labels)
                if refused is not None:
                    self.dropped[refused] = self.dropped.get(refused, 0) + 1
                    return
                self._add_series(name, labels)
        ts = _now_ms() if ts_ms is None else int(ts_ms)
        if self.wal is not None:
            with self._lock:
                self.wal.append_sample(sid, ts, value)
                self._pending.append((sid, ts, value))
        else:
            if self.data_dir is not None:
                self._refuse_closed()
            self._pending.append((sid, ts, value))
        if len(self._pending) >= 10_000:
            self.flush()

    def _claim(self, spec: MetricSpec, labels: LabelSet) -> bool:
        """Admit and create the series of a metric handle's child, or refuse it.

        A histogram's bucket, sum and count series are claimed together, or
        none of them.  A refusal warns (once per metric) but counts no sample:
        the samples the refused child records are counted as they are dropped.
        """
        if spec.is_histogram:
            wanted = [
                (f"{spec.name}_bucket", labels.with_(le="+Inf")),
                (f"{spec.name}_sum", labels),
                (f"{spec.name}_count", labels),
            ]
        else:
            wanted = [(spec.name, labels)]
        with self._lock:
            claimed = []
            for name, series_labels in wanted:
                if series_id(name, series_labels) in self.index:
                    continue
                if not self.guard.admit(name, series_labels, n_samples=0):
                    for done in claimed:
                        self.guard.release(*done)
                    return False
                claimed.append((name, series_labels))
            for name, series_labels in claimed:
                self._add_series(name, series_labels)
        return True

    def _add_series(self, name: str, labels: Mapping[str, str]) -> int:
        before = len(self.index)
        sid = self.index.add(name, labels)
        if self.wal is not None and len(self.index) > before:
            self.wal.append_series(sid, name, dict(labels))
        return sid

    def flush(self) -> IngestResult:
        """Store the samples recorded since the last flush.

        ``record`` buffers samples; they are acknowledged (in the write-ahead
        log, with a data directory) when ``flush`` returns.  A query flushes
        first, and so does every 10,000th recorded sample.
        """
        with self._lock:
            now = _now_ms()
            for child in self._sampled_children:
                child._flush_sampled(now)
            if not self._pending:
                return IngestResult()
            ids, ts, values = zip(*self._pending)
            self._pending.clear()
            table = sample_table(np.array(ids, np.uint64), np.array(ts), np.array(values))
            if self.wal is not None:
                self.wal.settle()  # record() wrote these samples to the log already
            return self._store(table, logged=True)

    def ingest(self, data: Any, index: SeriesIndex | None = None) -> IngestResult:
        """Store an Arrow sample batch.

        Parameters
        ----------
        data : pa.Table or pa.RecordBatch
            Columns ``series_id: uint64, ts: int64, value: float64``.
        index : SeriesIndex, optional
            Names and labels of the batch's series, merged into the engine's.

        Returns
        -------
        IngestResult
            Rows stored and rows dropped by reason.  Rows with a null,
            rows of undeclared metrics, unknown series ids, timestamps more
            than ``store.max_future`` ahead of the wall clock, out-of-order
            or duplicate timestamps are dropped and counted; one warning per
            batch says so.

        Raises
        ------
        SchemaError
            When a column is missing or of a type that cannot hold it; the
            batch is refused whole.
        """
        table, nulls = without_nulls(as_sample_table(data))
        undeclared, limited = IngestResult(), IngestResult()
        with self._lock:
            if index is not None:
                unknown = [n for n in index.metric_names if not self._is_declared(n)]
                if unknown:
                    table, undeclared = self._drop_undeclared(table, index, unknown)
                table, _, limited = self._admit(table, index)
            result = self._store(table, before=nulls)
        result.add(undeclared)  # these two warned on their own already
        result.add(limited)
        return result

    def _drop_undeclared(
        self, table: pa.Table, index: SeriesIndex, unknown: list[str]
    ) -> tuple[pa.Table, IngestResult]:
        """Drop the rows of series whose metric is not declared; count and warn."""
        names = set(unknown)
        bad_ids = np.array([sid for sid in index if index.name(sid) in names], np.uint64)
        ids = table["series_id"].to_numpy()
        bad = np.isin(ids, bad_ids)
        dropped = IngestResult()
        n = int(bad.sum())
        if n:
            first = int(np.argmax(bad))
            sid = int(ids[first])
            where = f"row {first}: {index.describe(sid)} at ts {int(table['ts'][first].as_py())}"
            dropped.dropped["unknown_metric"] = n
            dropped.first_bad["unknown_metric"] = where
            self.dropped["unknown_metric"] = self.dropped.get("unknown_metric", 0) + n
            text = (
                f"dropped {n} of {table.num_rows} samples of undeclared metrics "
                f"{sorted(names)!r} (first: {where}); declare them in the config"
            )
            logger.warning("ingest %s", text)
            warnings.warn(text, DroppedDataWarning, stacklevel=3)
            table = table.filter(pa.array(~bad))
        return table, dropped

    def _admit(
        self, table: pa.Table, index: SeriesIndex
    ) -> tuple[pa.Table, list[int], IngestResult]:
        """Create the batch's new series that the guard admits; drop the others' rows.

        Returns the table to store, the ids of the refused series and their
        rows counted by reason (added to :attr:`dropped` too; the guard warns
        once per metric, not per batch).
        """
        ids = table["series_id"].to_numpy()
        decision = self.guard.admit_batch(ids, index, self.index)
        for sid in decision.admitted:
            self._add_series(index.name(sid), index.labels(sid))
        limited = IngestResult()
        if decision.keep is None:
            return table, [], limited
        for sid, (reason, n) in decision.refused.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
            limited.dropped[reason] = limited.dropped.get(reason, 0) + n
            if reason not in limited.first_bad:  # first-seen order: its first row
                row = int(np.argmax(ids == sid))
                ts = table["ts"][row].as_py()
                limited.first_bad[reason] = (
                    f"row {row}: {index.describe(sid)} at ts {ts} would exceed "
                    f"{self.guard.limit_text(index.name(sid), reason)}"
                )
        return table.filter(pa.array(decision.keep)), list(decision.refused), limited

    def ingest_exposition(
        self,
        text: str | bytes,
        *,
        format: str | None = None,
        ts_ms: int | None = None,
        lenient: bool = True,
        declare: bool = False,
    ) -> IngestResult:
        """Parse Prometheus text or OpenMetrics and store its samples.

        Parameters
        ----------
        text : str or bytes
            The exposition.
        format : {"prometheus", "openmetrics"}, optional
            Sniffed from the text when None.
        ts_ms : int, optional
            Timestamp for samples that carry none (now by default).
        lenient : bool
            Keep the valid families around bad lines (counted in the log);
            False raises :class:`InvalidSampleError` at the first bad line.
        declare : bool
            Declare metrics the config does not know from the exposition's
            TYPE lines instead of refusing them.

        Raises
        ------
        UnknownMetricError
            When a family is not declared and ``declare`` is False.
        """
        from obscore.ingest.exposition import parse

        now = _now_ms()
        parsed = parse(
            text, format=format, lenient=lenient, default_ts_ms=ts_ms or now,
            now_ms=now, max_future_ms=self.config.max_future_ms,
        )
        if parsed.errors:
            logger.warning(
                "exposition: %d bad lines dropped (first: line %d: %s)",
                len(parsed.errors), *parsed.errors[0],
            )
        specs = parsed.specs()
        if declare:
            for spec in specs:
                self.config.metrics.setdefault(spec.name, spec)
        else:
            unknown = sorted({s.name for s in specs if not self._is_declared(s.name)})
            if unknown:
                raise UnknownMetricError(
                    f"exposition has undeclared metrics {unknown[:5]!r}"
                    f"{' and more' if len(unknown) > 5 else ''}; declare them or pass declare=True"
                )
        with self._lock:
            # The cache skips known series, so only the others land in `new`.
            new = SeriesIndex()
            batch = parsed.to_batch(new, cache=self._series_cache)
            batch, refused, limited = self._admit(batch, new)
            if refused:  # ask the guard again next time instead of trusting the cache
                gone = set(refused)
                for key in [k for k, sid in self._series_cache.items() if sid in gone]:
                    del self._series_cache[key]
            result = self._store(batch)
            result.add(limited)
            if parsed.errors:  # lenient: the bad lines are dropped, counted here
                line, message = parsed.errors[0]
                result.dropped["bad_line"] = len(parsed.errors)
                result.first_bad["bad_line"] = f"line {line}: {message}"
                self.dropped["bad_line"] = self.dropped.get("bad_line", 0) + len(parsed.errors)
            return result

    def _is_declared(self, name: str) -> bool:
        return self.config.spec_of(name) is not None

    def _refuse_closed(self) -> None:
        raise EngineClosedError(
            f"the engine on {self.data_dir} is closed; open it again to write to it"
        )

    def _store(
        self, table: pa.Table, logged: bool = False, before: IngestResult | None = None
    ) -> IngestResult:
        """Log and store a batch; count and warn about the rows dropped, together
        with ``before``, those the caller dropped from it already."""
        if self.blocks is not None and self.wal is None and table.num_rows:
            self._refuse_closed()
        logged_at = None
        if self.wal is not None and not logged:
            logged_at = self.wal.append_samples(
                table["series_id"].to_numpy(), table["ts"].to_numpy(), table["value"].to_numpy(),
                wait=False,
            )
        if self.blocks is not None:
            self._logged_since_rewrite += table.num_rows
        result = IngestResult()
        if before is not None:
            result.add(before)
        result.add(self._ingest_hot(table))  # while the log's fsync runs
        n_rows = table.num_rows + (before.n_dropped if before is not None else 0)
        if logged_at is not None:
            self.wal.wait(logged_at)  # acknowledged: synced as the policy says
        self.samples_ingested += result.stored
        for reason, n in result.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        if result.dropped:
            detail = "; ".join(
                f"{n} {reason} (first: {result.first_bad[reason]})"
                for reason, n in result.dropped.items()
            )
            logger.warning(
                "ingest dropped %d of %d samples: %s", result.n_dropped, n_rows, detail
            )
            warnings.warn(
                f"dropped {result.n_dropped} of {n_rows} samples: {detail}",
                DroppedDataWarning,
                stacklevel=3,
            )
        return result

    def _ingest_hot(self, table: pa.Table, *, rewrite_log: bool = True) -> IngestResult:
        """Put a batch into the hot tier and cut the blocks it completes.

        A series' ring holds ``store.hot_capacity`` samples, and a push past
        that overwrites the oldest.  So with a data directory a batch that
        holds more than half a ring of one series (a backfill, a big file)
        goes in as parts of at most half a ring per series, in time order,
        with blocks cut after each part: every sample reaches a block before
        the ring could overwrite it.  Without a data directory the hot tier
        is all there is and keeps the newest samples; a warning says how many
        older ones the batch itself pushed out.
        """
        half = max(1, self.config.hot_capacity // 2)
        parts = [table]
        if table.num_rows > half:
            parts = _ring_parts(table, half)
            if self.blocks is None and len(parts) > 1:
                parts = [table]
                over = _most_per_series(table) - self.config.hot_capacity
                if over > 0:
                    logger.warning(
                        "batch holds %d more samples of one series than its ring keeps "
                        "(store.hot_capacity %d): the oldest are overwritten; open a data "
                        "directory to keep them", over, self.config.hot_capacity,
                    )
        result = IngestResult()
        for part in parts:
            result.add(self.hot.ingest(part))
            if self.blocks is not None and part.num_rows:
                self._cut_blocks(rewrite_log=rewrite_log)
        return result

    # --- storage tiers -------------------------------------------------------

    def _read(self, sid: int, start_ms: int, end_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """One series over ``[start_ms, end_ms)``: the hot tier, stitched with the
        on-disk tiers when there is a data directory."""
        if self.blocks is None:
            return self.hot.read(sid, start_ms, end_ms)
        return self.blocks.read(sid, start_ms, end_ms, self.hot.read)

    def _cut_blocks(self, rewrite_log: bool = True) -> None:
        """Flush every series' complete blocks from the hot tier to raw Parquet blocks.

        Called under the lock after each stored batch.  A block is complete
        for a series once its newest sample is ``out_of_order_window`` past
        the block's end; later samples before it are refused (``too_old``) by
        the sample rules anyway.  The write-ahead log is rewritten to hold
        only what the blocks do not, once the blocks hold at least half of it.
        """
        assert self.blocks is not None and self.wal is not None
        ids, untils = self.hot.due(self.blocks.settings.block_ms, self.config.out_of_order_ms)
        if len(ids) == 0:
            return
        floors = dict(zip(ids.tolist(), untils.tolist()))
        olds = self.hot.floors(ids)
        parts = []
        # series sharing their old and new floor (usually all) are read in one go
        pairs = np.stack([olds, untils])
        for lo, hi in np.unique(pairs, axis=1).T.tolist():
            group = np.sort(ids[(olds == lo) & (untils == hi)])
            parts.append(self.hot.read_table(group, lo, hi))
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        written = self.blocks.write_raw(table, floors)
        self.hot.set_floors(ids, untils)
        self._flushed_since_rewrite += table.num_rows
        if written:
            logger.info("flushed %d samples of %d series to %d raw blocks",
                        table.num_rows, len(floors), len(written))
        if (
            rewrite_log
            and self._flushed_since_rewrite
            and self._flushed_since_rewrite * 2 >= max(self._logged_since_rewrite, 1)
        ):
            self._rewrite_wal()

    def _hot_unflushed(self) -> pa.Table:
        """The hot tier's samples not yet in blocks (at or after each series' floor)."""
        ids = self.hot.series_ids()
        if len(ids) == 0:
            return SAMPLE_SCHEMA.empty_table()
        floors = self.hot.floors(ids)
        parts = [self.hot.read_table(ids[floors == lo], lo) for lo in np.unique(floors).tolist()]
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def _rewrite_wal(self) -> None:
        assert self.wal is not None
        series = [(sid, self.index.name(sid), dict(self.index.labels(sid))) for sid in self.index]
        hot = self._hot_unflushed()
        batches = [(hot["series_id"].to_numpy(), hot["ts"].to_numpy(), hot["value"].to_numpy())]
        if self._pending:
            ids, ts, values = zip(*self._pending)
            batches.append((np.array(ids, np.uint64), np.array(ts, np.int64), np.array(values)))
        self.wal.rewrite(series, batches)
        self._logged_since_rewrite = sum(len(b[0]) for b in batches)
        self._flushed_since_rewrite = 0

    def compact(self, now_ms: int | None = None) -> CompactResult | None:
        """Flush complete raw blocks, downsample them to the warm and cold tiers
        and delete blocks past retention (see :mod:`obscore.store.blocks`).

        Parameters
        ----------
        now_ms : int, optional
            The time retention is measured from (default: the wall clock).

        Returns
        -------
        CompactResult or None
            The blocks written and pruned; None without a data directory.
        """
        if self.blocks is None:
            return None
        self.flush()
        now = _now_ms() if now_ms is None else int(now_ms)
        with self._lock:
            self._cut_blocks()
            result = self.blocks.compact(now, self.counter_ids())
        self._last_compact_ms = now
        logger.info(
            "compaction at ts %d: %d blocks written, %d pruned (%s)",
            now, len(result.written), len(result.pruned),
            ", ".join(f"{b.tier}/{b.path.name}" for b in result.pruned) or "none",
        )
        return result

    def _compact_if_due(self, now_ms: int) -> None:
        if self.blocks is None:
            return
        due = self.blocks.settings.compact_interval_ms
        if self._last_compact_ms is None or now_ms - self._last_compact_ms >= due:
            self.compact(now_ms)

    # --- sampling, scraping, self-metrics -------------------------------------

    def sampled_histogram(self, spec: MetricSpec, labels: Mapping[str, str] | None = None):
        """A histogram of one series fed through its own adaptive sampler, or None
        when the config turns sampling off (``[sampling] mode = "off"``).

        The sampler's burst trigger is the ``[sampling]`` table of the config;
        each series (metric and label set) has its own, so a burst on one
        endpoint keeps every observation there and not everywhere.
        """
        if self.config.raw.get("sampling", {}).get("mode", "adaptive") != "adaptive":
            return None
        key = (spec.name, LabelSet(labels or {}))
        sampler = self._samplers.get(key)
        if sampler is None:
            sampler = self._samplers[key] = AdaptiveSampler(
                self.config.sampling_baseline,
                self.config.sampling_burst,
                **self.config.sampling_trigger,  # type: ignore[arg-type]
            )
        return sampler.histogram(spec.bounds)

    def trigger_sampling(
        self,
        metric: str | None = None,
        duration_ms: int | None = None,
        reason: str = "latency anomaly",
        labels: Mapping[str, str] | None = None,
    ) -> int:
        """Keep every observation of some histogram series for a while.

        Parameters
        ----------
        metric : str, optional
            The histogram; every histogram when None.
        duration_ms : int, optional
            How long; ``[sampling] anomaly_burst`` (5m) by default.
        reason : str
            Recorded in the sampler's bursts and the log.
        labels : mapping, optional
            Only series whose label sets hold all of these.

        Returns
        -------
        int
            How many series were triggered.
        """
        if duration_ms is None:
            duration_ms = self.config.sampling_anomaly_ms
        wanted = dict(labels or {})
        n = 0
        for (name, series_labels), sampler in list(self._samplers.items()):
            if metric is not None and name != metric:
                continue
            if all(series_labels.get(k) == v for k, v in wanted.items()):
                sampler.trigger(duration_ms, reason=reason)
                n += 1
        return n

    def _trigger_sampling_on(self, anomalies, now_ms: int | None = None) -> None:
        """Start sampling bursts for the live latency and error anomalies.

        An anomaly on a histogram (a latency) triggers that histogram's series
        with the anomaly's labels; one on a metric whose name matches
        ``[sampling] error_metrics`` triggers every histogram series with its
        labels.  Anomalies that ended more than ``anomaly_burst`` ago (a
        replay of old data) trigger nothing.
        """
        if not self._samplers:
            return
        now = _now_ms() if now_ms is None else now_ms
        horizon = self.config.sampling_anomaly_ms
        errors = re.compile(self.config.sampling_error_pattern)
        for anomaly in anomalies:
            if anomaly.end_ms < now - horizon:
                continue
            spec = self.config.metrics.get(anomaly.metric)
            if spec is not None and spec.is_histogram:
                metric, reason = anomaly.metric, f"latency anomaly on {anomaly.signal}"
            elif errors.search(anomaly.metric):
                metric, reason = None, f"error anomaly on {anomaly.signal}"
            else:
                continue
            n = self.trigger_sampling(metric, reason=reason, labels=anomaly.labels)
            if n:
                logger.info("sampling: %s keeps every observation of %d series", reason, n)

    def scrape(self, targets, *, timeout_s: float = 10.0, declare: bool = True):
        """Start scraping targets into this engine in a background thread.

        Returns the running :class:`~obscore.ingest.scrape.Scraper`; stop it
        with ``stop()`` (``close()`` stops every scraper of the engine).
        ``declare`` declares the scraped metrics from their TYPE lines.
        """
        from obscore.ingest.scrape import Scraper

        scraper: Scraper

        def sink(batch: pa.Table, index: SeriesIndex) -> None:
            if declare:
                for spec in scraper.specs.values():
                    self.config.metrics.setdefault(spec.name, spec)
            self.ingest(batch, index)
            # the series the engine refused (a series limit) leave the scraper too
            ids = np.unique(batch["series_id"].to_numpy()).tolist()
            scraper.forget([sid for sid in ids if sid not in self.index])

        scraper = Scraper(targets, sink, timeout_s=timeout_s)
        self._scrapers.append(scraper)
        scraper.start()
        return scraper

    def time_range(self) -> tuple[int, int] | None:
        """The oldest and newest sample times held in the hot tier and the raw
        blocks on disk (the samples a replay can read), or None when empty."""
        with self._lock:
            self.flush()
            spans = [self.hot.time_range()]
            raw = self.blocks.blocks("raw") if self.blocks is not None else []
            for block in (raw[:1] + raw[-1:]) if raw else []:  # oldest first
                ts = pq.read_table(block.path, columns=["ts"])["ts"]
                if len(ts):
                    spans.append((pc.min(ts).as_py(), pc.max(ts).as_py()))
        spans = [s for s in spans if s is not None]
        if not spans:
            return None
        return min(lo for lo, _ in spans), max(hi for _, hi in spans)

    def stats(self) -> dict[str, Any]:
        """The engine's own counters, as ``obscore.ingest.selfmetrics.render`` takes them."""
        out: dict[str, Any] = {
            "samples_ingested": self.samples_ingested,
            "samples_dropped": dict(self.dropped),  # the series limits' too
            "cardinality_dropped": dict(self.guard.dropped),
            "series": len(self.index),
            "series_limit": self.guard.total,
            "sampling_rate": self._sampling_rates(),
        }
        if self.wal is not None:
            out["wal_bytes_written"] = self.wal.bytes_written
            out["wal_size_bytes"] = self.wal.path.stat().st_size
        if self._scrapers:
            out["scrape_targets"] = [row for s in self._scrapers for row in s.target_stats()]
        return out

    def _sampling_rates(self) -> dict[str, float]:
        """The highest sampling rate among the series of each histogram."""
        rates: dict[str, float] = {}
        for (name, _), sampler in list(self._samplers.items()):
            rates[name] = max(rates.get(name, 0.0), sampler.rate)
        return rates

    def self_metrics(self) -> str:
        """The engine's own counters in the Prometheus text format 0.0.4."""
        from obscore.ingest.selfmetrics import render

        return render(self.stats())

    # --- read ----------------------------------------------------------------

    def query(
        self,
        metric: str,
        *,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        matchers=None,
        fn: str | None = None,
        window_ms: int | None = None,
        agg: str | None = None,
        by: Sequence[str] | None = None,
        without: Sequence[str] | None = None,
        quantile: float | None = None,
    ) -> pa.Table:
        """Evaluate a range query and return a long Arrow table.

        Parameters
        ----------
        metric : str
            Metric (or ``_bucket``/``_sum``/``_count`` series) name.
        start_ms, end_ms, step_ms : int
            Evaluation times ``start_ms, start_ms + step_ms, ... <= end_ms``.
        matchers : mapping or sequence, optional
            ``{"service": "auth"}`` or ``[("service", "=~", "a.*")]``.
        fn : str, optional
            ``rate``, ``increase``, ``irate``, ``delta``, ``deriv`` or
            ``<agg>_over_time``, over ``window_ms``.
        agg : str, optional
            ``sum``, ``avg``, ``min``, ``max``, ``count``, ``stddev``,
            ``quantile`` across series, ``by`` or ``without`` labels.
        quantile : float, optional
            With a histogram metric and no ``agg``: ``histogram_quantile`` of
            the bucket rates over ``window_ms`` (5m default), by ``by``.

        Returns
        -------
        pa.Table
            One string column per label, then ``ts`` (int64 ms) and ``value``
            (float64); evaluation times with no data are left out.

        Raises
        ------
        ValueError
            If the times are not integers, ``end_ms < start_ms``,
            ``step_ms < 1``, the range holds more than
            :data:`MAX_QUERY_STEPS` evaluation times, ``by`` is a single
            string, or both ``by`` and ``without`` are given.
        """
        _check_range(start_ms, end_ms, step_ms)
        for name, labels in (("by", by), ("without", without)):
            if isinstance(labels, str):
                raise ValueError(f"{name} must be a sequence of label names, got the string {labels!r}")
        if by is not None and without is not None:
            raise ValueError("give by or without, not both")
        self.flush()
        with self._lock:
            return self.queries.range(
                metric,
                start_ms=start_ms,
                end_ms=end_ms,
                step_ms=step_ms,
                matchers=matchers,
                fn=fn,
                window_ms=window_ms,
                agg=agg,
                by=by,
                without=without,
                quantile=quantile,
            )

    def query_promql(
        self,
        text: str,
        *,
        time_ms: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        step_ms: int | None = None,
    ) -> pa.Table:
        """Evaluate a PromQL query, instant (``time_ms``) or range (start, end, step).

        Parameters
        ----------
        text : str
            PromQL, e.g. ``sum by (service) (rate(error_rate[5m]))``.
        time_ms : int, optional
            Evaluation time of an instant query; now when nothing is given.
        start_ms, end_ms, step_ms : int, optional
            Evaluation times ``start_ms, start_ms + step_ms, ... <= end_ms`` of
            a range query; give all three and no ``time_ms``.

        Returns
        -------
        pa.Table
            One string column per label (``__name__`` where Prometheus keeps
            it), then ``ts`` (int64 ms) and ``value`` (float64); the schema
            metadata ``promql_result_type`` is ``vector``, ``scalar`` or
            ``matrix``.  See :class:`obscore.store.promql.PromQLEngine`.

        Raises
        ------
        ValueError
            When the times are mixed or incomplete.
        obscore.store.promql.PromQLError
            When the query does not parse or fails as it would in Prometheus.
        obscore.errors.UnsupportedQueryError
            When the query uses a construct obscore does not evaluate.
        """
        from obscore.store.promql import PromQLEngine

        self.flush()
        engine = PromQLEngine(self.queries)
        if start_ms is None and end_ms is None and step_ms is None:
            with self._lock:
                return engine.instant(text, _now_ms() if time_ms is None else int(time_ms))
        if time_ms is not None or start_ms is None or end_ms is None or step_ms is None:
            raise ValueError(
                "give time_ms for an instant query or all of start_ms, end_ms and "
                f"step_ms for a range query; got time_ms={time_ms!r}, "
                f"start_ms={start_ms!r}, end_ms={end_ms!r}, step_ms={step_ms!r}"
            )
        _check_range(start_ms, end_ms, step_ms)
        with self._lock:
            return engine.range(text, start_ms=start_ms, end_ms=end_ms, step_ms=step_ms)

    def rollup(self, step_ms: int) -> pa.Table:
        """Rollup rows at one of the configured steps (recomputed from the hot tier)."""
        self.flush()
        self.rollups.update(self.hot.read_table(), self.counter_ids())
        return self.rollups.get(step_ms)

    # --- pipeline ------------------------------------------------------------

    def run_pipeline(self, start_ms: int, end_ms: int, step_ms: int = 10_000) -> PipelineResult:
        """Detect anomalies over a stored range, group them and raise alerts."""
        self.flush()
        signals = derive_signals(self.queries, self.config.metrics, start_ms, end_ms, step_ms)
        anomalies = []
        for sig in signals:
            anomalies.extend(
                detect_runs(sig, self.config.zscore_window_ms, self.config.zscore_threshold)
            )
        self._refresh_events()
        self._trigger_sampling_on(anomalies)
        anomalies = enrich(
            anomalies, self.catalogue, self.config.metrics, self.change_lookback_ms
        )
        incidents = group_incidents(anomalies, self.catalogue)
        alerts = raise_alerts(self.alert_book, incidents, self.config.metrics)
        self.incidents = incidents
        self.last_result = PipelineResult({s.key: s for s in signals}, anomalies, incidents, alerts)
        logger.info(
            "pipeline ran: %d signals, %d anomalies, %d incidents, %d new alerts",
            len(signals), len(anomalies), len(incidents), len(alerts),
        )
        return self.last_result

    def record_event(
        self, service: str, kind: str, description: str = "", *, ts_ms: int | None = None,
        region: str | None = None,
    ) -> ChangeEvent:
        """Record a change event (``deploy``, ``config``, ``scaling``, ``feature_flag``, ``other``).

        ``scale`` and ``flag`` are accepted for ``scaling`` and ``feature_flag``.
        With a data directory the events are saved to ``events.json`` there,
        merged with what another process (``obscore event``) wrote meanwhile.

        Raises
        ------
        ConfigError
            For an unknown kind or an empty service.
        """
        with self._lock:
            self._refresh_events()
            event = self.catalogue.record_event(
                _now_ms() if ts_ms is None else ts_ms, service, kind, description, region
            )
            if self.data_dir is not None:
                path = self.data_dir / "events.json"
                self.catalogue.save_events(path)
                self._events_mtime_ns = path.stat().st_mtime_ns
        return event

    def _refresh_events(self) -> None:
        """Merge the events another process saved in the data directory since we last looked."""
        if self.data_dir is None:
            return
        path = self.data_dir / "events.json"
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._events_mtime_ns:
            return
        other = Catalogue()
        other.load_events(path)
        self.catalogue.merge_events(other.events)
        self._events_mtime_ns = mtime

    def add_service(self, service: Service) -> None:
        """Add or replace a catalogue entry; with a data directory it is kept in ``services.json``.

        Services added this way are loaded over the config's ``[[services]]``
        when the engine opens the data directory again.
        """
        with self._lock:
            self.catalogue.add(service)
            self._api_services.add(service.name)
            if self.data_dir is not None:
                self.catalogue.save_services(self.data_dir / "services.json", self._api_services)

    def alerts(self) -> list[Alert]:
        return list(self.alert_book.alerts)

    def diagnose(self, incident: Incident, result: PipelineResult | None = None) -> Diagnosis:
        """Rank the candidate causes of ``incident`` by posterior probability.

        Parameters
        ----------
        incident : Incident
            An incident the pipeline found.
        result : PipelineResult, optional
            The run that found it, whose signals are read (what
            :meth:`replay` returns); by default the engine's last run
            (:meth:`run_pipeline` or :meth:`tick`).

        Notes
        -----
        With a data directory, past diagnosed incidents in
        ``incidents.jsonl`` whose symptoms match this one are evidence for
        their cause, and this diagnosis is recorded there in turn (see
        :mod:`obscore.diagnose.history`).  Change events count for every
        service they name, in the catalogue or not.
        """
        result = result if result is not None else self.last_result
        if result is None:
            raise RuntimeError(
                "no pipeline run to read the incident's signals from: run the pipeline "
                "(run_pipeline or tick) first, or pass the result of replay as result="
            )
        signals = result.signals
        cfg = self.config
        dependencies = self.catalogue.dependencies() or None
        named = {*self.catalogue.services, *(e.service for e in self.catalogue.events)}
        changes = {
            name: [
                str(e)
                for e in self.catalogue.events_before(
                    incident.start_ms, self.change_lookback_ms, [name]
                )
            ]
            for name in named
        }
        history = self.incident_history
        past: list[tuple[str, str, float]] = []
        symptoms: dict[str, dict[str, float]] = {}
        if history is not None:
            from obscore.diagnose.history import incident_key, incident_symptoms

            symptoms = incident_symptoms(incident, signals, dependencies, changes)
            past = history.evidence(symptoms, exclude=incident_key(incident))
        diag = diagnose(
            incident,
            signals,
            dependencies,
            correlation_window_ms=cfg.correlation_window_ms,
            min_correlation=cfg.min_correlation,
            granger_alpha=cfg.granger_alpha,
            granger_maxlag=cfg.granger_maxlag,
            patterns=self.patterns,
            changes=changes,
            pattern_similarity=cfg.pattern_similarity,
            history=past,
        )
        if history is not None:
            from obscore.diagnose.history import record_diagnosis

            record_diagnosis(history, incident, diag, symptoms)
        return diag

    @property
    def incident_history(self):
        """The :class:`~obscore.diagnose.history.IncidentHistory` of the data directory, or None."""
        if self.data_dir is None:
            return None
        if getattr(self, "_incident_history", None) is None:
            from obscore.diagnose.history import IncidentHistory

            self._incident_history = IncidentHistory(self.data_dir / "incidents.jsonl")
        return self._incident_history

    # --- continuous operation ----------------------------------------------------

    def _pipeline_settings(self) -> dict[str, int]:
        return {
            "step_ms": _pipeline_duration(self.config, "step", "10s"),
            "settle_ms": _pipeline_duration(self.config, "settle", "0s"),
            "catch_up_ms": _pipeline_duration(self.config, "catch_up", "6h"),
            "quiet_ms": _pipeline_duration(self.config, "quiet", "15m"),
            "interval_ms": _pipeline_duration(self.config, "interval", "10s"),
            "keep_ms": _pipeline_duration(self.config, "keep", "7d"),
        }

    def _live_keep_ms(self) -> int:
        """``[pipeline] keep``: how long the live pipeline keeps an incident after its end."""
        cfg = self._pipeline_settings()
        keep_ms = cfg["keep_ms"]
        least = cfg["quiet_ms"] + self.config.dedup_window_ms
        if keep_ms < least:
            from obscore.durations import format_duration

            raise ConfigError(
                f"pipeline.keep: {format_duration(keep_ms)} is shorter than "
                f"pipeline.quiet plus the dedup window ({format_duration(least)}): "
                "incidents and alerts that can still grow would be forgotten"
            )
        return keep_ms

    def _new_runner(self, book: AlertBook, *, live: bool) -> PipelineRunner:
        """A pipeline runner with the config's settings; a live one forgets
        incidents ``[pipeline] keep`` after their end, a replay keeps all."""
        cfg = self._pipeline_settings()
        return PipelineRunner(
            step_ms=cfg["step_ms"],
            window_ms=self.config.zscore_window_ms,
            threshold=self.config.zscore_threshold,
            quiet_ms=cfg["quiet_ms"],
            change_lookback_ms=self.change_lookback_ms,
            keep_ms=self._live_keep_ms() if live else None,
            book=book,
        )

    @property
    def runner(self) -> PipelineRunner:
        """The live pipeline's state (created on first use, restored from the data directory)."""
        if self._runner is None:
            self._runner = self._new_runner(self.alert_book, live=True)
        return self._runner

    def tick(self, now_ms: int | None = None) -> PipelineResult | None:
        """Run the live pipeline over the samples stored since the last tick.

        Parameters
        ----------
        now_ms : int, optional
            The current time (default: the wall clock).  The pipeline
            evaluates grid points up to ``now_ms`` minus ``[pipeline] settle``
            (0s by default: the samples of a point must be stored before
            it is evaluated).  The first tick starts at the oldest sample,
            or ``[pipeline] catch_up`` (6h) before now if that is later.

        Returns
        -------
        PipelineResult or None
            All anomalies and incidents so far and the alerts this tick
            raised (also in :meth:`alerts`); None while nothing is stored.
        """
        cfg = self._pipeline_settings()
        now = _now_ms() if now_ms is None else int(now_ms)
        with self._lock:
            self.flush()
            runner = self.runner
            start = None
            if runner.cursor_ms is None:
                rng = self.hot.time_range()
                if rng is None:
                    return None
                start = max(rng[0], now - cfg["catch_up_ms"])
            self._refresh_events()
            result = runner.advance(
                self.queries, self.config.metrics, self.catalogue, now - cfg["settle_ms"], start,
                read_many=store_reader(self.hot, self.blocks),
            )
            self.last_result = result
            self.incidents = result.incidents
            self._trigger_sampling_on(result.anomalies, now)  # live latency/errors
            if runner.cursor_ms is not None:
                self.escalate(runner.cursor_ms)
            self.step_alerts(now)
        if result.alerts:
            logger.info("pipeline tick: %d new alerts, %d open anomalies",
                        len(result.alerts), len(runner._open))
        return result

    # --- alert lifecycle ------------------------------------------------------------

    def step_alerts(self, now_ms: int | None = None) -> list:
        """Evaluate the config's alert rules and route, notify and remediate at ``now_ms``.

        The pipeline's alerts are posted too (firing while their anomaly was
        seen within 20 minutes of the pipeline's cursor); :meth:`tick` calls
        this after every advance.  The state is saved in ``data_dir/alerts``.

        Returns
        -------
        list of Notification
            The notifications produced now.
        """
        now = _now_ms() if now_ms is None else int(now_ms)
        with self._lock:
            self.flush()
            cursor = None if self._runner is None else self._runner.cursor_ms
            self.alert_flow.sync_alerts(self.alert_book.alerts, cursor, now)
            return self.alert_flow.step(now, self._rule_read)

    def _rule_read(self, name: str, start_ms: int, end_ms: int):
        for sid in self.index.ids(name):
            ts, values = self.queries._read(sid, start_ms, end_ms)  # hot and on-disk tiers
            yield self.index.labels(sid), ts, values

    # --- escalation ----------------------------------------------------------------

    def escalate(self, now_ms: int | None = None) -> list[Page]:
        """Start, advance or end the escalation of the engine's alerts at ``now_ms``.

        An alert fires while its anomaly was seen within ``[escalation]
        resolve_after`` (20m by default: the dedup window plus a 5m resolve
        timeout, as the server's alert desk does) of ``now_ms``; the first
        escalation policy that covers a firing alert pages its level 0, and
        every level whose delay ran out unacknowledged pages the next.

        Returns
        -------
        list of Page
            The pages sent (also given to every callable in ``on_page``).
        """
        now = _now_ms() if now_ms is None else int(now_ms)
        resolve_ms = _escalation_duration(self.config, "resolve_after", "20m")
        pages = []
        with self._lock:
            for al in self.alert_book.alerts:
                if now - al.end_ms <= resolve_ms and al.start_ms <= now:
                    page = self.escalator.fire(al.fingerprint, al.labels, al.severity, al.summary, now)
                    if page is not None:
                        pages.append(page)
                else:
                    self.escalator.resolve(al.fingerprint, now)
            pages.extend(self.escalator.tick(now))
        return pages

    def acknowledge(self, fingerprint: str, by: str, comment: str = "", now_ms: int | None = None) -> None:
        """Acknowledge an alert: its escalation stops; kept in the data directory.

        Raises
        ------
        ValueError
            When ``by`` is empty.
        """
        with self._lock:
            self.escalator.acknowledge(fingerprint, by, comment, _now_ms() if now_ms is None else now_ms)

    def _send_page(self, page: Page) -> None:
        for fn in list(self.on_page):
            fn(page)

    def start(self, interval_s: float | None = None, *, clock=None) -> None:
        """Run :meth:`tick` on a background thread every ``interval_s`` seconds.

        Parameters
        ----------
        interval_s : float, optional
            Seconds between ticks; default ``[pipeline] interval`` (10s).
        clock : callable, optional
            Returns the current time in ms for each tick (default: the wall
            clock); tests and replays of recorded data pass their own.

        Raises
        ------
        RuntimeError
            When the pipeline is already running.
        """
        if self._ticker is not None and self._ticker.is_alive():
            raise RuntimeError("the pipeline is already running; stop() it first")
        if interval_s is None:
            interval_s = self._pipeline_settings()["interval_ms"] / 1000
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        clock = clock or _now_ms
        self._ticker_stop.clear()

        def loop() -> None:
            while not self._ticker_stop.wait(interval_s):
                try:
                    self.tick(clock())
                except Exception:
                    logger.exception("pipeline tick failed; the next tick tries again")
                try:
                    self._compact_if_due(_now_ms())
                except Exception:
                    logger.exception("compaction failed; the next tick tries again")

        self._ticker = threading.Thread(target=loop, name="obscore-pipeline", daemon=True)
        self._ticker.start()
        logger.info("pipeline started: every %.3g s", interval_s)

    @property
    def is_live(self) -> bool:
        """Whether the background pipeline of :meth:`start` is running."""
        return self._ticker is not None and self._ticker.is_alive()

    @property
    def pipeline_cursor_ms(self) -> int | None:
        """The last grid point the live pipeline evaluated (None before its first tick)."""
        return None if self._runner is None else self._runner.cursor_ms

    def stop(self) -> None:
        """Stop the background pipeline (if running) and save its state in the data directory."""
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            self._ticker_stop.set()
            ticker.join()
            logger.info("pipeline stopped")
        self._save_pipeline()

    def replay(self, start_ms: int, end_ms: int) -> PipelineResult:
        """Run the pipeline as one batch over a stored range, apart from the live state.

        The result equals what :meth:`tick` produces live over the same
        range, ticked at any times (see :mod:`obscore.runner`); its
        ``alerts`` are all the alerts of the range.

        Raises
        ------
        ValueError
            When ``end_ms`` is before ``start_ms``.
        """
        if end_ms < start_ms:
            raise ValueError(f"replay: end_ms {end_ms} is before start_ms {start_ms}")
        self.flush()
        with self._lock:
            self._refresh_events()
            runner = self._new_runner(
                AlertBook(self.config.dedup_window_ms, self.config.dedup_similarity),
                live=False,
            )
            runner.advance(
                self.queries, self.config.metrics, self.catalogue, end_ms, start_ms,
                read_many=store_reader(self.hot, self.blocks),
            )
        return replace(runner.result(), alerts=list(runner.book.alerts))

    def _save_pipeline(self) -> None:
        if self.data_dir is None or self._runner is None or self._runner.cursor_ms is None:
            return
        with self._lock:
            self._runner.save(self.data_dir / "pipeline.pickle")

    def _restore_pipeline(self) -> None:
        assert self.data_dir is not None
        runner = PipelineRunner.load(self.data_dir / "pipeline.pickle")
        if runner is None:
            return
        runner.keep_ms = self._live_keep_ms()  # the config in force
        self._runner = runner
        self.alert_book = runner.book
        self.last_result = runner.result()
        self.incidents = self.last_result.incidents
        logger.info("pipeline state restored: up to ts %s, %d open anomalies, %d incidents",
                    runner.cursor_ms, len(runner._open), len(runner.incidents))

    # --- persistence ---------------------------------------------------------

    def _load(self) -> None:
        assert self.data_dir is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        idx_path = self.data_dir / "series.parquet"
        raw_path = self.data_dir / "samples.parquet"
        if idx_path.exists():
            t = _read_checkpoint(idx_path, "the series index")
            for name, labels in zip(t["name"].to_pylist(), t["labels"].to_pylist()):
                self.index.add(name, dict(labels))
        self.blocks = BlockStore(self.data_dir / "blocks", TierSettings.from_config(self.config))
        # before the log's series are replayed: a floor holds for them too
        for sid, floor in self.blocks.floors.items():
            self.hot.set_floor(sid, floor)
        if raw_path.exists():
            self.hot.ingest(_read_checkpoint(raw_path, "the samples checkpointed at the last close"))
        self._api_services.update(self.catalogue.load_services(self.data_dir / "services.json"))
        self._refresh_events()
        self.wal = WriteAheadLog(self.data_dir / "wal.log", self.config.wal_fsync_ms)
        replay = self.wal.replay()
        for _, name, labels in replay.series:
            self.index.add(name, labels)
        for ids, ts, values in replay.batches:
            # rows already in the checkpoint come back as duplicates and are
            # dropped; the log is not rewritten while it is being read
            self._ingest_hot(sample_table(ids, ts, values), rewrite_log=False)
        self.wal_damage = replay.damage
        if replay.damage is not None:
            warnings.warn(str(replay.damage), DroppedDataWarning, stacklevel=3)

    def close(self) -> None:
        """Flush, checkpoint the samples and index to Parquet, empty the log.

        A running pipeline (:meth:`start`) is stopped and its state saved.
        """
        self.stop()
        for scraper in self._scrapers:
            scraper.stop()
        self._scrapers.clear()
        self.flush()
        if self.data_dir is not None and self.wal is not None:
            _write_atomic(self.index.to_table(), self.data_dir / "series.parquet")
            _write_atomic(
                self._hot_unflushed(), self.data_dir / "samples.parquet"
            )
            self.wal.reset()
            self.wal.close()
            self.wal = None
            self.rollups.update(self.hot.read_table(), self.counter_ids())
            self.rollups.save()
        logger.info("engine closed: %d series, %d samples stored", len(self.index), self.hot.samples_stored)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pipeline_duration(config: Config, key: str, default: str) -> int:
    """A duration of the config's ``[pipeline]`` table, in milliseconds."""
    from obscore.durations import parse_duration

    value = config.raw.get("pipeline", {}).get(key, default)
    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise ConfigError(f"pipeline.{key}: {exc}") from None


def _escalation_duration(config: Config, key: str, default: str) -> int:
    from obscore.durations import parse_duration

    value = config.raw.get("escalation", {}).get(key, default)
    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise ConfigError(f"escalation.{key}: {exc}") from None


def _read_checkpoint(path: Path, holds: str) -> pa.Table:
    """A checkpoint file of the data directory, or StoreError naming it."""
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise StoreError(
            f"{path} cannot be read ({type(exc).__name__}: {exc}); it holds {holds}: "
            "restore it from a backup, or move it away to open the directory without it"
        ) from exc


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Write Parquet to a temporary name, sync, then rename over ``path``."""
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


#: The most evaluation times one range query may ask for (a day at 10 ms).
MAX_QUERY_STEPS = 10_000_000


def _check_range(start_ms: Any, end_ms: Any, step_ms: Any) -> None:
    """Refuse range arguments a query cannot evaluate, naming them."""
    for name, value in (("start_ms", start_ms), ("end_ms", end_ms), ("step_ms", step_ms)):
        whole = isinstance(value, (int, np.integer)) or (
            isinstance(value, (float, np.floating)) and float(value).is_integer()
        )
        if isinstance(value, bool) or not whole:
            raise ValueError(f"{name} must be an integer of milliseconds, got {value!r}")
    if step_ms < 1:
        raise ValueError(f"step_ms must be at least 1, got {step_ms}")
    if end_ms < start_ms:
        raise ValueError(f"end_ms {end_ms} is before start_ms {start_ms}")
    steps = (int(end_ms) - int(start_ms)) // int(step_ms) + 1
    if steps > MAX_QUERY_STEPS:
        raise ValueError(
            f"the range {start_ms}..{end_ms} at step_ms {step_ms} holds {steps:,} "
            f"evaluation times, more than {MAX_QUERY_STEPS:,}; use a coarser step"
        )


def _ring_parts(table: pa.Table, half: int) -> list[pa.Table]:
    """``table`` split into parts holding at most ``half`` samples of any series.

    Part ``k`` holds each series' samples ``k * half .. (k + 1) * half - 1`` in
    time order, so the parts go in one after the other.  A batch sorted by time
    with at most ``half`` distinct timestamps (a scrape, a few of them) is one
    part without counting per series.
    """
    ts = table["ts"].to_numpy()
    if len(ts) > 1 and bool((ts[1:] >= ts[:-1]).all()):
        if 1 + int(np.count_nonzero(ts[1:] != ts[:-1])) <= half:
            return [table]
    import pandas as pd

    order = np.argsort(ts, kind="stable")
    ids = table["series_id"].to_numpy()[order]
    rank = pd.Series(ids).groupby(ids, sort=False).cumcount().to_numpy()
    part_of = np.empty(len(ts), np.int64)
    part_of[order] = rank // half
    n_parts = int(part_of.max()) + 1 if len(ts) else 1
    if n_parts == 1:
        return [table]
    return [table.filter(pa.array(part_of == k)) for k in range(n_parts)]


def _most_per_series(table: pa.Table) -> int:
    """The largest number of rows any one series has in ``table``."""
    import pandas as pd

    ids = table["series_id"].to_numpy()
    return int(pd.Series(ids).value_counts().max()) if len(ids) else 0
