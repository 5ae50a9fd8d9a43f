"""The monitoring pipeline: derive signals, detect anomalies, group them into
incidents and raise alerts.

A *signal* is a derived series on a regular grid that a person would watch:
a gauge's maximum over the dimensional rollup labels, a counter's
per-second rate, a histogram's median.  Detection runs on signals,
not on raw bucket series.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from obscore.alert import Alert, AlertBook
from obscore.catalogue import Catalogue
from obscore.correlate import group_anomalies
from obscore.detect.ensemble import ZScoreEnsembleDetector
from obscore.durations import format_duration
from obscore.model import LabelSet, MetricKind, MetricSpec, SeriesIndex, sample_table
from obscore.store.hot import is_stale
from obscore.store.query import DEFAULT_LOOKBACK_MS, QueryEngine

logger = logging.getLogger(__name__)

GROUP_LABELS = ("service", "region", "error_type", "direction")

#: ``read_many(ids, start_ms, end_ms) -> (position, ts, values)``: the samples of
#: many series with ``start_ms <= ts < end_ms``, sorted by (position in ``ids``, ts).
ReadMany = Callable[[np.ndarray, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]

# NOTE: a gauge's signals are evaluated at most this many (series x grid point)
# cells at a time, so a replay over a day of 10,000 series stays within ~100 MB.
_MAX_CELLS = 4_000_000


@dataclass(slots=True)
class Signal:
    """A derived series on a regular grid, with the labels it is grouped by."""

    metric: str
    labels: LabelSet
    ts: np.ndarray
    values: np.ndarray
    count_window_s: float | None = None  # set for rates of counted events

    @property
    def key(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels.items_tuple)
        return f"{self.metric}{{{inner}}}"

    @property
    def service(self) -> str | None:
        return self.labels.get("service")


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A run of anomalous points on one signal."""

    signal: str
    metric: str
    labels: LabelSet
    start_ms: int
    end_ms: int
    peak_ms: int
    peak_z: float
    score: float
    context: dict = field(default_factory=dict, compare=False)

    @property
    def service(self) -> str | None:
        return self.labels.get("service")

    @property
    def region(self) -> str | None:
        return self.labels.get("region")


@dataclass(slots=True)
class Incident:
    """Anomalies that overlap in time, treated as one problem."""

    id: int
    start_ms: int
    end_ms: int
    anomalies: list[Anomaly] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def services(self) -> set[str]:
        return {a.labels["service"] for a in self.anomalies if "service" in a.labels}

    @property
    def first(self) -> Anomaly:
        return min(self.anomalies, key=lambda a: a.start_ms)


@dataclass(slots=True)
class PipelineResult:
    signals: dict[str, Signal]
    anomalies: list[Anomaly]
    incidents: list[Incident]
    alerts: list[Alert]


def derive_signals(
    query: QueryEngine,
    specs: Mapping[str, MetricSpec],
    start_ms: int,
    end_ms: int,
    step_ms: int,
    rate_window_ms: int = 60_000,
    group_labels: Sequence[str] = GROUP_LABELS,
    quantile: float = 0.5,
) -> list[Signal]:
    """Evaluate one signal per metric and group of ``group_labels``.

    Gauges give their maximum over the group, counters their summed rate
    over ``rate_window_ms``, histograms the ``quantile`` of the bucket rates
    (the median by default: a latency problem moves the median, while a few
    timed-out requests alone move only the upper tail).
    """
    signals: list[Signal] = []
    for name, spec in specs.items():
        series_name = f"{name}_bucket" if spec.is_histogram else name
        ids = query.index.ids(series_name)
        if not ids:
            continue
        present = {k for s in ids for k in query.index.labels(s)}
        by = [g for g in group_labels if g in present]
        signals += metric_signals(
            query, name, spec, by, start_ms, end_ms, step_ms, rate_window_ms, quantile
        )
    return signals


def metric_signals(
    query: QueryEngine,
    name: str,
    spec: MetricSpec,
    by: Sequence[str],
    start_ms: int,
    end_ms: int,
    step_ms: int,
    rate_window_ms: int = 60_000,
    quantile: float = 0.5,
    read_many: ReadMany | None = None,
    groups: SeriesGroups | None = None,
) -> list[Signal]:
    """The signals of one metric grouped by ``by``; see :func:`derive_signals`.

    With ``read_many`` and the metric's ``groups``, a gauge's signals are
    evaluated from one batched read over all its series instead of one range
    query per series (same values, see :func:`gauge_max_signals`).
    """
    if spec.kind is MetricKind.GAUGE and read_many is not None and groups is not None:
        return gauge_max_signals(name, groups, start_ms, end_ms, step_ms, read_many)
    common = dict(start_ms=start_ms, end_ms=end_ms, step_ms=step_ms, by=list(by))
    if spec.kind is MetricKind.HISTOGRAM:
        table = query.range(name, quantile=quantile, window_ms=rate_window_ms, **common)
    elif spec.kind is MetricKind.COUNTER:
        table = query.range(
            name, fn="rate", window_ms=rate_window_ms, agg="sum", **common
        )
    else:
        table = query.range(name, agg="max", **common)
    counted = spec.kind is MetricKind.COUNTER and not spec.unit
    out = list(_split(name, table, by))
    if counted:
        for sig in out:
            sig.count_window_s = rate_window_ms / 1000.0
    return out


@dataclass(slots=True)
class SeriesGroups:
    """The series of one metric and the group of ``by`` labels each belongs to.

    Groups are numbered in the order their first series appears in the index,
    the order :meth:`QueryEngine.range` returns them in.
    """

    metric: str
    by: tuple[str, ...]
    generation: int  # SeriesIndex.generation it was built at
    ids: np.ndarray  # uint64, the metric's series in index order
    order: np.ndarray  # intp, series positions sorted by group
    starts: np.ndarray  # intp, where each group starts in ``order``
    keys: list[LabelSet]  # labels of each group

    @classmethod
    def of(cls, index: SeriesIndex, metric: str, by: Sequence[str]) -> SeriesGroups:
        ids = index.ids(metric)
        codes_of: dict[tuple, int] = {}
        keys: list[LabelSet] = []
        codes = np.empty(len(ids), np.intp)
        for k, sid in enumerate(ids):
            labels = index.labels(sid)
            key = tuple(labels.get(b) for b in by)
            code = codes_of.get(key)
            if code is None:
                code = codes_of[key] = len(keys)
                keys.append(LabelSet({b: v for b, v in zip(by, key) if v is not None}))
            codes[k] = code
        order = np.argsort(codes, kind="stable")
        starts = np.searchsorted(codes[order], np.arange(len(keys)))
        ids_array = np.array(ids, np.uint64)
        return cls(metric, tuple(by), index.generation, ids_array, order, starts, keys)

    def is_current(self, index: SeriesIndex, by: Sequence[str]) -> bool:
        return self.generation == index.generation and self.by == tuple(by)


def gauge_max_signals(
    metric: str,
    groups: SeriesGroups,
    start_ms: int,
    end_ms: int,
    step_ms: int,
    read_many: ReadMany,
    lookback_ms: int = DEFAULT_LOOKBACK_MS,
) -> list[Signal]:
    """A gauge's maximum per group at each grid point, from batched reads.

    The value of a series at a grid point is its newest sample at or before
    it, no older than ``lookback_ms``, unless that sample is a staleness
    marker; NaN values count as absent.  This is what
    ``query.range(metric, agg="max", by=...)`` gives, signal for signal and
    bit for bit, without a Python call per series.

    Notes
    -----
    The grid is walked in chunks of at most ``_MAX_CELLS`` (series x grid
    point) cells; a signal's points are joined across chunks.
    """
    n_series = len(groups.ids)
    evals = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
    if n_series == 0 or len(evals) == 0:
        return []
    per_chunk = max(1, _MAX_CELLS // n_series)
    parts: list[np.ndarray] = []
    for lo in range(0, len(evals), per_chunk):
        chunk = evals[lo : lo + per_chunk]
        parts.append(_gauge_max(groups, chunk, read_many, lookback_ms))
    values = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    out = []
    for key, row in zip(groups.keys, values):
        ok = ~np.isnan(row)
        if ok.any():
            out.append(Signal(metric, key, evals[ok], row[ok]))
    return out


def _gauge_max(
    groups: SeriesGroups, evals: np.ndarray, read_many: ReadMany, lookback_ms: int
) -> np.ndarray:
    """``(n_groups, len(evals))`` maxima, NaN where a group has no value."""
    read_from = int(evals[0]) - lookback_ms
    end = int(evals[-1]) + 1
    pos, ts, v = read_many(groups.ids, read_from, end)
    n_series = len(groups.ids)
    # one sorted key per sample: series position, then ts within the read span
    span = end - read_from + 1
    key = pos.astype(np.int64) * span + (ts - read_from)
    refs = np.arange(n_series, dtype=np.int64)[:, None] * span + (evals - read_from)
    idx = np.searchsorted(key, refs, side="right") - 1
    safe = np.maximum(idx, 0)
    found = np.zeros(refs.shape, bool)
    if len(key):
        found = (idx >= 0) & (pos[safe] == np.arange(n_series)[:, None])
        found &= ts[safe] >= evals - lookback_ms
        found &= ~is_stale(v[safe])
    cells = np.where(found, v[safe] if len(key) else np.nan, np.nan)
    return np.fmax.reduceat(cells[groups.order], groups.starts, axis=0)


def _split(metric: str, table, by: Sequence[str]) -> Iterable[Signal]:
    if table.num_rows == 0:
        return []
    cols = {c: table[c].to_pylist() for c in by}
    ts = table["ts"].to_numpy()
    values = table["value"].to_numpy()
    keys = list(zip(*(cols[c] for c in by))) if by else [()] * len(ts)
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    out = []
    for k, rows in groups.items():
        idx = np.array(rows)
        labels = LabelSet({c: v for c, v in zip(by, k) if v is not None})
        out.append(Signal(metric, labels, ts[idx], values[idx]))
    return out


def detect_runs(
    signal: Signal,
    window_ms: int = 300_000,
    threshold: float = 3.0,
    baseline_ms: int = 3_600_000,
    baseline_lag_ms: int = 600_000,
    confirm: float = 5.0,
    drift: float = 10.0,
    hold: float = 3.0,
    min_run: int = 3,
    max_gap: int = 3,
    warmup_ms: int = 3_600_000,
) -> list[Anomaly]:
    """Anomalous runs on a signal.

    A run starts where the streaming z-score over ``window_ms`` exceeded
    ``threshold`` within the last ``window_ms`` and the robust z-score over
    ``baseline_ms`` agrees in sign and exceeds ``confirm``: a fast change to a
    level unusual for the hour before.  A slow drift with no fast move starts
    a run once the robust score exceeds ``drift``; the robust baseline ends
    ``baseline_lag_ms`` before each sample so a ramp does not become its own
    baseline.  It lasts while the robust score stays above ``hold`` (hysteresis),
    must hold ``min_run`` points, and runs closer than ``max_gap`` points
    are joined.  Nothing is reported in the first ``warmup_ms``.
    """
    n = len(signal.ts)
    if n == 0:
        return []
    batch = sample_table(np.zeros(n, dtype=np.uint64), signal.ts, signal.values)
    detector = ZScoreEnsembleDetector(
        window_ms=window_ms,
        threshold=threshold,
        baseline_ms=baseline_ms,
        confirm=confirm,
        drift=drift,
        min_samples=2,
        count_window_s=signal.count_window_s,
        lag_ms=baseline_lag_ms,
    )
    _, zr, score = detector.components(batch)
    zr = np.nan_to_num(zr, nan=0.0)
    trigger = np.nan_to_num(score, nan=0.0) > 0.5
    trigger &= signal.ts >= signal.ts[0] + warmup_ms
    held = np.abs(zr) > hold
    hot = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(trigger):
        if hot[i]:
            continue
        j = i
        while j < n and held[j] and np.sign(zr[j]) == np.sign(zr[i]):
            hot[j] = True
            j += 1
    out = []
    for a, b in _runs(hot, min_run, max_gap):
        p = a + int(np.argmax(np.abs(zr[a:b])))
        peak = float(zr[p])
        out.append(
            Anomaly(
                signal=signal.key,
                metric=signal.metric,
                labels=signal.labels,
                start_ms=int(signal.ts[a]),
                end_ms=int(signal.ts[b - 1]),
                peak_ms=int(signal.ts[p]),
                peak_z=peak,
                score=abs(peak) / (abs(peak) + confirm),
            )
        )
    return out


def _runs(mask: np.ndarray, min_run: int, max_gap: int) -> list[tuple[int, int]]:
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > max_gap)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]]) + 1
    return [
        (int(a), int(b))
        for a, b in zip(starts, ends)
        if mask[a:b].sum() >= min_run
    ]


def enrich(
    anomalies: Sequence[Anomaly],
    catalogue: Catalogue | None,
    specs: Mapping[str, MetricSpec],
    change_lookback_ms: int = 3_600_000,
) -> list[Anomaly]:
    """Attach the context of each anomaly's series and metric.

    Context keys: ``service``, ``owner``, ``tier``, ``region``, ``host`` (the
    series' ``host`` or ``instance`` label, "unknown" without one) and
    ``hosts`` (the service's hosts in the catalogue), ``upstream`` and
    ``downstream`` services, ``changes`` (change events of the service or
    its neighbours within ``change_lookback_ms`` before the start, each with
    how long before, as ``deploy of feed in eu: v42 (2m before)``), and the
    metric's ``kind``, ``unit`` and ``group``.  A series with no catalogue
    entry gets ``owner`` and ``tier`` "unknown"; a series with a host but no
    service label gets the service the catalogue lists that host under, and
    one with neither gets :meth:`Catalogue.default_owner` (business signals).
    """
    out = []
    for a in anomalies:
        host = a.labels.get("host") or a.labels.get("instance")
        svc = a.service
        if svc is None and host is not None and catalogue is not None:
            svc = catalogue.service_of_host(host)
        entry = catalogue.get(svc) if catalogue is not None else None
        spec = specs.get(a.metric)
        ctx: dict = {
            "service": svc or "unknown",
            "owner": entry.owner if entry else (
                catalogue.default_owner() if svc is None and catalogue is not None else "unknown"
            ),
            "tier": entry.tier if entry else "unknown",
            "region": a.region or "unknown",
            "host": host or "unknown",
            "hosts": list(entry.hosts) if entry else [],
            "upstream": list(catalogue.callers(svc)) if entry and catalogue else [],
            "downstream": list(catalogue.callees(svc)) if entry and catalogue else [],
            "kind": spec.kind.value if spec else "unknown",
            "unit": spec.unit if spec else "",
            "group": spec.group if spec else "unknown",
            "changes": [],
        }
        if catalogue is not None:
            near = {svc, *ctx["upstream"], *ctx["downstream"]} if svc else None
            ctx["changes"] = [  # with how long before the anomaly: two deploys differ
                f"{e} ({format_duration((a.start_ms - e.ts) // 1000 * 1000)} before)"
                for e in catalogue.events_before(a.start_ms, change_lookback_ms, near)
                if e.region in (None, a.region) or a.region is None
            ]
        out.append(replace(a, context=ctx))
    return out


def group_incidents(
    anomalies: Sequence[Anomaly],
    catalogue: Catalogue | None = None,
    quiet_ms: int = 900_000,
    max_hops: int = 1,
) -> list[Incident]:
    """Group anomalies into incidents by onset, place and dependency.

    The grouping of :func:`obscore.correlate.group_anomalies`: onsets that
    move together at one place, along the dependency graph (within
    ``max_hops``) or at one service across regions form an incident, and
    later anomalies join an incident still open (its last anomaly ended less
    than ``quiet_ms`` before) as its late symptoms.  Unrelated anomalies at
    the same time stay apart, and so do lone weak ones.  Each incident
    records why each member joined.

    Notes
    -----
    Cost is about linear in the anomalies; a dependency cycle is walked with
    a visited set and cannot hang the grouping.  An incident that has closed
    cannot take members that start after it closed, so grouping the open
    anomalies again as more arrive gives the incidents of one pass over all.
    """
    groups = group_anomalies(anomalies, catalogue, quiet_ms=quiet_ms, max_hops=max_hops)
    incidents = [
        Incident(
            0, g.start_ms, g.end_ms, [anomalies[i] for i in g.members], list(g.reasons)
        )
        for g in groups
    ]
    incidents.sort(key=lambda i: i.start_ms)
    for k, inc in enumerate(incidents, 1):
        inc.id = k
    return incidents


def raise_alerts(
    book: AlertBook,
    incidents: Sequence[Incident],
    specs: Mapping[str, MetricSpec],
) -> list[Alert]:
    """One alert per anomaly, labelled by metric and signal labels.

    Alerts are raised in order of their anomalies' starts across incidents,
    as the live runner raises them, so that deduplication sees them in time
    order however the incidents overlap.
    """
    new = []
    members = sorted(
        ((a, inc) for inc in incidents for a in inc.anomalies),
        key=lambda pair: (pair[0].start_ms, pair[0].signal),
    )
    for a, inc in members:
        breadth = len(inc.services) or 1
        labels = {"alertname": f"{a.metric}_anomaly", **dict(a.labels)}
        spec = specs.get(a.metric)
        direction = "above" if a.peak_z > 0 else "below"
        summary = f"{a.signal} {direction} its recent range (z={a.peak_z:+.1f})"
        alert, is_new = book.raise_alert(
            labels,
            a.start_ms,
            a.end_ms,
            a.score,
            summary,
            breadth=breadth,
            weight=spec.weight if spec else 1.0,
            incident_id=inc.id,
        )
        if is_new and a.context:
            alert.annotations.update(
                owner=str(a.context.get("owner", "unknown")),
                region=str(a.context.get("region", "unknown")),
                host=str(a.context.get("host", "unknown")),
                changes="; ".join(a.context.get("changes", [])) or "none",
            )
        if is_new:
            new.append(alert)
    return new
