"""``prometheus-api-client`` (PyPI) reads obscore as it would read a Prometheus.

The served engine is ``small_engine`` of conftest.py, whose values follow from
its loop: ``cpu_usage`` of service s (auth 0, feed 1) and region r (us-east 0,
eu-west 1) at step i is ``10 s + r + 0.5 i``; ``error_rate`` counts up by
``1 + s`` per one-minute step.  Every expected number below is worked out
from those formulas, not read back from obscore.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from .conftest import END_MS, N_STEPS, STEP_MS, T0_MS

pytestmark = pytest.mark.integration

prom_api = pytest.importorskip(
    "prometheus_api_client", reason="prometheus-api-client is not installed"
)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _cpu(service: int, region: int, step: int) -> float:
    return 10.0 * service + region + 0.5 * step


@pytest.fixture
def prom(live_server):
    client = prom_api.PrometheusConnect(url=live_server, disable_ssl=True)
    assert client.check_prometheus_connection()
    yield client
    client.close()


def test_client_lists_metrics_labels_and_series(prom):
    assert prom.all_metrics() == ["cpu_usage", "error_rate"]
    assert prom.get_label_names() == [
        "__name__",
        "error_type",
        "host",
        "region",
        "service",
    ]
    assert prom.get_label_values("service") == ["auth", "feed"]
    assert prom.get_label_values("region") == ["eu-west", "us-east"]
    feed = {"match[]": 'cpu_usage{service="feed"}'}
    assert prom.get_label_values("host", params=feed) == [
        "feed-eu-west-1",
        "feed-us-east-1",
    ]
    series = prom.get_series(_dt(T0_MS), _dt(END_MS), params={"match[]": "error_rate"})
    assert sorted((s["service"], s["region"]) for s in series) == [
        ("auth", "eu-west"),
        ("auth", "us-east"),
        ("feed", "eu-west"),
        ("feed", "us-east"),
    ]
    assert all(s["__name__"] == "error_rate" for s in series)
    assert all(s["error_type"] == "5xx" for s in series)
    meta = prom.get_metric_metadata("error_rate")
    assert [(m["metric_name"], m["type"]) for m in meta] == [("error_rate", "counter")]


def test_client_custom_query_gives_the_known_values(prom):
    at = {"time": END_MS / 1000}
    got = prom.custom_query("sum by (service) (cpu_usage)", params=at)
    last = N_STEPS - 1
    assert sorted((r["metric"]["service"], float(r["value"][1])) for r in got) == [
        ("auth", _cpu(0, 0, last) + _cpu(0, 1, last)),
        ("feed", _cpu(1, 0, last) + _cpu(1, 1, last)),
    ]
    assert all(r["value"][0] == END_MS / 1000 for r in got)
    # The counter grows by 1 + s per minute: its rate is (1 + s) / 60 per
    # second, and samples fall on both ends of a 5m window (no extrapolation).
    got = prom.custom_query("rate(error_rate[5m])", params=at)
    rates = {
        (r["metric"]["service"], r["metric"]["region"]): r["value"][1] for r in got
    }
    assert len(rates) == 4
    for (service, _), value in rates.items():
        s = ("auth", "feed").index(service)
        assert math.isclose(float(value), (1 + s) / 60, rel_tol=1e-12)
    # The client's "current value" is an instant query at the server's now,
    # which is just after the last sample: within the 5m lookback.
    now = prom.get_current_metric_value("cpu_usage", label_config={"service": "auth"})
    assert sorted((r["metric"]["region"], r["value"][1]) for r in now) == [
        ("eu-west", "15.5"),
        ("us-east", "14.5"),
    ]


def test_client_range_queries_give_the_known_values(prom):
    got = prom.custom_query_range(
        'cpu_usage{service="auth",region="us-east"}',
        start_time=_dt(T0_MS),
        end_time=_dt(END_MS),
        step="300",
    )
    assert len(got) == 1 and got[0]["metric"]["host"] == "auth-us-east-1"
    assert got[0]["values"] == [
        [(T0_MS + k * 300_000) / 1000, f"{_cpu(0, 0, 5 * k):g}"] for k in range(6)
    ]
    total = prom.custom_query_range(
        "sum(rate(error_rate[5m]))",
        start_time=_dt(T0_MS + 5 * STEP_MS),
        end_time=_dt(END_MS),
        step="60s",
    )
    points = total[0]["values"]
    assert len(points) == N_STEPS - 5
    # 2 series at 1/60 and 2 at 2/60 per second
    assert all(math.isclose(float(v), 6 / 60, rel_tol=1e-12) for _, v in points)

    # get_metric_range_data reads raw samples with range selectors, chunk by chunk.
    rows = prom.get_metric_range_data(
        "cpu_usage",
        label_config={"service": "feed", "region": "eu-west"},
        start_time=_dt(T0_MS),
        end_time=_dt(END_MS),
        chunk_size=None,
    )
    assert len(rows) == 1 and rows[0]["metric"]["host"] == "feed-eu-west-1"
    samples = [p for row in rows for p in row["values"]]
    # The single chunk [T0, END] includes its first sample (Prometheus 2.x
    # range selectors are closed on the left).
    assert samples == [
        [(T0_MS + i * STEP_MS) / 1000, f"{_cpu(1, 1, i):g}"] for i in range(N_STEPS)
    ]
    agg = prom.get_metric_aggregation(
        'cpu_usage{service="auth",region="us-east"}',
        operations=["sum", "max", "min", "average"],
        start_time=_dt(T0_MS),
        end_time=_dt(END_MS),
        step="60",
    )
    values = [_cpu(0, 0, i) for i in range(N_STEPS)]
    assert agg == {
        "sum": sum(values),
        "max": max(values),
        "min": min(values),
        "average": sum(values) / N_STEPS,
    }


def test_metadata_keeps_the_metric_asked_for_and_the_limit(client):
    # Prometheus 2.42's /api/v1/metadata: ``metric`` filters, ``limit`` caps.
    every = client.get("/api/v1/metadata").json()["data"]
    assert {"cpu_usage", "error_rate"} <= set(every)
    one = client.get("/api/v1/metadata", params={"metric": "cpu_usage"}).json()
    assert one == {
        "status": "success",
        "data": {"cpu_usage": every["cpu_usage"]},
    }
    assert client.get("/api/v1/metadata", params={"metric": "nope"}).json()[
        "data"
    ] == {}
    two = client.get("/api/v1/metadata", params={"limit": "2"}).json()["data"]
    assert list(two) == sorted(every)[:2]
    assert client.get("/api/v1/metadata", params={"limit": "0"}).json()["data"] == {}
    bad = client.get("/api/v1/metadata", params={"limit": "x"})
    assert bad.status_code == 400
    assert bad.json()["error"] == "limit must be a number"
