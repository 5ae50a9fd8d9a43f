"""Remote-write metadata decides the kind of a metric that ``serve --declare`` adds.

Prometheus 2.42 sends ``MetricMetadata`` in requests of their own, every
``metadata_config.send_interval`` (1m by default), so samples usually come
first: a metric declared from its name alone is declared again when its
metadata says otherwise.  Metrics of the config are never changed.
"""

from __future__ import annotations

import warnings

import pytest

from obscore.engine import Engine
from obscore.server import create_app
from obscore.server.remote_write import compress, encode

HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}


@pytest.fixture
def client():
    app = create_app(Engine(), declare=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with")
        from starlette.testclient import TestClient

        c = TestClient(app, base_url="http://127.0.0.1")
    with c:
        yield c


def _write(client, series, metadata=None) -> None:
    res = client.post(
        "/api/v1/write", content=compress(encode(series, metadata)), headers=HEADERS
    )
    assert res.status_code == 204, res.text


def _kinds(client) -> dict[str, str]:
    data = client.get("/api/v1/metadata").json()["data"]
    return {name: meta[0]["type"] for name, meta in data.items()}


def test_metadata_after_the_samples_declares_the_metric_again(client):
    _write(
        client,
        [
            ({"__name__": "jobs_done"}, [(1_000, 1.0), (2_000, 3.0)]),
            ({"__name__": "queue_total"}, [(1_000, 4.0)]),
            ({"__name__": "cpu_usage", "host": "h"}, [(1_000, 0.5)]),
        ],
    )
    kinds = _kinds(client)
    # from the names alone: no _total suffix -> gauge
    assert kinds["jobs_done"] == "gauge" and kinds["queue_total"] == "counter"
    default = kinds["cpu_usage"]  # declared by the default config

    _write(
        client,
        [],
        {"jobs_done": "counter", "queue_total": "gauge", "cpu_usage": "counter"},
    )
    kinds = _kinds(client)
    assert kinds["jobs_done"] == "counter"
    assert kinds["queue_total"] == "gauge"
    assert kinds["cpu_usage"] == default  # the config wins
    # the samples stored before stay
    query = {"query": "count_over_time(jobs_done[5s])", "time": "2"}
    body = client.get("/api/v1/query", params=query).json()
    assert body["data"]["result"][0]["value"][1] == "2"


def test_metadata_before_the_samples_is_remembered(client):
    _write(client, [], {"jobs_done": "counter", "latency_seconds": "histogram"})
    _write(
        client,
        [
            ({"__name__": "jobs_done"}, [(1_000, 1.0)]),
            ({"__name__": "latency_seconds_bucket", "le": "+Inf"}, [(1_000, 2.0)]),
        ],
    )
    kinds = _kinds(client)
    assert kinds["jobs_done"] == "counter"
    assert kinds["latency_seconds_bucket"] == "counter"
