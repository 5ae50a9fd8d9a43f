"""The query layer: matchers, staleness, window functions and PromQL text queries.

Window functions are checked against the slow per-window loops below, written
from the Prometheus 2.42 documentation and source semantics in the most
obvious form; the conformance scripts and the live-peer comparison live in
``test_promql_conformance.py`` and ``test_promql_peer.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from obscore import Engine
from obscore.errors import UnsupportedQueryError
from obscore.model import SeriesIndex, sample_table
from obscore.store.hot import STALE_NAN, HotStore, is_stale
from obscore.store.promql import RESULT_TYPE_KEY, PromQLEngine, PromQLError
from obscore.store.query import (
    Matcher,
    QueryEngine,
    Windows,
    apply_range_function,
    compile_label_regex,
    evaluate_series,
    instant_lookup,
    quantile_of,
)

T0 = 1_700_000_000_000


# --- slow references ---------------------------------------------------------


def ref_rate(ts, v, start, end, is_counter, is_rate):
    """Prometheus' extrapolatedRate for one window, sample by sample."""
    if len(v) < 2:
        return None
    result = v[-1] - v[0]
    if is_counter:
        last = 0.0
        for x in v:
            if x < last:
                result += last
            last = x
    to_start = (ts[0] - start) / 1000
    to_end = (end - ts[-1]) / 1000
    sampled = (ts[-1] - ts[0]) / 1000
    gap = sampled / (len(v) - 1)
    if is_counter and result > 0 and v[0] >= 0:
        to_start = min(to_start, sampled * (v[0] / result))
    interval = sampled
    interval += to_start if to_start < gap * 1.1 else gap / 2
    interval += to_end if to_end < gap * 1.1 else gap / 2
    factor = interval / sampled
    if is_rate:
        factor /= (end - start) / 1000
    return result * factor


def ref_windows(ts, v, evals, window_ms):
    for e in evals:
        keep = (ts >= e - window_ms) & (ts <= e)
        yield e, ts[keep], v[keep]


@pytest.fixture
def counter(rng):
    """An irregularly sampled counter with two resets."""
    ts = np.cumsum(rng.integers(5_000, 20_000, 200)).astype(np.int64)
    v = np.cumsum(rng.uniform(0, 10, 200))
    v[80:] -= v[79] - 3.0  # reset to 3
    v[150:] -= v[149]  # reset to 0
    return ts, v


# --- matchers and staleness --------------------------------------------------


def test_label_regex_is_anchored_and_scopes_re2_inline_flags():
    assert compile_label_regex("pro.*").fullmatch("production")
    assert not compile_label_regex("duc").fullmatch("production")
    # RE2 lets (?i) appear mid-pattern, applying to the rest of its group
    assert compile_label_regex("((?i)PRO).*").fullmatch("production")
    assert compile_label_regex("a(?i)b").fullmatch("aB")
    assert not compile_label_regex("(a(?i)b)C").fullmatch("aBc")
    assert compile_label_regex("[(?i)]x").fullmatch("?x")


def test_matcher_treats_a_missing_label_as_empty():
    assert Matcher("z", "=", "").matches({"a": "1"})
    assert not Matcher("a", "!=", "").matches({})
    assert Matcher("a", "=~", ".*").matches({})
    with pytest.raises(
        ValueError, match=r"matcher a=~'\(': invalid regular expression"
    ):
        Matcher("a", "=~", "(")


def test_stale_marker_is_told_apart_from_other_nans():
    values = np.array([1.0, np.nan, STALE_NAN, -np.nan])
    assert is_stale(values).tolist() == [False, False, True, False]


def test_instant_lookup_respects_lookback_and_staleness():
    ts = np.array([0, 10_000, 20_000, 30_000])
    v = np.array([0.0, 1.0, STALE_NAN, 2.0])
    refs = np.array([10_000, 20_000, 25_000, 30_000, 330_000, 330_001])
    idx, ok = instant_lookup(ts, v, refs, 300_000)
    assert ok.tolist() == [True, False, False, True, True, False]
    assert v[idx[ok]].tolist() == [1.0, 2.0, 2.0]



def test_instant_selector_at_one_time_equals_the_array_path():
    # An instant query (one evaluation time) looks each series up with scalars;
    # a range query of two steps takes the array path of instant_lookup.  The
    # first step of the second must equal the first, bit for bit, at times on,
    # between and around the samples, over empty, stale, NaN, late and
    # lookback-edge series, with offset and '@'.
    index = SeriesIndex()
    hot = HotStore(index, capacity=64)
    engine = PromQLEngine(QueryEngine(index, hot.read, {}), lookback_ms=30_000)
    series = {
        "plain": [(0, 1.0), (10_000, 2.0), (20_000, 3.0)],
        "stale": [(0, 1.0), (10_000, STALE_NAN), (20_000, 4.0), (25_000, STALE_NAN)],
        "nan": [(5_000, np.nan), (15_000, -0.0), (25_000, -np.nan)],
        "edge": [(0, 7.0), (30_000, 8.0)],
        "late": [(0, 1.0), (20_000, 2.0)],
    }
    ids, ts, values = [], [], []
    for name, samples in series.items():
        sid = index.add("m", {"kind": name, "g": "a" if name < "n" else "b"})
        ids += [sid] * len(samples)
        ts += [t for t, _ in samples]
        values += [v for _, v in samples]
    hot.ingest(sample_table(np.array(ids, np.uint64), np.array(ts), np.array(values)))
    late = index.add("m", {"kind": "late", "g": "a"})
    hot.ingest(sample_table(np.array([late], np.uint64), [10_000], [9.0]))
    index.add("m", {"kind": "empty", "g": "b"})

    def rows(table):
        cols = [c for c in table.column_names if c not in ("ts", "value")]
        labels = [table[c].to_pylist() for c in cols]
        value_bits = table["value"].to_numpy().view(np.uint64).tolist()
        return [
            ({c: x[i] for c, x in zip(cols, labels) if x[i] is not None}, t, b)
            for i, (t, b) in enumerate(zip(table["ts"].to_pylist(), value_bits))
        ]

    queries = ["m", "timestamp(m)", "m offset 5s", "m @ 20", "max by (g) (m)"]
    for text in [*queries, "count(m)"]:
        for at in range(-5_000, 70_000, 2_500):
            one = engine.instant(text, at)
            two = engine.range(text, start_ms=at, end_ms=at + 1, step_ms=1)
            assert rows(one) == [r for r in rows(two) if r[1] == at], (text, at)
            if text == "m" and at == 20_000:  # the test sees what it means to
                kinds = ["edge", "late", "nan", "plain", "stale"]
                assert one["kind"].to_pylist() == kinds
    assert hot.read(late)[0].tolist() == [0, 10_000, 20_000]  # merged late sample

# --- window functions --------------------------------------------------------


@pytest.mark.parametrize("fn", ["rate", "increase", "delta"])
def test_rate_family_matches_the_sample_by_sample_reference(fn, counter):
    ts, v = counter
    evals = np.arange(ts[0], ts[-1] + 120_000, 7_000)
    w = Windows.of(ts, v, evals, 60_000)
    got, ok = apply_range_function(fn, w)
    for j, (e, wt, wv) in enumerate(ref_windows(ts, v, evals, 60_000)):
        want = ref_rate(wt, wv, e - 60_000, e, fn != "delta", fn == "rate")
        assert ok[j] == (want is not None)
        if want is not None:
            # same operations in the same order: equal to the last bit
            assert got[j] == want


def test_window_includes_the_sample_exactly_at_its_start():
    ts = np.array([0, 60_000, 120_000])
    w = Windows.of(ts, np.array([1.0, 2.0, 3.0]), np.array([120_000]), 60_000)
    values, ok = apply_range_function("count_over_time", w)
    assert values.tolist() == [2.0] and ok.tolist() == [True]


def test_range_windows_skip_stale_markers():
    ts = np.array([0, 10_000, 20_000, 30_000])
    w = Windows.of(ts, np.array([0.0, 1.0, STALE_NAN, 2.0]), np.array([30_000]), 60_000)
    assert apply_range_function("count_over_time", w)[0].tolist() == [3.0]
    assert apply_range_function("sum_over_time", w)[0].tolist() == [3.0]


@pytest.mark.parametrize(
    ("fn", "reference"),
    [
        ("sum_over_time", np.sum),
        ("avg_over_time", np.mean),
        ("stddev_over_time", np.std),
        ("stdvar_over_time", np.var),
        ("min_over_time", np.min),
        ("max_over_time", np.max),
        ("count_over_time", len),
        ("last_over_time", lambda y: y[-1]),
    ],
)
def test_over_time_functions_match_numpy(fn, reference, rng):
    ts = np.arange(0, 600_000, 10_000)
    v = rng.normal(1e6, 50.0, len(ts))
    evals = np.arange(0, 660_000, 15_000)
    got, ok = apply_range_function(fn, Windows.of(ts, v, evals, 120_000))
    for j, (_, _, wv) in enumerate(ref_windows(ts, v, evals, 120_000)):
        assert ok[j] == (len(wv) > 0)
        if len(wv):
            # numpy sums pairwise, Prometheus with Kahan compensation: both are
            # within a few ulps of the exact answer at these sizes
            assert got[j] == pytest.approx(reference(wv), rel=1e-9)


def test_min_and_max_over_time_skip_nan_unless_only_nan():
    ts = np.arange(0, 40_000, 10_000)
    v = np.array([np.nan, 2.0, np.nan, 1.0])
    evals = np.array([10_000, 30_000, 0])
    assert apply_range_function("max_over_time", Windows.of(ts, v, evals, 20_000))[0][
        :2
    ].tolist() == [2.0, 2.0]
    assert (
        apply_range_function("min_over_time", Windows.of(ts, v, evals, 20_000))[0][1]
        == 1.0
    )
    assert np.isnan(
        apply_range_function("min_over_time", Windows.of(ts, v, evals, 20_000))[0][2]
    )


def test_deriv_and_predict_linear_match_a_least_squares_fit(rng):
    ts = np.cumsum(rng.integers(5_000, 15_000, 50))
    v = 3.5 * ts / 1000 + rng.normal(0, 1, 50)
    evals = np.array([ts[-1] + 1_000])
    w = Windows.of(ts, v, evals, 10**9)
    slope, intercept = np.polyfit(ts / 1000, v, 1)
    assert apply_range_function("deriv", w)[0][0] == pytest.approx(slope, rel=1e-9)
    predicted = apply_range_function("predict_linear", w, [np.array([60.0])])[0][0]
    assert predicted == pytest.approx(
        slope * (evals[0] / 1000 + 60) + intercept, rel=1e-9
    )


def test_changes_and_resets_count_within_the_window():
    ts = np.arange(0, 100_000, 10_000)
    v = np.array([1, 2, 3, 0, 1, 0, 0, 1, 2, 0], dtype=float)
    w = Windows.of(ts, v, np.array([90_000, 90_000]), 40_000)
    assert apply_range_function("resets", w)[0].tolist() == [1.0, 1.0]
    assert apply_range_function("changes", w)[0].tolist() == [3.0, 3.0]


def test_quantile_of_interpolates_like_numpy_and_handles_edges(rng):
    values = rng.normal(size=17)
    for q in (0, 0.1, 0.5, 0.93, 1):
        assert quantile_of(q, values) == pytest.approx(
            np.quantile(values, q), rel=1e-12
        )
    assert quantile_of(-1, values) == -math.inf and quantile_of(2, values) == math.inf
    assert math.isnan(quantile_of(0.5, np.array([])))


def test_evaluate_series_keeps_gauge_irate_without_resets():
    ts = np.array([0, 10_000, 20_000])
    v = np.array([5.0, 9.0, 4.0])
    evals = np.array([20_000])
    assert evaluate_series(ts, v, evals, "irate", 60_000, counter=True).tolist() == [
        0.4
    ]
    assert evaluate_series(ts, v, evals, "irate", 60_000, counter=False).tolist() == [
        -0.5
    ]


# --- PromQL text queries -----------------------------------------------------


def _store(series: dict[tuple, list[tuple[int, float]]]) -> PromQLEngine:
    index = SeriesIndex()
    hot = HotStore(index, capacity=1024)
    ids, ts, vals = [], [], []
    for (name, *labels), points in series.items():
        sid = index.add(name, dict(labels))
        for t, v in points:
            ids.append(sid)
            ts.append(t)
            vals.append(v)
    hot.ingest(sample_table(np.array(ids, np.uint64), np.array(ts), np.array(vals)))
    return PromQLEngine(QueryEngine(index, hot.read, {}))


@pytest.fixture
def requests_engine() -> PromQLEngine:
    points = {
        ("http_requests_total", ("job", "api"), ("code", "200")): 10.0,
        ("http_requests_total", ("job", "api"), ("code", "500")): 1.0,
        ("http_requests_total", ("job", "web"), ("code", "200")): 4.0,
    }
    return _store(
        {
            key: [(i * 15_000, step * i) for i in range(41)]
            for key, step in points.items()
        }
    )


def test_instant_query_returns_a_long_table_with_name_kept_by_selectors(
    requests_engine,
):
    t = requests_engine.instant('http_requests_total{code="200"}', 600_000)
    assert t.column_names == ["__name__", "code", "job", "ts", "value"]
    assert t.schema.metadata[RESULT_TYPE_KEY] == b"vector"
    assert t["value"].to_pylist() == [400.0, 160.0]
    assert t["ts"].to_pylist() == [600_000, 600_000]


def test_rate_drops_the_name_and_sum_by_groups(requests_engine):
    t = requests_engine.instant("sum by (job) (rate(http_requests_total[1m]))", 600_000)
    assert t.column_names == ["job", "ts", "value"]
    got = dict(zip(t["job"].to_pylist(), t["value"].to_pylist()))
    assert got == pytest.approx({"api": 11 / 15, "web": 4 / 15})


def test_range_query_orders_by_labels_then_ts(requests_engine):
    t = requests_engine.range(
        'http_requests_total{job="api"} / 2',
        start_ms=300_000,
        end_ms=330_000,
        step_ms=15_000,
    )
    assert t["code"].to_pylist() == ["200"] * 3 + ["500"] * 3
    assert t["ts"].to_pylist() == [300_000, 315_000, 330_000] * 2
    assert "__name__" not in t.column_names


def test_scalar_result_and_topk_order(requests_engine):
    t = requests_engine.instant("2 ^ 10", 0)
    assert t.schema.metadata[RESULT_TYPE_KEY] == b"scalar" and t[
        "value"
    ].to_pylist() == [1024.0]
    t = requests_engine.instant("bottomk(2, http_requests_total)", 600_000)
    assert t["value"].to_pylist() == [40.0, 160.0]


def test_staleness_marker_ends_a_series_for_instant_queries():
    eng = _store({("up", ("job", "a")): [(0, 1.0), (10_000, STALE_NAN), (20_000, 1.0)]})
    assert eng.instant("up", 5_000).num_rows == 1
    assert eng.instant("up", 15_000).num_rows == 0
    assert eng.instant("count_over_time(up[1m])", 20_000)["value"].to_pylist() == [2.0]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('label_foo(up, "a")', "cannot parse PromQL"),
        ("up @ -100", "unsupported PromQL modifier '@' before 1970"),
        ("histogram_count(up)", "unsupported PromQL function 'histogram_count'"),
        ('sort_by_label(up, "job")', "unsupported PromQL function 'sort_by_label'"),
        ('"text"', "unsupported PromQL result type 'string'"),
    ],
)
def test_constructs_outside_the_subset_are_named(requests_engine, query, message):
    with pytest.raises((UnsupportedQueryError, PromQLError), match=message):
        requests_engine.instant(query, 0)


def test_subquery_evaluates_the_inner_query_at_aligned_steps(requests_engine):
    q = 'max_over_time(rate(http_requests_total{code="500"}[1m])[2m:30s])'
    got = requests_engine.instant(q, 600_000)["value"].to_pylist()
    inner = requests_engine.range(
        'rate(http_requests_total{code="500"}[1m])',
        start_ms=480_000,
        end_ms=600_000,
        step_ms=30_000,
    )
    assert got == [max(inner["value"].to_pylist())]


def test_at_modifier_pins_the_selector_to_one_time(requests_engine):
    t = requests_engine.range(
        'http_requests_total{code="500"} @ 300',
        start_ms=0,
        end_ms=600_000,
        step_ms=150_000,
    )
    assert t["value"].to_pylist() == [20.0] * 5
    end = requests_engine.range(
        'http_requests_total{code="500"} @ end()',
        start_ms=0,
        end_ms=600_000,
        step_ms=300_000,
    )
    assert end["value"].to_pylist() == [40.0] * 3


def test_unsupported_is_an_obscore_value_error(requests_engine):
    with pytest.raises(UnsupportedQueryError) as info:
        requests_engine.instant('sort_by_label(up, "job")', 0)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == "unsupported PromQL function 'sort_by_label'"


def test_clashing_label_sets_fail_as_in_prometheus(requests_engine):
    with pytest.raises(
        PromQLError, match="vector cannot contain metrics with the same labelset"
    ):
        requests_engine.instant(
            'label_replace(http_requests_total, "code", "", "", "")', 0
        )
    with pytest.raises(PromQLError, match="many-to-one matching must be explicit"):
        requests_engine.instant(
            "http_requests_total * on (job) sum by (job) (http_requests_total)", 600_000
        )
    with pytest.raises(PromQLError, match="duplicate series for the match group"):
        requests_engine.instant(
            "sum by (job) (http_requests_total) * on (job) http_requests_total", 600_000
        )


def test_range_query_validates_its_steps(requests_engine):
    with pytest.raises(ValueError, match="step_ms must be positive"):
        requests_engine.range("up", start_ms=0, end_ms=10, step_ms=0)
    with pytest.raises(ValueError, match="exceeds the limit of 11000"):
        requests_engine.range("up", start_ms=0, end_ms=20_000, step_ms=1)
    with pytest.raises(PromQLError, match="range query needs an instant vector"):
        requests_engine.range(
            "http_requests_total[1m]", start_ms=0, end_ms=0, step_ms=1
        )


# --- Engine.query_promql -----------------------------------------------------


def test_engine_query_promql_instant_and_range():
    eng = Engine()
    g = eng.gauge("cpu_usage")
    for i in range(6):
        g.labels(host="a", service="web").set(10.0 + i, ts_ms=T0 + i * 10_000)
        g.labels(host="b", service="web").set(20.0 + i, ts_ms=T0 + i * 10_000)
    t = eng.query_promql("avg by (service) (cpu_usage)", time_ms=T0 + 50_000)
    assert t.to_pylist() == [{"service": "web", "ts": T0 + 50_000, "value": 20.0}]
    r = eng.query_promql(
        "max(cpu_usage)", start_ms=T0, end_ms=T0 + 50_000, step_ms=10_000
    )
    assert r["value"].to_pylist() == [20.0 + i for i in range(6)]
    legacy = eng.query(
        "cpu_usage", start_ms=T0, end_ms=T0 + 50_000, step_ms=10_000, agg="max"
    )
    assert legacy["value"].to_pylist() == r["value"].to_pylist()


def test_engine_query_promql_rejects_mixed_times():
    eng = Engine()
    with pytest.raises(ValueError, match="give time_ms for an instant query or all of"):
        eng.query_promql("up", time_ms=0, start_ms=0)
    with pytest.raises(ValueError, match="start_ms=0, end_ms=None"):
        eng.query_promql("up", start_ms=0, step_ms=1)


def test_engine_histogram_quantile_agrees_with_the_legacy_query(rng):
    eng = Engine()
    h = eng.histogram("request_latency").labels(endpoint="/a", method="GET")
    for i, v in enumerate(rng.uniform(0, 100, 400)):
        h.observe(float(v), ts_ms=T0 + i * 1_000)
    at = T0 + 399_000
    t = eng.query_promql(
        "histogram_quantile(0.5, rate(request_latency_bucket[5m]))", time_ms=at
    )
    legacy = eng.query(
        "request_latency", start_ms=at, end_ms=at, step_ms=1, quantile=0.5
    )
    assert t["value"].to_pylist() == pytest.approx(
        legacy["value"].to_pylist(), rel=1e-12
    )
    assert set(t.column_names) == {"endpoint", "method", "ts", "value"}


def test_engine_ingested_stale_marker_hides_the_series():
    eng = Engine()
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "a", "service": "web"})
    batch = sample_table(
        np.array([sid, sid], np.uint64),
        np.array([T0, T0 + 10_000]),
        np.array([0.5, STALE_NAN]),
    )
    eng.ingest(batch, index)
    assert eng.query_promql("cpu_usage", time_ms=T0 + 5_000).num_rows == 1
    assert eng.query_promql("cpu_usage", time_ms=T0 + 20_000).num_rows == 0
    assert isinstance(eng.query_promql("cpu_usage", time_ms=T0), pa.Table)


def test_histogram_quantile_edges_follow_prometheus():
    def buckets(name, les, start_ms=0):
        return {
            (name, ("le", le)): [(start_ms + i * 60_000, c * i) for i in range(6)]
            for le, c in les.items()
        }

    eng = _store(
        {
            **buckets(
                "full_bucket", {"1": 2.0, "2": 1.0, "+Inf": 4.0}
            ),  # not monotonic
            **buckets("no_inf_bucket", {"1": 1.0, "2": 2.0}),
            **buckets("late_bucket", {"1": 1.0, "+Inf": 2.0}, start_ms=290_000),
        }
    )
    q = "histogram_quantile(0.5, rate({__name__=~'%s'}[2m]))"
    # counts 2, 1 -> 2 (monotonic envelope), 4: rank 2 falls at the top of le=1
    assert eng.instant(q % "full_bucket", 300_000)["value"].to_pylist() == [1.0]
    # no +Inf bucket: NaN, as Prometheus 2.42
    assert math.isnan(eng.instant(q % "no_inf_bucket", 300_000)["value"][0].as_py())
    # one sample in the window: rate() is empty, so is the quantile
    assert eng.instant(q % "late_bucket", 300_000).num_rows == 0
