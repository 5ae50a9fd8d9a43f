"""The hot tier: one ring buffer per series, fed by sample batches."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from obscore._native.ringbuf import RingBuffers
from obscore.model import SAMPLE_SCHEMA, SeriesIndex, as_sample_table

logger = logging.getLogger(__name__)

INT64_MIN = np.iinfo(np.int64).min
INT64_MAX = np.iinfo(np.int64).max

_STORED = 0

#: The staleness marker: a NaN with the bit pattern Prometheus uses, distinct
#: from an ordinary NaN value.
STALE_NAN = np.frombuffer(np.uint64(0x7FF0000000000002).tobytes(), np.float64)[0]


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def is_stale(values: np.ndarray) -> np.ndarray:
    """True where a value is the staleness marker (not any other NaN)."""
    return np.asarray(values, np.float64).view(np.uint64) == np.uint64(0x7FF0000000000002)


def _merge_late(ts, values, late: dict[int, float], start_ms: int, end_ms: int):
    extra = sorted((t, v) for t, v in late.items() if start_ms <= t < end_ms)
    if not extra:
        return ts, values
    lt = np.array([t for t, _ in extra], np.int64)
    lv = np.array([v for _, v in extra], np.float64)
    # a replaced value ("last" on conflict) wins over the ring's copy
    keep = ~np.isin(ts, lt)
    all_ts = np.concatenate([ts[keep], lt])
    all_v = np.concatenate([values[keep], lv])
    order = np.argsort(all_ts, kind="stable")
    return all_ts[order], all_v[order]


def _in_push_order(slots: np.ndarray, ts: np.ndarray) -> bool:
    """True when each series' rows already come by time, as the ring takes them.

    Checks the two orders batches usually come in: by time (a scrape, a
    remote-write request), or by series then time (a file, a block); any
    other order is sorted first.  Ties keep their row order either way, as
    the stable sort would.
    """
    if len(ts) < 2:
        return True
    rising = ts[1:] >= ts[:-1]
    if rising.all():
        return True
    return bool(((slots[1:] > slots[:-1]) | ((slots[1:] == slots[:-1]) & rising)).all())


@dataclass(slots=True)
class IngestResult:
    """What became of the rows of one ingested batch.

    ``dropped`` maps a reason to the number of rows dropped for it;
    ``first_bad`` maps a reason to a description of its first row.
    """

    stored: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    first_bad: dict[str, str] = field(default_factory=dict)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def add(self, other: IngestResult) -> None:
        self.stored += other.stored
        for reason, n in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        for reason, text in other.first_bad.items():
            self.first_bad.setdefault(reason, text)


def without_nulls(table: pa.Table) -> tuple[pa.Table, IngestResult]:
    """``table`` (a sample table) without the rows that hold a null, and their count.

    A null ``series_id`` or ``ts`` names no series or time, and a null
    ``value`` is no number (unlike NaN, which is a value): such a row is
    dropped (reason ``null``) and the first one named by its row and columns.
    """
    result = IngestResult()
    columns = [name for name in table.column_names if table[name].null_count]
    if not columns:
        return table, result
    masks = {c: table[c].is_null().to_numpy(zero_copy_only=False) for c in columns}
    null = np.logical_or.reduce(list(masks.values()))
    first = int(np.argmax(null))
    which = [name for name in columns if masks[name][first]]
    result.dropped["null"] = int(null.sum())
    result.first_bad["null"] = (
        f"row {first}: {' and '.join(which)} {'is' if len(which) == 1 else 'are'} null"
    )
    return table.filter(pa.array(~null)), result


class HotStore:
    """Per-series ring buffers keyed by series id.

    Parameters
    ----------
    index : SeriesIndex
        The series the store may hold; a row whose id is not in it is dropped.
    capacity : int
        Samples kept per series; the oldest is overwritten when a series is full.
    out_of_order_ms : int
        How far behind the newest sample of its series a sample may arrive
        and still be stored (10m by default).
    on_conflict : {"reject", "last"}
        What a second, different value for a stored timestamp does: rejected
        and counted (default), or replaces the stored value ("last").
    max_future_ms : int
        How far ahead of ``clock()`` a sample may be and still be stored
        (10m by default).
    clock : callable, optional
        Returns the current time in ms; the wall clock by default.

    Notes
    -----
    The sample rules, applied per series:

    - rows of a batch may arrive in any order; they are sorted by time first;
    - a sample more than ``max_future_ms`` ahead of the clock is dropped
      (reason ``too_far_ahead``): stored, it would make every later sample
      of its series look ``too_old``;
    - a sample older than the newest stored one by at most ``out_of_order_ms``
      is stored; older than that it is dropped (reason ``too_old``);
    - a repeated timestamp with the same value (bit for bit, so NaN repeats
      NaN) is dropped silently; with a different value it is dropped and
      counted (reason ``conflict``), or replaces the value with
      ``on_conflict="last"``;
    - NaN is a value like any other; staleness is marked by
      :data:`STALE_NAN`, a NaN with its own bit pattern;
    - a row with a null ``series_id``, ``ts`` or ``value`` is dropped (reason
      ``null``).
    """

    def __init__(
        self,
        index: SeriesIndex,
        capacity: int = 8640,
        out_of_order_ms: int = 600_000,
        on_conflict: str = "reject",
        max_future_ms: int = 600_000,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if on_conflict not in ("reject", "last"):
            raise ValueError(f"on_conflict must be 'reject' or 'last', got {on_conflict!r}")
        self.index = index
        self.capacity = int(capacity)
        self.out_of_order_ms = int(out_of_order_ms)
        self.on_conflict = on_conflict
        self.max_future_ms = int(max_future_ms)
        self._clock = clock if clock is not None else _wall_clock_ms
        # accepted late samples and replaced values, per slot: {ts: value}
        self._late: dict[int, dict[int, float]] = {}
        self._rings = RingBuffers(self.capacity, 0)
        self._slot_of: dict[int, int] = {}
        self._ids = np.empty(0, dtype=np.uint64)
        self._by_id = None  # pandas.Index over _ids (its hash table finds a slot)
        # generation and length of the index when slots were last checked
        # against it, and which slots' series had left it then (None: none)
        self._checked: tuple[int, int, np.ndarray | None] = (0, 0, None)
        self.samples_stored = 0
        # per slot: the floor (older samples are in blocks, see
        # obscore.store.blocks; a late sample before it is dropped as too_old)
        # and the newest ts seen
        self._floor = np.empty(0, dtype=np.int64)
        self._newest = np.empty(0, dtype=np.int64)
        # ((block_ms, out_of_order_ms), per slot the newest ts that makes it due)
        self._due_at: tuple[tuple[int, int], np.ndarray] | None = None

    # --- slots ---------------------------------------------------------------

    @property
    def n_series(self) -> int:
        return len(self._slot_of)

    def slot(self, sid: int) -> int:
        """The ring slot of a series, allocating one on first sight."""
        slot = self._slot_of.get(sid)
        if slot is None:
            slot = self._rings.add_series(1)
            self._slot_of[sid] = slot
            self._ids = np.append(self._ids, np.uint64(sid))
            self._floor = np.append(self._floor, np.int64(INT64_MIN))
            self._newest = np.append(self._newest, np.int64(INT64_MIN))
            self._due_at = None
        return slot

    def has(self, sid: int) -> bool:
        return sid in self._slot_of

    def series_ids(self) -> np.ndarray:
        return self._ids.copy()

    def _slots_for(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slot per row (-1 for ids not in the index) and the unknown mask."""
        slots = self._lookup(ids)
        unknown = slots < 0
        if unknown.any():
            fresh = [sid for sid in np.unique(ids[unknown]).tolist() if sid in self.index]
            if fresh:
                for sid in fresh:
                    self.slot(sid)
                slots = self._lookup(ids)
                unknown = slots < 0
        gone = self._gone()
        if gone is not None:  # a series may have left the index since its slot was made
            lost = gone[np.where(unknown, 0, slots)] & ~unknown
            if lost.any():
                unknown |= lost
                slots = np.where(unknown, -1, slots)
        return slots, unknown

    def _gone(self) -> np.ndarray | None:
        """Per slot, True where its series has left the index; None when none has.

        The slots are checked again only when the index lost a series since
        the last check (see ``SeriesIndex.generation``), or while some slot's
        series is gone.
        """
        generation, size, gone = self._checked
        now = (self.index.generation, len(self.index))
        grew_only = now[0] - generation == now[1] - size
        if (now != (generation, size) and not (grew_only and gone is None)) or (
            gone is not None and len(gone) != len(self._ids)
        ):
            ids = self._ids.tolist()
            mask = np.fromiter((sid not in self.index for sid in ids), bool, len(ids))
            gone = mask if mask.any() else None
        self._checked = (*now, gone)
        return gone

    def _lookup(self, ids: np.ndarray) -> np.ndarray:
        """Slot per id (-1 where none), through a hash table of the ids held."""
        if self._by_id is None or len(self._by_id) != len(self._ids):
            import pandas as pd

            # NOTE: a hash lookup, 155 us per 10,000 ids among 1,000 where
            # np.searchsorted over the sorted ids took 450 us (numpy 2.4,
            # pandas 2.x; benchmarks/test_store.py, ingest)
            self._by_id = pd.Index(self._ids, copy=False)
        return self._by_id.get_indexer(ids)

    # --- write ---------------------------------------------------------------

    def _drop(self, result, reason, mask, slots, ts, values, why):
        """Count the rows ``mask`` picks under ``reason``, name the first
        (``why(ts, slot)`` says why), and return the rows left."""
        first = int(np.flatnonzero(mask)[0])
        sid = int(self._ids[slots[first]])
        result.dropped[reason] = result.dropped.get(reason, 0) + int(mask.sum())
        result.first_bad.setdefault(
            reason,
            f"{self.index.describe(sid)} at ts {int(ts[first])} "
            f"({why(ts[first], slots[first])})",
        )
        keep = ~mask
        return slots[keep], ts[keep], values[keep]

    def ingest(self, data) -> IngestResult:
        """Store a sample batch; return what was stored and what was dropped."""
        if isinstance(data, pa.Table) and data.schema.equals(SAMPLE_SCHEMA):
            table = data  # normalised already (the engine's ingest did it)
        else:
            table = as_sample_table(data)
        table, result = without_nulls(table)
        if table.num_rows == 0:
            return result
        ids = table["series_id"].to_numpy()
        ts = table["ts"].to_numpy()
        values = table["value"].to_numpy()
        slots, unknown = self._slots_for(ids)
        if unknown.any():
            first = int(np.flatnonzero(unknown)[0])
            result.dropped["unknown_series"] = int(unknown.sum())
            result.first_bad["unknown_series"] = (
                f"row {first}: series_id {int(ids[first])} is not in the series index"
            )
            keep = ~unknown
            slots, ts, values = slots[keep], ts[keep], values[keep]
        now = self._clock()
        ahead = ts > now + self.max_future_ms  # a Python int past int64 compares right
        if ahead.any():
            slots, ts, values = self._drop(
                result, "too_far_ahead", ahead, slots, ts, values,
                lambda t, slot: f"{int(t) - now} ms ahead of the clock ({now}); the "
                f"limit is {self.max_future_ms} ms (store.max_future)",
            )  # fmt: skip
        flushed = ts < self._floor[slots]
        if flushed.any():
            slots, ts, values = self._drop(
                result, "too_old", flushed, slots, ts, values,
                lambda t, slot: f"before {int(self._floor[slot])}, already flushed to a block",
            )  # fmt: skip
        if not _in_push_order(slots, ts):
            order = np.lexsort((ts, slots))
            slots, ts, values = slots[order], ts[order], values[order]
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        ts = np.ascontiguousarray(ts)
        values = np.ascontiguousarray(values)
        np.maximum.at(self._newest, slots, ts)
        status = np.empty(len(ts), dtype=np.uint8)
        result.stored = int(self._rings.push(slots, ts, values, status))
        for i in np.flatnonzero(status != _STORED).tolist():
            reason = self._place_late(int(slots[i]), int(ts[i]), float(values[i]))
            if reason is None:
                continue
            if reason == "stored":
                result.stored += 1
                continue
            sid = int(self._ids[slots[i]])
            result.dropped[reason] = result.dropped.get(reason, 0) + 1
            result.first_bad.setdefault(reason, f"{self.index.describe(sid)} at ts {int(ts[i])}")
        self.samples_stored += result.stored
        return result

    def _stored_value(self, slot: int, ts: int) -> float | None:
        late = self._late.get(slot)
        if late is not None and ts in late:
            return late[ts]
        t, v = self._rings.read(slot, ts, ts + 1)
        return float(v[0]) if len(t) else None

    def _place_late(self, slot: int, ts: int, value: float) -> str | None:
        """Apply the sample rules to a row the ring did not take.

        Returns None (dropped silently), "stored", or the reason it was dropped.
        """
        old = self._stored_value(slot, ts)
        if old is not None:
            if np.float64(old).tobytes() == np.float64(value).tobytes():
                return None
            if self.on_conflict == "reject":
                return "conflict"
            self._late.setdefault(slot, {})[ts] = value
            return "stored"
        if ts < self._rings.last_ts(slot) - self.out_of_order_ms:
            return "too_old"
        self._late.setdefault(slot, {})[ts] = value
        return "stored"

    # --- floors (see obscore.store.blocks) ------------------------------------

    def floor(self, sid: int) -> int:
        """Where the hot tier's part of a series starts (INT64_MIN: all of it)."""
        slot = self._slot_of.get(sid)
        return INT64_MIN if slot is None else int(self._floor[slot])

    def floors(self, sids: np.ndarray) -> np.ndarray:
        """:meth:`floor` of each series, as int64."""
        slots = self._lookup(np.asarray(sids, dtype=np.uint64))
        if len(self._floor) == 0:
            return np.full(len(slots), INT64_MIN, np.int64)
        return np.where(slots >= 0, self._floor[slots], INT64_MIN)

    def set_floor(self, sid: int, floor_ms: int) -> None:
        """Hand the samples of a series before ``floor_ms`` over to blocks."""
        slot = self.slot(sid)
        self._floor[slot] = int(floor_ms)
        self._due_at = None

    def set_floors(self, sids: np.ndarray, floors_ms: np.ndarray) -> None:
        """:meth:`set_floor` for each series and its floor."""
        sids = np.asarray(sids, dtype=np.uint64)
        slots = self._lookup(sids)
        for sid in sids[slots < 0].tolist():
            self.slot(sid)
        if len(sids):
            self._floor[self._lookup(sids)] = np.asarray(floors_ms, dtype=np.int64)
        self._due_at = None

    def due(self, block_ms: int, out_of_order_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """Series with a whole block no late sample can still reach: their ids
        and new floors (the last block boundary ``out_of_order_ms`` behind their
        newest sample)."""
        # A series is due once (newest - out_of_order_ms) // block_ms * block_ms
        # passes its floor, that is once its newest ts reaches the next block
        # boundary after the floor plus out_of_order_ms: kept per slot until a
        # floor moves, so the check after each batch is one comparison.
        key = (int(block_ms), int(out_of_order_ms))
        if self._due_at is None or self._due_at[0] != key:
            floor = self._floor
            at = np.where(
                floor > INT64_MIN, (floor // block_ms + 1) * block_ms + out_of_order_ms, INT64_MIN + 1
            )
            self._due_at = (key, at)
        pick = np.flatnonzero(self._newest >= self._due_at[1])
        until = (self._newest[pick] - out_of_order_ms) // block_ms * block_ms
        return self._ids[pick], until

    # --- read ----------------------------------------------------------------

    def read(self, sid: int, start_ms: int = INT64_MIN, end_ms: int = INT64_MAX):
        """``(ts, values)`` of one series with ``start_ms <= ts < end_ms``, by time."""
        slot = self._slot_of.get(sid)
        if slot is None:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        ts, values = self._rings.read(slot, int(start_ms), int(end_ms))
        late = self._late.get(slot)
        if late:
            return _merge_late(ts, values, late, int(start_ms), int(end_ms))
        return ts, values

    def read_table(
        self, sids=None, start_ms: int = INT64_MIN, end_ms: int = INT64_MAX
    ) -> pa.Table:
        """A sample table of the given series (all when None), per series by time."""
        if sids is None:
            known, slots = self._ids, np.arange(len(self._ids), dtype=np.int64)
        else:
            known = np.asarray(sids, dtype=np.uint64)
            slots = self._lookup(known)
            known, slots = known[slots >= 0], slots[slots >= 0]
        if len(slots) == 0:
            return SAMPLE_SCHEMA.empty_table()
        if self._late and any(self._late.get(x) for x in slots.tolist()):
            parts = [self.read(s, start_ms, end_ms) for s in known.tolist()]
            ids = np.concatenate(
                [np.full(len(p[0]), s, np.uint64) for s, p in zip(known.tolist(), parts)]
            )
            ts = np.concatenate([p[0] for p in parts])
            values = np.concatenate([p[1] for p in parts])
        else:
            which, ts, values = self._rings.read_many(
                np.ascontiguousarray(slots, dtype=np.int64), int(start_ms), int(end_ms)
            )
            # positions come slot by slot, in the order asked: a repeat, not a gather
            ids = np.repeat(known, np.bincount(which, minlength=len(slots)))
        return pa.Table.from_arrays(
            [pa.array(ids, pa.uint64()), pa.array(ts), pa.array(values)],
            schema=SAMPLE_SCHEMA,
        )

    def last_ts(self, sid: int) -> int | None:
        slot = self._slot_of.get(sid)
        if slot is None or self._rings.count(slot) == 0:
            return None
        return int(self._rings.last_ts(slot))

    def time_range(self) -> tuple[int, int] | None:
        """Oldest and newest ts held, or None when empty."""
        lo, hi = None, None
        for sid in self._slot_of:
            ts, _ = self.read(sid)
            if len(ts):
                lo = int(ts[0]) if lo is None else min(lo, int(ts[0]))
                hi = int(ts[-1]) if hi is None else max(hi, int(ts[-1]))
        return None if lo is None else (lo, hi)
