"""The pipeline run incrementally: as samples arrive, or as a batch over a stored range.

:class:`PipelineRunner` keeps, per signal, the detector's state and the
anomalous run under way, and, across signals, the anomalies and incidents
that may still change.  Each :meth:`~PipelineRunner.advance` evaluates the
signals on the grid points after the last one it saw, up to a time, and
updates anomalies, incidents and alerts.  Advancing once over a day and
advancing every ten seconds over the same day give the same anomalies,
incidents and alerts: every step below is causal (a point's score and
whether it is anomalous depend only on the points before it) and the
order in which alerts are raised does not depend on when ``advance`` ran.

How each part stays exact when run in pieces:

- detection: the z-score ensemble carries its windows between calls, and
  the run logic (trigger, hysteresis, ``min_run``, ``max_gap``) is a state
  machine fed one point at a time;
- grouping: an incident is final once no anomaly still to come can join it
  (its end plus the quiet period lies before the *horizon*, the earliest
  start an anomaly still to come can have); the rest are grouped again on
  every advance from the anomalies that are not in a final incident;
- alerts: an anomaly raises its alert once it starts before the horizon, in
  the order (start, signal), so the dedup folds the same way; an alert's
  end, score and severity follow its anomalies as they grow (severity only
  grows with the score, the duration and the breadth, so the maximum seen
  equals the value at the end).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from obscore.alert import Alert, AlertBook
from obscore.alert.dedup import fingerprint, severity
from obscore.catalogue import Catalogue
from obscore.detect.ensemble import ZScoreEnsembleDetector
from obscore.detect.stream import step_ensembles
from obscore.model import MetricSpec
from obscore.pipeline import (
    GROUP_LABELS,
    Anomaly,
    Incident,
    PipelineResult,
    ReadMany,
    SeriesGroups,
    Signal,
    enrich,
    group_incidents,
    metric_signals,
)
from obscore.store.blocks import BlockStore
from obscore.store.hot import HotStore
from obscore.store.query import QueryEngine

logger = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass(slots=True)
class _Run:
    """An anomalous run under way on one signal (indices count the signal's points)."""

    start_ts: int
    last_hot_n: int
    last_hot_ts: int
    hot: int = 1
    peak_abs: float = -1.0
    peak_z: float = 0.0
    peak_ts: int = 0
    gap_abs: float = -1.0  # best point after the last hot one, joins on the next hot
    gap_z: float = 0.0
    gap_ts: int = 0
    anomaly: Anomaly | None = None

    def offer(self, absz: float, z: float, ts: int) -> None:
        if absz > self.peak_abs:
            self.peak_abs, self.peak_z, self.peak_ts = absz, z, ts

    def offer_gap(self, absz: float, z: float, ts: int) -> None:
        if absz > self.gap_abs:
            self.gap_abs, self.gap_z, self.gap_ts = absz, z, ts


@dataclass(slots=True)
class _SignalState:
    """What one signal carries between advances."""

    signal: Signal
    detector: ZScoreEnsembleDetector
    first_ts: int
    n: int = -1
    chain_sign: float = 0.0
    run: _Run | None = None


@dataclass
class PipelineRunner:
    """Run detection, enrichment, grouping and alerting piece by piece.

    Parameters
    ----------
    step_ms : int
        Grid of the signals; grid points are whole multiples of it.
    window_ms, threshold : int, float
        The fast z-score of the detector (``[detectors.zscore]``).
    quiet_ms : int
        An incident closes after this long without a related anomaly.
    change_lookback_ms : int
        Change events this long before an anomaly are named in its context.
    history_ms : int
        How much of each signal is kept for diagnosis (``last_result.signals``).
    keep_ms : int, optional
        How long final incidents are kept after their end (measured back
        from the cursor), with their anomalies and the alerts that name only
        them; None keeps everything (a replay).  Incident ids go on counting
        after the ones forgotten.

    Notes
    -----
    Exactness needs the samples of a grid point to be stored before an
    advance evaluates it; samples arriving later than that (within the
    store's out-of-order window) are stored but the live run has already
    scored the point without them, so a replay may then differ.  The labels
    a metric's signals are grouped by are fixed the first time the metric
    has series.

    The state stays bounded over a long live run: once an incident is final
    and no incident still to come can be numbered before it, its id, its
    alerts' incident ids and its anomalies can no longer change, and the
    per-anomaly bookkeeping of its alerts is dropped (see :meth:`_settle`);
    with ``keep_ms`` the incidents themselves go after that long.
    """

    step_ms: int = 10_000
    window_ms: int = 300_000
    threshold: float = 3.0
    quiet_ms: int = 900_000
    change_lookback_ms: int = 3_600_000
    history_ms: int = 6 * 3_600_000
    baseline_ms: int = 3_600_000
    baseline_lag_ms: int = 600_000
    confirm: float = 5.0
    drift: float = 10.0
    hold: float = 3.0
    min_run: int = 3
    max_gap: int = 3
    warmup_ms: int = 3_600_000
    keep_ms: int | None = None
    cursor_ms: int | None = None  # last grid point evaluated
    book: AlertBook = field(default_factory=AlertBook)
    _by: dict[str, list[str]] = field(default_factory=dict)
    _signals: dict[str, _SignalState] = field(default_factory=dict)
    _closed_anomalies: list[Anomaly] = field(default_factory=list)
    _open: dict[tuple[str, int], Anomaly] = field(
        default_factory=dict
    )  # not in a final incident
    _closed_keys: set[tuple[str, int]] = field(default_factory=set)
    _final: list[Incident] = field(default_factory=list)  # final, id may still shift
    # final incidents numbered for good (nothing still to come sorts before
    # them), in id order; the first `forgotten` ids were dropped by keep_ms
    _settled: list[Incident] = field(default_factory=list)
    forgotten: int = 0
    _to_raise: dict[tuple[str, int], Anomaly] = field(default_factory=dict)
    _changed: dict[tuple[str, int], Anomaly] = field(default_factory=dict)
    _raised: dict[tuple[str, int], Alert] = field(default_factory=dict)
    _creator: dict[str, tuple[str, int]] = field(
        default_factory=dict
    )  # fingerprint -> anomaly
    # (alert fingerprint, member fingerprint) -> the anomaly that made the
    # member (its summary follows it) and the latest one folded into it (its
    # incident follows that one), as a replay's single raise would leave them
    _member_creator: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    _member_last: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    incidents: list[Incident] = field(default_factory=list)
    horizon_ms: int | None = None
    _groups: dict[str, SeriesGroups] = field(default_factory=dict)  # not pickled

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_groups"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        state.setdefault("_groups", {})
        state.setdefault("_member_creator", {})
        state.setdefault("_member_last", {})
        state.setdefault("_settled", [])
        state.setdefault("forgotten", 0)
        state.setdefault("keep_ms", None)
        self.__dict__.update(state)

    # --- advancing --------------------------------------------------------------

    def advance(
        self,
        queries: QueryEngine,
        specs: Mapping[str, MetricSpec],
        catalogue: Catalogue | None,
        until_ms: int,
        start_ms: int | None = None,
        read_many: ReadMany | None = None,
    ) -> PipelineResult:
        """Evaluate the grid points after the last one seen up to ``until_ms``.

        Parameters
        ----------
        queries : QueryEngine
            Reads the stored samples.
        specs : mapping
            Metric specs by name (``config.metrics``).
        catalogue : Catalogue, optional
            Services and change events for enrichment and grouping.
        until_ms : int
            Last time to evaluate (rounded down to the grid).
        start_ms : int, optional
            First time, on the first advance only (rounded up to the grid);
            later advances continue where the last one stopped.
        read_many : callable, optional
            Batched reads of the store (see :func:`store_reader`); gauges
            are then evaluated without a range query per series.  The
            results are the same with or without it.

        Returns
        -------
        PipelineResult
            Every signal's recent history, all anomalies and incidents so far,
            and the alerts raised by this advance.

        Raises
        ------
        ValueError
            When the first advance has no ``start_ms``.
        """
        step = self.step_ms
        end = until_ms - until_ms % step
        if self.cursor_ms is None:
            if start_ms is None:
                raise ValueError(
                    "the first advance of a pipeline runner needs start_ms"
                )
            first = -(-start_ms // step) * step
        else:
            first = self.cursor_ms + step
        new_alerts: list[Alert] = []
        if end >= first:
            self._detect(queries, specs, catalogue, first, end, read_many)
            self.cursor_ms = end
            self._group(catalogue)
            new_alerts = self._alert(specs)
            self._settle()
        return self.result(new_alerts)

    def _detect(
        self,
        queries: QueryEngine,
        specs: Mapping[str, MetricSpec],
        catalogue: Catalogue | None,
        first: int,
        end: int,
        read_many: ReadMany | None = None,
    ) -> None:
        index = queries.index
        for name, spec in specs.items():
            if name not in self._by:
                ids = index.ids(f"{name}_bucket" if spec.is_histogram else name)
                if ids:
                    present = {k for s in ids for k in index.labels(s)}
                    self._by[name] = [g for g in GROUP_LABELS if g in present]
        signals: list[Signal] = []
        for name, by in self._by.items():
            spec = specs.get(name)
            if spec is None:
                continue
            groups = None
            if read_many is not None and not spec.is_histogram:
                groups = self._groups.get(name)
                if groups is None or not groups.is_current(index, by):
                    groups = self._groups[name] = SeriesGroups.of(index, name, by)
            signals += metric_signals(
                queries, name, spec, by, first, end, self.step_ms,
                read_many=read_many, groups=groups,
            )  # fmt: skip
        self._feed(signals, catalogue, specs)

    def _feed(
        self,
        signals: list[Signal],
        catalogue: Catalogue | None,
        specs: Mapping[str, MetricSpec],
    ) -> None:
        """Score the signals' new points together, then step each run point by point."""
        states = [self._state(sig) for sig in signals]
        scored = step_ensembles(
            [st.detector for st in states],
            [sig.ts for sig in signals],
            [sig.values for sig in signals],
        )
        if not signals:
            return
        # the point tests of every signal at once, then each signal's slice
        zr = np.nan_to_num(np.concatenate([z for z, _ in scored]), nan=0.0)
        score = np.nan_to_num(np.concatenate([s for _, s in scored]), nan=0.0)
        ts = np.concatenate([sig.ts for sig in signals])
        n_new = [len(sig.ts) for sig in signals]
        first = np.repeat([st.first_ts for st in states], n_new)
        trigger = (score > 0.5) & (ts >= first + self.warmup_ms)
        held = np.abs(zr) > self.hold
        a = 0
        for sig, st in zip(signals, states):
            b = a + len(sig.ts)
            self._keep_history(st, sig)
            self._step_points(
                st, sig, zr[a:b], trigger[a:b], held[a:b], catalogue, specs
            )
            a = b

    def _state(self, sig: Signal) -> _SignalState:
        st = self._signals.get(sig.key)
        if st is None:
            detector = ZScoreEnsembleDetector(
                window_ms=self.window_ms,
                threshold=self.threshold,
                baseline_ms=self.baseline_ms,
                confirm=self.confirm,
                drift=self.drift,
                min_samples=2,
                count_window_s=sig.count_window_s,
                lag_ms=self.baseline_lag_ms,
            )
            empty = Signal(
                sig.metric, sig.labels, sig.ts[:0], sig.values[:0], sig.count_window_s
            )
            st = self._signals[sig.key] = _SignalState(empty, detector, int(sig.ts[0]))
        return st

    def _step_points(
        self,
        st: _SignalState,
        sig: Signal,
        zr: np.ndarray,
        trigger: np.ndarray,
        held: np.ndarray,
        catalogue: Catalogue | None,
        specs: Mapping[str, MetricSpec],
    ) -> None:
        """Step a signal's run state machine over its new points."""
        for i in range(len(sig.ts)):
            st.n += 1
            z, ts = float(zr[i]), int(sig.ts[i])
            sign = math.copysign(1.0, z) if z != 0 else 0.0
            # hysteresis: a trigger starts a chain that lasts while |z| holds, same sign
            if st.chain_sign != 0.0 and held[i] and sign == st.chain_sign:
                hot = True
            else:
                st.chain_sign = 0.0
                hot = bool(trigger[i] and held[i])
                if hot:
                    st.chain_sign = sign
            self._step_run(st, sig, hot, abs(z), z, ts, catalogue, specs)

    def _step_run(
        self,
        st: _SignalState,
        sig: Signal,
        hot: bool,
        absz: float,
        z: float,
        ts: int,
        catalogue: Catalogue | None,
        specs: Mapping[str, MetricSpec],
    ) -> None:
        """Runs of hot points no more than ``max_gap`` apart, kept from ``min_run`` hot points."""
        run = st.run
        if hot:
            if run is not None and st.n - run.last_hot_n <= self.max_gap:
                if run.gap_abs >= 0:
                    run.offer(run.gap_abs, run.gap_z, run.gap_ts)
                run.gap_abs = -1.0
                run.offer(absz, z, ts)
                run.hot += 1
                run.last_hot_n, run.last_hot_ts = st.n, ts
            else:
                if run is not None:
                    self._close(run)
                run = st.run = _Run(ts, st.n, ts)
                run.offer(absz, z, ts)
            if run.hot >= self.min_run:
                a = Anomaly(
                    signal=sig.key,
                    metric=sig.metric,
                    labels=sig.labels,
                    start_ms=run.start_ts,
                    end_ms=run.last_hot_ts,
                    peak_ms=run.peak_ts,
                    peak_z=run.peak_z,
                    score=run.peak_abs / (run.peak_abs + self.confirm),
                )
                if run.anomaly is None:
                    (a,) = enrich([a], catalogue, specs, self.change_lookback_ms)
                else:
                    a = replace(a, context=run.anomaly.context)
                key = (a.signal, a.start_ms)
                run.anomaly = self._open[key] = self._changed[key] = a
                if key not in self._raised:
                    self._to_raise[key] = a
        elif run is not None:
            run.offer_gap(absz, z, ts)
            if st.n - run.last_hot_n >= self.max_gap:
                self._close(run)
                st.run = None

    def _close(self, run: _Run) -> None:
        if run.anomaly is not None:
            self._closed_anomalies.append(run.anomaly)
            self._closed_keys.add((run.anomaly.signal, run.anomaly.start_ms))

    def _keep_history(self, st: _SignalState, sig: Signal) -> None:
        old = st.signal
        ts = np.concatenate([old.ts, sig.ts])
        values = np.concatenate([old.values, sig.values])
        cut = np.searchsorted(ts, ts[-1] - self.history_ms, side="left")
        st.signal = Signal(
            sig.metric, sig.labels, ts[cut:], values[cut:], sig.count_window_s
        )

    # --- grouping -----------------------------------------------------------------

    def _horizon(self) -> int:
        """Earliest start an anomaly still to come can have."""
        assert self.cursor_ms is not None
        h = self.cursor_ms + self.step_ms
        for st in self._signals.values():
            run = st.run
            if run is not None and run.anomaly is None:
                h = min(h, run.start_ts)
        return h

    def _group(self, catalogue: Catalogue | None) -> None:
        horizon = self.horizon_ms = self._horizon()
        groups = group_incidents(list(self._open.values()), catalogue, self.quiet_ms)
        still_open = []
        for inc in groups:
            final = inc.end_ms + self.quiet_ms < horizon and all(
                (a.signal, a.start_ms) in self._closed_keys for a in inc.anomalies
            )
            if final:
                self._final.append(inc)
                for a in inc.anomalies:
                    key = (a.signal, a.start_ms)
                    del self._open[key]
                    self._closed_keys.discard(key)
            else:
                still_open.append(inc)
        first = self.forgotten + len(self._settled) + 1
        self.incidents = [
            *self._settled,
            *_numbered([*self._final, *still_open], first),
        ]

    # --- alerts ---------------------------------------------------------------------

    def _alert(self, specs: Mapping[str, MetricSpec]) -> list[Alert]:
        horizon = self.horizon_ms
        assert horizon is not None
        incident_of = {  # settled incidents hold no anomaly still to alert on
            (a.signal, a.start_ms): inc
            for inc in self.incidents[len(self._settled):]
            for a in inc.anomalies
        }
        new = []
        todo = sorted(
            (a for a in self._to_raise.values() if a.start_ms < horizon),
            key=lambda a: (a.start_ms, a.signal),
        )
        for a in todo:
            key = (a.signal, a.start_ms)
            del self._to_raise[key]
            self._changed.pop(key, None)
            inc = incident_of[key]
            spec = specs.get(a.metric)
            labels = {"alertname": f"{a.metric}_anomaly", **dict(a.labels)}
            alert, is_new = self.book.raise_alert(
                labels,
                a.start_ms,
                a.end_ms,
                a.score,
                _summary(a),
                breadth=len(inc.services) or 1,
                weight=spec.weight if spec else 1.0,
                incident_id=inc.id,
            )
            self._raised[key] = alert
            fp = fingerprint(labels)
            member = alert.members.get(fp) if fp != alert.fingerprint else None
            if member is not None:
                if member.count == 1:  # made by this raise
                    self._member_creator[(alert.fingerprint, fp)] = key
                self._member_last[(alert.fingerprint, fp)] = key
            if is_new:
                self._creator[alert.fingerprint] = key
                if a.context:
                    alert.annotations.update(
                        owner=str(a.context.get("owner", "unknown")),
                        region=str(a.context.get("region", "unknown")),
                        host=str(a.context.get("host", "unknown")),
                        changes="; ".join(a.context.get("changes", [])) or "none",
                    )
                new.append(alert)
        # raised alerts follow their anomalies as they grow and their incidents as they merge
        for key in {*self._open, *self._changed}:
            al = self._raised.get(key)
            if al is None:
                continue
            a = self._changed.get(key) or self._open[key]
            inc = incident_of[key]
            spec = specs.get(a.metric)
            if self._creator.get(al.fingerprint) == key:
                al.summary = _summary(a)
            al.end_ms = max(al.end_ms, a.end_ms)
            fp = fingerprint({"alertname": f"{a.metric}_anomaly", **dict(a.labels)})
            member = al.members.get(fp) if fp != al.fingerprint else None
            if member is not None:
                member.end_ms = max(member.end_ms, a.end_ms)
                if self._member_creator.get((al.fingerprint, fp)) == key:
                    member.summary = _summary(a)
            al.score = max(al.score, a.score)
            al.severity = max(
                al.severity,
                severity(
                    a.score,
                    a.end_ms - a.start_ms,
                    len(inc.services) or 1,
                    spec.weight if spec else 1.0,
                ),
            )
        self._changed.clear()
        for key in self._creator.values():
            inc = incident_of.get(key)
            if inc is not None:
                self._raised[key].incident_id = inc.id
        for (_, fp), key in self._member_last.items():
            inc = incident_of.get(key)
            if inc is not None:
                self._raised[key].members[fp].incident_id = inc.id
        return new

    # --- bounded state -------------------------------------------------------------------

    def _settle(self) -> None:
        """Drop the bookkeeping of incidents that can no longer change; forget old ones.

        A final incident that starts before every open anomaly and before the
        horizon keeps its place in the numbering for good: whatever comes
        later starts at or after that bound.  Its anomalies were all raised
        (they started before the horizon), so the maps from its anomalies to
        their alerts have done their work.  With ``keep_ms``, settled
        incidents that ended that long before the cursor go, in id order,
        with their anomalies and with the alerts whose incidents have all
        gone.
        """
        horizon = self.horizon_ms
        assert horizon is not None and self.cursor_ms is not None
        bound = min([horizon, *(start for _, start in self._open)])
        now_settled = [inc for inc in self._final if inc.start_ms < bound]
        if now_settled:
            self._final = [inc for inc in self._final if inc.start_ms >= bound]
            done = {
                (a.signal, a.start_ms) for inc in now_settled for a in inc.anomalies
            }
            for key in done:
                self._raised.pop(key, None)
            for table in (self._creator, self._member_creator, self._member_last):
                for k in [k for k, key in table.items() if key in done]:
                    del table[k]
            self._settled.extend(sorted(now_settled, key=lambda inc: inc.id))
        if self.keep_ms is None:
            return
        cutoff = self.cursor_ms - self.keep_ms
        n = 0
        while n < len(self._settled) and self._settled[n].end_ms < cutoff:
            n += 1
        if n:
            gone, self._settled = self._settled[:n], self._settled[n:]
            self.incidents = self.incidents[n:]
            self.forgotten += n
            keys = {(a.signal, a.start_ms) for inc in gone for a in inc.anomalies}
            self._closed_anomalies = [
                a for a in self._closed_anomalies if (a.signal, a.start_ms) not in keys
            ]
        last_id = self.forgotten
        self.book.forget(
            lambda al: al.end_ms < cutoff
            and all(i <= last_id for i in al.incident_ids)
        )

    # --- results and persistence ------------------------------------------------------

    @property
    def anomalies(self) -> list[Anomaly]:
        """Every anomaly so far, ended or still under way, by (start, signal)."""
        seen = {(a.signal, a.start_ms): a for a in self._closed_anomalies}
        for st in self._signals.values():
            if st.run is not None and st.run.anomaly is not None:
                a = st.run.anomaly
                seen[(a.signal, a.start_ms)] = self._open.get((a.signal, a.start_ms), a)
        return sorted(seen.values(), key=lambda a: (a.start_ms, a.signal))

    def result(self, new_alerts: list[Alert] | None = None) -> PipelineResult:
        signals = {k: st.signal for k, st in self._signals.items()}
        return PipelineResult(
            signals, self.anomalies, list(self.incidents), list(new_alerts or [])
        )

    def save(self, path: Path) -> None:
        """Pickle the state to ``path`` atomically (temporary file, sync, rename)."""
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump((STATE_VERSION, self), fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @staticmethod
    def load(path: Path) -> PipelineRunner | None:
        """The state saved by :meth:`save`, or None when the file is missing or of another version.

        Notes
        -----
        The file is a pickle: only load state directories you trust, as for
        the write-ahead log next to it.
        """
        if not path.exists():
            return None
        with open(path, "rb") as fh:
            version, runner = pickle.load(fh)
        if version != STATE_VERSION or not isinstance(runner, PipelineRunner):
            logger.warning(
                "pipeline state %s is of version %r, not %d; starting afresh",
                path,
                version,
                STATE_VERSION,
            )
            return None
        return runner


def _summary(a: Anomaly) -> str:
    direction = "above" if a.peak_z > 0 else "below"
    return f"{a.signal} {direction} its recent range (z={a.peak_z:+.1f})"


def _numbered(incidents: list[Incident], first: int = 1) -> list[Incident]:
    """Number incidents from ``first`` by (start, first signal), the same however they were built."""

    def key(inc: Incident) -> tuple[int, str]:
        return inc.start_ms, min(
            a.signal for a in inc.anomalies if a.start_ms == inc.start_ms
        )

    out = sorted(incidents, key=key)
    for k, inc in enumerate(out, first):
        inc.id = k
    return out


def store_reader(hot: HotStore, blocks: BlockStore | None = None) -> ReadMany:
    """Batched reads of many series for :meth:`PipelineRunner.advance`.

    A series whose hot part covers the range is read with the others in one
    call to the ring buffers; one with older samples in blocks is read alone,
    stitched with its blocks (as the engine reads it).
    """

    def read_many(
        ids: np.ndarray, start_ms: int, end_ms: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        alone = np.zeros(len(ids), bool)
        if blocks is not None and blocks.floors:
            floors = blocks.floors
            alone = np.array(
                [floors.get(sid, start_ms) > start_ms for sid in ids.tolist()], bool
            )
        table = hot.read_table(ids[~alone], start_ms, end_ms)
        ts, values = table["ts"].to_numpy(), table["value"].to_numpy()
        pos = _positions(ids, ~alone, table["series_id"].to_numpy())
        if alone.any():
            assert blocks is not None
            parts = [(pos, ts, values)]
            for p in np.flatnonzero(alone).tolist():
                t, v = blocks.read(int(ids[p]), start_ms, end_ms, hot.read)
                parts.append((np.full(len(t), p, np.int64), t, v))
            pos, ts, values = (np.concatenate(c) for c in zip(*parts))
            order = np.argsort(pos, kind="stable")  # each series stays by time
            pos, ts, values = pos[order], ts[order], values[order]
        return pos, ts, values

    return read_many


def _positions(ids: np.ndarray, picked: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Position in ``ids`` of each row's series (rows come one series after another)."""
    if len(rows) == 0:
        return np.empty(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
    candidates = np.flatnonzero(picked)
    lengths = np.diff(np.append(starts, len(rows)))
    if len(starts) == len(candidates) and np.array_equal(rows[starts], ids[candidates]):
        return np.repeat(candidates.astype(np.int64), lengths)  # every series has rows
    sorter = np.argsort(ids[candidates])
    where = sorter[np.searchsorted(ids[candidates], rows[starts], sorter=sorter)]
    return np.repeat(candidates[where].astype(np.int64), lengths)
