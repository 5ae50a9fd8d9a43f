"""Fixtures for the server: a small engine, a test client and a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import itertools
import socket
import threading
import time
import warnings

import pytest

from obscore.engine import Engine
from obscore.server import create_app

TOKEN = "s3cret-token"
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
STEP_MS = 60_000
N_STEPS = 30
END_MS = T0_MS + (N_STEPS - 1) * STEP_MS


def small_engine() -> Engine:
    """cpu_usage for 2 services x 2 regions and an error counter, 30 one-minute steps."""
    eng = Engine()
    cpu = eng.gauge("cpu_usage")
    errors = eng.counter("error_rate")
    for i in range(N_STEPS):
        ts = T0_MS + i * STEP_MS
        for s, service in enumerate(("auth", "feed")):
            for r, region in enumerate(("us-east", "eu-west")):
                host = f"{service}-{region}-1"
                cpu.labels(service=service, region=region, host=host).set(
                    10.0 * s + r + 0.5 * i, ts
                )
                errors.labels(service=service, region=region, error_type="5xx").inc(
                    1.0 + s, ts
                )
    eng.flush()
    return eng


def moving_clock():
    """A clock starting at ``END_MS`` that moves 1 ms per reading, as a real one would."""
    ticks = itertools.count(END_MS)
    return lambda: next(ticks)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def engine() -> Engine:
    return small_engine()


@pytest.fixture
def client(engine):
    app = create_app(
        engine,
        token=TOKEN,
        max_body_bytes=1024 * 1024,
        max_series=5,
        clock=moving_clock(),
    )
    with warnings.catch_warnings():
        # starlette 1.x asks for httpx2 in its test client; httpx still works
        warnings.filterwarnings(
            "ignore", message="Using `httpx` with `starlette.testclient`"
        )
        from starlette.testclient import TestClient

        c = TestClient(app, base_url="http://127.0.0.1")
    with c:
        yield c


@pytest.fixture
def live_server(engine):
    """uvicorn serving the small engine in a thread; yields the base URL."""
    import uvicorn

    app = create_app(
        engine,
        token=TOKEN,
        max_body_bytes=1024 * 1024,
        max_series=5,
        clock=moving_clock(),
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
