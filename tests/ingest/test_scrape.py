"""Tests for obscore.ingest.scrape against HTTP servers started on 127.0.0.1.

No test asserts on wall-clock time: where a slow target must not hold a fast
one back, the servers check the order of events instead (the fast request is
served while the slow one is still open, and the slow one is released only
after the scraper has moved on).
"""

from __future__ import annotations

import gzip
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from obscore.errors import ConfigError
from obscore.ingest.exposition import ACCEPT_HEADER
from obscore.ingest.scrape import Scraper, ScrapeResult, Target, scrape_once
from obscore.model import SeriesIndex

NOW_MS = 1_700_000_000_000
# Stops a test that would otherwise hang, if the code under test misbehaves.
WAIT_CAP_S = 10.0

EXPOSITION = b"""\
# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{method="get",code="200"} 1027
http_requests_total{method="post",code="200",job="inner"} 3
# TYPE temperature gauge
temperature 21.5
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 2
latency_seconds_bucket{le="1"} 5
latency_seconds_bucket{le="+Inf"} 6
latency_seconds_sum 3.2
latency_seconds_count 6
"""
N_SAMPLES = 8

OPENMETRICS = b"""\
# TYPE jobs counter
jobs_total{queue="a"} 7.0
jobs_created{queue="a"} 1700000000.0
# EOF
"""


# --- test servers ------------------------------------------------------------------


class _State:
    def __init__(self) -> None:
        self.routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.release = threading.Event()
        self.slow_sock: socket.socket | None = None
        self.slow_arrived = threading.Event()
        self.fast_saw_slow_open: list[bool] = []


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        state.requests.append((self.path, dict(self.headers)))
        route = state.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route(self)


def _send(
    handler: BaseHTTPRequestHandler,
    body: bytes,
    content_type: str = "text/plain; version=0.0.4; charset=utf-8",
    *,
    gzipped: bool = False,
) -> None:
    if gzipped:
        body = gzip.compress(body)
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    if gzipped:
        handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    try:
        handler.wfile.write(body)
    except OSError:  # the scraper gave up on this request and closed it
        pass


def _client_still_open(sock: socket.socket) -> bool:
    """True while the peer of ``sock`` has not closed its end."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.fixture
def server() -> Iterator[tuple[str, _State]]:
    """An HTTP server on 127.0.0.1 whose routes a test sets; yields its base URL."""
    state = _State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(WAIT_CAP_S)


@pytest.fixture
def refusing_url() -> Iterator[str]:
    """A URL whose port is bound but not listening, so connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
    finally:
        sock.close()


def _by_series(
    table: pa.Table, index: SeriesIndex
) -> dict[tuple[str, frozenset], list[float]]:
    out: dict[tuple[str, frozenset], list[float]] = {}
    for sid, value in zip(table["series_id"].to_pylist(), table["value"].to_pylist()):
        key = (index.name(sid), frozenset(index.labels(sid).items()))
        out.setdefault(key, []).append(value)
    return out


def _key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


# --- scrape_once -------------------------------------------------------------------


def test_scrape_once_reads_plain_and_gzip_bodies_with_target_labels(server):
    base, state = server
    state.routes["/plain"] = lambda h: _send(h, EXPOSITION)
    state.routes["/gzip"] = lambda h: _send(h, EXPOSITION, gzipped=True)
    index = SeriesIndex()
    targets = [
        Target(f"{base}/plain", job="plain"),
        Target(f"{base}/gzip", job="zipped"),
    ]

    table, results = scrape_once(targets, index, NOW_MS, timeout_s=5.0)

    instance = base.removeprefix("http://")
    assert [r.up for r in results] == [True, True]
    assert [r.n_samples for r in results] == [N_SAMPLES, N_SAMPLES]
    assert [r.format for r in results] == ["prometheus", "prometheus"]
    assert table.num_rows == 2 * (N_SAMPLES + 3)
    assert set(table["ts"].to_pylist()) == {NOW_MS}
    got = _by_series(table, index)
    for job in ("plain", "zipped"):
        assert got[_key("up", job=job, instance=instance)] == [1.0]
        assert got[_key("scrape_samples_scraped", job=job, instance=instance)] == [
            N_SAMPLES
        ]
        result = results[0 if job == "plain" else 1]
        assert got[_key("scrape_duration_seconds", job=job, instance=instance)] == [
            result.duration_s
        ]
        assert got[_key("temperature", job=job, instance=instance)] == [21.5]
        assert got[
            _key(
                "http_requests_total",
                method="get",
                code="200",
                job=job,
                instance=instance,
            )
        ] == [1027.0]
        # A scraped job label is kept as exported_job, as Prometheus does.
        assert got[
            _key(
                "http_requests_total",
                method="post",
                code="200",
                exported_job="inner",
                job=job,
                instance=instance,
            )
        ] == [3.0]
        assert got[
            _key("latency_seconds_bucket", le="+Inf", job=job, instance=instance)
        ] == [6.0]
    for sid in index:
        assert {"job", "instance"} <= set(index.labels(sid))

    headers = dict(state.requests)
    for path in ("/plain", "/gzip"):
        assert headers[path]["Accept"] == ACCEPT_HEADER
        assert "gzip" in headers[path]["Accept-Encoding"]


def test_scrape_once_negotiates_openmetrics_by_content_type(server):
    base, state = server
    state.routes["/om"] = lambda h: _send(
        h, OPENMETRICS, "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    index = SeriesIndex()

    table, (result,) = scrape_once([f"{base}/om"], index, NOW_MS, timeout_s=5.0)

    assert result.up and result.format == "openmetrics"
    assert result.n_samples == 2
    names = {index.name(sid) for sid in table["series_id"].to_pylist()}
    assert {"jobs_total", "jobs_created", "up"} <= names
    assert {s.name for s in result.specs} >= {
        "jobs_total",
        "up",
        "scrape_duration_seconds",
    }


def test_refused_connection_gives_up_zero_and_only_synthetic_series(refusing_url):
    index = SeriesIndex()

    table, (result,) = scrape_once(
        [Target(refusing_url, job="gone")], index, NOW_MS, timeout_s=2.0
    )

    assert not result.up
    assert result.error == "connection refused"
    got = _by_series(table, index)
    instance = refusing_url.split("/")[2]
    assert got == {
        _key("up", job="gone", instance=instance): [0.0],
        _key("scrape_samples_scraped", job="gone", instance=instance): [0.0],
        _key("scrape_duration_seconds", job="gone", instance=instance): [
            result.duration_s
        ],
    }


@pytest.mark.parametrize(
    ("route", "error"),
    [
        (lambda h: h.send_error(500), "HTTP status 500"),
        (lambda h: _send(h, b"\xff\xfe not text\n"), "UTF-8"),
        (
            lambda h: _send(h, b"x 1\n" * 100_000, gzipped=True),
            "exceeds the limit of 1000 bytes",
        ),
    ],
    ids=["http-500", "not-utf8", "gzip-over-limit"],
)
def test_failed_scrape_says_why(server, route, error):
    base, state = server
    state.routes["/metrics"] = route

    _, (result,) = scrape_once(
        [Target(f"{base}/metrics", max_body_bytes=1000)],
        SeriesIndex(),
        NOW_MS,
        timeout_s=5.0,
    )

    assert not result.up
    assert error in result.error


def test_bad_lines_are_dropped_and_the_rest_kept(server):
    base, state = server
    state.routes["/metrics"] = lambda h: _send(h, EXPOSITION + b"bad line here\n")
    index = SeriesIndex()

    table, (result,) = scrape_once([f"{base}/metrics"], index, NOW_MS, timeout_s=5.0)

    assert result.up
    assert (result.n_samples, result.n_bad_lines) == (N_SAMPLES, 1)
    assert result.error.startswith("line 13:")
    assert table.num_rows == N_SAMPLES + 3


def test_slow_target_times_out_without_holding_back_a_fast_one(server):
    base, state = server

    def slow(handler):
        state.slow_sock = handler.connection
        state.slow_arrived.set()
        state.release.wait(WAIT_CAP_S)  # blocks until the scrape is over
        _send(handler, EXPOSITION)

    def fast(handler):
        # Served only while the slow request is still open from the client's side.
        state.slow_arrived.wait(WAIT_CAP_S)
        state.fast_saw_slow_open.append(_client_still_open(state.slow_sock))
        _send(handler, EXPOSITION)

    state.routes["/slow"] = slow
    state.routes["/fast"] = fast
    targets = [
        Target(f"{base}/slow", job="slow", timeout_s=1.0),
        Target(f"{base}/fast", job="fast", timeout_s=5.0),
    ]

    _, (slow_result, fast_result) = scrape_once(targets, SeriesIndex(), NOW_MS)
    released_after_return = not state.release.is_set()
    state.release.set()

    assert released_after_return
    assert state.fast_saw_slow_open == [True]
    assert fast_result.up and fast_result.n_samples == N_SAMPLES
    assert not slow_result.up
    assert slow_result.error == "timed out after 1 s"


def test_target_checks_its_settings():
    with pytest.raises(
        ConfigError, match=r"timeout_s must be in \(0, interval_s = 1\.0\], got 2\.0"
    ):
        Target("http://127.0.0.1:9/metrics", interval_s=1.0, timeout_s=2.0)
    with pytest.raises(ConfigError, match="expected an http:// or https:// URL"):
        Target("ftp://127.0.0.1/metrics")
    with pytest.raises(ConfigError, match="labels may not set \\['job'\\]"):
        Target("http://127.0.0.1:9/metrics", labels={"job": "x"})
    with pytest.raises(
        ConfigError, match="share job 'scrape' and instance '127.0.0.1:9'"
    ):
        scrape_once(
            ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"], SeriesIndex(), NOW_MS
        )


def test_target_labels_go_on_every_series(server):
    base, state = server
    state.routes["/metrics"] = lambda h: _send(h, EXPOSITION)
    index = SeriesIndex()

    scrape_once(
        [
            Target(
                f"{base}/metrics", job="web", instance="web-1", labels={"env": "prod"}
            )
        ],
        index,
        NOW_MS,
    )

    assert len(index) == N_SAMPLES + 3
    for sid in index:
        labels = index.labels(sid)
        assert (labels["job"], labels["instance"], labels["env"]) == (
            "web",
            "web-1",
            "prod",
        )


# --- Scraper -----------------------------------------------------------------------


def test_scraper_keeps_scraping_a_fast_target_while_a_slow_one_hangs(server):
    base, state = server
    state.routes["/fast"] = lambda h: _send(h, EXPOSITION, gzipped=True)

    def slow(handler):
        state.slow_arrived.set()
        state.release.wait(WAIT_CAP_S)
        _send(handler, EXPOSITION)

    state.routes["/slow"] = slow
    named: list[bool] = []  # per sink call: the index names every series of the batch
    results: list[ScrapeResult] = []
    enough = threading.Event()

    def sink(batch: pa.Table, index: SeriesIndex) -> None:
        named.append(set(batch["series_id"].to_pylist()) <= set(index))

    def on_results(batch_results: list[ScrapeResult]) -> None:
        results.extend(batch_results)
        if sum(r.job == "fast" for r in results) >= 5:
            enough.set()

    scraper = Scraper(
        [
            Target(f"{base}/slow", job="slow", interval_s=0.5, timeout_s=0.3),
            Target(f"{base}/fast", job="fast", interval_s=0.1),
        ],
        sink,
        on_results=on_results,
    )
    with scraper:
        assert enough.wait(WAIT_CAP_S)
        # Five fast scrapes went by while the slow server still holds its first request.
        slow_still_hanging = state.slow_arrived.is_set() and not state.release.is_set()
        state.release.set()
    assert not scraper.is_running

    assert slow_still_hanging
    fast = [r for r in results if r.job == "fast"]
    slow = [r for r in results if r.job == "slow"]
    assert all(r.up and r.n_samples == N_SAMPLES for r in fast)
    assert slow and all(not r.up and r.error == "timed out after 0.3 s" for r in slow)
    assert [s.scrapes for s in scraper.stats] == [len(slow), len(fast)]

    assert named and all(named)
    # A series keeps its id from scrape to scrape.
    fast_ups = [
        sid
        for sid in scraper.index
        if scraper.index.name(sid) == "up"
        and scraper.index.labels(sid)["job"] == "fast"
    ]
    assert len(fast_ups) == 1
    assert {"http_requests_total", "up", "latency_seconds"} <= set(scraper.specs)


def test_scraper_survives_a_failing_sink(server):
    base, state = server
    state.routes["/metrics"] = lambda h: _send(h, EXPOSITION)
    calls: list[int] = []
    done = threading.Event()

    def sink(batch: pa.Table, index: SeriesIndex) -> None:
        calls.append(batch.num_rows)
        if len(calls) == 1:
            raise RuntimeError("store is full")
        done.set()

    scraper = Scraper([Target(f"{base}/metrics", interval_s=0.1)], sink)
    with scraper:
        assert done.wait(WAIT_CAP_S)

    assert scraper.n_sink_errors == 1
    assert calls[:2] == [N_SAMPLES + 3, N_SAMPLES + 3]


def test_series_the_engine_refuses_leave_nothing_in_the_scraper(server):
    from obscore import Engine
    from obscore.config import load_config

    base, state = server
    served = [0]

    def runaway(handler):  # 20 fresh request ids on every scrape
        n = served[0]
        served[0] += 1
        lines = [f'requests_total{{id="r{n}-{i}"}} 1' for i in range(20)]
        body = "# TYPE requests_total counter\n" + "\n".join(lines) + "\n"
        _send(handler, ("# TYPE temperature gauge\ntemperature 21.5\n" + body).encode())

    state.routes["/metrics"] = runaway
    engine = Engine(config=load_config(overrides={"limits": {"series_per_metric": 5}}))
    with pytest.warns(Warning, match="requests_total"):
        scraper = engine.scrape([Target(f"{base}/metrics", interval_s=0.1)])
        deadline = time.monotonic() + WAIT_CAP_S
        stats = scraper.stats[0]
        while stats.scrapes - stats.failures < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        scraper.stop()

    scrapes = stats.scrapes - stats.failures  # a scrape that timed out stored nothing
    assert scrapes >= 5
    names = [scraper.index.name(s) for s in scraper.index]
    assert names.count("requests_total") == 5  # only the series the engine holds
    assert "temperature" in names
    assert len(scraper.index) == len(engine.index)
    assert sum(len(c) for c in scraper._caches) == len(engine.index)
    refused = engine.guard.dropped[("requests_total", "series_limit_per_metric")]
    assert refused == 20 * scrapes - 5
    engine.close()


# --- against a real node_exporter --------------------------------------------------

NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
# Collectors that read /proc and /sys quickly without privileges; the rest
# (hwmon, thermal, textfile, systemd, ...) are off to keep the load low.
NODE_COLLECTORS = (
    "cpu",
    "loadavg",
    "meminfo",
    "netdev",
    "stat",
    "time",
    "uname",
    "vmstat",
)
SCRAPE_SECONDS = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def node_exporter() -> Iterator[str]:
    """A node_exporter on 127.0.0.1, stopped when the test ends; yields its URL."""
    if not NODE_EXPORTER.exists():
        pytest.skip(
            f"{NODE_EXPORTER} not found; install the Debian package "
            "prometheus-node-exporter to run this test"
        )
    port = _free_port()
    args = [
        str(NODE_EXPORTER),
        f"--web.listen-address=127.0.0.1:{port}",
        "--collector.disable-defaults",
        *(f"--collector.{name}" for name in NODE_COLLECTORS),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        for _ in range(100):
            if proc.poll() is not None:
                pytest.fail(
                    f"node_exporter exited: {proc.stderr.read().decode()[-500:]}"
                )
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"node_exporter did not answer on {url}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _exporter_samples(body: bytes, fmt: str) -> dict[tuple[str, frozenset], float]:
    """Samples of an exposition as prometheus_client reads them."""
    if fmt == "openmetrics":
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
    else:
        from prometheus_client.parser import text_string_to_metric_families
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


@pytest.mark.integration
@pytest.mark.slow
def test_node_exporter_scraped_every_second_for_30_s(node_exporter, refusing_url):
    pytest.importorskip("prometheus_client")
    results: list[ScrapeResult] = []
    batches: list[pa.Table] = []
    lock = threading.Lock()
    enough = threading.Event()
    n_wanted = SCRAPE_SECONDS + 1  # 31 scrapes span 30 s

    def on_results(batch_results: list[ScrapeResult]) -> None:
        with lock:
            results.extend(batch_results)
            if sum(r.job == "node" for r in results) >= n_wanted:
                enough.set()

    scraper = Scraper(
        [
            Target(node_exporter, job="node", interval_s=1.0, timeout_s=0.9),
            Target(refusing_url, job="gone", interval_s=1.0, timeout_s=0.9),
        ],
        lambda batch, index: batches.append(batch),
        on_results=on_results,
        keep_body=True,
    )
    with scraper:
        assert enough.wait(SCRAPE_SECONDS + 30)
    index = scraper.index

    node = [r for r in results if r.job == "node"]
    gone = [r for r in results if r.job == "gone"]
    assert len(node) >= n_wanted
    assert (node[-1].ts - node[0].ts) >= SCRAPE_SECONDS * 1000 - 500
    assert all(r.up for r in node), [r.error for r in node if not r.up]
    assert gone and all(not r.up and r.error == "connection refused" for r in gone)
    # The refused target costs the exporter no scrape: one per second each.
    assert abs(len(gone) - len(node)) <= 1
    assert scraper.stats[0].skipped == 0

    # Per scrape, scrape_samples_scraped equals what prometheus_client reads in
    # the very body that scrape received.
    table = pa.concat_tables(batches)
    ids = table["series_id"].to_numpy()
    ts = table["ts"].to_numpy()
    values = table["value"].to_numpy()
    names = {sid: index.name(sid) for sid in index}
    jobs = {sid: index.labels(sid)["job"] for sid in index}
    scraped = {
        t: v
        for sid, t, v in zip(ids, ts, values)
        if names[sid] == "scrape_samples_scraped" and jobs[sid] == "node"
    }
    ups = {
        (jobs[sid], t): v for sid, t, v in zip(ids, ts, values) if names[sid] == "up"
    }
    for r in node:
        expected = _exporter_samples(r.body, r.format)
        assert r.n_samples == len(expected)
        assert scraped[r.ts] == len(expected)
        assert ups[("node", r.ts)] == 1.0
    assert all(ups[("gone", r.ts)] == 0.0 for r in gone)

    # A counter's increase over the run, from the stored samples, equals the
    # difference between the first and last bodies as prometheus_client reads them.
    first = _exporter_samples(node[0].body, node[0].format)
    last = _exporter_samples(node[-1].body, node[-1].format)
    cpu = [sid for sid in index if names[sid] == "node_cpu_seconds_total"]
    assert cpu
    per_cpu: dict[str, float] = {}
    for sid in cpu:
        labels = dict(index.labels(sid))
        key = (
            "node_cpu_seconds_total",
            frozenset(
                (k, v) for k, v in labels.items() if k not in ("job", "instance")
            ),
        )
        rows = np.flatnonzero(ids == sid)
        series = values[rows[np.argsort(ts[rows], kind="stable")]]
        assert len(series) == len(node)
        assert (series[0], series[-1]) == (first[key], last[key])
        steps = np.diff(series)
        increase = float(
            np.where(steps >= 0, steps, series[1:]).sum()
        )  # resets counted
        assert increase == pytest.approx(last[key] - first[key], rel=1e-12, abs=1e-9)
        per_cpu[labels["cpu"]] = per_cpu.get(labels["cpu"], 0.0) + increase
    # Each CPU spends the run in some mode, so its modes add up to the time
    # between the first and last scrape (USER_HZ ticks; loose for accounting).
    span_s = (node[-1].ts - node[0].ts) / 1000
    for cpu_name, seconds in per_cpu.items():
        assert 0.85 * span_s <= seconds <= 1.15 * span_s, (cpu_name, seconds, span_s)
