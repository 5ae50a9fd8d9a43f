"""The HTTP API: abuse cases, Prometheus-shaped answers, ingest, alerts."""

from __future__ import annotations

import http.client
import io
import json
import urllib.parse
from datetime import UTC

import pyarrow as pa
import pytest

from obscore.errors import ConfigError
from obscore.server import create_app, is_loopback, serve
from obscore.server.promjson import format_ts, format_value, query_data
from obscore.server.remote_write import compress, decode, encode

from .conftest import END_MS, STEP_MS, T0_MS, TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _stored(client) -> int:
    return client.app.state.obscore.engine.hot.samples_stored


def _rw_body(series) -> bytes:
    return compress(encode(series))


RW_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    **AUTH,
}


# --- tokens ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/push", b'cpu_usage{service="auth"} 1\n'),
        ("POST", "/api/v1/write", b"\x00"),
        ("POST", "/api/v1/import/arrow", b""),
        ("POST", "/api/v2/silences", b"{}"),
        ("POST", "/api/v2/alerts", b"[]"),
        ("DELETE", "/api/v2/silence/abc", b""),
        ("POST", "/api/v1/obscore/pipeline", b""),
        ("POST", "/api/v1/obscore/alerts/abc/ack", b"{}"),
    ],
)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN])
def test_write_without_the_token_is_401_and_stores_nothing(
    client, method, path, body, auth
):
    before = _stored(client)
    headers = {} if auth is None else {"Authorization": auth}
    res = client.request(method, path, content=body, headers=headers)
    assert res.status_code == 401
    assert res.headers["www-authenticate"].startswith("Bearer")
    assert "Bearer" in res.json()["error"]
    assert _stored(client) == before
    assert client.app.state.obscore.desk.router.silences == {}


def test_reads_need_no_token_and_form_queries_count_as_reads(client):
    assert (
        client.get(
            "/api/v1/query", params={"query": "cpu_usage", "time": END_MS / 1000}
        ).status_code
        == 200
    )
    res = client.post(
        "/api/v1/query", data={"query": "cpu_usage", "time": str(END_MS / 1000)}
    )
    assert res.status_code == 200
    assert len(res.json()["data"]["result"]) == 4


def test_push_with_the_token_stores_the_samples(client):
    before = _stored(client)
    text = 'cpu_usage{service="auth",region="ap-south",host="h9"} 42\n'
    res = client.post("/api/v1/push", content=text, headers=AUTH)
    assert res.status_code == 200, res.text
    assert res.json()["stored"] == 1
    assert _stored(client) == before + 1


def test_push_of_an_undeclared_metric_is_400_naming_it(client):
    res = client.post("/api/v1/push", content="mystery_total 1\n", headers=AUTH)
    assert res.status_code == 400
    assert "mystery_total" in res.json()["error"]


# --- body size ----------------------------------------------------------------------


def test_body_over_the_declared_limit_is_413(client):
    res = client.post("/api/v1/push", content=b"x" * (1024 * 1024 + 1), headers=AUTH)
    assert res.status_code == 413
    assert "1048576" in res.json()["error"]


def test_100mb_body_on_a_real_socket_is_413_and_the_server_keeps_serving(live_server):
    host, port = urllib.parse.urlsplit(live_server).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    chunk = b"#" * (1024 * 1024)
    conn.putrequest("POST", "/api/v1/push")
    conn.putheader("Authorization", f"Bearer {TOKEN}")
    conn.putheader("Content-Length", str(100 * len(chunk)))
    conn.endheaders()
    try:
        for _ in range(100):
            conn.send(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close once it has answered
    res = conn.getresponse()
    assert res.status == 413
    assert b"larger than the limit" in res.read()
    conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/-/healthy")
    assert conn.getresponse().status == 200


def test_snappy_bomb_is_refused_before_decompressing(client):
    # a raw snappy block announcing 1 GiB of output
    header = bytearray()
    n = 1 << 30
    while n >= 0x80:
        header.append((n & 0x7F) | 0x80)
        n >>= 7
    header.append(n)
    res = client.post(
        "/api/v1/write", content=bytes(header) + b"\x00" * 16, headers=RW_HEADERS
    )
    assert res.status_code == 400
    assert "more than the limit" in res.json()["error"]


# --- remote write -------------------------------------------------------------------


def test_remote_write_stores_samples_queryable_at_once(client):
    ts = END_MS + 60_000
    body = _rw_body(
        [
            (
                {
                    "__name__": "cpu_usage",
                    "service": "auth",
                    "region": "ap-south",
                    "host": "h1",
                },
                [(ts - 60_000, 1.5), (ts, 2.5)],
            )
        ]
    )
    res = client.post("/api/v1/write", content=body, headers=RW_HEADERS)
    assert res.status_code == 204, res.text
    out = client.get(
        "/api/v1/query",
        params={"query": 'cpu_usage{region="ap-south"}', "time": ts / 1000},
    ).json()
    assert out["data"]["result"] == [
        {
            "metric": {
                "__name__": "cpu_usage",
                "host": "h1",
                "region": "ap-south",
                "service": "auth",
            },
            "value": [format_ts(ts), "2.5"],
        }
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not snappy at all \xff\xff", "snappy"),
        (compress(b"\x0a\x05\x0a\x03"), "runs past the end"),
        (compress(b"\x0a\x02\x12\x00"), "no valid __name__"),
        (compress(b"\x0a\x80"), "varint truncated"),
        (compress(b"\x0f\x00"), "wire type 7"),
        (
            compress(
                encode([({"__name__": "cpu_usage", "bad-name": "x"}, [(1, 1.0)])])
            ),
            "label name 'bad-name'",
        ),
    ],
)
def test_malformed_remote_write_is_400_with_the_reason_and_earlier_data_intact(
    client, body, reason
):
    good = _rw_body(
        [
            (
                {
                    "__name__": "cpu_usage",
                    "service": "auth",
                    "region": "ap-south",
                    "host": "h1",
                },
                [(END_MS, 7.0)],
            )
        ]
    )
    assert (
        client.post("/api/v1/write", content=good, headers=RW_HEADERS).status_code
        == 204
    )
    before = _stored(client)
    res = client.post("/api/v1/write", content=body, headers=RW_HEADERS)
    assert res.status_code == 400
    assert res.json()["errorType"] == "bad_data"
    assert reason in res.json()["error"]
    assert _stored(client) == before
    out = client.get(
        "/api/v1/query",
        params={"query": 'cpu_usage{region="ap-south"}', "time": END_MS / 1000},
    )
    assert out.json()["data"]["result"][0]["value"] == [format_ts(END_MS), "7"]


def test_remote_write_decoder_skips_unknown_fields_and_reads_negative_times():
    buf = encode([({"__name__": "up", "job": "x"}, [(-5, 1.0), (3, float("inf"))])])
    buf = b"\x28\x07" + buf  # unknown varint field 5 first
    req = decode(buf)
    assert req.series == [("up", {"job": "x"})]
    assert req.ts == [-5, 3]
    assert req.values == [1.0, float("inf")]


# --- Arrow IPC ----------------------------------------------------------------------


def _ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def test_arrow_long_layout_is_ingested(client):
    ts = END_MS + STEP_MS
    table = pa.table(
        {
            "name": ["cpu_usage", "cpu_usage"],
            "service": ["upload", "upload"],
            "region": ["x", None],
            "ts": pa.array([ts, ts], pa.int64()),
            "value": [3.0, 4.0],
        }
    )
    res = client.post("/api/v1/import/arrow", content=_ipc(table), headers=AUTH)
    assert res.status_code == 200, res.text
    assert res.json()["stored"] == 2
    out = client.get(
        "/api/v1/query",
        params={"query": 'cpu_usage{service="upload"}', "time": ts / 1000},
    ).json()
    metrics = sorted(
        json.dumps(r["metric"], sort_keys=True) for r in out["data"]["result"]
    )
    assert metrics == [
        json.dumps(
            {"__name__": "cpu_usage", "region": "x", "service": "upload"},
            sort_keys=True,
        ),
        json.dumps({"__name__": "cpu_usage", "service": "upload"}, sort_keys=True),
    ]


def test_arrow_series_id_layout_maps_the_senders_ids(client):
    ts = END_MS + STEP_MS
    header = [
        {"id": 7, "name": "cpu_usage", "labels": {"service": "upload", "region": "y"}}
    ]
    table = pa.table(
        {
            "series_id": pa.array([7], pa.uint64()),
            "ts": pa.array([ts], pa.int64()),
            "value": [9.0],
        }
    )
    table = table.replace_schema_metadata({"obscore.series": json.dumps(header)})
    res = client.post("/api/v1/import/arrow", content=_ipc(table), headers=AUTH)
    assert res.status_code == 200, res.text
    out = client.get(
        "/api/v1/query", params={"query": 'cpu_usage{region="y"}', "time": ts / 1000}
    ).json()
    assert out["data"]["result"][0]["value"][1] == "9"


def test_arrow_with_unknown_ids_or_bad_types_is_400(client):
    table = pa.table(
        {
            "series_id": pa.array([8], pa.uint64()),
            "ts": pa.array([1], pa.int64()),
            "value": [1.0],
        }
    )
    table = table.replace_schema_metadata(
        {"obscore.series": json.dumps([{"id": 7, "name": "cpu_usage"}])}
    )
    res = client.post("/api/v1/import/arrow", content=_ipc(table), headers=AUTH)
    assert res.status_code == 400
    assert "header does not describe" in res.json()["error"]
    res = client.post("/api/v1/import/arrow", content=b"garbage", headers=AUTH)
    assert res.status_code == 400
    assert res.json()["error"].startswith("arrow:")


# --- files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/static/../app.py",
        "/static/../../engine.py",
        "/static/%2e%2e/app.py",
        "/static/%2e%2e%2fapp.py",
        "/static/..%2f..%2fengine.py",
        "/static//etc/passwd",
        "/static/%2fetc%2fpasswd",
        "/static/....//app.py",
        "/static/%252e%252e/app.py",
        "/static/style.css/../../app.py",
        "/../../../../etc/passwd",
        "/static/..\\app.py",
    ],
)
def test_path_traversal_is_404_on_a_real_socket(live_server, path):
    host, port = urllib.parse.urlsplit(live_server).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest(
        "GET", path, skip_accept_encoding=True
    )  # sent as is, not normalised
    conn.endheaders()
    res = conn.getresponse()
    body = res.read()
    assert res.status == 404
    assert b"import" not in body and b"root:" not in body


def test_static_files_are_served_with_a_strict_policy(client):
    res = client.get("/")
    assert res.status_code == 200
    assert "script-src 'self'" in res.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


# --- series limit ---------------------------------------------------------------------


def test_query_over_the_series_limit_is_422_naming_the_limit(client):
    res = client.get(
        "/api/v1/query", params={"query": '{__name__=~".+"}', "time": END_MS / 1000}
    )
    assert res.status_code == 422
    body = res.json()
    assert body["errorType"] == "execution"
    assert "8 series" in body["error"] and "max_series=5" in body["error"]
    res = client.get("/api/v1/series", params={"match[]": '{__name__=~".+"}'})
    assert res.status_code == 422
    assert "max_series=5" in res.json()["error"]
    # an aggregation under the limit passes
    res = client.get(
        "/api/v1/query",
        params={"query": 'sum by (service) ({__name__=~".+"})', "time": END_MS / 1000},
    )
    assert res.status_code == 200


# --- Prometheus-shaped answers ----------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "cpu_usage",
        "sum by (service) (rate(error_rate[5m]))",
        'max(cpu_usage{region="eu-west"})',
        "1 + 2",
        'cpu_usage{service="auth"} > 1000',
    ],
)
def test_instant_query_answers_what_query_promql_returns(client, engine, query):
    at = END_MS - 90_000
    res = client.get("/api/v1/query", params={"query": query, "time": at / 1000})
    assert res.status_code == 200, res.text
    body = res.json()
    expected = query_data(engine.query_promql(query, time_ms=at), is_range=False)
    assert body == {"status": "success", "data": expected}
    table = engine.query_promql(query, time_ms=at)
    if body["data"]["resultType"] == "vector":
        got = {
            json.dumps(r["metric"], sort_keys=True): float(r["value"][1])
            for r in body["data"]["result"]
        }
        assert sorted(got.values()) == sorted(table["value"].to_pylist())
        assert all(r["value"][0] == at / 1000 for r in body["data"]["result"])


def test_range_query_answers_a_matrix_of_strings(client, engine):
    q = "sum by (region) (cpu_usage)"
    params = {"query": q, "start": T0_MS / 1000, "end": END_MS / 1000, "step": "5m"}
    body = client.get("/api/v1/query_range", params=params).json()
    assert body["data"]["resultType"] == "matrix"
    table = engine.query_promql(q, start_ms=T0_MS, end_ms=END_MS, step_ms=300_000)
    for series in body["data"]["result"]:
        rows = [
            r for r in table.to_pylist() if r["region"] == series["metric"]["region"]
        ]
        assert [[r["ts"] / 1000, format_value(r["value"])] for r in rows] == series[
            "values"
        ]
    assert len(body["data"]["result"]) == 2


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"query": "sum("}, 400, "cannot parse"),
        ({"query": "cpu_usage", "time": "yesterday"}, 400, "cannot parse 'yesterday'"),
        ({"query": ""}, 400, "empty query"),
    ],
)
def test_bad_queries_answer_prometheus_errors(client, params, status, fragment):
    res = client.get("/api/v1/query", params=params)
    assert res.status_code == status
    assert res.json()["status"] == "error" and fragment in res.json()["error"]


def test_range_query_with_too_many_points_or_bad_step_is_400(client):
    res = client.get(
        "/api/v1/query_range",
        params={"query": "cpu_usage", "start": 0, "end": 100_000, "step": "1s"},
    )
    assert res.status_code == 400 and "11,000 points" in res.json()["error"]
    res = client.get(
        "/api/v1/query_range",
        params={"query": "cpu_usage", "start": 0, "end": 10, "step": "-1"},
    )
    assert res.status_code == 400 and "positive" in res.json()["error"]


def test_series_labels_and_label_values(client):
    res = client.get(
        "/api/v1/series", params={"match[]": 'cpu_usage{service="auth"}'}
    ).json()
    assert res["status"] == "success"
    assert [s["region"] for s in res["data"]] == ["eu-west", "us-east"]
    assert client.get("/api/v1/labels").json()["data"] == [
        "__name__",
        "error_type",
        "host",
        "region",
        "service",
    ]
    assert client.get("/api/v1/label/__name__/values").json()["data"] == [
        "cpu_usage",
        "error_rate",
    ]
    assert client.get("/api/v1/label/bad-name/values").status_code == 400
    assert client.get("/api/v1/series").status_code == 400


def test_format_value_follows_go():
    # As a live Prometheus 2.42 writes them (more in test_promjson.py): 'e'
    # below 1e-6, and a negative zero keeps its sign.
    assert [
        format_value(v) for v in (1.0, -0.0, 1.5e-7, 123456789.125, float("-inf"))
    ] == ["1", "-0", "1.5e-07", "123456789.125", "-Inf"]


# --- alerts ------------------------------------------------------------------------


def test_silence_changes_an_alerts_state_and_expiring_restores_it(client):
    alert = {
        "labels": {"alertname": "Boom", "service": "auth"},
        "annotations": {"summary": "x"},
    }
    assert client.post("/api/v2/alerts", json=[alert], headers=AUTH).status_code == 200
    listed = client.get("/api/v2/alerts").json()
    assert [a["status"]["state"] for a in listed] == ["active"]
    silence = {
        "matchers": [
            {"name": "alertname", "value": "Boom", "isRegex": False, "isEqual": True}
        ],
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2026-01-02T00:00:00Z",
        "createdBy": "test",
        "comment": "quiet",
    }
    res = client.post("/api/v2/silences", json=silence, headers=AUTH)
    assert res.status_code == 200, res.text
    sid = res.json()["silenceID"]
    listed = client.get("/api/v2/alerts").json()
    assert listed[0]["status"] == {
        "state": "suppressed",
        "silencedBy": [sid],
        "inhibitedBy": [],
    }
    assert client.get("/api/v2/alerts", params={"silenced": "false"}).json() == []
    assert client.get(f"/api/v2/silence/{sid}").json()["status"]["state"] == "active"
    assert client.delete(f"/api/v2/silence/{sid}", headers=AUTH).status_code == 200
    assert client.get("/api/v2/alerts").json()[0]["status"]["state"] == "active"
    assert client.get(f"/api/v2/silence/{sid}").json()["status"]["state"] == "expired"
    assert client.delete("/api/v2/silence/nope", headers=AUTH).status_code == 404


def test_bad_silence_is_400_with_the_reason(client):
    res = client.post("/api/v2/silences", json={"matchers": []}, headers=AUTH)
    assert res.status_code == 400 and "at least one matcher" in res.json()
    bad = {
        "matchers": [{"name": "a", "value": "(", "isRegex": True}],
        "endsAt": "2026-01-02T00:00:00Z",
        "createdBy": "t",
        "comment": "c",
    }
    res = client.post("/api/v2/silences", json=bad, headers=AUTH)
    assert res.status_code == 400 and "regular" in res.json()


def test_acknowledge_marks_the_alert_and_approve_without_actions_is_404(client):
    client.post(
        "/api/v2/alerts", json=[{"labels": {"alertname": "Boom"}}], headers=AUTH
    )
    fp = client.get("/api/v2/alerts").json()[0]["fingerprint"]
    res = client.post(
        f"/api/v1/obscore/alerts/{fp}/ack", json={"by": "ana"}, headers=AUTH
    )
    assert res.status_code == 200
    assert res.json()["annotations"]["acknowledged_by"] == "ana"
    assert (
        client.post(
            "/api/v1/obscore/alerts/ffff/ack", json={"by": "ana"}, headers=AUTH
        ).status_code
        == 404
    )
    res = client.post(
        "/api/v1/obscore/actions/abc/approve", json={"by": "ana"}, headers=AUTH
    )
    assert res.status_code == 404 and "waits for approval" in res.json()


def test_pipeline_endpoint_runs_and_diagnosis_404s_for_unknown_incident(client):
    res = client.post(
        "/api/v1/obscore/pipeline",
        data={"start": T0_MS / 1000, "end": END_MS / 1000, "step": "60s"},
        headers=AUTH,
    )
    assert res.status_code == 200, res.text
    assert set(res.json()) == {"anomalies", "incidents", "new_alerts"}
    assert client.get("/api/v1/obscore/incidents/999").status_code == 404


# --- health, metrics, listening ---------------------------------------------------------


def test_health_ready_and_self_metrics(client):
    assert client.get("/-/healthy").status_code == 200
    assert client.get("/-/ready").status_code == 200
    client.post("/api/v1/push", content=b"x" * (2 * 1024 * 1024), headers=AUTH)
    text = client.get("/metrics").text
    assert "obscore_samples_ingested_total 240" in text
    assert "obscore_series 8" in text
    assert 'obscore_http_requests_refused_total{reason="too_large"} 1' in text
    assert "obscore_wal_written_bytes_total 0" in text


def test_non_loopback_address_without_a_token_is_refused():
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("localhost")
        and not is_loopback("0.0.0.0")
    )
    with pytest.raises(
        ConfigError, match="refusing to listen on '0.0.0.0' without a token"
    ):
        serve(object(), "0.0.0.0", 9)


def test_cli_serve_refuses_a_public_address_without_a_token(capsys):
    from obscore.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--port", "9"]) == 2
    assert "without a token" in capsys.readouterr().err


def test_create_app_refuses_nonsense_limits(engine):
    with pytest.raises(ConfigError, match="must be positive"):
        create_app(engine, max_series=0)


# --- a real client ------------------------------------------------------------------------


def test_prometheus_api_client_reads_obscore(live_server):
    prom_api = pytest.importorskip(
        "prometheus_api_client", reason="prometheus-api-client is not installed"
    )
    from datetime import datetime

    prom = prom_api.PrometheusConnect(url=live_server, disable_ssl=True)
    assert prom.check_prometheus_connection()
    assert prom.all_metrics() == ["cpu_usage", "error_rate"]
    got = prom.custom_query(
        "sum by (service) (cpu_usage)", params={"time": END_MS / 1000}
    )
    assert sorted((r["metric"]["service"], r["value"][1]) for r in got) == [
        ("auth", "30"),
        ("feed", "50"),
    ]
    rows = prom.get_metric_range_data(
        'cpu_usage{service="feed",region="eu-west"}',
        start_time=datetime.fromtimestamp(T0_MS / 1000, UTC),
        end_time=datetime.fromtimestamp(END_MS / 1000, UTC),
    )
    assert len(rows) == 1 and rows[0]["metric"]["host"] == "feed-eu-west-1"
    assert rows[0]["values"][-1] == [END_MS / 1000, "25.5"]
