"""Bad input to in-process recording (``Engine.record`` and the metric handles).

Each bad call raises at the call with a message naming the metric, the label
set and what was wrong; nothing is recorded for it, and the samples recorded
before it are all stored at the next flush.
"""

from __future__ import annotations

import math
import re
import reprlib

import numpy as np
import pytest

from obscore import Engine
from obscore.config import load_config
from obscore.errors import InvalidSampleError
from obscore.model import SeriesIndex, sample_table
from obscore.store.hot import STALE_NAN, is_stale

T0 = 1_700_000_000_000
CPU = {"host": "a", "service": "web"}
LAT = {"endpoint": "/a", "method": "GET"}
BAD_VALUES = ["x", "1.5", b"1", None, [1.0], 1 + 2j, np.array([1.0, 2.0])]


def _values(eng: Engine, name: str, labels: dict[str, str]) -> list[float]:
    """The stored values of one series, in time order ([] when it has none)."""
    eng.flush()
    ids = [s for s in eng.index.ids(name) if dict(eng.index.labels(s)) == labels]
    if not ids:
        return []
    return eng.hot.read(ids[0], 0, 2**62)[1].tolist()


def _burst_engine() -> Engine:
    """An engine whose request_latency sampler keeps every live observation."""
    eng = Engine()
    eng.histogram("request_latency").labels(**LAT)
    assert eng.trigger_sampling("request_latency", duration_ms=3_600_000) == 1
    return eng


# --- NaN and infinite values -----------------------------------------------------


@pytest.mark.parametrize("live", [True, False], ids=["live", "timed"])
def test_observe_nan_raises_and_leaves_the_histogram_unchanged(live):
    eng = _burst_engine()
    h = eng.histogram("request_latency").labels(**LAT)
    ts = (lambda i: None) if live else (lambda i: T0 + i)
    for i, v in enumerate([5.0, 70.0, 700.0]):
        h.observe(v, ts_ms=ts(i))
    message = (
        "metric 'request_latency' {'endpoint': '/a', 'method': 'GET'}: a histogram "
        "observation must not be NaN; nothing was recorded"
    )
    with pytest.raises(InvalidSampleError, match=re.escape(message)):
        h.observe(math.nan, ts_ms=ts(3))
    h.observe(20.0, ts_ms=ts(4))
    count = _values(eng, "request_latency_count", LAT)
    total = _values(eng, "request_latency_sum", LAT)
    assert count[-1] == 4.0
    assert total[-1] == 795.0  # not NaN: the refused value reached no sum
    assert not any(math.isnan(v) for v in total)
    inf_bucket = _values(eng, "request_latency_bucket", {**LAT, "le": "+Inf"})
    assert inf_bucket[-1] == 4.0
    if live:
        assert h.sampled.n_nan == 0


def test_observe_infinity_goes_to_the_end_buckets():
    eng = Engine()
    h = eng.histogram("request_latency").labels(**LAT)
    h.observe(math.inf, ts_ms=T0)
    h.observe(-math.inf, ts_ms=T0 + 1)
    assert _values(eng, "request_latency_bucket", {**LAT, "le": "10"}) == [0.0, 1.0]
    assert _values(eng, "request_latency_bucket", {**LAT, "le": "1000"}) == [0.0, 1.0]
    assert _values(eng, "request_latency_bucket", {**LAT, "le": "+Inf"}) == [1.0, 2.0]


def test_gauge_keeps_nan_and_infinity_as_values():
    eng = Engine()
    g = eng.gauge("cpu_usage").labels(**CPU)
    for i, v in enumerate([1.0, math.nan, math.inf, -math.inf]):
        g.set(v, ts_ms=T0 + i)
    eng.record("cpu_usage", CPU, math.nan, ts_ms=T0 + 4)
    got = _values(eng, "cpu_usage", CPU)
    assert got[0] == 1.0 and got[2:4] == [math.inf, -math.inf]
    assert math.isnan(got[1]) and math.isnan(got[4])
    assert eng.dropped == {}


@pytest.mark.parametrize(
    ("name", "labels", "kind"),
    [
        ("error_rate", {"service": "web", "error_type": "5xx"}, "counter"),
        ("request_latency_sum", LAT, "histogram"),
        ("request_latency_bucket", {**LAT, "le": "10"}, "histogram"),
    ],
)
def test_record_refuses_nan_for_counter_and_histogram_series(name, labels, kind):
    eng = Engine()
    eng.record(name, labels, 1.0, ts_ms=T0)
    message = (
        f"metric {name!r} {labels!r}: a {kind} sample must not be NaN (only gauges "
        "take NaN); nothing was recorded"
    )
    with pytest.raises(InvalidSampleError, match=re.escape(message)):
        eng.record(name, labels, math.nan, ts_ms=T0 + 1)
    eng.record(name, labels, 2.0, ts_ms=T0 + 2)
    assert _values(eng, name, labels) == [1.0, 2.0]


def test_record_keeps_the_staleness_marker_of_a_counter():
    eng = Engine()
    labels = {"service": "web", "error_type": "5xx"}
    eng.record("error_rate", labels, 3.0, ts_ms=T0)
    eng.record("error_rate", labels, STALE_NAN, ts_ms=T0 + 1)
    got = np.array(_values(eng, "error_rate", labels))
    assert got[0] == 3.0 and is_stale(got[1:]).tolist() == [True]


@pytest.mark.parametrize("amount", [math.nan, math.inf, -1.0])
def test_inc_refuses_nan_infinite_or_negative_and_keeps_the_counter(amount):
    eng = Engine()
    labels = {"service": "web", "error_type": "5xx"}
    c = eng.counter("error_rate").labels(**labels)
    c.inc(2.0, ts_ms=T0)
    message = (
        "metric 'error_rate' {'error_type': '5xx', 'service': 'web'}: counter "
        f"increment must be finite and non-negative, got {amount!r}; "
        "nothing was recorded"
    )
    with pytest.raises(InvalidSampleError, match=re.escape(message)):
        c.inc(amount, ts_ms=T0 + 1)
    c.inc(ts_ms=T0 + 2)
    assert c.value == 3.0
    assert _values(eng, "error_rate", labels) == [2.0, 3.0]


# --- label names -------------------------------------------------------------------


def test_record_refuses_an_undeclared_label_name_before_creating_a_series():
    eng = Engine()
    eng.record("cpu_usage", CPU, 1.0, ts_ms=T0)
    typo = {"hots": "a", "service": "web"}
    message = (
        "metric 'cpu_usage' {'hots': 'a', 'service': 'web'}: label 'hots' is not "
        "declared (declared: ['host', 'service', 'region']); nothing was recorded; "
        "fix the name or declare it in the config"
    )
    with pytest.raises(InvalidSampleError, match=re.escape(message)):
        eng.record("cpu_usage", typo, 2.0, ts_ms=T0 + 1)
    assert len(eng.index) == 1
    assert eng.guard.n_series == 1
    eng.record("cpu_usage", CPU, 3.0, ts_ms=T0 + 2)
    assert _values(eng, "cpu_usage", CPU) == [1.0, 3.0]


def test_record_names_every_undeclared_label():
    eng = Engine()
    message = "labels 'pod', 'zone' are not declared"
    with pytest.raises(InvalidSampleError, match=message):
        eng.record("cpu_usage", {"host": "a", "zone": "z", "pod": "p"}, 1.0, ts_ms=T0)
    assert len(eng.index) == 0


@pytest.mark.parametrize(
    ("metric", "kind", "labels", "bad"),
    [
        ("cpu_usage", "gauge", {"host": "a", "servcie": "web"}, "servcie"),
        ("error_rate", "counter", {"service": "web", "type": "5xx"}, "type"),
        ("request_latency", "histogram", {"endpoint": "/a", "le": "10"}, "le"),
    ],
)
def test_handle_labels_refuses_an_undeclared_name_and_keeps_no_child(
    metric, kind, labels, bad
):
    eng = Engine()
    handle = getattr(eng, kind)(metric)
    declared = list(eng.spec(metric).labels)
    message = f"label {bad!r} is not declared (declared: {declared!r})"
    with pytest.raises(InvalidSampleError, match=re.escape(message)):
        handle.labels(**labels)
    assert handle._children == {}
    assert len(eng.index) == 0 and eng.guard.n_series == 0
    assert eng._sampled_children == []


def test_a_subset_of_the_declared_labels_is_accepted():
    eng = Engine()
    eng.gauge("cpu_usage").labels(host="a").set(1.0, ts_ms=T0)
    eng.record("cpu_usage", {}, 2.0, ts_ms=T0)
    assert _values(eng, "cpu_usage", {"host": "a"}) == [1.0]
    assert _values(eng, "cpu_usage", {}) == [2.0]


def test_only_bucket_series_take_le():
    eng = Engine()
    eng.record("request_latency_bucket", {**LAT, "le": "10"}, 1.0, ts_ms=T0)
    with pytest.raises(InvalidSampleError, match="label 'le' is not declared"):
        eng.record("request_latency_sum", {**LAT, "le": "10"}, 1.0, ts_ms=T0)
    assert [eng.index.name(s) for s in eng.index] == ["request_latency_bucket"]


def test_a_metric_declared_without_labels_takes_any_names():
    queue_depth = {"name": "queue_depth", "kind": "gauge"}
    config = load_config(overrides={"metrics": [queue_depth]})
    eng = Engine(config=config)
    eng.gauge("queue_depth").labels(queue="q1", shard="3").set(4.0, ts_ms=T0)
    eng.record("queue_depth", {"anything": "x"}, 5.0, ts_ms=T0)
    assert _values(eng, "queue_depth", {"queue": "q1", "shard": "3"}) == [4.0]
    assert _values(eng, "queue_depth", {"anything": "x"}) == [5.0]


def test_a_series_held_from_ingest_takes_records_with_its_labels():
    # The Arrow and exposition paths store the labels their source carries
    # (a scrape adds job and instance); recording into such a series is fine.
    eng = Engine()
    index = SeriesIndex()
    labels = {"host": "a", "service": "web", "job": "node", "instance": "h:9100"}
    sid = index.add("cpu_usage", labels)
    batch = sample_table(np.array([sid], np.uint64), np.array([T0]), np.array([1.0]))
    eng.ingest(batch, index)
    eng.record("cpu_usage", labels, 2.0, ts_ms=T0 + 1)
    assert _values(eng, "cpu_usage", labels) == [1.0, 2.0]


# --- values that are no number ---------------------------------------------------


def _bad_message(metric: str, labels: dict[str, str], value) -> str:
    return re.escape(
        f"metric {metric!r} {dict(sorted(labels.items()))!r}: value must be a real "
        f"number, got {value!r} ({type(value).__name__}); nothing was recorded"
    )


@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
@pytest.mark.parametrize("live", [True, False], ids=["live", "timed"])
def test_observe_of_a_non_number_raises_and_the_good_observations_survive(value, live):
    eng = _burst_engine()
    h = eng.histogram("request_latency").labels(**LAT)
    ts = (lambda i: None) if live else (lambda i: T0 + i)
    for i in range(5):
        h.observe(10.0 * i, ts_ms=ts(i))
    message = _bad_message("request_latency", LAT, value)
    for _ in range(30):  # at any sampling rate, every call is checked
        with pytest.raises(InvalidSampleError, match=message):
            h.observe(value, ts_ms=ts(5))
    h.observe(60.0, ts_ms=ts(6))
    eng.flush()
    assert _values(eng, "request_latency_count", LAT)[-1] == 6.0
    assert _values(eng, "request_latency_sum", LAT)[-1] == 160.0
    assert _values(eng, "request_latency_bucket", {**LAT, "le": "50"})[-1] == 5.0


@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_set_inc_and_record_of_a_non_number_raise_and_the_good_samples_survive(value):
    eng = Engine()
    errors = {"service": "web", "error_type": "5xx"}
    g = eng.gauge("cpu_usage").labels(**CPU)
    c = eng.counter("error_rate").labels(**errors)
    g.set(1.0, ts_ms=T0)
    c.inc(1.0, ts_ms=T0)
    eng.record("cpu_usage", CPU, 2.0, ts_ms=T0 + 1)
    cpu_message = _bad_message("cpu_usage", CPU, value)
    with pytest.raises(InvalidSampleError, match=cpu_message):
        g.set(value, ts_ms=T0 + 2)
    errors_message = _bad_message("error_rate", errors, value)
    with pytest.raises(InvalidSampleError, match=errors_message):
        c.inc(value, ts_ms=T0 + 2)
    with pytest.raises(InvalidSampleError, match=cpu_message):
        eng.record("cpu_usage", CPU, value, ts_ms=T0 + 3)
    assert (g.value, c.value) == (1.0, 1.0)
    g.set(4.0, ts_ms=T0 + 4)
    c.inc(ts_ms=T0 + 4)
    assert _values(eng, "cpu_usage", CPU) == [1.0, 2.0, 4.0]
    assert _values(eng, "error_rate", errors) == [1.0, 2.0]


def test_a_refused_value_reaches_neither_the_log_nor_the_blocks(tmp_path):
    eng = Engine(tmp_path)
    h = eng.histogram("request_latency").labels(**LAT)
    for i in range(3):
        eng.record("cpu_usage", CPU, float(i), ts_ms=T0 + i)
        h.observe(10.0 * i, ts_ms=T0 + i)
    with pytest.raises(InvalidSampleError):
        eng.record("cpu_usage", CPU, "3", ts_ms=T0 + 3)
    with pytest.raises(InvalidSampleError):
        h.observe(math.nan, ts_ms=T0 + 3)
    eng.close()
    again = Engine(tmp_path)
    assert _values(again, "cpu_usage", CPU) == [0.0, 1.0, 2.0]
    assert _values(again, "request_latency_count", LAT) == [1.0, 2.0, 3.0]
    again.close()


@pytest.mark.parametrize(
    "value",
    [3, True, np.float32(1.5), np.float64(2.5), np.int64(7), np.array(4.0)],
    ids=repr,
)
def test_real_numbers_of_other_types_are_recorded_as_float(value):
    eng = Engine()
    eng.gauge("cpu_usage").labels(**CPU).set(value, ts_ms=T0)
    eng.record("cpu_usage", CPU, value, ts_ms=T0 + 1)
    eng.histogram("request_latency").labels(**LAT).observe(value, ts_ms=T0)
    want = float(value)
    assert _values(eng, "cpu_usage", CPU) == [want, want]
    assert _values(eng, "request_latency_sum", LAT) == [want]


# --- timestamps ----------------------------------------------------------------------

BAD_TS = [10**20, -(2**63) - 1, 10**400, "now", 1.5, math.nan, math.inf, True, [T0]]


def _ts_message(metric: str, labels: dict[str, str], ts_ms: object) -> str:
    shown = reprlib.repr(ts_ms)
    return re.escape(
        f"metric {metric!r} {dict(sorted(labels.items()))!r}: ts_ms must be whole "
        f"milliseconds since the epoch within int64, got {shown} "
        f"({type(ts_ms).__name__}); nothing was recorded"
    )


@pytest.mark.parametrize("ts_ms", BAD_TS, ids=lambda x: reprlib.repr(x))
@pytest.mark.parametrize("data_dir", [False, True], ids=["memory", "data_dir"])
def test_record_of_a_bad_ts_raises_at_the_call_and_the_good_samples_survive(
    ts_ms, data_dir, tmp_path
):
    # 10**20 was kept in memory and the next query raised OverflowError, losing
    # the good samples around it; with a data directory the log raised
    # struct.error; "now" and 10**400 raised a bare ValueError / OverflowError.
    eng = Engine(tmp_path if data_dir else None)
    errors = {"service": "web", "error_type": "5xx"}
    g = eng.gauge("cpu_usage").labels(**CPU)
    c = eng.counter("error_rate").labels(**errors)
    h = eng.histogram("request_latency").labels(**LAT)
    eng.record("cpu_usage", CPU, 1.0, ts_ms=T0)
    c.inc(1.0, ts_ms=T0)
    h.observe(5.0, ts_ms=T0)
    with pytest.raises(InvalidSampleError, match=_ts_message("cpu_usage", CPU, ts_ms)):
        eng.record("cpu_usage", CPU, 2.0, ts_ms=ts_ms)
    with pytest.raises(InvalidSampleError, match=_ts_message("cpu_usage", CPU, ts_ms)):
        g.set(2.0, ts_ms=ts_ms)
    with pytest.raises(InvalidSampleError, match=_ts_message("error_rate", errors, ts_ms)):
        c.inc(1.0, ts_ms=ts_ms)
    with pytest.raises(InvalidSampleError, match=_ts_message("request_latency", LAT, ts_ms)):
        h.observe(5.0, ts_ms=ts_ms)
    assert (g.value, c.value, h.count) == (0.0, 1.0, 1.0)  # nothing changed
    eng.record("cpu_usage", CPU, 3.0, ts_ms=T0 + 1)
    c.inc(1.0, ts_ms=T0 + 1)
    t = eng.query("cpu_usage", start_ms=T0, end_ms=T0 + 1, step_ms=1, window_ms=1)
    assert t["value"].to_pylist() == [1.0, 3.0]
    assert _values(eng, "error_rate", errors) == [1.0, 2.0]
    assert _values(eng, "request_latency_count", LAT) == [1.0]
    if data_dir:
        eng.close()
        again = Engine(tmp_path)
        assert _values(again, "cpu_usage", CPU) == [1.0, 3.0]
        again.close()


@pytest.mark.parametrize("ts_ms", [T0, np.int64(T0), float(T0), np.float64(T0)], ids=repr)
def test_whole_ts_of_other_types_are_recorded(ts_ms):
    eng = Engine()
    eng.record("cpu_usage", CPU, 1.0, ts_ms=ts_ms)
    eng.flush()
    sid = eng.index.ids("cpu_usage")[0]
    assert eng.hot.read(sid)[0].tolist() == [int(ts_ms)]


def test_record_of_a_value_past_float64_names_it():
    eng = Engine()
    message = (
        "metric 'cpu_usage' {'host': 'a', 'service': 'web'}: value "
        f"{reprlib.repr(10**400)} (int) is too large for a float64; nothing was recorded"
    )
    with pytest.raises(InvalidSampleError, match=re.escape(message)):
        eng.record("cpu_usage", CPU, 10**400, ts_ms=T0)
    with pytest.raises(InvalidSampleError, match=re.escape(message)):
        eng.gauge("cpu_usage").labels(**CPU).set(10**400, ts_ms=T0)
    assert _values(eng, "cpu_usage", CPU) == []
