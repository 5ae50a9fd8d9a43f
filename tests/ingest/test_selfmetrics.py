"""Tests for obscore.ingest.selfmetrics: the engine's counters as text 0.0.4."""

from __future__ import annotations

import math

import pytest

from obscore.ingest.exposition import parse
from obscore.ingest.selfmetrics import render

prometheus_parser = pytest.importorskip("prometheus_client.parser")

STATS = {
    "samples_ingested": 1_234_567,
    "samples_dropped": {"duplicate": 3, "out_of_order": 12, "unknown_series": 0},
    "cardinality_dropped": {
        ("http_requests_total", "series_limit_per_metric"): 999_000,
        ('odd"name\\with\nnewline', "series_limit_total"): 1,
    },
    "series": 10_010,
    "series_limit": 100_000,
    "wal_bytes_written": 2**40 + 1,
    "wal_size_bytes": 4096,
    "sampling_rate": {"request_latency": 0.1, "queue_wait": 1.0},
    "scrape_targets": [
        {
            "job": "node",
            "instance": "127.0.0.1:9100",
            "up": 1,
            "duration_seconds": 0.0123,
            "samples": 507,
            "scrapes": 31,
            "failures": 0,
        },
        {
            "job": "gone",
            "instance": "127.0.0.1:9",
            "up": 0,
            "scrapes": 31,
            "failures": 31,
        },
    ],
}


def _read_back(text: str) -> dict[tuple[str, frozenset], float]:
    families = list(prometheus_parser.text_string_to_metric_families(text))
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in families
        for s in f.samples
    }


def test_prometheus_client_reads_back_every_value():
    text = render(STATS)
    got = _read_back(text)

    expected = {
        ("obscore_samples_ingested_total", frozenset()): 1_234_567,
        ("obscore_series", frozenset()): 10_010,
        ("obscore_series_limit", frozenset()): 100_000,
        ("obscore_wal_written_bytes_total", frozenset()): 2**40 + 1,
        ("obscore_wal_size_bytes", frozenset()): 4096,
    }
    for reason, n in STATS["samples_dropped"].items():
        expected[("obscore_samples_dropped_total", frozenset({("reason", reason)}))] = n
    for (metric, reason), n in STATS["cardinality_dropped"].items():
        labels = frozenset({("metric", metric), ("reason", reason)})
        expected[("obscore_cardinality_dropped_total", labels)] = n
    for metric, rate in STATS["sampling_rate"].items():
        expected[("obscore_sampling_rate", frozenset({("metric", metric)}))] = rate
    node = frozenset({("job", "node"), ("instance", "127.0.0.1:9100")})
    gone = frozenset({("job", "gone"), ("instance", "127.0.0.1:9")})
    expected.update(
        {
            ("obscore_scrape_up", node): 1,
            ("obscore_scrape_up", gone): 0,
            ("obscore_scrape_duration_seconds", node): 0.0123,
            ("obscore_scrape_samples", node): 507,
            ("obscore_scrapes_total", node): 31,
            ("obscore_scrapes_total", gone): 31,
            ("obscore_scrape_failures_total", node): 0,
            ("obscore_scrape_failures_total", gone): 31,
        }
    )
    assert got == expected

    types = {
        f.name: f.type for f in prometheus_parser.text_string_to_metric_families(text)
    }
    assert types["obscore_samples_dropped"] == "counter"
    assert types["obscore_series"] == "gauge"
    assert types["obscore_scrapes"] == "counter"


def test_obscores_own_parser_accepts_it_strictly():
    text = render(STATS)
    result = parse(text, format="prometheus", lenient=False, default_ts_ms=0)
    assert result.n_samples == len(_read_back(text))
    assert {f.type for f in result.families} == {"counter", "gauge"}


def test_special_values_and_empty_stats():
    text = render({"wal_size_bytes": math.inf, "sampling_rate": {"m": math.nan}})
    assert "obscore_wal_size_bytes +Inf\n" in text
    assert 'obscore_sampling_rate{metric="m"} NaN\n' in text
    assert render({}) == ""


@pytest.mark.parametrize(
    ("stats", "error", "message"),
    [
        (
            {"samples_ingestd": 1},
            ValueError,
            r"unknown self-metric keys \['samples_ingestd'\]",
        ),
        (
            {"samples_ingested": -1},
            ValueError,
            "counter 'obscore_samples_ingested_total' must be non-negative",
        ),
        (
            {"samples_ingested": "12"},
            TypeError,
            "self-metric 'samples_ingested' must be a number, got '12'",
        ),
        (
            {"samples_dropped": 3},
            TypeError,
            r"labelled by \('reason',\); give a mapping",
        ),
        (
            {"cardinality_dropped": {"m": 1}},
            ValueError,
            r"\('m',\) does not give one value per label",
        ),
        ({"scrape_targets": [{"job": "a", "up": 1}]}, ValueError, "has no 'instance'"),
    ],
)
def test_bad_stats_are_refused(stats, error, message):
    with pytest.raises(error, match=message):
        render(stats)
