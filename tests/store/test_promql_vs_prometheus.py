"""Side by side: obscore's PromQL against a live Prometheus 2.42 on the same data.

One seeded hour of samples (counters with resets, gauges with a NaN and a
constant series, classic histograms with a missing ``+Inf`` bucket,
non-monotonic buckets, a 15-minute hole and 20 minutes without observations,
and series on whole steps with +-Inf, 1e308, subnormals and ties) is written
as an OpenMetrics file.
Prometheus gets it through ``promtool tsdb create-blocks-from openmetrics``
(the backfill path) and answers over its HTTP API; obscore ingests the same
file with :meth:`Engine.ingest_exposition` and answers with
:meth:`Engine.query_promql`.  Every query runs as an instant query and as a
range query, and both answers must hold the same series, the same timestamps
and values equal to 1e-9 relative (NaN equal to NaN).
"""

from __future__ import annotations

import math
import subprocess
import warnings

import numpy as np
import pytest
from services import PROMTOOL, get_json, need, prometheus

from obscore import Engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0_S = 1_767_225_600  # 2026-01-01T00:00:00Z; a retention of 100 years keeps it
INTERVAL_S = 15
N_POINTS = 241  # one hour
RTOL = 1e-9
BOUNDS = ("0.1", "0.5", "1", "+Inf")
# Evaluation: instant queries at EVAL_S; range queries from RANGE_START_S to
# RANGE_END_S.  The range crosses the counter resets and the histogram's hole.
EVAL_S = T0_S + 50 * 60 + 7
# A second instant, 1.5 s after the NaN sample of mem_bytes{instance="c"}
# (scrape jitter is under 1 s): aggregations then meet that NaN.
NAN_S = T0_S + 150 * INTERVAL_S + 1.5
MODES = {"instant": EVAL_S, "at the NaN": NAN_S, "range": None}
RANGE_START_S = T0_S + 5 * 60
RANGE_END_S = T0_S + 60 * 60
RANGE_STEP_S = 60

LEGACY = "legacy_duration_seconds_bucket"  # no +Inf (b), non-monotonic (c)
HIST = '{__name__=~"req_duration_seconds_bucket|legacy_duration_seconds_bucket"}'
QUERIES = [
    # rate family, with counter resets and windows too short for two samples
    "rate(http_requests_total[5m])",
    "rate(http_requests_total[20s])",
    "increase(http_requests_total[2m])",
    "increase(http_requests_total[10m])",
    "irate(http_requests_total[1m])",
    "delta(mem_bytes[5m])",
    "delta(http_requests_total[2m])",
    "deriv(mem_bytes[10m])",
    "deriv(http_requests_total[5m])",
    # aggregations, by and without
    "sum by (code) (rate(http_requests_total[5m]))",
    "sum without (instance, method) (rate(http_requests_total[5m]))",
    "avg by (instance) (mem_bytes)",
    "avg without (job) (rate(http_requests_total[5m]))",
    "min without (instance) (mem_bytes)",
    "max by (job) (mem_bytes)",
    "count by (code) (http_requests_total)",
    f"count without (le) ({HIST})",
    "stddev by (job) (mem_bytes)",
    "stddev without (code, method) (rate(http_requests_total[5m]))",
    "quantile(0.9, mem_bytes)",
    "quantile by (code) (0.25, rate(http_requests_total[5m]))",
    "topk(3, mem_bytes)",
    "topk by (code) (1, http_requests_total)",
    "bottomk(2, rate(http_requests_total[5m]))",
    "bottomk without (method) (1, rate(http_requests_total[5m]))",
    # *_over_time
    "avg_over_time(mem_bytes[10m])",
    "min_over_time(mem_bytes[5m])",
    "max_over_time(mem_bytes[5m])",
    "sum_over_time(mem_bytes[3m])",
    "count_over_time(http_requests_total[2m])",
    "last_over_time(mem_bytes[1m])",
    "quantile_over_time(0.75, mem_bytes[10m])",
    "stddev_over_time(mem_bytes[10m])",
    "stddev_over_time(http_requests_total[5m])",
    # histogram_quantile: missing +Inf (instance b), non-monotonic (c),
    # empty windows (instance gap), quantiles at and past the ends
    f"histogram_quantile(0.9, rate({HIST}[5m]))",
    f"histogram_quantile(0.9, rate({LEGACY}[5m]))",
    f"histogram_quantile(0.5, rate({HIST}[1m]))",
    f"histogram_quantile(0.5, sum by (le) (rate({HIST}[5m])))",
    f"histogram_quantile(0.99, sum by (le, instance) (increase({HIST}[2m])))",
    'histogram_quantile(0.5, rate(req_duration_seconds_bucket{instance="gap"}[1m]))',
    f"histogram_quantile(0, rate({HIST}[5m]))",
    f"histogram_quantile(1, rate({HIST}[5m]))",
    f"histogram_quantile(1.5, rate({HIST}[5m]))",
    f"histogram_quantile(0.75, {HIST})",
    "rate(req_duration_seconds_sum[5m]) / rate(req_duration_seconds_count[5m])",
    # plain selectors: lookback over the hole, the NaN sample
    "mem_bytes",
    'req_duration_seconds_bucket{instance="gap"}',
    # samples on window edges, resets to 0, late and sparse series, +-Inf,
    # 1e308, subnormals, ties
    "rate(odd_total[1m])",
    "rate(odd_total[15s])",
    "increase(odd_total[10m])",
    "irate(odd_total[1m])",
    "delta(odd_level[5m])",
    "deriv(odd_level[5m])",
    "rate(odd_level[5m])",
    "sum(odd_level)",
    "stddev(odd_level)",
    "quantile(0.5, odd_level)",
    "topk(2, odd_level)",
    "bottomk(2, odd_level)",
    "max_over_time(odd_level[5m])",
    "sum_over_time(odd_level[5m])",
    "stddev_over_time(odd_level[5m])",
    "quantile_over_time(0.5, odd_level[5m])",
    # a few of the rest of the language over the same functions
    "rate(http_requests_total[5m] offset 3m)",
    "max_over_time(rate(http_requests_total[1m])[5m:30s])",
    "sum by (code) (rate(http_requests_total[5m])) > 1",
    'mem_bytes{job="db"} / ignoring(job) group_left mem_bytes{job="api"}',
]
# Answers Prometheus gives empty (so an empty answer from obscore is right).
EMPTY = {
    ("instant", "rate(http_requests_total[20s])"),
    ("instant", "rate(odd_total[15s])"),
    ("at the NaN", "rate(odd_total[15s])"),
}


# --- the data ----------------------------------------------------------------------


def _series() -> list[tuple[str, str, dict[str, str], list[tuple[float, float]]]]:
    """``(family, type, labels with __name__, [(ts_s, value), ...])``, seeded."""
    rng = np.random.default_rng(20260101)
    offsets = rng.integers(0, 1000, N_POINTS)  # scrape jitter in ms
    ts = [T0_S + i * INTERVAL_S + int(offsets[i]) / 1000 for i in range(N_POINTS)]
    out = []

    n = 0
    for instance in ("a", "b"):
        for code in ("200", "500"):
            for method in ("get", "post"):
                steps = rng.integers(0, 40, N_POINTS).astype(float)
                steps += rng.random(N_POINTS).round(3)
                values = np.cumsum(steps)
                # two resets, at different places
                if n == 3:
                    values[100:] -= values[99] - 3.0
                if n == 6:
                    values[170:] -= values[169]
                labels = {
                    "__name__": "http_requests_total",
                    "job": "api",
                    "instance": instance,
                    "code": code,
                    "method": method,
                }
                out.append(("http_requests", "counter", labels, list(zip(ts, values))))
                n += 1

    for job, instance, kind in (
        ("api", "a", "walk"),
        ("api", "b", "walk"),
        ("db", "a", "walk"),
        ("db", "b", "constant"),
        ("db", "c", "nan"),
    ):
        if kind == "constant":
            values = np.full(N_POINTS, 512e6)
        else:
            values = 1e9 + np.cumsum(rng.normal(0, 4e6, N_POINTS)).round(0)
        if kind == "nan":
            values[150] = np.nan
        labels = {"__name__": "mem_bytes", "job": job, "instance": instance}
        out.append(("mem_bytes", "gauge", labels, list(zip(ts, values))))

    for instance in ("a", "b", "c", "gap", "idle"):
        counts = np.zeros(len(BOUNDS))
        total = 0.0
        points: dict[str, list[tuple[float, float]]] = {b: [] for b in BOUNDS}
        sums: list[tuple[float, float]] = []
        num: list[tuple[float, float]] = []
        for i in range(N_POINTS):
            new = rng.integers(0, 6, len(BOUNDS)).cumsum().astype(float)
            if instance == "idle" and 100 <= i < 180:
                new[:] = 0.0  # 20 minutes without observations: rates of 0
            counts += new
            total += float(new[-1]) * 0.3 + round(float(rng.random()), 3)
            if instance == "gap" and 80 <= i < 140:
                continue
            for j, bound in enumerate(BOUNDS):
                if instance == "b" and bound == "+Inf":
                    continue
                value = counts[j]
                if instance == "c" and bound == "1" and i % 3 == 0:
                    value = counts[1] - 2  # below the 0.5 bucket
                points[bound].append((ts[i], value))
            sums.append((ts[i], total))
            num.append((ts[i], counts[-1]))
        for bound in BOUNDS:
            if points[bound]:
                labels = {"instance": instance, "le": bound}
                if instance in ("b", "c"):
                    # OpenMetrics (and obscore's parser) refuse a histogram
                    # without +Inf or with decreasing buckets, so these form
                    # an untyped family, as a hand-rolled exporter sends them.
                    family, kind, name = LEGACY, "unknown", LEGACY
                else:
                    family, kind = "req_duration_seconds", "histogram"
                    name = "req_duration_seconds_bucket"
                out.append((family, kind, {"__name__": name, **labels}, points[bound]))
        if instance in ("b", "c"):
            continue
        for suffix, pts in (("_sum", sums), ("_count", num)):
            labels = {"__name__": "req_duration_seconds" + suffix, "instance": instance}
            out.append(("req_duration_seconds", "histogram", labels, pts))
    return out + _edge_series(rng)


def _edge_series(rng: np.random.Generator) -> list:
    """Series on whole 15 s steps (samples on window edges) with awkward values."""
    ts = [T0_S + i * INTERVAL_S for i in range(N_POINTS)]
    ones = np.ones(N_POINTS)
    reset = np.cumsum(rng.integers(0, 10, N_POINTS)).astype(float)
    reset[120:] -= reset[120]  # back to exactly 0
    sparse = ts[::7]
    counters = {
        "reset0": list(zip(ts, reset)),
        "late": list(zip(ts[100:180], np.cumsum(rng.integers(1, 5, 80)) * 1.0)),
        "huge": list(zip(ts, 1e300 * np.cumsum(ones))),
        "tiny": list(zip(ts, 1e-300 * np.cumsum(ones))),
        "flat": list(zip(ts, 7.0 * ones)),
        "sparse": list(zip(sparse, np.cumsum(rng.integers(1, 5, len(sparse))) * 1.0)),
    }
    wild = rng.normal(0, 1, N_POINTS)
    wild[[50, 60, 70, 80]] = [np.inf, -np.inf, np.nan, 5e-324]
    gauges = {
        "wild": wild,
        "falling": -np.cumsum(rng.random(N_POINTS)),
        "tie1": 3.0 * ones,
        "tie2": 3.0 * ones,
        "max": 1e308 * ones,
    }
    out = [
        ("odd", "counter", {"__name__": "odd_total", "k": k}, points)
        for k, points in counters.items()
    ]
    out += [
        # untyped: OpenMetrics' gauge is fine with these values, but an
        # untyped family is what carries -Inf and friends in practice
        ("odd_level", "unknown", {"__name__": "odd_level", "k": k}, list(zip(ts, v)))
        for k, v in gauges.items()
    ]
    return out


def _value_text(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(float(value))


def openmetrics(series) -> str:
    """The series as one OpenMetrics exposition, one family after the other.

    A family's series are grouped by their labels (but ``le`` in a histogram)
    into metrics, and each metric's points are written in time order, all its
    lines of one time together (for a histogram: buckets, sum, count), as the
    format asks.
    """
    families: dict[str, tuple[str, dict]] = {}
    for family, kind, labels, points in series:
        grouped = ("__name__", "le") if kind == "histogram" else ("__name__",)
        metric = tuple((k, v) for k, v in labels.items() if k not in grouped)
        _, metrics = families.setdefault(family, (kind, {}))
        for ts, value in points:
            metrics.setdefault(metric, {}).setdefault(ts, []).append((labels, value))
    lines: list[str] = []
    for family, (kind, metrics) in families.items():
        lines.append(f"# TYPE {family} {kind}")
        for by_ts in metrics.values():
            for ts in sorted(by_ts):
                for labels, value in by_ts[ts]:
                    name = labels["__name__"]
                    text = ",".join(
                        f'{k}="{v}"' for k, v in labels.items() if k != "__name__"
                    )
                    lines.append(f"{name}{{{text}}} {_value_text(value)} {ts:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


# --- both sides ----------------------------------------------------------------


@pytest.fixture(scope="module")
def exposition() -> str:
    return openmetrics(_series())


@pytest.fixture(scope="module")
def peer(tmp_path_factory, exposition):
    """A Prometheus 2.42 serving the backfilled blocks; yields its base URL."""
    promtool = need(PROMTOOL, "prometheus")
    tmp = tmp_path_factory.mktemp("prometheus-peer")
    source = tmp / "data.om"
    source.write_text(exposition)
    data = tmp / "tsdb"
    data.mkdir()
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with prometheus(
        tmp,
        {"global": {"scrape_interval": "1m"}},
        data_dir=data,
        flags=["--storage.tsdb.retention.time=100y"],
    ) as base:
        yield base


@pytest.fixture(scope="module")
def engine(exposition) -> Engine:
    eng = Engine()
    result = eng.ingest_exposition(exposition, format="openmetrics", declare=True)
    assert result.n_dropped == 0, result.dropped
    return eng


def _prometheus_answer(base: str, query: str, at_s: float | None) -> dict:
    """Prometheus' answer over HTTP: instant at ``at_s``, or the range query."""
    if at_s is not None:
        body = get_json(base, "/api/v1/query", query=query, time=at_s)
    else:
        body = get_json(
            base,
            "/api/v1/query_range",
            query=query,
            start=RANGE_START_S,
            end=RANGE_END_S,
            step=RANGE_STEP_S,
        )
    assert body["status"] == "success", body
    data = body["data"]
    if data["resultType"] == "scalar":
        t, v = data["result"]
        return {frozenset(): [(round(t * 1000), float(v))]}
    out: dict[frozenset, list[tuple[int, float]]] = {}
    for s in data["result"]:
        points = s["values"] if "values" in s else [s["value"]]
        out[frozenset(s["metric"].items())] = [
            (round(t * 1000), float(v)) for t, v in points
        ]
    return out


def _obscore_answer(engine: Engine, query: str, at_s: float | None) -> dict:
    """obscore's answer from ``Engine.query_promql``, in the same shape.

    Infinities and NaN are values here: evaluating them must not leak a
    numpy RuntimeWarning to the caller.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        if at_s is not None:
            table = engine.query_promql(query, time_ms=round(at_s * 1000))
        else:
            table = engine.query_promql(
                query,
                start_ms=RANGE_START_S * 1000,
                end_ms=RANGE_END_S * 1000,
                step_ms=RANGE_STEP_S * 1000,
            )
    labels = [c for c in table.column_names if c not in ("ts", "value")]
    cols = {c: table[c].to_pylist() for c in labels}
    out: dict[frozenset, list[tuple[int, float]]] = {}
    rows = zip(table["ts"].to_pylist(), table["value"].to_pylist())
    for i, (t, v) in enumerate(rows):
        key = frozenset((c, cols[c][i]) for c in labels if cols[c][i] not in (None, ""))
        out.setdefault(key, []).append((t, v))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in out.items()}


def _relative_error(a: float, b: float) -> float:
    if (math.isnan(a) and math.isnan(b)) or a == b:
        return 0.0
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


def _differences(want: dict, got: dict) -> list[str]:
    """What differs between Prometheus' answer and obscore's: series, times, values."""
    out = [f"series only in prometheus: {dict(k)}" for k in want.keys() - got.keys()]
    out += [f"series only in obscore: {dict(k)}" for k in got.keys() - want.keys()]
    for key in want.keys() & got.keys():
        a, b = want[key], got[key]
        if [t for t, _ in a] != [t for t, _ in b]:
            only_p = sorted({t for t, _ in a} - {t for t, _ in b})
            only_o = sorted({t for t, _ in b} - {t for t, _ in a})
            out.append(
                f"{dict(key)}: timestamps only in prometheus {only_p[:3]}, "
                f"only in obscore {only_o[:3]}"
            )
            continue
        for (t, x), (_, y) in zip(a, b):
            err = _relative_error(x, y)
            if err > RTOL:
                out.append(
                    f"{dict(key)} at {t}: prometheus {x!r}, obscore {y!r} "
                    f"(relative {err:.3g})"
                )
                break
    return out


@pytest.fixture(scope="module")
def tally():
    """Counts over every parametrized case, printed at the end (``-s``)."""
    counts = {"answers": 0, "matched": 0, "series": 0, "points": 0, "worst": 0.0}
    yield counts
    print(
        f"\nPromQL side by side with Prometheus 2.42: {counts['matched']} of "
        f"{counts['answers']} answers ({len(QUERIES)} queries x {len(MODES)} modes) "
        f"equal to {RTOL:g} relative; {counts['series']} series, "
        f"{counts['points']} points; largest relative difference "
        f"{counts['worst']:.3g}"
    )


def test_both_hold_the_same_raw_samples(peer, engine):
    # A range selector at the top of an instant query answers the samples
    # themselves, with their own timestamps (in ms, as promtool parsed them).
    query = '{__name__=~".+"}[61m]'
    want = _prometheus_answer(peer, query, T0_S + 61 * 60)
    got = _obscore_answer(engine, query, T0_S + 61 * 60)
    series = _series()
    assert len(want) == len(series)
    assert sum(len(p) for p in want.values()) == sum(len(s[3]) for s in series)
    assert _differences(want, got) == []


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("query", QUERIES)
def test_query_answers_equal_prometheus(query, mode, peer, engine, tally):
    tally["answers"] += 1
    want = _prometheus_answer(peer, query, MODES[mode])
    got = _obscore_answer(engine, query, MODES[mode])
    assert bool(want) != ((mode, query) in EMPTY), f"prometheus answered {want}"
    problems = _differences(want, got)
    assert not problems, f"{mode} {query}:\n" + "\n".join(problems[:8])
    tally["matched"] += 1
    tally["series"] += len(want)
    tally["points"] += sum(len(p) for p in want.values())
    for key, points in want.items():
        for (_, a), (_, b) in zip(points, got[key]):
            tally["worst"] = max(tally["worst"], _relative_error(a, b))


def _json_result(body: dict) -> tuple[str, dict]:
    """``resultType`` and the result keyed by label set (vector order is free)."""
    assert body["status"] == "success", body
    data = body["data"]
    if data["resultType"] == "scalar":
        return "scalar", {(): data["result"]}
    return data["resultType"], {
        tuple(sorted(s["metric"].items())): s.get("values", s.get("value"))
        for s in data["result"]
    }


@pytest.fixture(scope="module")
def http(engine):
    """obscore's HTTP API over ``engine`` (Starlette's test client)."""
    from obscore.server import create_app

    with warnings.catch_warnings():
        # starlette 1.x asks for httpx2 in its test client; httpx still works
        warnings.filterwarnings("ignore", message="Using `httpx` with")
        from starlette.testclient import TestClient

        client = TestClient(create_app(engine), base_url="http://127.0.0.1")
    with client:
        yield client


def test_obscore_http_api_answers_the_same_json(peer, http):
    # Over HTTP the values are strings: Go's shortest format on one side,
    # obscore's promjson on the other; equal floats must give equal text.
    n_points = 0
    for query in QUERIES:
        for mode, at_s in MODES.items():
            if at_s is not None:
                path, params = "/api/v1/query", {"query": query, "time": at_s}
                res = http.get(path, params=params)
            else:
                path = "/api/v1/query_range"
                params = {
                    "query": query,
                    "start": RANGE_START_S,
                    "end": RANGE_END_S,
                    "step": RANGE_STEP_S,
                }
                res = http.post(path, data=params)  # form-encoded, as Grafana does
            want = _json_result(get_json(peer, path, **params))
            assert res.status_code == 200, res.text
            got = _json_result(res.json())
            assert got == want, f"{mode} {query}"
            n_points += sum(
                len(v) if v and isinstance(v[0], list) else 1 for v in want[1].values()
            )
    assert n_points > 10_000


def test_infinities_are_evaluated_without_numpy_warnings(engine):
    # Needs no Prometheus: Inf - Inf in a window is NaN, and no RuntimeWarning
    # reaches the caller (_obscore_answer turns them into errors).
    got = _obscore_answer(engine, "rate(odd_level[5m])", None)
    wild = got[frozenset({("k", "wild")})]
    assert any(math.isnan(v) for _, v in wild)
    assert any(math.isinf(v) for _, v in wild)


def test_series_and_label_endpoints_answer_as_prometheus(peer, http):
    # Without start/end both consider all stored data, so the answers are exact.
    selectors = [
        ["http_requests_total"],
        ['{__name__=~"req_.*",instance!="a"}'],
        ['mem_bytes{job="db"}', 'odd_total{k=~"t.*"}'],
        [HIST],
    ]
    requests = [("/api/v1/labels", {}), ("/api/v1/label/__name__/values", {})]
    for name in ("instance", "le", "k", "job"):
        requests.append((f"/api/v1/label/{name}/values", {}))
    for match in selectors:
        requests += [
            ("/api/v1/series", {"match[]": match}),
            ("/api/v1/labels", {"match[]": match}),
            ("/api/v1/label/instance/values", {"match[]": match}),
        ]
    for path, params in requests:
        want = get_json(peer, path, **params)
        res = http.get(path, params=params)
        assert res.status_code == 200, res.text
        got = res.json()
        if path == "/api/v1/series":  # Prometheus' order is its index order
            want["data"].sort(key=lambda s: sorted(s.items()))
            got["data"].sort(key=lambda s: sorted(s.items()))
        assert got == want, f"{path} {params}"


@pytest.fixture(scope="module")
def obscore_url(engine):
    """uvicorn serving ``engine`` on a free loopback port, in a thread."""
    import threading
    import time

    import uvicorn
    from services import free_port

    from obscore.server import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(engine), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "no uvicorn"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_prometheus_api_client_reads_the_same_from_both(peer, obscore_url):
    prom_api = pytest.importorskip(
        "prometheus_api_client", reason="prometheus-api-client is not installed"
    )
    from datetime import UTC, datetime, timedelta

    def dt(s: float) -> datetime:
        return datetime.fromtimestamp(s, UTC)

    def calls(client) -> dict:
        def vector(rows):
            return sorted((sorted(r["metric"].items()), r["value"]) for r in rows)

        def matrix(rows):
            return sorted((sorted(r["metric"].items()), r["values"]) for r in rows)

        at = {"time": EVAL_S}
        return {
            "metrics": client.all_metrics(),
            "labels": client.get_label_names(),
            "instances": client.get_label_values("instance"),
            "rate": vector(
                client.custom_query("rate(http_requests_total[5m])", params=at)
            ),
            "quantile": vector(
                client.custom_query(
                    f"histogram_quantile(0.9, rate({HIST}[5m]))", params=at
                )
            ),
            "range": matrix(
                client.custom_query_range(
                    "sum by (code) (rate(http_requests_total[5m]))",
                    start_time=dt(RANGE_START_S),
                    end_time=dt(RANGE_END_S),
                    step="30",
                )
            ),
            "raw": matrix(
                client.get_metric_range_data(
                    "mem_bytes",
                    label_config={"job": "api"},
                    start_time=dt(T0_S),
                    end_time=dt(T0_S + 3600),
                    chunk_size=timedelta(minutes=10),
                )
            ),
            "aggregation": client.get_metric_aggregation(
                "mem_bytes",
                operations=["sum", "max", "min", "average", "percentile_50"],
                start_time=dt(RANGE_START_S),
                end_time=dt(RANGE_END_S),
                step="60",
            ),
        }

    ours = calls(prom_api.PrometheusConnect(url=obscore_url, disable_ssl=True))
    theirs = calls(prom_api.PrometheusConnect(url=peer, disable_ssl=True))
    assert ours["raw"] and ours["range"] and ours["rate"]
    for key in theirs:
        assert ours[key] == theirs[key], key
