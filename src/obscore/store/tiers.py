"""Rollups: samples folded into fixed steps, and coarser steps from finer ones.

A rollup row holds count, sum, min, max and last of one series over one step,
and for counters the increase with resets handled.  NaN samples are skipped by
every aggregate (see :func:`obscore._native.rollup.rollup_fold`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from obscore._native.rollup import rollup_downsample, rollup_fold
from obscore.model import ROLLUP_SCHEMA, as_sample_table

logger = logging.getLogger(__name__)

_COLUMNS = ("count", "sum", "min", "max", "last", "increase")


def _to_table(ids: np.ndarray, out: dict[str, np.ndarray]) -> pa.Table:
    arrays = [pa.array(ids[out["group"]], pa.uint64()), pa.array(out["ts"])]
    arrays += [pa.array(out[c]) for c in _COLUMNS]
    return pa.Table.from_arrays(arrays, schema=ROLLUP_SCHEMA)


def fold(data, step_ms: int, counter_ids: set[int] | None = None) -> pa.Table:
    """Fold a sample batch into one rollup row per series and step.

    Parameters
    ----------
    data : pa.Table or pa.RecordBatch
        Sample batch in any order.
    step_ms : int
        Step width in milliseconds, positive.
    counter_ids : set of int, optional
        Series that are counters; their ``increase`` is computed with resets,
        other series get NaN.

    Returns
    -------
    pa.Table
        :data:`obscore.model.ROLLUP_SCHEMA`, sorted by series then step.
    """
    if step_ms <= 0:
        raise ValueError(f"step_ms must be positive, got {step_ms!r}")
    table = as_sample_table(data)
    if table.num_rows == 0:
        return ROLLUP_SCHEMA.empty_table()
    ids = table["series_id"].to_numpy()
    uniq, groups = np.unique(ids, return_inverse=True)
    ts = table["ts"].to_numpy()
    order = np.lexsort((ts, groups))
    groups = np.ascontiguousarray(groups[order], dtype=np.int64)
    ts = np.ascontiguousarray(ts[order])
    values = np.ascontiguousarray(table["value"].to_numpy()[order])
    counter_ids = counter_ids or set()
    is_counter = np.array([int(u) in counter_ids for u in uniq.tolist()])
    parts = []
    for flag in (False, True):
        pick = is_counter[groups] == flag
        if not pick.any():
            continue
        out = rollup_fold(
            np.ascontiguousarray(groups[pick]),
            np.ascontiguousarray(ts[pick]),
            np.ascontiguousarray(values[pick]),
            int(step_ms),
            flag,
        )
        parts.append(_to_table(uniq, out))
    result = pa.concat_tables(parts)
    return result.sort_by([("series_id", "ascending"), ("ts", "ascending")])


def downsample(rollup: pa.Table, step_ms: int) -> pa.Table:
    """Derive coarser rollup rows (e.g. 5m from 1m) from finer ones."""
    if rollup.num_rows == 0:
        return ROLLUP_SCHEMA.empty_table()
    ids = rollup["series_id"].to_numpy()
    uniq, groups = np.unique(ids, return_inverse=True)
    ts = rollup["ts"].to_numpy()
    order = np.lexsort((ts, groups))
    cols = {c: np.ascontiguousarray(rollup[c].to_numpy()[order]) for c in _COLUMNS}
    out = rollup_downsample(
        np.ascontiguousarray(groups[order], dtype=np.int64),
        np.ascontiguousarray(ts[order]),
        cols["count"],
        cols["sum"],
        cols["min"],
        cols["max"],
        cols["last"],
        cols["increase"],
        int(step_ms),
    )
    return _to_table(uniq, out)


class RollupTiers:
    """Rollup tables at each configured step, optionally kept as Parquet.

    The finest step is folded from samples; each coarser step is downsampled
    from the one before it.
    """

    def __init__(self, steps_ms: tuple[int, ...], directory: Path | None = None):
        self.steps_ms = tuple(sorted(steps_ms))
        self.directory = directory
        self.tables: dict[int, pa.Table] = {s: ROLLUP_SCHEMA.empty_table() for s in self.steps_ms}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for step in self.steps_ms:
                path = directory / f"rollup_{step}ms.parquet"
                if path.exists():
                    self.tables[step] = pq.read_table(path).cast(ROLLUP_SCHEMA)

    def update(self, samples: pa.Table, counter_ids: set[int]) -> None:
        """Recompute the rollups from a complete sample table of the hot tier."""
        finest = fold(samples, self.steps_ms[0], counter_ids)
        self.tables[self.steps_ms[0]] = finest
        previous = finest
        for step in self.steps_ms[1:]:
            previous = downsample(previous, step)
            self.tables[step] = previous
        logger.debug("rollups updated: %d rows at the finest step", finest.num_rows)

    def save(self) -> None:
        if self.directory is None:
            return
        for step, table in self.tables.items():
            pq.write_table(table, self.directory / f"rollup_{step}ms.parquet", compression="zstd")

    def get(self, step_ms: int) -> pa.Table:
        if step_ms not in self.tables:
            raise ValueError(
                f"no rollup at step {step_ms} ms; kept steps are {list(self.steps_ms)!r}"
            )
        return self.tables[step_ms]
