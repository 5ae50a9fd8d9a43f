"""Storage tiers on disk: immutable Parquet blocks of raw samples and rollups.

Layout under a data directory's ``blocks/``::

    raw/<start>_<end>_<seq>.parquet    raw samples of one ``block_duration`` (2h)
    warm/<start>_<end>_<seq>.parquet   5m rollups of one day
    cold/<start>_<end>_<seq>.parquet   1h rollups of 7 days
    floors.parquet                     per series: older samples are in blocks
    state.json                         which raw and warm blocks are rolled up

A block is written once (to a temporary name, synced, renamed) and never
changed; compaction only writes new blocks and deletes expired ones.

Raw blocks are sorted by series then time and written with encodings suited to
time series: ``ts`` DELTA_BINARY_PACKED, ``value`` PLAIN (see
:data:`RAW_WRITE_OPTIONS`), the series id dictionary-encoded (its runs cost a
few bits), all zstd.

How the tiers answer a read of one series over ``[start, end)``, finest first:

- from the series' floor on: the hot ring buffers;
- from the oldest raw block kept that holds the series: raw blocks;
- from the oldest warm block holding it: 5m rollups; before that, 1h rollups.

A rollup step answers a raw-sample read with one sample, its ``last`` value
at the last millisecond of the step (steps whose samples were all NaN give
none).  So instant selectors and ``last_over_time`` at step ends are exact on
rollups, and ``rate``/``increase``/``delta`` are exact between step ends when
a counter does not reset inside a step; ``count/sum/avg_over_time`` see one
sample per step.  Exact aggregates over rollups (count, sum, min, max, avg,
last, counter increase) are what :meth:`BlockStore.rollup_range` answers.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from obscore._native.rollup import rollup_downsample
from obscore.durations import parse_duration
from obscore.errors import ConfigError
from obscore.model import ROLLUP_SCHEMA, sample_table
from obscore.store.tiers import fold

logger = logging.getLogger(__name__)

TIERS = ("raw", "warm", "cold")
_DAY = 86_400_000
_FLOAT_ROLLUPS = ("sum", "min", "max", "last", "increase")

_EMPTY = (np.empty(0, np.int64), np.empty(0, np.float64))

#: Writer options of raw sample blocks.
#: ``value`` is PLAIN because zstd then finds the repeats of whole values:
#: on the SMD test data in 2h blocks it gives 3.06 bytes per sample against
#: 4.56 with BYTE_STREAM_SPLIT (benchmarks/test_store.py).  No statistics and
#: no Arrow schema in the footer: a raw block is read whole, and the footer
#: is most of a small block.
RAW_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 9,
    "use_dictionary": ["series_id"],
    "column_encoding": {"ts": "DELTA_BINARY_PACKED", "value": "PLAIN"},
    "write_statistics": False,
    "store_schema": False,
}

#: Writer options of rollup blocks.
ROLLUP_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 9,
    "use_dictionary": ["series_id"],
    "column_encoding": {
        "ts": "DELTA_BINARY_PACKED",
        "count": "DELTA_BINARY_PACKED",
        **{c: "BYTE_STREAM_SPLIT" for c in _FLOAT_ROLLUPS},
    },
    "write_statistics": ["series_id", "ts"],
}


@dataclass(frozen=True, slots=True)
class TierSettings:
    """Block sizes, rollup steps and retention of the on-disk tiers.

    Read from the config's ``[store]`` (``block_duration``, ``warm_step``,
    ``cold_step``, ``compact_interval``) and ``[retention]`` (``hot``,
    ``warm``, ``cold``) tables by :meth:`from_config`.
    """

    block_ms: int = 2 * 3_600_000
    warm_step_ms: int = 300_000
    cold_step_ms: int = 3_600_000
    warm_block_ms: int = _DAY
    cold_block_ms: int = 7 * _DAY
    hot_retention_ms: int = 7 * _DAY
    warm_retention_ms: int = 30 * _DAY
    cold_retention_ms: int = 365 * _DAY
    compact_interval_ms: int = 600_000

    def __post_init__(self) -> None:
        for name in ("block_ms", "warm_step_ms", "cold_step_ms", "compact_interval_ms"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"store: {name} must be positive, got {getattr(self, name)!r}")
        if self.block_ms % self.cold_step_ms:
            raise ConfigError(
                f"store: block_duration ({self.block_ms} ms) must be a multiple of "
                f"cold_step ({self.cold_step_ms} ms)"
            )
        if self.warm_block_ms % self.block_ms or self.warm_block_ms % self.warm_step_ms:
            raise ConfigError(
                f"store: block_duration ({self.block_ms} ms) and warm_step "
                f"({self.warm_step_ms} ms) must divide one day"
            )
        if self.cold_step_ms % self.warm_step_ms or self.cold_block_ms % self.cold_step_ms:
            raise ConfigError(
                f"store: cold_step ({self.cold_step_ms} ms) must be a multiple of "
                f"warm_step ({self.warm_step_ms} ms) and divide 7 days"
            )

    @classmethod
    def from_config(cls, config) -> TierSettings:
        """Settings from a :class:`~obscore.config.Config` (defaults where unset)."""
        store = config.raw.get("store", {})

        def duration(key: str, default: str) -> int:
            try:
                return parse_duration(store.get(key, default))
            except ConfigError as exc:
                raise ConfigError(f"store.{key}: {exc}") from None

        ret = config.retention_ms
        return cls(
            block_ms=duration("block_duration", "2h"),
            warm_step_ms=duration("warm_step", "5m"),
            cold_step_ms=duration("cold_step", "1h"),
            hot_retention_ms=ret.get("hot", 7 * _DAY),
            warm_retention_ms=ret.get("warm", 30 * _DAY),
            cold_retention_ms=ret.get("cold", 365 * _DAY),
            compact_interval_ms=duration("compact_interval", "10m"),
        )


@dataclass(frozen=True, slots=True, order=True)
class Block:
    """One immutable block file: its tier, time span ``[start_ms, end_ms)`` and
    sequence number (a span may hold several blocks, from separate flushes)."""

    start_ms: int
    end_ms: int
    seq: int
    tier: str
    path: Path


@dataclass(slots=True)
class CompactResult:
    """Blocks one compaction wrote and pruned."""

    written: list[Block] = field(default_factory=list)
    pruned: list[Block] = field(default_factory=list)


def write_block(table: pa.Table, path: Path, options: dict[str, Any]) -> None:
    """Write a table as one Parquet file: temporary name, fsync, rename, sync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, **options)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _sync_dir(path.parent)


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("series_id", "ascending"), ("ts", "ascending")])


class _Loaded:
    """A block read into memory with the row range of each series."""

    __slots__ = ("columns", "ids", "nbytes", "starts", "stops")

    def __init__(self, table: pa.Table) -> None:
        ids = table["series_id"].to_numpy()
        self.columns = {n: table[n].to_numpy() for n in table.column_names if n != "series_id"}
        self.ids, self.starts = np.unique(ids, return_index=True)
        self.stops = np.append(self.starts[1:], len(ids))
        self.nbytes = sum(c.nbytes for c in self.columns.values()) + 24 * len(self.ids)

    def rows(self, sid: int) -> slice | None:
        i = int(np.searchsorted(self.ids, np.uint64(sid)))
        if i >= len(self.ids) or self.ids[i] != np.uint64(sid):
            return None
        return slice(int(self.starts[i]), int(self.stops[i]))


class BlockStore:
    """The raw, warm and cold tiers of one data directory.

    Parameters
    ----------
    directory : Path
        The ``blocks`` folder; created when missing.
    settings : TierSettings, optional
        Block sizes, steps and retention; the defaults when None.
    cache_bytes : int
        Memory for blocks read back (least recently used first out), 256 MB
        by default.  Reads go series by series, so a range over more blocks
        than fit reads some of them more than once.

    Notes
    -----
    Each series has a *floor*: its samples before it are in raw blocks (or
    rolled up), from it on in the hot tier.  A series' floor moves to the
    last block boundary at least ``out_of_order_window`` behind its newest
    sample, since no sample older than that can still be stored (the sample
    rules of :class:`~obscore.store.hot.HotStore`).  Floors are kept in
    ``floors.parquet``.
    """

    def __init__(
        self,
        directory: str | Path,
        settings: TierSettings | None = None,
        cache_bytes: int = 256 << 20,
    ) -> None:
        self.directory = Path(directory)
        self.settings = settings or TierSettings()
        self.steps_ms = {"warm": self.settings.warm_step_ms, "cold": self.settings.cold_step_ms}
        self._cache: OrderedDict[Path, _Loaded] = OrderedDict()
        self._cache_bytes = int(cache_bytes)
        self._cached = 0
        self._blocks: dict[str, list[Block]] = {}
        for tier in TIERS:
            folder = self.directory / tier
            folder.mkdir(parents=True, exist_ok=True)
            for tmp in folder.glob("*.tmp"):
                logger.warning("removing unfinished block file %s", tmp)
                tmp.unlink()
            self._blocks[tier] = sorted(self._scan(tier))
        self._seq = max((b.seq for t in TIERS for b in self._blocks[t]), default=0)
        state = self.directory / "state.json"
        data = json.loads(state.read_text()) if state.exists() else {}
        #: names of raw and warm blocks already rolled up into the next tier
        self.rolled: dict[str, set[str]] = {t: set(data.get("rolled", {}).get(t, [])) for t in ("raw", "warm")}
        floors = self.directory / "floors.parquet"
        self.floors: dict[int, int] = {}
        raw_commit = 0
        if floors.exists():
            t = pq.read_table(floors)
            self.floors = dict(zip(t["series_id"].to_pylist(), t["floor"].to_pylist()))
            raw_commit = int((t.schema.metadata or {}).get(b"seq", b"0"))
        # a block written after the last commit (floors for raw blocks, the
        # state for rollups) was cut short by a crash: its samples are still
        # in the hot tier and the log, so it goes and is written again
        commits = {"raw": raw_commit, "warm": int(data.get("seq", 0)), "cold": int(data.get("seq", 0))}
        for tier in TIERS:
            for block in [b for b in self._blocks[tier] if b.seq > commits[tier]]:
                logger.warning("removing %s block %s, written after the last commit", tier, block.path.name)
                block.path.unlink()
                self._blocks[tier].remove(block)
        self._seq = max(self._seq, *commits.values())

    def _scan(self, tier: str) -> Iterable[Block]:
        for path in (self.directory / tier).glob("*.parquet"):
            try:
                start, end, seq = (int(x) for x in path.stem.split("_"))
            except ValueError:
                logger.warning("ignoring %s: not a block name <start>_<end>_<seq>.parquet", path)
                continue
            yield Block(start, end, seq, tier, path)

    def blocks(self, tier: str) -> list[Block]:
        """The blocks of a tier (``raw``, ``warm`` or ``cold``), oldest first."""
        if tier not in self._blocks:
            raise ValueError(f"unknown tier {tier!r}; tiers are {list(TIERS)!r}")
        return list(self._blocks[tier])

    @property
    def flushed_until(self) -> int | None:
        """The highest series floor: every block before it that will ever be
        complete for the leading series is."""
        return max(self.floors.values(), default=None)

    def _add(self, tier: str, start: int, end: int, table: pa.Table) -> Block:
        self._seq += 1
        path = self.directory / tier / f"{start}_{end}_{self._seq}.parquet"
        block = Block(start, end, self._seq, tier, path)
        write_block(table, path, RAW_WRITE_OPTIONS if tier == "raw" else ROLLUP_WRITE_OPTIONS)
        self._blocks[tier] = sorted(self._blocks[tier] + [block])
        logger.info("wrote %s block %s (%d rows)", tier, path.name, table.num_rows)
        return block

    def _save_state(self) -> None:
        state = self.directory / "state.json"
        tmp = state.with_name("state.json.tmp")
        tmp.write_text(
            json.dumps({"seq": self._seq, "rolled": {t: sorted(v) for t, v in self.rolled.items()}})
        )
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, state)

    def _save_floors(self) -> None:
        table = pa.table(
            {
                "series_id": pa.array(list(self.floors), pa.uint64()),
                "floor": pa.array(list(self.floors.values()), pa.int64()),
            }
        ).replace_schema_metadata({"seq": str(self._seq)})
        write_block(table, self.directory / "floors.parquet", {"compression": "zstd"})

    # --- write ---------------------------------------------------------------

    def write_raw(self, samples: pa.Table, floors: dict[int, int]) -> list[Block]:
        """Write flushed samples as raw blocks and move the series' floors.

        Parameters
        ----------
        samples : pa.Table
            :data:`~obscore.model.SAMPLE_SCHEMA` rows, any order, each before
            the new floor of its series.
        floors : dict of int to int
            The new floor (a block boundary) of each series flushed.

        Returns
        -------
        list of Block
            One block per ``block_duration`` window holding samples.  The
            floors are saved after the blocks, so a crash in between leaves
            the samples in the hot tier and the log as well (a later read
            takes them from the hot tier, above the old floor).
        """
        b = self.settings.block_ms
        written = []
        if samples.num_rows:
            ids = samples["series_id"].to_numpy()
            ts = samples["ts"].to_numpy()
            values = samples["value"].to_numpy()
            same = ids[1:] == ids[:-1]
            if np.any(ids[1:] < ids[:-1]) or np.any(same & (ts[1:] < ts[:-1])):
                order = np.lexsort((ts, ids))
                ids, ts, values = ids[order], ts[order], values[order]
            window = ts // b
            order = np.argsort(window, kind="stable")  # keeps series-then-time order
            ids, ts, values, window = ids[order], ts[order], values[order], window[order]
            cuts = np.flatnonzero(window[1:] != window[:-1]) + 1
            for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(window)].tolist()):
                w = int(window[lo])
                part = sample_table(ids[lo:hi], ts[lo:hi], values[lo:hi])
                written.append(self._add("raw", w * b, (w + 1) * b, part))
        self.floors.update({int(k): int(v) for k, v in floors.items()})
        self._save_floors()
        return written

    def compact(self, now_ms: int, counter_ids: set[int] | None = None) -> CompactResult:
        """Downsample complete spans to the warm and cold tiers, then delete expired blocks.

        Raw blocks of a day are folded into a warm block (5m rollups) once
        that day ends before :attr:`flushed_until`; warm blocks of a 7-day
        span into a cold block (1h rollups) likewise.  Blocks flushed later
        for a span already rolled up get a block of their own there.  A block
        is deleted when it ended more than its tier's retention before
        ``now_ms`` and (raw and warm) it is rolled up.  Every deletion is
        logged.
        """
        s = self.settings
        out = CompactResult()
        done = self.flushed_until
        if done is not None:
            out.written += self._roll_up("raw", "warm", s.warm_block_ms, done, counter_ids)
            out.written += self._roll_up("warm", "cold", s.cold_block_ms, done, counter_ids)
        retention = {"raw": s.hot_retention_ms, "warm": s.warm_retention_ms, "cold": s.cold_retention_ms}
        for tier in TIERS:
            for block in list(self._blocks[tier]):
                if block.end_ms > now_ms - retention[tier]:
                    continue
                if tier in self.rolled and block.path.name not in self.rolled[tier]:
                    logger.warning(
                        "%s block %s is past retention but not rolled up yet; kept",
                        tier, block.path.name,
                    )
                    continue
                block.path.unlink(missing_ok=True)
                gone = self._cache.pop(block.path, None)
                self._cached -= gone.nbytes if gone is not None else 0
                self._blocks[tier].remove(block)
                self.rolled.get(tier, set()).discard(block.path.name)
                out.pruned.append(block)
                logger.info(
                    "pruned %s block %s: ended %d ms before now, retention %d ms",
                    tier, block.path.name, now_ms - block.end_ms, retention[tier],
                )
        if out.written or out.pruned:
            self._save_state()
        return out

    def _roll_up(
        self, src: str, dst: str, span_ms: int, done_ms: int, counter_ids: set[int] | None
    ) -> list[Block]:
        spans: dict[int, list[Block]] = {}
        for block in self._blocks[src]:
            if block.path.name not in self.rolled[src]:
                spans.setdefault(block.start_ms // span_ms * span_ms, []).append(block)
        written = []
        for start, blocks in sorted(spans.items()):
            if start + span_ms > done_ms:
                continue
            table = pa.concat_tables([pq.read_table(b.path) for b in blocks])
            if src == "raw":
                rolled = fold(table, self.steps_ms[dst], counter_ids)
            else:
                rolled = _downsample(table, self.steps_ms[dst])
            written.append(self._add(dst, start, start + span_ms, rolled))
            # the new block is on disk before its sources are marked rolled up
            self.rolled[src].update(b.path.name for b in blocks)
            self._save_state()
        return written

    # --- read ----------------------------------------------------------------

    def _load(self, block: Block) -> _Loaded:
        loaded = self._cache.get(block.path)
        if loaded is None:
            loaded = _Loaded(pq.read_table(block.path))
            self._cache[block.path] = loaded
            self._cached += loaded.nbytes
            while self._cached > self._cache_bytes and len(self._cache) > 1:
                self._cached -= self._cache.popitem(last=False)[1].nbytes
        else:
            self._cache.move_to_end(block.path)
        return loaded

    def read_tier(self, tier: str, sid: int, start_ms: int, end_ms: int):
        """``(ts, values, covered_from)`` of one series from one tier,
        ``start_ms <= ts < end_ms``; ``covered_from`` is the start of the
        oldest block overlapping the range that holds the series (None when
        none does): a coarser tier is read only before it.

        Rollup tiers give one sample per step: ``last`` at the step's last ms.
        """
        parts_t, parts_v = [], []
        covered = None
        step = self.steps_ms.get(tier, 0)
        for block in self._blocks[tier]:
            if block.start_ms >= end_ms:
                break
            if block.end_ms <= start_ms:
                continue
            loaded = self._load(block)
            rows = loaded.rows(sid)
            if rows is None:
                continue
            covered = block.start_ms if covered is None else min(covered, block.start_ms)
            cols = loaded.columns
            if tier == "raw":
                ts, v = cols["ts"][rows], cols["value"][rows]
            else:
                keep = cols["count"][rows] > 0
                ts = cols["ts"][rows][keep] + (step - 1)
                v = cols["last"][rows][keep]
            lo, hi = np.searchsorted(ts, [start_ms, end_ms])
            if hi > lo:
                parts_t.append(ts[lo:hi])
                parts_v.append(v[lo:hi])
        if not parts_t:
            return _EMPTY[0], _EMPTY[1], covered
        if len(parts_t) == 1:
            return parts_t[0], parts_v[0], covered
        ts, v = np.concatenate(parts_t), np.concatenate(parts_v)
        order = np.argsort(ts, kind="stable")
        return ts[order], v[order], covered

    def read(
        self,
        sid: int,
        start_ms: int,
        end_ms: int,
        hot_read: Callable[[int, int, int], tuple[np.ndarray, np.ndarray]],
    ):
        """``(ts, values)`` of one series over ``[start_ms, end_ms)``, stitched from
        the finest tier kept for each part of the range (see the module notes)."""
        floor = self.floors.get(int(sid))
        if floor is None:
            return hot_read(sid, start_ms, end_ms)
        parts = []
        if end_ms > floor:
            parts.append(hot_read(sid, max(start_ms, floor), end_ms))
        upper = min(end_ms, floor)
        for tier in TIERS:
            if start_ms >= upper:
                break
            ts, v, covered = self.read_tier(tier, sid, start_ms, upper)
            parts.append((ts, v))
            if covered is not None:
                upper = min(upper, covered)
        parts = [p for p in reversed(parts) if len(p[0])]
        if not parts:
            return _EMPTY
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def read_rollups(
        self, tier: str, start_ms: int, end_ms: int, sids: Iterable[int] | None = None
    ) -> pa.Table:
        """Rollup rows of one tier with ``start_ms <= ts < end_ms`` (of the given series)."""
        if tier not in self.steps_ms:
            raise ValueError(f"tier {tier!r} holds no rollups; rollup tiers are {list(self.steps_ms)!r}")
        flt = [("ts", ">=", int(start_ms)), ("ts", "<", int(end_ms))]
        if sids is not None:
            flt.append(("series_id", "in", [int(s) for s in sids]))
        parts = [
            pq.read_table(b.path, filters=flt)
            for b in self._blocks[tier]
            if b.end_ms > start_ms and b.start_ms < end_ms
        ]
        if not parts:
            return ROLLUP_SCHEMA.empty_table()
        return pa.concat_tables(parts)

    def rollup_range(
        self, tier: str, start_ms: int, end_ms: int, step_ms: int, sids: Iterable[int] | None = None
    ) -> pa.Table:
        """Rollups of one tier re-folded to ``step_ms`` per series: exact count,
        sum, min, max, last and increase (and so avg = sum / count).

        ``step_ms`` must be a multiple of the tier's step.
        """
        if tier in self.steps_ms and step_ms % self.steps_ms[tier]:
            raise ValueError(
                f"step_ms {step_ms} is not a multiple of the {tier} step {self.steps_ms[tier]} ms"
            )
        return rollup_step(self.read_rollups(tier, start_ms, end_ms, sids), step_ms)


def _downsample(table: pa.Table, step_ms: int) -> pa.Table:
    from obscore.store.tiers import downsample

    return downsample(table.cast(ROLLUP_SCHEMA), step_ms)


def rollup_step(rollups: pa.Table, step_ms: int) -> pa.Table:
    """Fold rollup rows sorted by series then ts (as blocks hold them) into coarser steps.

    Rows out of that order are sorted first.
    """
    if rollups.num_rows == 0:
        return ROLLUP_SCHEMA.empty_table()
    ids = rollups["series_id"].to_numpy()
    ts = rollups["ts"].to_numpy()
    if np.any(ids[1:] < ids[:-1]) or np.any((ids[1:] == ids[:-1]) & (ts[1:] < ts[:-1])):
        return _downsample(rollups, step_ms)
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    groups = np.zeros(len(ids), np.int64)
    groups[change] = 1
    np.cumsum(groups, out=groups)
    out = rollup_downsample(
        groups,
        np.ascontiguousarray(ts),
        np.ascontiguousarray(rollups["count"].to_numpy()),
        *(np.ascontiguousarray(rollups[c].to_numpy()) for c in _FLOAT_ROLLUPS),
        int(step_ms),
    )
    uniq = ids[np.concatenate([[0], change])]
    arrays = [pa.array(uniq[out["group"]], pa.uint64()), pa.array(out["ts"])]
    arrays += [pa.array(out[c]) for c in ("count",) + _FLOAT_ROLLUPS]
    return pa.Table.from_arrays(arrays, schema=ROLLUP_SCHEMA)
