"""Gauge signals from batched reads equal the range query's, per signal and bit."""

from __future__ import annotations

import numpy as np
import pytest

from obscore.engine import Engine
from obscore.model import SeriesIndex, sample_table
from obscore.pipeline import SeriesGroups, metric_signals
from obscore.runner import store_reader
from obscore.store.hot import STALE_NAN

T0 = 1_767_225_600_000
BY = ["service", "region"]


def _engine(rng, data_dir=None, hours=1.0) -> Engine:
    index = SeriesIndex()
    ids = []
    for s in range(5):
        for r in range(3):
            for h in range(3):
                labels = {"service": f"s{s}", "host": f"h{s}-{r}-{h}"}
                if (s + r) % 4:  # some series have no region label
                    labels["region"] = f"r{r}"
                ids.append(index.add("cpu_usage", labels))
    ids = np.array(ids, np.uint64)
    engine = Engine(data_dir)
    per_call = 30  # grid points per ingest call
    for k0 in range(0, int(hours * 360), per_call):
        k = np.repeat(np.arange(k0, k0 + per_call), len(ids))
        sid = np.tile(ids, per_call)
        v = rng.normal(0, 1, len(k))
        v[rng.random(len(k)) < 0.03] = np.nan
        v[rng.random(len(k)) < 0.03] = STALE_NAN
        ts = T0 + k * 10_000 + rng.integers(-3_000, 3_000, len(k))
        sent = rng.random(len(k)) < 0.8  # gaps
        engine.ingest(sample_table(sid[sent], ts[sent], v[sent]), index)
    return engine


def _assert_same(engine, start, end, step):
    spec = engine.spec("cpu_usage")
    want = metric_signals(engine.queries, "cpu_usage", spec, BY, start, end, step)
    groups = SeriesGroups.of(engine.index, "cpu_usage", BY)
    reader = store_reader(engine.hot, engine.blocks)
    got = metric_signals(
        engine.queries, "cpu_usage", spec, BY, start, end, step,
        read_many=reader, groups=groups,
    )  # fmt: skip
    assert [s.key for s in got] == [s.key for s in want]
    for g, w in zip(got, want):
        assert g.labels == w.labels
        np.testing.assert_array_equal(g.ts, w.ts)
        np.testing.assert_array_equal(g.values, w.values)
    return want


@pytest.mark.parametrize(
    ("offset_ms", "span_ms", "step_ms"),
    [
        (0, 3_590_000, 10_000),
        (1_800_000, 0, 10_000),
        (777, 3_000_000, 7_000),
        (-60_000, 60_000, 10_000),
    ],
)
def test_gauge_signals_from_batched_reads_equal_the_range_query(
    rng, offset_ms, span_ms, step_ms
):
    engine = _engine(rng)
    want = _assert_same(engine, T0 + offset_ms, T0 + offset_ms + span_ms, step_ms)
    assert want  # the case is not empty


def test_gauge_signals_read_series_held_in_blocks_as_the_engine_does(rng, tmp_path):
    engine = _engine(rng, tmp_path, hours=3.0)
    assert engine.blocks is not None and engine.blocks.floors  # some data in blocks
    _assert_same(engine, T0, T0 + 3 * 3_600_000 - 10_000, 10_000)
    engine.close()
