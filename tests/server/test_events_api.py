"""Change events and the service catalogue through the HTTP API."""

from __future__ import annotations

import warnings

from obscore.engine import Engine
from obscore.server import create_app

from .conftest import END_MS, TOKEN, moving_clock

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_posting_an_event_needs_the_token_and_is_listed(client):
    body = {
        "service": "auth",
        "kind": "deploy",
        "description": "v7",
        "region": "eu-west",
        "ts_ms": END_MS - 60_000,
    }
    assert client.post("/api/v1/obscore/events", json=body).status_code == 401
    assert client.get("/api/v1/obscore/events").json() == []
    res = client.post("/api/v1/obscore/events", json=body, headers=AUTH)
    assert res.status_code == 200
    assert res.json()["text"] == "deploy of auth in eu-west: v7"
    listed = client.get("/api/v1/obscore/events", params={"service": "auth"}).json()
    assert [e["ts_ms"] for e in listed] == [END_MS - 60_000]
    assert client.get("/api/v1/obscore/events", params={"service": "feed"}).json() == []


def test_a_bad_event_is_400_naming_the_field_and_nothing_is_stored(client):
    res = client.post(
        "/api/v1/obscore/events",
        json={"service": "auth", "kind": "reboot"},
        headers=AUTH,
    )
    assert res.status_code == 400
    assert "change event kind 'reboot' is not one of" in res.text
    res = client.post("/api/v1/obscore/events", json={"kind": "deploy"}, headers=AUTH)
    assert res.status_code == 400 and "'service' must be a non-empty string" in res.text
    assert client.get("/api/v1/obscore/events").json() == []


def test_catalogue_post_adds_a_service_kept_in_the_data_dir(tmp_path):
    with warnings.catch_warnings():  # starlette asks for httpx2; httpx still works
        warnings.filterwarnings(
            "ignore", message="Using `httpx` with `starlette.testclient`"
        )
        from starlette.testclient import TestClient

    engine = Engine(tmp_path)
    app = create_app(engine, token=TOKEN, clock=moving_clock())
    svc = {
        "name": "feed",
        "owner": "feed-team",
        "regions": ["eu"],
        "hosts": ["feed-1"],
        "dependencies": ["db"],
    }
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.post("/api/v1/obscore/catalogue", json=svc).status_code == 401
        bad = c.post(
            "/api/v1/obscore/catalogue", json={"name": "x", "hosts": "h1"}, headers=AUTH
        )
        assert (
            bad.status_code == 400 and "'hosts' must be a list of strings" in bad.text
        )
        assert (
            c.post(
                "/api/v1/obscore/catalogue", json=[svc, {"name": "db"}], headers=AUTH
            ).status_code
            == 200
        )
        listed = {s["name"]: s for s in c.get("/api/v1/obscore/catalogue").json()}
        assert listed["feed"]["owner"] == "feed-team" and listed["db"]["callers"] == [
            "feed"
        ]
    engine.close()
    again = Engine(tmp_path)
    assert again.catalogue.get("feed").hosts == ("feed-1",)
    assert again.catalogue.callers("db") == ("feed",)
    again.close()


def test_serve_with_a_live_pipeline_ticks_and_stops_with_the_app():
    import time

    with warnings.catch_warnings():  # starlette asks for httpx2; httpx still works
        warnings.filterwarnings(
            "ignore", message="Using `httpx` with `starlette.testclient`"
        )
        from starlette.testclient import TestClient

    from obscore.config import load_config

    from .conftest import small_engine

    engine = small_engine()
    engine.config = load_config(
        overrides={"pipeline": {"live": True, "interval": "1ms"}}
    )
    app = create_app(engine, token=TOKEN, clock=lambda: END_MS)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        deadline = time.monotonic() + 30
        while engine.runner.cursor_ms is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.runner.cursor_ms == END_MS
        assert c.get("/api/v1/obscore/status").json()["pipeline"] is not None
    assert engine._ticker is None
