"""Arrow series_id batches: a repeated ``obscore.series`` header is read once."""

from __future__ import annotations

import io
import json

import pyarrow as pa

from obscore.server.app import ARROW_HEADERS_KEPT

from .conftest import END_MS, STEP_MS, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _body(header: list[dict], ids: list[int], ts: int, values: list[float]) -> bytes:
    table = pa.table(
        {
            "series_id": pa.array(ids, pa.uint64()),
            "ts": pa.array([ts] * len(ids), pa.int64()),
            "value": values,
        }
    ).replace_schema_metadata({"obscore.series": json.dumps(header)})
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def _value(client, selector: str, ts: int) -> str:
    out = client.get("/api/v1/query", params={"query": selector, "time": ts / 1000})
    return out.json()["data"]["result"][0]["value"][1]


def test_repeated_header_reuses_its_mapping_and_a_new_header_is_read(client):
    state = client.app.state.obscore
    header = [
        {"id": 1, "name": "cpu_usage", "labels": {"service": "upload", "region": "a"}},
        {"id": 2, "name": "cpu_usage", "labels": {"service": "upload", "region": "b"}},
    ]
    for k in range(3):
        ts = END_MS + (k + 1) * STEP_MS
        res = client.post(
            "/api/v1/import/arrow", content=_body(header, [2, 1], ts, [float(k), 10.0 + k]), headers=AUTH
        )
        assert res.status_code == 200 and res.json()["stored"] == 2
        assert _value(client, 'cpu_usage{region="a"}', ts) == str(10 + k)
        assert _value(client, 'cpu_usage{region="b"}', ts) == str(k)
    assert len(state.arrow_headers) == 1

    # the same ids under another header mean other series
    other = [{"id": 1, "name": "cpu_usage", "labels": {"service": "upload", "region": "c"}}]
    ts = END_MS + 5 * STEP_MS
    client.post("/api/v1/import/arrow", content=_body(other, [1], ts, [42.0]), headers=AUTH)
    assert _value(client, 'cpu_usage{region="c"}', ts) == "42"
    assert len(state.arrow_headers) == 2

    # an id the cached header does not describe is still refused
    res = client.post(
        "/api/v1/import/arrow", content=_body(header, [3], ts, [1.0]), headers=AUTH
    )
    assert res.status_code == 400
    assert "header does not describe" in res.json()["error"]


def test_only_the_last_few_headers_are_kept(client):
    state = client.app.state.obscore
    for n in range(ARROW_HEADERS_KEPT + 3):
        header = [{"id": 1, "name": "cpu_usage", "labels": {"service": "upload", "region": f"r{n}"}}]
        res = client.post(
            "/api/v1/import/arrow",
            content=_body(header, [1], END_MS + STEP_MS, [float(n)]),
            headers=AUTH,
        )
        assert res.status_code == 200
    assert len(state.arrow_headers) == ARROW_HEADERS_KEPT
