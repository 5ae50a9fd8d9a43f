"""``obscore scrape`` as a command, on the ``[[scrape]]`` targets of a config,
against a real prometheus_client exporter on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from obscore import Engine
from obscore.cli import main
from obscore.config import ScrapeTarget, load_config
from obscore.errors import ConfigError
from services import get_json, obscore_serve

prometheus_client = pytest.importorskip("prometheus_client")


@pytest.fixture
def exporter() -> Iterator[tuple[str, object]]:
    """A prometheus_client exporter on 127.0.0.1 with one counter; its URL."""
    registry = prometheus_client.CollectorRegistry()
    jobs = prometheus_client.Counter(
        "jobs", "Jobs done.", ["queue"], registry=registry
    )
    jobs.labels(queue="a").inc(7)
    server, thread = prometheus_client.start_http_server(
        0, addr="127.0.0.1", registry=registry
    )
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics", jobs
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A URL whose port is bound but not listening, so connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
    finally:
        sock.close()


def _samples(data_dir) -> dict[tuple[str, frozenset], list[tuple[int, float]]]:
    """Every sample of the last hour, read back through PromQL range selectors."""
    engine = Engine(data_dir)
    now_ms = int(time.time() * 1000) + 60_000
    out: dict[tuple[str, frozenset], list[tuple[int, float]]] = {}
    for name in engine.index.metric_names:
        table = engine.query_promql(f"{name}[1h]", time_ms=now_ms)
        labels = [c for c in table.column_names if c not in ("__name__", "ts", "value")]
        for r in table.to_pylist():
            key = (name, frozenset((k, r[k]) for k in labels if r[k]))
            out.setdefault(key, []).append((r["ts"], r["value"]))
    engine.close()
    return out


@pytest.mark.integration
def test_scrape_without_urls_scrapes_the_config_targets(
    tmp_path, capsys, exporter, refusing_url
):
    url, _ = exporter
    instance = url.split("/")[2]
    config = tmp_path / "obscore.toml"
    config.write_text(
        f"""
[[scrape]]
job = "rare"
targets = ["{url}"]
interval = "10s"

[[scrape]]
job = "app"
targets = ["{url}"]
interval = "1s"
timeout = "900ms"
labels = {{ env = "test" }}

[[scrape]]
job = "down"
targets = ["{refusing_url}"]
interval = "1s"
"""
    )
    data = tmp_path / "data"

    args = ["scrape", "--config", str(config), "--data", str(data), "-q"]
    rc = main([*args, "--duration", "4s"])

    out = capsys.readouterr().out
    assert rc == 1  # one target never answered
    refused = refusing_url.split("/")[2]
    rows = {line.split(": ")[0]: line for line in out.splitlines()}
    assert set(rows) == {f"app {instance}", f"rare {instance}", f"down {refused}"}
    samples = _samples(data)
    app = {"job": "app", "instance": instance, "env": "test"}
    up_app = samples[("up", frozenset(app.items()))]
    up_rare = samples[("up", frozenset({"job": "rare", "instance": instance}.items()))]
    down = {"job": "down", "instance": refused}
    # each target on its own interval: 1 s scrapes more often than 10 s (the
    # first target starts at once, the others at 1/3 and 2/3 of their interval);
    # a scrape of app slower than its 900 ms timeout would write up 0
    ok_app = [ts for ts, v in up_app if v == 1.0]
    assert len(ok_app) >= 2 and [v for _, v in up_rare] == [1.0]
    assert {v for _, v in samples[("up", frozenset(down.items()))]} == {0.0}
    jobs = samples[("jobs_total", frozenset({**app, "queue": "a"}.items()))]
    assert jobs == [(ts, 7.0) for ts in ok_app]


def test_scrape_with_neither_urls_nor_targets_says_so(tmp_path, capsys):
    args = ["scrape", "--data", str(tmp_path / "d"), "--duration", "1s", "-q"]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "obscore scrape: no URL given and the config has no [[scrape]] targets\n"
    )


def test_scrape_targets_are_read_and_checked():
    config = load_config(
        overrides={
            "scrape": [
                {"job": "node", "targets": ["http://a:9100/m", "http://b:9100/x"]},
                {"job": "fast", "targets": ["https://c/m"], "interval": "2s"},
            ]
        }
    )
    assert config.scrape_targets == (
        ScrapeTarget("http://a:9100/m", "node", 15_000, 10_000, {}),
        ScrapeTarget("http://b:9100/x", "node", 15_000, 10_000, {}),
        ScrapeTarget("https://c/m", "fast", 2_000, 2_000, {}),
    )
    bad = [
        (
            {"job": "x", "targets": ["ftp://a"]},
            r"scrape\[0\]\.targets: 'ftp://a' is not",
        ),
        (
            {"job": "x", "targets": ["http://a"], "interval": "1s", "timeout": "2s"},
            r"scrape\[0\]\.timeout: '2s' must be positive and at most the "
            r"interval '1s'",
        ),
        (
            {"job": "x", "targets": ["http://a"], "labels": {"instance": "i"}},
            r"scrape\[0\]\.labels: 'instance' is set by the scraper",
        ),
        (
            {"job": "x", "targets": ["http://a"], "every": "1s"},
            r"unknown keys \['every'\]",
        ),
        ({"targets": ["http://a"]}, r"scrape\[0\]\.job: expected a non-empty string"),
    ]
    for table, message in bad:
        with pytest.raises(ConfigError, match=message):
            load_config(overrides={"scrape": [table]})


@pytest.mark.integration
def test_serve_scrapes_the_config_targets(tmp_path, exporter):
    url, jobs = exporter
    instance = url.split("/")[2]
    config = tmp_path / "obscore.toml"
    config.write_text(
        f'[[scrape]]\njob = "app"\ntargets = ["{url}"]\ninterval = "1s"\n'
    )
    jobs.labels(queue="a").inc(5)  # 12 in all
    with obscore_serve(tmp_path, "--config", str(config), "--declare") as base:
        answer = []
        deadline = time.monotonic() + 30  # a cap against a hang, not a timing check
        while not answer and time.monotonic() < deadline:
            time.sleep(0.5)
            answer = get_json(base, "/api/v1/query", query='jobs_total{job="app"}')
            answer = answer["data"]["result"]
        up = get_json(base, "/api/v1/query", query="up")["data"]["result"]
    assert [(r["metric"]["instance"], r["value"][1]) for r in answer] == [
        (instance, "12")
    ]
    assert [(r["metric"]["job"], r["value"][1]) for r in up] == [("app", "1")]
