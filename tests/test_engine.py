"""The engine's public API on small, hand-checked data."""

from __future__ import annotations

import re
import time
import warnings

import numpy as np
import pyarrow as pa
import pytest

from obscore import Engine
from obscore.errors import DroppedDataWarning, SchemaError, UnknownMetricError
from obscore.model import SeriesIndex, sample_table

T0 = 1_700_000_000_000


def test_record_and_query_gauge_by_label():
    eng = Engine()
    g = eng.gauge("cpu_usage")
    for i in range(6):
        g.labels(host="a", service="web").set(10.0 + i, ts_ms=T0 + i * 10_000)
        g.labels(host="b", service="web").set(20.0 + i, ts_ms=T0 + i * 10_000)
    t = eng.query("cpu_usage", start_ms=T0, end_ms=T0 + 50_000, step_ms=10_000, agg="avg", by=["service"])
    assert t.column_names == ["service", "ts", "value"]
    assert t["value"].to_pylist() == [15.0 + i for i in range(6)]


def test_counter_rate_handles_a_reset():
    eng = Engine()
    labels = {"service": "auth", "error_type": "5xx"}
    for i, v in enumerate([0, 10, 20, 30, 5, 15, 25]):  # reset after 30
        eng.record("error_rate", labels, v, ts_ms=T0 + i * 10_000)
    t = eng.query("error_rate", start_ms=T0 + 60_000, end_ms=T0 + 60_000, step_ms=1, fn="increase", window_ms=60_000)
    # 10+10+10+5+10+10 = 55 across the reset; the window is covered edge to edge
    assert t["value"].to_pylist() == [pytest.approx(55.0)]
    r = eng.query("error_rate", start_ms=T0 + 60_000, end_ms=T0 + 60_000, step_ms=1, fn="rate", window_ms=60_000)
    assert r["value"].to_pylist() == [pytest.approx(55.0 / 60)]


def test_histogram_observe_writes_cumulative_buckets_and_quantile():
    eng = Engine()
    h = eng.histogram("request_latency").labels(endpoint="/a", method="GET")
    rng = np.random.default_rng(0)
    for i, v in enumerate(rng.uniform(0, 100, 400)):
        h.observe(float(v), ts_ms=T0 + i * 1_000)
    eng.flush()
    buckets = eng.index.ids("request_latency_bucket")
    assert len(buckets) == 7
    t = eng.query("request_latency", start_ms=T0 + 399_000, end_ms=T0 + 399_000, step_ms=1, quantile=0.5, window_ms=300_000)
    # uniform 0..100 ms: the median lies in the 50..100 bucket, near 50
    assert 45 < t["value"][0].as_py() < 60


def test_ingest_drops_bad_rows_and_keeps_good_ones():
    eng = Engine()
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "a", "service": "web"})
    batch = sample_table(
        np.array([sid, sid, sid, 999, sid], np.uint64),
        np.array([T0, T0 + 10_000, T0 + 10_000, T0, T0 + 20_000]),
        np.array([1.0, 2.0, 2.5, 7.0, np.nan]),
    )
    with pytest.warns(DroppedDataWarning, match=r"dropped 2 of 5 samples: 1 unknown_series .*series_id 999.*; 1 conflict \(first: cpu_usage\{host=\"a\",service=\"web\"\} at ts 1700000010000\)"):
        res = eng.ingest(batch, index)
    assert res.stored == 3 and res.dropped == {"unknown_series": 1, "conflict": 1}
    ts, v = eng.hot.read(sid)
    assert ts.tolist() == [T0, T0 + 10_000, T0 + 20_000]
    assert v[:2].tolist() == [1.0, 2.0] and np.isnan(v[2])


def test_ingest_drops_undeclared_metric_keeps_the_rest_and_rejects_bad_schema():
    eng = Engine()
    index = SeriesIndex()
    index.add("nope_total", {})
    good = index.add("cpu_usage", {"host": "a", "service": "web"})
    bad_id = index.add("nope_total", {})
    batch = sample_table(np.array([bad_id, good], np.uint64), np.array([T0, T0]), np.array([1.0, 2.0]))
    with pytest.warns(DroppedDataWarning) as caught:
        res = eng.ingest(batch, index)
    assert str(caught[0].message) == (
        "dropped 1 of 2 samples of undeclared metrics ['nope_total'] (first: row 0: "
        "nope_total{} at ts 1700000000000); declare them in the config"
    )
    # the declared metric's sample of the same batch is kept
    assert res.stored == 1 and res.dropped == {"unknown_metric": 1}
    assert eng.hot.read(good)[1].tolist() == [2.0]
    assert eng.dropped["unknown_metric"] == 1
    bad = pa.table({"series_id": pa.array([1], pa.uint64()), "ts": pa.array([T0]), "value": pa.array(["x"])})
    with pytest.raises(SchemaError, match="column 'value' must be float64, got string"):
        eng.ingest(bad)


def test_out_of_order_sample_is_dropped_with_its_series_named():
    eng = Engine()
    g = eng.gauge("cpu_usage").labels(host="a", service="web")
    g.set(1.0, ts_ms=T0 + 20 * 60_000)
    eng.flush()
    g.set(2.0, ts_ms=T0)  # 20 minutes late: beyond the 10m window
    with pytest.warns(DroppedDataWarning, match=r"1 too_old \(first: cpu_usage\{host=\"a\",service=\"web\"\} at ts 1700000000000\)"):
        eng.flush()


def test_rollups_at_configured_steps():
    eng = Engine()
    g = eng.gauge("cpu_usage").labels(host="a", service="web")
    for i in range(360):  # one hour at 10 s
        g.set(float(i % 6), ts_ms=T0 - T0 % 3_600_000 + i * 10_000)
    r1 = eng.rollup(60_000)
    assert r1.num_rows == 60
    assert r1["count"].to_pylist() == [6] * 60
    assert r1["sum"].to_pylist() == [15.0] * 60
    r1h = eng.rollup(3_600_000)
    assert r1h["count"].to_pylist() == [360] and r1h["max"].to_pylist() == [5.0]


def test_engine_persists_to_a_data_dir(tmp_path):
    with Engine(tmp_path) as eng:
        eng.gauge("cpu_usage").labels(host="a", service="web").set(3.0, ts_ms=T0)
    again = Engine(tmp_path)
    t = again.query("cpu_usage", start_ms=T0, end_ms=T0, step_ms=1)
    assert t["value"].to_pylist() == [3.0]
    assert (tmp_path / "rollups" / "rollup_60000ms.parquet").exists()


def test_unknown_metric_message_is_plain():
    eng = Engine()
    with pytest.raises(UnknownMetricError) as info:
        eng.gauge("nope")
    assert str(info.value).startswith("unknown metric 'nope'; declare it in the config")


def test_ingest_exposition_counts_its_bad_lines_and_keeps_the_good_ones():
    eng = Engine()
    text = (
        'cpu_usage{host="a",service="web"} 1\n'
        "cpu_usage{host= 2\n"
        'cpu_usage{host="b",service="web"} 3\n'
    )
    res = eng.ingest_exposition(text, ts_ms=T0)
    assert res.stored == 2
    assert res.dropped == {"bad_line": 1}
    assert res.first_bad["bad_line"].startswith("line 2: ")
    assert eng.dropped["bad_line"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_ms": 0, "end_ms": T0, "step_ms": 1}, "holds 1,700,000,000,001 evaluation times"),
        ({"start_ms": "yesterday", "end_ms": T0, "step_ms": 1}, "start_ms must be an integer of milliseconds, got 'yesterday'"),
        ({"start_ms": T0, "end_ms": T0 - 1, "step_ms": 1}, "end_ms 1699999999999 is before start_ms 1700000000000"),
        ({"start_ms": T0, "end_ms": T0, "step_ms": 0}, "step_ms must be at least 1, got 0"),
        ({"start_ms": T0, "end_ms": T0, "step_ms": 1, "by": "service"}, "by must be a sequence of label names, got the string 'service'"),
        ({"start_ms": T0, "end_ms": T0, "step_ms": 1, "by": ["host"], "without": ["service"]}, "give by or without, not both"),
    ],
)
def test_query_refuses_arguments_it_cannot_evaluate(kwargs, message):
    eng = Engine()
    with pytest.raises(ValueError, match=re.escape(message)):
        eng.query("cpu_usage", **kwargs)


def test_writes_after_close_are_refused_and_reads_still_work(tmp_path):
    from obscore.errors import EngineClosedError

    eng = Engine(tmp_path)
    g = eng.gauge("cpu_usage").labels(host="a", service="web")
    g.set(1.0, ts_ms=T0)
    eng.close()
    message = f"the engine on {tmp_path} is closed; open it again to write to it"
    with pytest.raises(EngineClosedError, match=re.escape(message)):
        g.set(2.0, ts_ms=T0 + 10_000)
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "b", "service": "web"})
    with pytest.raises(EngineClosedError, match=re.escape(message)):
        eng.ingest(sample_table(np.array([sid], np.uint64), np.array([T0]), np.array([3.0])), index)
    t = eng.query("cpu_usage", start_ms=T0, end_ms=T0, step_ms=1)
    assert t["value"].to_pylist() == [1.0]
    eng.close()  # a second close is harmless


@pytest.mark.parametrize("name", ["samples.parquet", "series.parquet"])
def test_a_damaged_checkpoint_is_named_and_left_alone(name, tmp_path):
    from obscore.errors import StoreError

    with Engine(tmp_path) as engine:
        engine.gauge("cpu_usage").labels(host="a", service="web").set(1.0, ts_ms=1_000)
    (tmp_path / name).write_bytes(b"not parquet")
    with pytest.raises(StoreError, match=rf"^{tmp_path / name} cannot be read \(ArrowInvalid: "):
        Engine(tmp_path)
    assert (tmp_path / name).read_bytes() == b"not parquet"


def test_replay_refuses_a_range_that_ends_before_it_starts():
    with pytest.raises(ValueError, match="replay: end_ms 1000 is before start_ms 2000"):
        Engine().replay(2000, 1000)


def test_ingest_with_an_index_holding_undeclared_metrics_counts_only_its_rows():
    # A KeyError 'unknown_metric' came after the batch was stored whenever the
    # index held an undeclared metric but the batch had no row of it.
    eng = Engine()
    index = SeriesIndex()
    good = index.add("cpu_usage", {"host": "a", "service": "web"})
    bad = index.add("nope_metric", {"x": "1"})
    only_good = sample_table(np.array([good, good], np.uint64), np.array([T0, T0 + 1]), np.ones(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = eng.ingest(only_good, index)
    assert res.stored == 2 and res.dropped == {} and res.first_bad == {}
    mixed = sample_table(np.array([bad, good], np.uint64), np.array([T0 + 2, T0 + 2]), np.ones(2))
    with pytest.warns(DroppedDataWarning, match="undeclared metrics"):
        res = eng.ingest(mixed, index)
    assert res.stored == 1 and res.dropped == {"unknown_metric": 1}
    later = sample_table(np.array([good], np.uint64), np.array([T0 + 3]), np.ones(1))
    res = eng.ingest(later, index)  # the same index, after a batch with a bad row
    assert res.stored == 1 and res.dropped == {}
    assert eng.dropped == {"unknown_metric": 1}
    assert eng.hot.read(good)[0].tolist() == [T0, T0 + 1, T0 + 2, T0 + 3]


@pytest.mark.parametrize(
    ("column", "row"),
    [("series_id", 1), ("ts", 2), ("value", 0)],
)
def test_ingest_drops_the_rows_with_a_null_and_keeps_the_others(tmp_path, column, row):
    # A null series_id once lost the whole batch as unknown_series (its id
    # rounded through float in the message); a null ts raised "Buffer dtype
    # mismatch" with a NumPy RuntimeWarning; a null value was stored as NaN.
    eng = Engine(tmp_path)
    sid = eng.index.add("cpu_usage", {"host": "a", "service": "web"})
    cols = {
        "series_id": pa.array([sid] * 3, pa.uint64()),
        "ts": pa.array([T0, T0 + 1, T0 + 2], pa.int64()),
        "value": pa.array([1.0, 2.0, 3.0]),
    }
    cols[column] = pa.array(
        [None if i == row else x for i, x in enumerate(cols[column].to_pylist())],
        cols[column].type,
    )
    batch = pa.RecordBatch.from_pydict(cols)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.warns(
            DroppedDataWarning,
            match=re.escape(f"dropped 1 of 3 samples: 1 null (first: row {row}: {column} is null)"),
        ):
            res = eng.ingest(batch)
    assert res.stored == 2 and res.dropped == {"null": 1}
    assert eng.dropped == {"null": 1}
    kept = [(T0 + i, float(i + 1)) for i in range(3) if i != row]
    assert list(zip(*eng.hot.read(sid))) == kept
    eng.close()
    again = Engine(tmp_path)  # the log and the checkpoint hold the good rows only
    assert list(zip(*again.hot.read(sid))) == kept
    again.close()


def test_ingest_names_the_first_null_row_across_chunks_and_columns():
    eng = Engine()
    sid = eng.index.add("cpu_usage", {"host": "a", "service": "web"})
    ids = pa.chunked_array([[sid, sid], [None, sid, None]], pa.uint64())
    ts = pa.chunked_array([[T0, T0 + 1], [None, T0 + 3, T0 + 4]], pa.int64())
    values = pa.chunked_array([[1.0, None], [3.0, 4.0, 5.0]])
    table = pa.table({"series_id": ids, "ts": ts, "value": values})
    with pytest.warns(DroppedDataWarning, match=r"3 null \(first: row 1: value is null\)"):
        res = eng.ingest(table)
    assert res.stored == 2 and res.dropped == {"null": 3}
    assert res.first_bad == {"null": "row 1: value is null"}
    table = pa.table({"series_id": ids.slice(2), "ts": ts.slice(2), "value": values.slice(2)})
    with pytest.warns(DroppedDataWarning, match=r"first: row 0: series_id and ts are null"):
        eng.ingest(table)


def test_recorded_sample_too_far_ahead_is_dropped_at_flush_and_the_rest_kept(tmp_path):
    eng = Engine(tmp_path)
    g = eng.gauge("cpu_usage").labels(host="a", service="web")
    now = int(time.time() * 1000)
    g.set(1.0, ts_ms=now - 1_000)
    eng.record("cpu_usage", {"host": "a", "service": "web"}, 2.0, ts_ms=now + 86_400_000)
    g.set(3.0, ts_ms=now)
    with pytest.warns(DroppedDataWarning, match=r"dropped 1 of 3 samples: 1 too_far_ahead \(first: cpu_usage"):
        res = eng.flush()
    assert res.stored == 2 and res.dropped == {"too_far_ahead": 1}
    g.set(4.0, ts_ms=now + 1_000)  # the series is not blocked
    eng.flush()
    sid = eng.index.ids("cpu_usage")[0]
    assert eng._read(sid, 0, 2**62)[1].tolist() == [1.0, 3.0, 4.0]
    eng.close()
    again = Engine(tmp_path)
    assert again._read(sid, 0, 2**62)[1].tolist() == [1.0, 3.0, 4.0]
    again.close()
