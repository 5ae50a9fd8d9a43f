"""The hot tier's sample rules (docs/architecture.md), one test per rule."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pyarrow as pa
import pytest

from obscore import Engine
from obscore.config import load_config
from obscore.errors import DroppedDataWarning
from obscore.model import SeriesIndex, sample_table
from obscore.store.hot import STALE_NAN, HotStore, is_stale
from obscore.store.tiers import fold

T0 = 1_700_000_000_000
M = 60_000


def _engine(**store):
    eng = Engine(config=load_config(overrides={"store": store}) if store else None)
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "a", "service": "web"})
    eng.index.merge(index)
    return eng, sid


def _ingest(eng, sid, ts, values):
    n = len(ts)
    return eng.ingest(sample_table(np.full(n, sid, np.uint64), np.array(ts), np.array(values, float)))


def test_late_sample_within_window_is_stored_in_time_order():
    eng, sid = _engine()
    _ingest(eng, sid, [T0 + 10 * M], [1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = _ingest(eng, sid, [T0 + 2 * M, T0 + 11 * M], [2.0, 3.0])
    assert res.stored == 2
    ts, v = eng.hot.read(sid)
    assert ts.tolist() == [T0 + 2 * M, T0 + 10 * M, T0 + 11 * M]
    assert v.tolist() == [2.0, 1.0, 3.0]


def test_sample_older_than_window_is_rejected_and_batch_kept():
    eng, sid = _engine()
    _ingest(eng, sid, [T0 + 20 * M], [1.0])
    with pytest.warns(
        DroppedDataWarning,
        match=r"dropped 1 of 3 samples: 1 too_old \(first: cpu_usage\{host=\"a\",service=\"web\"\} at ts 1700000000000\)",
    ):
        res = _ingest(eng, sid, [T0, T0 + 15 * M, T0 + 21 * M], [9.0, 2.0, 3.0])
    assert res.stored == 2 and res.dropped == {"too_old": 1}
    assert eng.hot.read(sid)[1].tolist() == [2.0, 1.0, 3.0]


def test_window_is_configurable():
    eng, sid = _engine(out_of_order_window="30m")
    _ingest(eng, sid, [T0 + 20 * M], [1.0])
    assert _ingest(eng, sid, [T0], [9.0]).stored == 1


def test_duplicate_with_same_value_is_dropped_silently():
    eng, sid = _engine()
    _ingest(eng, sid, [T0, T0 + M], [1.0, np.nan])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = _ingest(eng, sid, [T0, T0 + M, T0 + 2 * M], [1.0, np.nan, 4.0])
    assert res.stored == 1 and res.dropped == {}
    assert eng.hot.read(sid)[0].tolist() == [T0, T0 + M, T0 + 2 * M]


def test_duplicate_with_other_value_is_rejected_and_counted():
    eng, sid = _engine()
    _ingest(eng, sid, [T0], [1.0])
    with pytest.warns(DroppedDataWarning, match=r"1 conflict \(first: cpu_usage\{host=\"a\",service=\"web\"\} at ts 1700000000000\)"):
        res = _ingest(eng, sid, [T0, T0 + M], [5.0, 6.0])
    assert res.dropped == {"conflict": 1} and res.stored == 1
    assert eng.hot.read(sid)[1].tolist() == [1.0, 6.0]
    assert eng.dropped["conflict"] == 1


def test_duplicate_with_other_value_replaces_under_last_write_wins():
    eng, sid = _engine(on_conflict="last")
    _ingest(eng, sid, [T0, T0 + M], [1.0, 2.0])
    res = _ingest(eng, sid, [T0, T0 + M], [5.0, 6.0])
    assert res.stored == 2 and res.dropped == {}
    assert eng.hot.read(sid)[1].tolist() == [5.0, 6.0]


def test_nan_is_a_value_and_stale_marker_is_distinct():
    eng, sid = _engine()
    _ingest(eng, sid, [T0, T0 + M], [np.nan, STALE_NAN])
    v = eng.hot.read(sid)[1]
    assert np.isnan(v).all()
    assert is_stale(v).tolist() == [False, True]


def test_rollups_share_one_nan_policy():
    # NaN is skipped by every aggregate: count, sum, min, max and last agree
    t = sample_table(np.full(4, 1, np.uint64), np.array([0, 1, 2, 3]) * 1000, np.array([1.0, np.nan, 3.0, np.nan]))
    r = fold(t, 60_000).to_pylist()[0]
    assert (r["count"], r["sum"], r["min"], r["max"], r["last"]) == (2, 4.0, 1.0, 3.0, 3.0)


def test_series_not_updated_for_5m_is_absent_from_instant_queries():
    eng, sid = _engine()
    _ingest(eng, sid, [T0], [1.0])
    q = lambda t: eng.query("cpu_usage", start_ms=t, end_ms=t, step_ms=1)["value"].to_pylist()
    assert q(T0 + 5 * M) == [1.0]
    assert q(T0 + 5 * M + 1) == []


def test_row_with_a_null_is_dropped_and_named_by_its_row():
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "a", "service": "web"})
    hot = HotStore(index)
    batch = pa.table(
        {
            "series_id": pa.array([sid, sid, None, sid], pa.uint64()),
            "ts": pa.array([T0, None, T0 + 2, T0 + 3], pa.int64()),
            "value": pa.array([1.0, 2.0, 3.0, np.nan]),  # NaN is a value, null is not
        }
    )
    res = hot.ingest(batch)
    assert res.stored == 2 and res.dropped == {"null": 2}
    assert res.first_bad == {"null": "row 1: ts is null"}
    ts, values = hot.read(sid)
    assert ts.tolist() == [T0, T0 + 3] and values[0] == 1.0 and np.isnan(values[1])


def test_sample_too_far_ahead_of_the_clock_is_dropped_and_its_series_goes_on():
    # A sample stored in the far future made every later sample of its series
    # too_old, for good.
    eng, sid = _engine()
    now = time.time_ns() // 1_000_000
    with pytest.warns(
        DroppedDataWarning,
        match=r"dropped 1 of 3 samples: 1 too_far_ahead \(first: "
        r"cpu_usage\{host=\"a\",service=\"web\"\} at ts \d+ \(86\d{6} ms ahead of "
        r"the clock \(\d+\); the limit is 600000 ms \(store.max_future\)\)\)",
    ):
        res = _ingest(eng, sid, [T0, now + 86_400_000, T0 + M], [1.0, 2.0, 3.0])
    assert res.stored == 2 and res.dropped == {"too_far_ahead": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = _ingest(eng, sid, [T0 + 2 * M, now], [4.0, 5.0])
    assert res.stored == 2
    assert eng.hot.read(sid)[0].tolist() == [T0, T0 + M, T0 + 2 * M, now]
    assert eng.dropped == {"too_far_ahead": 1}


def test_the_limit_ahead_of_the_clock_is_configurable_and_exact():
    eng, sid = _engine(max_future="2d")
    now = time.time_ns() // 1_000_000
    assert _ingest(eng, sid, [now + 86_400_000], [1.0]).stored == 1
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "a", "service": "web"})
    hot = HotStore(index, max_future_ms=600_000, clock=lambda: T0)
    batch = sample_table(np.full(3, sid, np.uint64), np.array([T0, T0 + 10 * M, T0 + 10 * M + 1]), np.ones(3))
    res = hot.ingest(batch)
    assert res.stored == 2 and res.dropped == {"too_far_ahead": 1}
    assert res.first_bad["too_far_ahead"] == (
        'cpu_usage{host="a",service="web"} at ts 1700000600001 (600001 ms ahead of the '
        "clock (1700000000000); the limit is 600000 ms (store.max_future))"
    )
