"""Tests for obscore.ingest.limits: series limits per metric and in total."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from obscore.errors import CardinalityLimitError, ObscoreWarning
from obscore.ingest.limits import (
    PER_METRIC,
    TOTAL,
    CardinalityGuard,
    CardinalityWarning,
)
from obscore.model import SeriesIndex, sample_table, series_id

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE_BYTES


def _record(
    guard: CardinalityGuard, index: SeriesIndex, name: str, labels: dict
) -> bool:
    """What the engine's record() does: ask the guard before creating a series."""
    sid = series_id(name, labels)
    if sid not in index:
        if not guard.admit(name, labels):
            return False
        index.add(name, labels)
    return True


def test_admit_refuses_past_the_per_metric_limit_and_warns_once():
    guard = CardinalityGuard(per_metric=2, total=100)
    index = SeriesIndex()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = [
            _record(guard, index, "http_requests_total", {"pod": f"web-{i}"})
            for i in range(5)
        ]
        again = _record(guard, index, "http_requests_total", {"pod": "web-0"})

    assert kept == [True, True, False, False, False]
    assert again  # a series already held is never refused
    assert len(caught) == 1
    assert caught[0].category is CardinalityWarning
    assert str(caught[0].message) == (
        "metric 'http_requests_total': label set {'pod': 'web-2'} would exceed "
        "the limit of 2 series; sample dropped"
    )
    assert issubclass(CardinalityWarning, ObscoreWarning)
    assert guard.dropped == {("http_requests_total", PER_METRIC): 3}
    assert guard.series == {"http_requests_total": 2} and len(index) == 2


def test_total_limit_and_overrides():
    guard = CardinalityGuard(per_metric=10, total=4, overrides={"small": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = [guard.admit("small", {"i": str(i)}) for i in range(3)]
        big = [guard.admit("big", {"i": str(i)}) for i in range(5)]

    assert small == [True, False, False]
    assert big == [True, True, True, False, False]
    assert guard.n_series == 4
    assert guard.dropped == {("small", PER_METRIC): 2, ("big", TOTAL): 2}
    assert [str(w.message) for w in caught] == [
        (
            "metric 'small': label set {'i': '1'} would exceed the limit of 1 series; "
            "sample dropped"
        ),
        (
            "metric 'big': label set {'i': '3'} would exceed the total limit "
            "of 4 series; "
            "sample dropped"
        ),
    ]


def test_release_frees_slots_and_count_existing_seeds_the_counts():
    index = SeriesIndex()
    for i in range(3):
        index.add("a", {"i": str(i)})
    guard = CardinalityGuard(per_metric=3, total=10)
    guard.count_existing(index)

    with pytest.warns(CardinalityWarning):
        assert not guard.admit("a", {"i": "3"})
    guard.release("a", {"i": "0"})
    assert guard.admit("a", {"i": "3"})
    assert (guard.series, guard.n_series) == ({"a": 3}, 3)


def test_a_histogram_is_admitted_or_refused_whole():
    bounds = ["10", "50", "100", "+Inf"]
    guard = CardinalityGuard(per_metric=2, total=100)
    index = SeriesIndex()

    with pytest.warns(CardinalityWarning, match="latency_bucket"):
        kept = {
            pod: [
                _record(guard, index, "latency_bucket", {"pod": pod, "le": le})
                for le in bounds
            ]
            for pod in ("a", "b", "c")
        }

    assert kept == {"a": [True] * 4, "b": [True] * 4, "c": [False] * 4}
    assert len(index) == 8 and guard.series == {"latency_bucket": 2}
    assert guard.dropped == {("latency_bucket", PER_METRIC): 4}
    # Releasing the buckets of one group frees one slot, once.
    for le in bounds:
        guard.release("latency_bucket", {"pod": "a", "le": le})
    assert guard.series == {"latency_bucket": 1}
    reopened = CardinalityGuard(per_metric=2, total=100)
    reopened.count_existing(index)
    assert (reopened.series, reopened.n_series) == ({"latency_bucket": 2}, 2)


def test_raise_mode_raises_cardinality_limit_error():
    guard = CardinalityGuard(per_metric=1, total=10, on_limit="raise")
    guard.admit("m", {"k": "1"})
    with pytest.raises(
        CardinalityLimitError,
        match=(
            r"^metric 'm': label set \{'k': '2'\} would exceed the limit of 1 series$"
        ),
    ):
        guard.admit("m", {"k": "2"})
    assert guard.dropped == {}


def test_bad_settings_are_refused():
    with pytest.raises(
        ValueError, match="per_metric must be a non-negative int, got -1"
    ):
        CardinalityGuard(per_metric=-1, total=10)
    with pytest.raises(
        ValueError, match="on_limit must be 'drop' or 'raise', got 'log'"
    ):
        CardinalityGuard(per_metric=1, total=10, on_limit="log")  # type: ignore


def test_admit_batch_masks_the_rows_of_refused_series_in_first_seen_order():
    known = SeriesIndex()
    old = known.add("req_total", {"pod": "old"})
    guard = CardinalityGuard(per_metric=2, total=100)
    guard.count_existing(known)
    batch_index = SeriesIndex()
    new = [batch_index.add("req_total", {"pod": f"p{i}"}) for i in range(4)]
    other = batch_index.add("cpu", {"host": "a"})
    stranger = 12345  # in neither index: left to the caller
    # rows: p2 first, then p0 twice, old, cpu, p1, stranger; p3 has no row
    ids = np.array(
        [new[2], new[0], new[0], old, other, new[1], stranger], dtype=np.uint64
    )

    with pytest.warns(CardinalityWarning, match="label set \\{'pod': 'p0'\\}"):
        decision = guard.admit_batch(ids, batch_index, known)

    assert decision.admitted == [new[2], other]
    assert decision.keep.tolist() == [True, False, False, True, True, False, True]
    assert decision.refused == {new[0]: (PER_METRIC, 2), new[1]: (PER_METRIC, 1)}
    assert guard.dropped == {("req_total", PER_METRIC): 3}
    assert guard.series == {"req_total": 2, "cpu": 1}


def test_admit_batch_of_known_series_keeps_every_row():
    known = SeriesIndex()
    sid = known.add("req_total", {"pod": "a"})
    guard = CardinalityGuard(per_metric=1, total=1)
    guard.count_existing(known)
    table = sample_table(np.array([sid, sid]), np.array([0, 1]), np.array([1.0, 2.0]))

    decision = guard.admit_batch(table["series_id"].to_numpy(), known, known)

    assert decision == ([], None, {})
    assert guard.dropped == {}


def test_a_million_fresh_label_values_stay_under_the_limit_and_200_mb():
    per_metric, total, n = 1_000, 10_000, 1_000_000
    guard = CardinalityGuard(per_metric=per_metric, total=total)
    index = SeriesIndex()
    good_pods = [f"web-{i}" for i in range(10)]
    rss_before = _rss_bytes()
    peak_growth = 0
    good_kept = 0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(n):
            _record(guard, index, "http_requests_total", {"request_id": f"r{i}"})
            if i % 10 == 0:
                good_kept += _record(
                    guard, index, "cpu_usage", {"pod": good_pods[i % 100 // 10]}
                )
            if i % 100_000 == 0:
                peak_growth = max(peak_growth, _rss_bytes() - rss_before)
    peak_growth = max(peak_growth, _rss_bytes() - rss_before)

    assert [w.category for w in caught] == [CardinalityWarning]
    assert good_kept == n // 10  # every sample of the well-behaved metric kept
    assert sorted(index.labels(s)["pod"] for s in index.ids("cpu_usage")) == sorted(
        good_pods
    )
    assert len(index.ids("http_requests_total")) == per_metric
    assert guard.series == {"http_requests_total": per_metric, "cpu_usage": 10}
    assert guard.dropped == {("http_requests_total", PER_METRIC): n - per_metric}
    assert peak_growth < 200 * 2**20, f"RSS grew by {peak_growth / 2**20:.1f} MB"


# --- through the engine ------------------------------------------------------------


def _engine_with_limit(per_metric: int, total: int = 1_000_000):
    from obscore import Engine
    from obscore.config import load_config

    config = load_config(
        overrides={
            "metrics": [
                {"name": "http_requests_total", "kind": "counter", "labels": ["id"]},
                {
                    "name": "request_seconds",
                    "kind": "histogram",
                    "labels": ["id"],
                    "buckets": [0.1, 1.0],
                },
            ],
            "limits": {"series_per_metric": per_metric, "series_total": total},
        }
    )
    return Engine(config=config)


def test_a_refused_label_set_leaves_no_child_and_its_samples_are_counted():
    engine = _engine_with_limit(per_metric=2)
    counter = engine.counter("http_requests_total")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(5):
            counter.labels(id=str(i)).inc(ts_ms=1_000 + i)
        counter.labels(id="0").inc(ts_ms=2_000)  # a held series is never refused
        engine.flush()

    assert [w.category for w in caught] == [CardinalityWarning]
    assert str(caught[0].message) == (
        "metric 'http_requests_total': label set {'id': '2'} would exceed "
        "the limit of 2 series; sample dropped"
    )
    assert sorted(k["id"] for k in counter._children) == ["0", "1"]
    assert len(engine.index) == 2
    assert engine.guard.dropped == {("http_requests_total", PER_METRIC): 3}
    values = engine.query(
        "http_requests_total", start_ms=2_000, end_ms=2_000, step_ms=1_000
    )
    assert values["id"].to_pylist() == ["0", "1"]
    assert values["value"].to_pylist() == [2.0, 1.0]


def test_a_refused_histogram_child_holds_nothing_and_counts_each_sample():
    engine = _engine_with_limit(per_metric=1)
    hist = engine.histogram("request_seconds")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist.labels(id="a").observe(0.5)
        refused = hist.labels(id="b")  # its buckets are refused: nothing claimed
        refused.observe(0.5)  # no sampler: written, refused and counted at once
        refused.observe(2.0)
        engine.flush()

    # one warning per refused sample name
    assert [str(w.message).split(":")[0] for w in caught] == [
        "metric 'request_seconds_bucket'",
        "metric 'request_seconds_sum'",
        "metric 'request_seconds_count'",
    ]
    assert refused.sampled is None and list(hist._children) == [{"id": "a"}]
    assert engine.guard.series == {
        "request_seconds_bucket": 1,
        "request_seconds_sum": 1,
        "request_seconds_count": 1,
    }
    # two observations of three buckets, a sum and a count each
    assert engine.guard.dropped == {
        ("request_seconds_bucket", PER_METRIC): 6,
        ("request_seconds_sum", PER_METRIC): 2,
        ("request_seconds_count", PER_METRIC): 2,
    }
    assert {engine.index.labels(s)["id"] for s in engine.index} == {"a"}


@pytest.mark.slow
def test_engine_keeps_a_million_fresh_label_values_at_the_limit_under_200_mb():
    # At the default limit of 10,000 series per metric.  Each admitted series
    # has a ring of store.hot_capacity (8640) ts and values, 138 KB, but the
    # ring pages a series never wrote stay unmapped (ringbuf's growth copies
    # only the filled part of each row): 19 MB of growth measured, where
    # copying whole rows made it 1.15 GB.
    n, t0 = 1_000_000, 1_700_000_000_000
    engine = _engine_with_limit(10_000)
    per_metric = engine.guard.per_metric
    from obscore import Engine

    assert per_metric == Engine().guard.per_metric  # the default limit
    counter = engine.counter("http_requests_total")
    cpu = engine.gauge("cpu_usage").labels(host="a", service="web")
    rss_before = _rss_bytes()
    peak_growth = 0

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(n):
            counter.labels(id=f"r{i}").inc(ts_ms=t0 + i)
            if i % 1_000 == 0:
                cpu.set(i / 1_000, ts_ms=t0 + i * 10)
            if i % 50_000 == 0:
                peak_growth = max(peak_growth, _rss_bytes() - rss_before)
        engine.flush()
    peak_growth = max(peak_growth, _rss_bytes() - rss_before)

    end_ms = t0 + (n // 1_000 - 1) * 10_000
    good = engine.query("cpu_usage", start_ms=t0, end_ms=end_ms, step_ms=10_000)
    assert good["value"].to_pylist() == [float(k) for k in range(n // 1_000)]
    assert [w.category for w in caught] == [CardinalityWarning]
    assert "http_requests_total" in str(caught[0].message)
    assert engine.stats()["series"] == per_metric + 1
    assert len(counter._children) == per_metric
    assert engine.guard.dropped == {("http_requests_total", PER_METRIC): n - per_metric}
    assert (
        'obscore_cardinality_dropped_total{metric="http_requests_total",'
        f'reason="{PER_METRIC}"}} {n - per_metric}'
    ) in engine.self_metrics()
    print(f"RSS grew by at most {peak_growth / 1e6:.1f} MB")
    assert peak_growth < 200e6, f"RSS grew by {peak_growth / 1e6:.1f} MB"


def test_series_limit_drops_are_in_the_ingest_result_and_engine_dropped_once():
    # IngestResult.dropped and Engine.dropped left them out (only stats() had
    # them), and obscore ingest added them itself from guard.n_dropped.
    engine = _engine_with_limit(per_metric=2, total=2)
    index = SeriesIndex()
    ids = [index.add("http_requests_total", {"id": str(i)}) for i in range(4)]
    ids.append(index.add("request_seconds_count", {"id": "a"}))  # past the total
    rows = np.array([ids[0], ids[3], ids[1], ids[2], ids[3], ids[4]], np.uint64)
    batch = sample_table(rows, np.arange(6) + 1_000, np.ones(6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CardinalityWarning)
        res = engine.ingest(batch, index)
    assert res.stored == 3
    assert res.dropped == {PER_METRIC: 2, TOTAL: 1}
    assert res.first_bad == {
        PER_METRIC: 'row 2: http_requests_total{id="1"} at ts 1002 would exceed '
        "the limit of 2 series",
        TOTAL: 'row 5: request_seconds_count{id="a"} at ts 1005 would exceed the '
        "total limit of 2 series",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CardinalityWarning)
        engine.record("http_requests_total", {"id": "9"}, 1.0, ts_ms=2_000)
        text = 'http_requests_total{id="8"} 1 3000\nhttp_requests_total{id="0"} 2 3000\n'
        res = engine.ingest_exposition(text)
    assert res.stored == 1 and res.dropped == {PER_METRIC: 1}
    assert engine.dropped == {PER_METRIC: 4, TOTAL: 1}
    assert engine.stats()["samples_dropped"] == {PER_METRIC: 4, TOTAL: 1}
    assert engine.guard.n_dropped == 5


def test_obscore_ingest_counts_series_limit_drops_once(tmp_path, capsys):
    from obscore.cli import main

    path = tmp_path / "hosts.csv"
    path.write_text(
        "ts,metric,host,value\n"
        + "".join(f"1700000000000,cpu_usage,h{i},1\n" for i in range(5))
    )
    config = tmp_path / "obscore.toml"
    config.write_text("[limits]\nseries_per_metric = 3\n")
    args = ["ingest", str(path), "--data", str(tmp_path / "d"), "--config", str(config), "-q"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CardinalityWarning)
        assert main(args) == 0
    # once "2 series_limit_per_metric, 2 series_limit" when the engine counted them
    assert f"{path}: 3 samples stored, 2 dropped (2 {PER_METRIC})" in capsys.readouterr().out
