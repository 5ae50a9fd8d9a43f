"""The HTTP face of an engine: ingest, Prometheus-shaped queries, alerts, dashboard.

``create_app`` builds a Starlette application around one :class:`Engine`.
Every engine call runs in a worker thread under one lock, since the engine
is not thread-safe; the event loop only parses requests and writes answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
import numpy as np
import pyarrow as pa
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from obscore.alert import RemediationHook
from obscore.alert.route import parse_matchers
from obscore.diagnose.runbook import write_runbook
from obscore.engine import Engine
from obscore.errors import (
    ConfigError,
    ObscoreError,
    UnknownMetricError,
    UnsupportedQueryError,
)
from obscore.model import MetricKind, MetricSpec, SeriesIndex, sample_table
from obscore.server import remote_write
from obscore.server.alerts import AlertDesk, DeskError
from obscore.server.promjson import (
    ApiError,
    Params,
    check_range,
    count_series,
    parse_step,
    parse_time,
    query_data,
    success,
)

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_SERIES = 10_000
# A refused body is still read (and thrown away) up to this size, so the
# client is not cut off mid-send and sees the 413; past it the connection closes.
DRAIN_LIMIT_BYTES = 256 * 1024 * 1024

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        (
            b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
            b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
        ),
    ),
]

# POST is a read on these paths (Prometheus accepts form-encoded queries).
READ_POSTS = frozenset(
    {
        "/api/v1/query",
        "/api/v1/query_range",
        "/api/v1/series",
        "/api/v1/labels",
        "/api/v1/query_exemplars",
    }
)
ARROW_HEADERS_KEPT = 8  # Arrow series headers whose id mapping is kept
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_DASHBOARD_METRICS = (
    "cpu_usage",
    "memory_usage",
    "network_throughput",
    "request_latency",
    "error_rate",
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class ServerState:
    """What the request handlers share; one per application."""

    engine: Engine
    token: str | None
    max_body_bytes: int
    max_series: int
    declare: bool
    desk: AlertDesk
    clock: Callable[[], int]
    lock: threading.RLock = field(default_factory=threading.RLock)
    ready: threading.Event = field(default_factory=threading.Event)
    data_range: tuple[int, int] | None = None
    last_pipeline_ms: int | None = None
    diagnoses: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    # Remote-write metadata (family -> kind) comes in requests of its own,
    # often after the first samples; metrics declared from a push (never
    # those of the config) are corrected when it arrives.
    kinds: dict[str, str] = field(default_factory=dict)
    pushed: set[str] = field(default_factory=set)
    # id mappings of recent Arrow 'obscore.series' headers (see _read_arrow),
    # read in worker threads outside the engine lock, so under a lock of their own
    arrow_headers: dict[bytes, Any] = field(default_factory=dict)
    arrow_headers_lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, lo: int, hi: int) -> None:
        if self.data_range is None:
            self.data_range = (lo, hi)
        else:
            self.data_range = (min(self.data_range[0], lo), max(self.data_range[1], hi))


def create_app(
    engine: Engine,
    *,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_series: int = DEFAULT_MAX_SERIES,
    declare: bool = False,
    routing: Mapping[str, Any] | None = None,
    hooks: Iterable[RemediationHook] = (),
    warmup: Callable[[Engine], None] | None = None,
    pipeline_every_ms: int | None = None,
    pipeline_window_ms: int = 6 * 3_600_000,
    clock: Callable[[], int] = _now_ms,
) -> Starlette:
    """Build the ASGI application serving ``engine``.

    Parameters
    ----------
    engine : Engine
        The engine to serve; the application calls it under one lock.
    token : str, optional
        Bearer token required by every write and admin request (any method
        but GET/HEAD, except form-encoded queries).  None leaves them open:
        only for a server on a loopback address.
    max_body_bytes : int
        Larger request bodies are refused with 413 (also the limit of a
        remote-write body after decompression, times four).
    max_series : int
        A query, series or label request that would answer more series is
        refused with 422 naming the limit.
    declare : bool
        Declare metrics the config does not know when they are pushed
        (from TYPE lines, remote-write metadata or, failing those, as gauges;
        ``*_total`` as counters); otherwise such pushes get 400.
    routing : Mapping, optional
        Alertmanager-shaped route/receivers/inhibit_rules for the alert desk.
    hooks : iterable of RemediationHook
        Remediation actions; severe alerts' actions wait for approval.
    warmup : callable, optional
        Run in a thread at startup with the engine (under the lock), e.g. to
        load a simulation; ``/-/ready`` answers 503 until it returns.
    pipeline_every_ms : int, optional
        Run the pipeline over the last ``pipeline_window_ms`` of data this
        often; None runs it only on ``POST /api/v1/obscore/pipeline``.
    clock : callable
        Milliseconds now; tests pass a fixed clock.

    Returns
    -------
    Starlette
    """
    if max_body_bytes <= 0 or max_series <= 0:
        raise ConfigError(
            f"max_body_bytes and max_series must be positive, got {max_body_bytes!r} and {max_series!r}"
        )
    audit = (
        engine.data_dir / "remediation-audit.jsonl"
        if engine.data_dir is not None
        else None
    )
    hooks = list(hooks)
    # without routing or hooks given here, the desk runs the engine's alert
    # lifecycle: routing, receivers and remediation from the config, state on disk
    flow = engine.alert_flow if routing is None and not hooks else None
    desk = AlertDesk(routing, hooks, audit, engine.config.approval_severity, lifecycle=flow)
    desk.acks = engine.escalator.acks  # acknowledgements persist with the engine
    state = ServerState(
        engine,
        token or None,
        int(max_body_bytes),
        int(max_series),
        declare,
        desk,
        clock,
    )
    if flow is not None:
        state.lock = engine._lock  # the live pipeline steps the same router on its thread
    with state.lock:
        rng = engine.hot.time_range()
    if rng is not None:
        state.saw(*rng)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        tasks = []
        if warmup is not None:
            tasks.append(asyncio.create_task(_warm(state, warmup)))
        else:
            state.ready.set()
        if pipeline_every_ms:
            tasks.append(
                asyncio.create_task(
                    _pipeline_loop(state, pipeline_every_ms, pipeline_window_ms)
                )
            )
        # [pipeline] live = true: the engine's own pipeline ticks on its thread
        live = bool(engine.config.raw.get("pipeline", {}).get("live", False))
        if live:
            engine.start(clock=clock)
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            if live:
                engine.stop()

    h = _Handlers(state)
    routes = [
        Route("/", h.index),
        Route("/-/healthy", h.healthy, methods=["GET", "HEAD"]),
        Route("/-/ready", h.ready, methods=["GET", "HEAD"]),
        Route("/metrics", h.metrics),
        # ingest
        Route("/api/v1/push", h.push, methods=["POST"]),
        Route("/api/v1/import/arrow", h.import_arrow, methods=["POST"]),
        Route("/api/v1/write", h.remote_write, methods=["POST"]),
        # Prometheus query API
        Route("/api/v1/query", h.query, methods=["GET", "POST"]),
        Route("/api/v1/query_range", h.query_range, methods=["GET", "POST"]),
        Route("/api/v1/series", h.series, methods=["GET", "POST"]),
        Route("/api/v1/labels", h.labels, methods=["GET", "POST"]),
        Route("/api/v1/label/{name}/values", h.label_values),
        Route("/api/v1/metadata", h.metadata),
        Route("/api/v1/status/buildinfo", h.buildinfo),
        Route("/api/v1/query_exemplars", h.exemplars, methods=["GET", "POST"]),
        Route("/api/v1/rules", h.rules),
        # Alertmanager v2 API
        Route("/api/v2/status", h.am_status),
        Route("/api/v2/alerts", h.am_alerts, methods=["GET", "POST"]),
        Route("/api/v2/alerts/groups", h.am_groups),
        Route("/api/v2/silences", h.am_silences, methods=["GET", "POST"]),
        Route("/api/v2/silence/{sid}", h.am_silence, methods=["GET", "DELETE"]),
        # obscore's own
        Route("/api/v1/obscore/status", h.status),
        Route("/api/v1/obscore/overview", h.overview),
        Route("/api/v1/obscore/services/{name}", h.service),
        Route("/api/v1/obscore/incidents", h.incidents),
        Route("/api/v1/obscore/incidents/{iid:int}", h.incident),
        Route("/api/v1/obscore/alerts/{fp}/ack", h.acknowledge, methods=["POST"]),
        Route("/api/v1/obscore/actions", h.actions),
        Route("/api/v1/obscore/actions/{aid}/{verdict}", h.decide, methods=["POST"]),
        Route("/api/v1/obscore/pipeline", h.pipeline, methods=["POST"]),
        Route("/api/v1/obscore/events", h.events, methods=["GET", "POST"]),
        Route("/api/v1/obscore/escalations", h.escalations),
        Route("/api/v1/obscore/catalogue", h.catalogue, methods=["GET", "POST"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, state=state)],
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, DeskError: _desk_error},
    )
    app.state.obscore = state
    return app


# --- security: token and body size, before any routing -----------------------------


class Guard:
    """ASGI wrapper refusing unauthorised writes (401) and oversized bodies (413).

    The body is read here, in full and within the limit, before the
    application sees the request; handlers never stream from the socket.
    """

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st = self.state
        method, path = scope["method"], scope["path"]
        headers = dict(scope["headers"])
        if st.token is not None and _is_write(method, path):
            given = headers.get(b"authorization", b"")
            expected = b"Bearer " + st.token.encode()
            if not hmac.compare_digest(given, expected):
                st.refused["unauthorized"] = st.refused.get("unauthorized", 0) + 1
                logger.warning(
                    "refused %s %s: missing or wrong bearer token", method, path
                )
                await _send_json(
                    send,
                    401,
                    {
                        "status": "error",
                        "errorType": "unauthorized",
                        "error": "this endpoint needs 'Authorization: Bearer <token>'",
                    },
                    [(b"www-authenticate", b'Bearer realm="obscore"')],
                )
                return
        limit = st.max_body_bytes
        declared = headers.get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > limit
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            more = message.get("more_body", False)
            if size > limit:
                too_big = True
            if too_big:
                chunks.clear()
                if size > DRAIN_LIMIT_BYTES:
                    break
            else:
                chunks.append(body)
        if too_big:
            st.refused["too_large"] = st.refused.get("too_large", 0) + 1
            logger.warning(
                "refused %s %s: body over the limit of %d bytes", method, path, limit
            )
            await _send_json(
                send,
                413,
                {
                    "status": "error",
                    "errorType": "bad_data",
                    "error": f"request body is larger than the limit of {limit} bytes",
                },
                [(b"connection", b"close")],
            )
            return
        payload = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            return await receive()

        status = 500

        async def counting_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {
                    **message,
                    "headers": [*message.get("headers", []), *SECURITY_HEADERS],
                }
            await send(message)

        try:
            await self.app(scope, replay, counting_send)
        finally:
            key = (_handler_name(path), status)
            st.requests[key] = st.requests.get(key, 0) + 1


def _is_write(method: str, path: str) -> bool:
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    return not (method == "POST" and path in READ_POSTS)


def _handler_name(path: str) -> str:
    if path.startswith("/static/"):
        return "/static"
    for prefix in (
        "/api/v1/label/",
        "/api/v2/silence/",
        "/api/v1/obscore/services/",
        "/api/v1/obscore/incidents/",
        "/api/v1/obscore/alerts/",
        "/api/v1/obscore/actions/",
    ):
        if path.startswith(prefix):
            return prefix + "*"
    return path if path.count("/") < 6 and len(path) < 64 else "other"


async def _send_json(
    send, status: int, body: Any, extra: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    raw = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": raw})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body(), status_code=exc.status)


async def _desk_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DeskError)
    return JSONResponse(exc.message, status_code=exc.status)


# --- background work -----------------------------------------------------------


async def _warm(state: ServerState, warmup: Callable[[Engine], None]) -> None:
    def run() -> None:
        with state.lock:
            warmup(state.engine)
            rng = state.engine.hot.time_range()
            if rng is not None:
                state.saw(*rng)
            if state.engine.last_result is not None:
                state.last_pipeline_ms = state.clock()
            _sync_alerts(state)

    try:
        await anyio.to_thread.run_sync(run)
    except Exception:
        logger.exception("warm-up failed; serving what the engine holds")
    state.ready.set()
    logger.info("server ready: %d series", len(state.engine.index))


async def _pipeline_loop(state: ServerState, every_ms: int, window_ms: int) -> None:
    while True:
        await asyncio.sleep(every_ms / 1000)
        if state.data_range is None:
            continue
        end = state.data_range[1]
        try:
            await _locked(state, _run_pipeline, state, end - window_ms, end, 10_000)
        except Exception:
            logger.exception("periodic pipeline run failed")


def _run_pipeline(state: ServerState, start_ms: int, end_ms: int, step_ms: int) -> Any:
    result = state.engine.run_pipeline(start_ms, end_ms, step_ms)
    state.last_pipeline_ms = state.clock()
    state.engine.escalate(end_ms)
    state.diagnoses.clear()
    _sync_alerts(state)
    return result


def _sync_alerts(state: ServerState) -> None:
    end = state.data_range[1] if state.data_range else None
    state.desk.sync(state.engine.alerts(), end, state.clock())


async def _locked(state: ServerState, fn: Callable[..., Any], *args: Any) -> Any:
    def run() -> Any:
        with state.lock:
            return fn(*args)

    return await anyio.to_thread.run_sync(run)


# --- helpers for handlers ----------------------------------------------------------


async def _params(request: Request) -> Params:
    form: list[tuple[str, str]] = []
    if request.method == "POST":
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            body = await request.body()
            try:
                form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError:
                raise ApiError(400, "bad_data", "form body is not UTF-8") from None
    return Params(list(request.query_params.multi_items()), form)


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DeskError(400, f"body is not JSON: {exc}") from None


def _range_params(p: Params, state: ServerState) -> tuple[int, int]:
    """``start``/``end`` with defaults from the stored data (last 24 hours of it)."""
    end_default = state.data_range[1] if state.data_range else state.clock()
    end = parse_time(p.get("end"), "end", end_default)
    start = parse_time(p.get("start"), "start", end - 24 * 3_600_000)
    if end < start:
        raise ApiError(
            400,
            "bad_data",
            "invalid parameter 'end': end timestamp must not be before start time",
        )
    return start, end


def _limit_series(state: ServerState, n: int, what: str) -> None:
    if n > state.max_series:
        raise ApiError(
            422,
            "execution",
            f"{what} would return {n} series, more than the limit of "
            f"max_series={state.max_series}; narrow the selector or the aggregation",
        )


def _selector_matchers(text: str):
    """Store matchers from a ``match[]`` series selector."""
    import promql_parser as pp

    from obscore.store.query import Matcher

    try:
        node = pp.parse(text)
    except BaseException as exc:  # promql-parser raises or panics
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise ApiError(
            400,
            "bad_data",
            f"invalid parameter 'match[]': cannot parse {text!r}: {exc}",
        ) from None
    if not isinstance(node, pp.VectorSelector):
        raise ApiError(
            400,
            "bad_data",
            f"invalid parameter 'match[]': {text!r} is not a series selector",
        )
    out = [Matcher("__name__", "=", node.name)] if node.name else []
    ops = [
        (pp.MatchOp.Equal, "="),
        (pp.MatchOp.NotEqual, "!="),
        (pp.MatchOp.Re, "=~"),
        (pp.MatchOp.NotRe, "!~"),
    ]
    for m in node.matchers.matchers:
        try:
            out.append(Matcher(m.name, next(t for k, t in ops if k == m.op), m.value))
        except ValueError as exc:
            raise ApiError(
                400, "bad_data", f"invalid parameter 'match[]': {exc}"
            ) from None
    if not any(
        m.op in ("=", "=~") and m.value != "" or m.op in ("!=", "!~") and m.value == ""
        for m in out
    ):
        raise ApiError(
            400, "bad_data", "match[] must contain at least one non-empty matcher"
        )
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _declare(
    engine: Engine,
    names: Iterable[str],
    kinds: Mapping[str, str],
    pushed: set[str] | None = None,
) -> None:
    """Declare pushed metric names the config does not know (``declare=True``).

    A name's kind comes from ``kinds`` (family name -> ``counter``,
    ``gauge``, ``histogram``, ``summary``, as remote-write metadata says);
    the parts of a histogram or summary (``_bucket``, ``_sum``, ``_count``)
    and, without metadata, names ending in ``_total`` are counters; the
    rest are gauges.  Names declared here are added to ``pushed``; a name
    already in it is declared again when ``kinds`` says otherwise.
    """
    parts = ("_bucket", "_sum", "_count")
    for name in names:
        kind = kinds.get(name)
        if kind is None:
            family = next(
                (name.removesuffix(p) for p in parts if name.endswith(p)), name
            )
            kind = "counter" if kinds.get(family) in ("histogram", "summary") else None
        try:
            known = engine.spec(name)
        except UnknownMetricError:
            known = None
        if known is not None:
            if pushed is None or name not in pushed or kind is None:
                continue
            if known.is_counter == (kind == "counter"):
                continue
        if kind is None:
            kind = "counter" if name.endswith(("_total", *parts)) else "gauge"
        spec = MetricSpec(
            name, MetricKind.COUNTER if kind == "counter" else MetricKind.GAUGE
        )
        if known is None:
            engine.config.metrics.setdefault(name, spec)
            logger.info("metric declared from a push: %s (%s)", name, spec.kind.value)
        else:
            engine.config.metrics[name] = spec
            logger.info(
                "metric declared again from remote-write metadata: %s (%s, was %s)",
                name,
                spec.kind.value,
                known.kind.value,
            )
        if pushed is not None:
            pushed.add(name)


# --- handlers ------------------------------------------------------------------------


class _Handlers:
    def __init__(self, state: ServerState) -> None:
        self.s = state

    # -- health, self-metrics, dashboard --

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def healthy(self, request: Request) -> Response:
        return PlainTextResponse("obscore is healthy.\n")

    async def ready(self, request: Request) -> Response:
        if not self.s.ready.is_set():
            return PlainTextResponse("obscore is loading.\n", status_code=503)
        return PlainTextResponse("obscore is ready.\n")

    async def metrics(self, request: Request) -> Response:
        text = await _locked(self.s, self._metrics_text)
        return PlainTextResponse(
            text, media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    def _metrics_text(self) -> str:
        e, s = self.s.engine, self.s
        lines = [
            "# HELP obscore_samples_ingested_total Samples stored in the hot tier.",
            "# TYPE obscore_samples_ingested_total counter",
            f"obscore_samples_ingested_total {e.hot.samples_stored}",
            "# HELP obscore_samples_dropped_total Samples dropped at ingest, by reason.",
            "# TYPE obscore_samples_dropped_total counter",
        ]
        for reason, n in sorted(e.dropped.items()):
            lines.append(
                f'obscore_samples_dropped_total{{reason="{_escape(reason)}"}} {n}'
            )
        lines += [
            "# HELP obscore_series Series in the index.",
            "# TYPE obscore_series gauge",
            f"obscore_series {len(e.index)}",
            "# HELP obscore_wal_written_bytes_total Bytes appended to the write-ahead log.",
            "# TYPE obscore_wal_written_bytes_total counter",
            f"obscore_wal_written_bytes_total {e.wal.bytes_written if e.wal is not None else 0}",
            "# HELP obscore_alerts Alerts known to the alert desk, by state.",
            "# TYPE obscore_alerts gauge",
        ]
        now = s.clock()
        states: dict[str, int] = {"active": 0, "suppressed": 0, "resolved": 0}
        for rec in s.desk.records.values():
            st = s.desk.state_of(rec, now)["state"]
            states[st] = states.get(st, 0) + 1
        lines += [
            f'obscore_alerts{{state="{k}"}} {v}' for k, v in sorted(states.items())
        ]
        lines += [
            "# HELP obscore_http_requests_refused_total Requests refused before routing, by reason.",
            "# TYPE obscore_http_requests_refused_total counter",
        ]
        for reason in ("too_large", "unauthorized"):
            lines.append(
                f'obscore_http_requests_refused_total{{reason="{reason}"}} {s.refused.get(reason, 0)}'
            )
        lines += [
            "# HELP obscore_http_requests_total Requests answered, by handler and status code.",
            "# TYPE obscore_http_requests_total counter",
        ]
        for (handler, code), n in sorted(s.requests.items()):
            lines.append(
                f'obscore_http_requests_total{{code="{code}",handler="{_escape(handler)}"}} {n}'
            )
        lines += [
            "# HELP obscore_ready Whether the server finished loading.",
            "# TYPE obscore_ready gauge",
            f"obscore_ready {int(s.ready.is_set())}",
        ]
        return "\n".join(lines) + "\n"

    # -- ingest --

    async def push(self, request: Request) -> Response:
        body = await request.body()
        fmt = (
            "openmetrics"
            if "openmetrics" in request.headers.get("content-type", "")
            else None
        )
        now = self.s.clock()

        def run():
            e = self.s.engine
            if self.s.declare:
                res = e.ingest_exposition(body, format=fmt, ts_ms=now, declare=True)
            else:
                res = e.ingest_exposition(body, format=fmt, ts_ms=now)
            # lines may carry their own timestamps: the store knows the range
            return res, e.hot.time_range() if res.stored else None

        try:
            res, rng = await _locked(self.s, run)
        except (UnknownMetricError, ObscoreError, ValueError) as exc:
            raise ApiError(400, "bad_data", str(exc)) from None
        if rng is not None:
            self.s.saw(*rng)
        return JSONResponse(_ingest_json(res))

    async def import_arrow(self, request: Request) -> Response:
        body = await request.body()
        s = self.s

        # NOTE: the stream is read in the worker thread, before the engine lock
        # is taken: on the event loop, reading a 4.8 MB batch of 200,000 samples
        # held up every other request for a few ms (benchmarks/test_server_load.py).
        def run():
            try:
                with s.arrow_headers_lock:
                    table, index = _read_arrow(body, s.arrow_headers)
            except (pa.ArrowException, ValueError, TypeError, KeyError) as exc:
                raise ApiError(400, "bad_data", f"arrow: {exc}") from None
            with s.lock:
                if s.declare:
                    _declare(s.engine, index.metric_names, {})
                res = s.engine.ingest(table, index)
            rng = None
            if table.num_rows:
                ts = table["ts"].to_numpy()
                rng = (int(ts.min()), int(ts.max()))
            return res, rng

        try:
            res, rng = await anyio.to_thread.run_sync(run)
        except (ObscoreError, ValueError, TypeError) as exc:
            raise ApiError(400, "bad_data", str(exc)) from None
        if rng is not None:
            s.saw(*rng)
        return JSONResponse(_ingest_json(res))

    async def remote_write(self, request: Request) -> Response:
        body = await request.body()
        try:
            if request.headers.get("content-encoding", "snappy").lower() != "snappy":
                raise remote_write.RemoteWriteError("Content-Encoding must be snappy")
            raw = remote_write.decompress(body, 4 * self.s.max_body_bytes)
            req = remote_write.decode(raw)
        except remote_write.RemoteWriteError as exc:
            logger.warning("remote write refused: %s", exc)
            raise ApiError(400, "bad_data", f"remote write: {exc}") from None
        if not req.n_samples:
            if req.kinds:

                def learn() -> None:
                    self.s.kinds.update(req.kinds)
                    if self.s.declare:
                        names = sorted(self.s.pushed)
                        _declare(self.s.engine, names, self.s.kinds, self.s.pushed)

                await _locked(self.s, learn)
            return Response(status_code=204)
        index = SeriesIndex()
        ids = np.array(
            [index.add(name, labels) for name, labels in req.series], np.uint64
        )
        pos, ts, values = req.columns()
        table = sample_table(ids[pos], ts, values)

        def run():
            self.s.kinds.update(req.kinds)
            if self.s.declare:
                names = index.metric_names
                _declare(self.s.engine, names, self.s.kinds, self.s.pushed)
            return self.s.engine.ingest(table, index)

        try:
            res = await _locked(self.s, run)
        except (ObscoreError, ValueError) as exc:
            raise ApiError(400, "bad_data", f"remote write: {exc}") from None
        self.s.saw(int(ts.min()), int(ts.max()))
        logger.debug(
            "remote write: %d samples stored, %d dropped", res.stored, res.n_dropped
        )
        return Response(status_code=204)

    # -- Prometheus query API --

    async def query(self, request: Request) -> Response:
        p = await _params(request)
        text = p.get("query")
        if not text:
            raise ApiError(400, "bad_data", "invalid parameter 'query': empty query")
        at = parse_time(p.get("time"), "time", self.s.clock())
        table = await self._promql(text, time_ms=at)
        return JSONResponse(success(query_data(table, is_range=False)))

    async def query_range(self, request: Request) -> Response:
        p = await _params(request)
        text = p.get("query")
        if not text:
            raise ApiError(400, "bad_data", "invalid parameter 'query': empty query")
        start = parse_time(p.get("start"), "start")
        end = parse_time(p.get("end"), "end")
        step = parse_step(p.get("step"))
        check_range(start, end, step)
        table = await self._promql(text, start_ms=start, end_ms=end, step_ms=step)
        return JSONResponse(success(query_data(table, is_range=True)))

    async def _promql(self, text: str, **times: int) -> pa.Table:
        try:
            table = await _locked(
                self.s, lambda: self.s.engine.query_promql(text, **times)
            )
        except UnsupportedQueryError as exc:
            raise ApiError(422, "execution", str(exc)) from None
        except ObscoreError as exc:
            msg = str(exc)
            if msg.startswith("cannot parse"):
                raise ApiError(400, "bad_data", msg) from None
            raise ApiError(422, "execution", msg) from None
        except ValueError as exc:
            raise ApiError(400, "bad_data", str(exc)) from None
        # a series has at least one row: fewer rows than the limit cannot exceed it
        if table.num_rows > self.s.max_series:
            _limit_series(self.s, count_series(table), "query")
        return table

    def _matching(self, p: Params):
        """``(series_id, labels)`` of every series matching any ``match[]`` (all without)."""
        selectors = p.getlist("match[]")
        sets = [_selector_matchers(t) for t in selectors]
        q = self.s.engine.queries
        if not sets:
            return [
                (
                    sid,
                    self.s.engine.index.labels(sid).with_(
                        __name__=self.s.engine.index.name(sid)
                    ),
                )
                for sid in self.s.engine.index
            ]
        seen: dict[int, Any] = {}
        for ms in sets:
            for sid, labels in q.series(ms):
                seen[sid] = labels
        return list(seen.items())

    async def series(self, request: Request) -> Response:
        p = await _params(request)
        if not p.getlist("match[]"):
            raise ApiError(400, "bad_data", "no match[] parameter provided")
        found = await _locked(self.s, self._matching, p)
        _limit_series(self.s, len(found), "series request")
        data = sorted(
            (dict(labels) for _, labels in found), key=lambda d: sorted(d.items())
        )
        return JSONResponse(success(data))

    async def labels(self, request: Request) -> Response:
        p = await _params(request)
        found = await _locked(self.s, self._matching, p)
        names = sorted({k for _, labels in found for k in labels})
        return JSONResponse(success(names))

    async def label_values(self, request: Request) -> Response:
        name = request.path_params["name"]
        if not _LABEL_NAME.match(name):
            raise ApiError(400, "bad_data", f"invalid label name: {name!r}")
        p = await _params(request)
        found = await _locked(self.s, self._matching, p)
        values = sorted({labels[name] for _, labels in found if labels.get(name)})
        return JSONResponse(success(values))

    async def metadata(self, request: Request) -> Response:
        # As Prometheus: ``metric`` keeps one metric name, ``limit`` (when
        # not negative) caps how many metrics are answered.
        p = await _params(request)
        limit_text = p.get("limit") or ""
        try:
            limit = int(limit_text) if limit_text else -1
        except ValueError:
            raise ApiError(400, "bad_data", "limit must be a number") from None
        metric = p.get("metric") or ""
        specs = sorted(dict(self.s.engine.config.metrics).items())
        data = {
            name: [{"type": spec.kind.value, "help": spec.help, "unit": spec.unit}]
            for name, spec in specs
            if not metric or name == metric
        }
        if limit >= 0:
            data = dict(list(data.items())[:limit])
        return JSONResponse(success(data))

    async def buildinfo(self, request: Request) -> Response:
        from obscore import __version__

        return JSONResponse(
            success(
                {
                    "version": "2.42.0",
                    "revision": f"obscore-{__version__}",
                    "branch": "obscore",
                    "buildUser": "obscore",
                    "buildDate": "",
                    "goVersion": "none",
                }
            )
        )

    async def exemplars(self, request: Request) -> Response:
        return JSONResponse(success([]))

    async def rules(self, request: Request) -> Response:
        return JSONResponse(success({"groups": []}))

    # -- Alertmanager v2 --

    async def am_status(self, request: Request) -> Response:
        return JSONResponse(
            {
                "cluster": {"status": "disabled", "peers": []},
                "versionInfo": {
                    "version": "0.25.0",
                    "revision": "obscore",
                    "branch": "obscore",
                    "buildUser": "obscore",
                    "buildDate": "",
                    "goVersion": "none",
                },
                "config": {"original": ""},
                "uptime": "",
            }
        )

    async def am_alerts(self, request: Request) -> Response:
        desk, now = self.s.desk, self.s.clock()
        if request.method == "POST":
            items = await _json_body(request)
            if not isinstance(items, list) or not all(
                isinstance(i, dict) for i in items
            ):
                raise DeskError(400, "body must be a JSON list of alerts")
            await _locked(self.s, desk.post, items, now)
            return JSONResponse(None)
        q = request.query_params

        def flag(name: str, default: bool) -> bool:
            value = q.get(name)
            return default if value is None else value.lower() in ("1", "true", "yes")

        try:
            matchers = (
                parse_matchers(q.getlist("filter")) if q.getlist("filter") else ()
            )
        except ConfigError as exc:
            raise DeskError(400, str(exc)) from None

        def run():
            _sync_alerts(self.s)
            return desk.alerts_json(
                now,
                active=flag("active", True),
                silenced=flag("silenced", True),
                inhibited=flag("inhibited", True),
                resolved=flag("resolved", False),
                matchers=matchers,
            )

        return JSONResponse(await _locked(self.s, run))

    async def am_groups(self, request: Request) -> Response:
        now = self.s.clock()
        return JSONResponse(await _locked(self.s, self.s.desk.groups, now))

    async def am_silences(self, request: Request) -> Response:
        desk, now = self.s.desk, self.s.clock()
        if request.method == "POST":
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise DeskError(400, "body must be a JSON object")
            sid = await _locked(self.s, desk.add_silence, body, now)
            return JSONResponse({"silenceID": sid})
        return JSONResponse(await _locked(self.s, desk.silences, now))

    async def am_silence(self, request: Request) -> Response:
        desk, now, sid = self.s.desk, self.s.clock(), request.path_params["sid"]
        if request.method == "DELETE":
            await _locked(self.s, desk.expire_silence, sid, now)
            return JSONResponse(None)
        return JSONResponse(await _locked(self.s, desk.silence, sid, now))

    # -- obscore: acknowledge, approve, pipeline --

    async def acknowledge(self, request: Request) -> Response:
        body = await _json_body(request) if await request.body() else {}
        by = str(body.get("by", "")) if isinstance(body, dict) else ""
        if not by:
            raise DeskError(400, "acknowledge: say who acknowledges in 'by'")
        comment = str(body.get("comment", ""))
        fp, now = request.path_params["fp"], self.s.clock()

        def run():
            if fp not in self.s.desk.records:
                raise DeskError(404, f"alert {fp!r} not found")
            # the engine keeps the acknowledgement and stops the alert's escalation
            self.s.engine.acknowledge(fp, by, comment, now)
            return self.s.desk.acknowledge(fp, by, comment, now)

        return JSONResponse(await _locked(self.s, run))

    async def escalations(self, request: Request) -> Response:
        """Each escalated alert: its policy, the level paged, its state and acknowledgement."""
        return JSONResponse(await _locked(self.s, self.s.engine.escalator.status))

    async def actions(self, request: Request) -> Response:
        return JSONResponse(await _locked(self.s, self.s.desk.actions))

    async def decide(self, request: Request) -> Response:
        verdict = request.path_params["verdict"]
        if verdict not in ("approve", "reject"):
            raise DeskError(404, f"unknown verdict {verdict!r}; use approve or reject")
        body = await _json_body(request) if await request.body() else {}
        by = str(body.get("by", "")) if isinstance(body, dict) else ""
        if not by:
            raise DeskError(400, f"{verdict}: say who decides in 'by'")
        aid, now = request.path_params["aid"], self.s.clock()
        await _locked(self.s, self.s.desk.decide, aid, by, verdict == "approve", now)
        return JSONResponse({"id": aid, "verdict": verdict, "by": by})

    async def pipeline(self, request: Request) -> Response:
        p = await _params(request)
        start, end = _range_params(p, self.s)
        step = parse_step(p.get("step") or "10s")
        check_range(start, end, step)
        result = await _locked(self.s, _run_pipeline, self.s, start, end, step)
        return JSONResponse(
            {
                "anomalies": len(result.anomalies),
                "incidents": len(result.incidents),
                "new_alerts": len(result.alerts),
            }
        )

    # -- obscore: change events and the service catalogue --

    async def events(self, request: Request) -> Response:
        """GET: change events (``service``, ``start``, ``end`` filter); POST: record one."""
        from obscore.catalogue import event_from_mapping

        engine = self.s.engine
        if request.method == "POST":
            body = await _json_body(request)
            if not isinstance(body, dict):
                raise DeskError(400, "body must be a JSON object")
            body = dict(body)
            if "ts_ms" in body:
                body["ts"] = body.pop("ts_ms")
            if "at" in body:
                body["ts"] = parse_time(str(body.pop("at")), "at")
            body.setdefault("ts", self.s.clock())
            try:
                event = event_from_mapping(body)
                e = event
                event = await _locked(
                    self.s,
                    lambda: engine.record_event(
                        e.service, e.kind, e.description, ts_ms=e.ts, region=e.region
                    ),
                )
            except ConfigError as exc:
                raise DeskError(400, str(exc)) from None
            return JSONResponse(_event_json(event))
        p = await _params(request)
        start = parse_time(p.get("start"), "start", -(2**62))
        end = parse_time(p.get("end"), "end", 2**62)
        service = p.get("service")

        def run():
            engine._refresh_events()
            return [
                _event_json(e)
                for e in engine.catalogue.events
                if start <= e.ts <= end and (not service or e.service == service)
            ]

        return JSONResponse(await _locked(self.s, run))

    async def catalogue(self, request: Request) -> Response:
        """GET: the services; POST: add or replace one service or a list of them."""
        from obscore.catalogue import service_from_mapping, service_to_mapping

        engine = self.s.engine
        if request.method == "POST":
            body = await _json_body(request)
            items = body if isinstance(body, list) else [body]
            try:
                services = [service_from_mapping(item) for item in items]
            except ConfigError as exc:
                raise DeskError(400, str(exc)) from None

            def add():
                for svc in services:
                    engine.add_service(svc)

            await _locked(self.s, add)
            return JSONResponse([service_to_mapping(svc) for svc in services])

        def run():
            cat = engine.catalogue
            return [
                {**service_to_mapping(svc), "callers": list(cat.callers(name))}
                for name, svc in sorted(cat.services.items())
            ]

        return JSONResponse(await _locked(self.s, run))

    # -- obscore: dashboard data --

    async def status(self, request: Request) -> Response:
        s = self.s
        res = s.engine.last_result
        return JSONResponse(
            {
                "ready": s.ready.is_set(),
                "now_ms": s.clock(),
                "data_start_ms": s.data_range[0] if s.data_range else None,
                "data_end_ms": s.data_range[1] if s.data_range else None,
                "series": len(s.engine.index),
                "samples": s.engine.hot.samples_stored,
                "token_required": s.token is not None,
                "max_series": s.max_series,
                "alerts": len(s.engine.alert_book.alerts),
                "pipeline": None
                if res is None
                else {
                    "ran_ms": s.last_pipeline_ms,
                    "anomalies": len(res.anomalies),
                    "incidents": len(res.incidents),
                    "live": s.engine.is_live,
                    "cursor_ms": s.engine.pipeline_cursor_ms,
                },
            }
        )

    def _catalogue(self) -> tuple[list[str], list[str]]:
        cat = self.s.engine.catalogue
        services = list(cat.services)
        regions = sorted({r for svc in cat.services.values() for r in svc.regions})
        if not services or not regions:
            found = self.s.engine.queries.series([])
            services = services or sorted(
                {lab["service"] for _, lab in found if lab.get("service")}
            )
            regions = regions or sorted(
                {lab["region"] for _, lab in found if lab.get("region")}
            )
        return services, regions

    async def overview(self, request: Request) -> Response:
        p = await _params(request)
        start, end = _range_params(p, self.s)
        now = self.s.clock()

        def run():
            _sync_alerts(self.s)
            services, regions = self._catalogue()
            cells = {
                (svc, reg): {
                    "service": svc,
                    "region": reg,
                    "health": "ok",
                    "alerts": 0,
                    "firing": 0,
                    "anomalies": 0,
                    "max_severity": 0.0,
                }
                for svc in services
                for reg in regions
            }
            for rec in self.s.desk.records.values():
                cell = cells.get((rec.labels.get("service"), rec.labels.get("region")))
                if cell is None or rec.end_ms < start or rec.start_ms > end:
                    continue
                cell["alerts"] += 1
                sev = float(rec.annotations.get("severity", "0") or 0)
                cell["max_severity"] = max(cell["max_severity"], sev)
                st = self.s.desk.state_of(rec, now)["state"]
                if st == "active":
                    cell["firing"] += 1
            res = self.s.engine.last_result
            for a in res.anomalies if res is not None else ():
                cell = cells.get((a.service, a.region))
                if cell is not None and a.end_ms >= start and a.start_ms <= end:
                    cell["anomalies"] += 1
            for cell in cells.values():
                if cell["firing"]:
                    cell["health"] = "critical"
                elif cell["alerts"] or cell["anomalies"]:
                    cell["health"] = "warning"
            return {
                "services": services,
                "regions": regions,
                "cells": list(cells.values()),
                "start_ms": start,
                "end_ms": end,
            }

        return JSONResponse(await _locked(self.s, run))

    async def service(self, request: Request) -> Response:
        name = request.path_params["name"]
        p = await _params(request)
        start, end = _range_params(p, self.s)
        step = parse_step(p.get("step") or "1m")
        now = self.s.clock()

        def run():
            services, _ = self._catalogue()
            if name not in services:
                raise ApiError(404, "not_found", f"unknown service {name!r}")
            _sync_alerts(self.s)
            res = self.s.engine.last_result
            anomalies = [
                {
                    "metric": a.metric,
                    "signal": a.signal,
                    "labels": dict(a.labels),
                    "start_ms": a.start_ms,
                    "end_ms": a.end_ms,
                    "peak_ms": a.peak_ms,
                    "peak_z": _finite(a.peak_z),
                    "score": _finite(a.score),
                }
                for a in (res.anomalies if res is not None else ())
                if a.service == name and a.end_ms >= start and a.start_ms <= end
            ]
            alerts = [
                self.s.desk.gettable(rec, now)
                for rec in self.s.desk.records.values()
                if rec.labels.get("service") == name
                and rec.end_ms >= start
                and rec.start_ms <= end
            ]
            specs = self.s.engine.config.metrics
            charts = [_chart(m, name, step) for m in _DASHBOARD_METRICS if m in specs]
            return {
                "service": name,
                "start_ms": start,
                "end_ms": end,
                "step_ms": step,
                "charts": charts,
                "anomalies": anomalies,
                "alerts": alerts,
            }

        return JSONResponse(await _locked(self.s, run))

    async def incidents(self, request: Request) -> Response:
        p = await _params(request)
        start, end = _range_params(p, self.s)

        def run():
            res = self.s.engine.last_result
            out = []
            for inc in res.incidents if res is not None else ():
                if inc.end_ms < start or inc.start_ms > end:
                    continue
                first = inc.first
                out.append(
                    {
                        "id": inc.id,
                        "start_ms": inc.start_ms,
                        "end_ms": inc.end_ms,
                        "services": sorted(inc.services),
                        "anomalies": len(inc.anomalies),
                        "first_signal": first.signal,
                        "reasons": list(inc.reasons),
                    }
                )
            out.sort(key=lambda i: -i["start_ms"])
            return out

        return JSONResponse(await _locked(self.s, run))

    async def incident(self, request: Request) -> Response:
        iid = request.path_params["iid"]

        def run():
            res = self.s.engine.last_result
            inc = next((i for i in (res.incidents if res else ()) if i.id == iid), None)
            if inc is None:
                raise ApiError(
                    404, "not_found", f"no incident {iid} in the last pipeline run"
                )
            cached = self.s.diagnoses.get(iid)
            # a live pipeline grows incidents: a changed one is diagnosed again
            if cached is not None and cached["version"] == _incident_version(inc):
                return cached
            diag = self.s.engine.diagnose(inc)
            _sync_alerts(self.s)
            now = self.s.clock()
            alerts = [
                self.s.desk.gettable(rec, now)
                for rec in self.s.desk.records.values()
                if rec.annotations.get("incident_id") == str(inc.id)
            ]
            severity = max(
                (float(a["annotations"].get("severity", 0) or 0) for a in alerts),
                default=0.0,
            )
            out = {
                "id": inc.id,
                "start_ms": inc.start_ms,
                "end_ms": inc.end_ms,
                "services": sorted(inc.services),
                "reasons": list(inc.reasons),
                "anomalies": [
                    {
                        "metric": a.metric,
                        "signal": a.signal,
                        "labels": dict(a.labels),
                        "start_ms": a.start_ms,
                        "end_ms": a.end_ms,
                        "peak_z": _finite(a.peak_z),
                    }
                    for a in sorted(inc.anomalies, key=lambda a: a.start_ms)
                ],
                "diagnosis": {
                    "window": list(diag.window),
                    "candidates": [
                        {
                            "service": c.service,
                            "metric": c.metric,
                            "confidence": _finite(c.confidence),
                            "evidence": {k: _finite(v) for k, v in c.evidence.items()},
                            "pattern": c.pattern,
                            "similarity": _finite(c.similarity),
                            "steps": list(c.steps),
                        }
                        for c in diag.candidates
                    ],
                },
                "version": _incident_version(inc),
                "alerts": alerts,
                "evidence": _evidence(self.s.engine, inc, diag),
                "runbook": write_runbook(
                    inc,
                    diag,
                    signals=res.signals,
                    dependencies=self.s.engine.catalogue.dependencies() or None,
                    severity=severity,
                    approval_severity=self.s.engine.config.approval_severity,
                ),
            }
            self.s.diagnoses[iid] = out
            return out

        return JSONResponse(await _locked(self.s, run))


def _event_json(event: Any) -> dict[str, Any]:
    return {
        "ts_ms": event.ts,
        "service": event.service,
        "kind": event.kind,
        "description": event.description,
        "region": event.region,
        "text": str(event),
    }


def _finite(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _chart(metric: str, service: str, step_ms: int) -> dict[str, str]:
    """The PromQL behind one dashboard chart of a service, per region."""
    sel = f'{{service="{_escape(service)}"}}'
    w = f"{max(step_ms, 60_000) // 1000}s"
    queries = {
        "cpu_usage": (
            f"max by (region) (max_over_time(cpu_usage{sel}[{w}]))",
            "CPU usage (%)",
        ),
        "memory_usage": (
            f"max by (region) (max_over_time(memory_usage{sel}[{w}]))",
            "memory usage (bytes)",
        ),
        "network_throughput": (
            f"sum by (region) (rate(network_throughput{sel}[{w}]))",
            "network throughput (bytes/s)",
        ),
        "request_latency": (
            f"histogram_quantile(0.5, sum by (region, le) (rate(request_latency_bucket{sel}[{w}])))",
            "request latency, median (ms)",
        ),
        "error_rate": (
            f"sum by (region) (rate(error_rate{sel}[{w}]))",
            "errors per second",
        ),
    }
    query, title = queries[metric]
    return {"metric": metric, "title": title, "query": query}


def _incident_version(inc: Any) -> list[int]:
    return [inc.start_ms, inc.end_ms, len(inc.anomalies)]


def _evidence(engine: Engine, inc: Any, diag: Any, limit: int = 4) -> dict[str, Any]:
    """The charts of an incident page: its top causes' and strongest signals.

    The window runs from an hour before the incident to an hour after it
    (at most to the newest sample); the step keeps a chart near 200 points.
    """
    specs = engine.config.metrics
    pairs: list[tuple[str, str]] = []
    ranked = sorted(inc.anomalies, key=lambda a: -float(np.nan_to_num(abs(a.peak_z))))
    candidates = [(c.service, c.metric) for c in diag.candidates[:2]]
    for service, metric in candidates + [(a.service, a.metric) for a in ranked]:
        known = metric in _DASHBOARD_METRICS or (
            metric in specs and not specs[metric].is_histogram
        )
        if service and known and metric in specs and (service, metric) not in pairs:
            pairs.append((service, metric))
    rng = engine.hot.time_range()
    end = inc.end_ms + 3_600_000
    if rng is not None:
        end = max(min(end, rng[1]), inc.end_ms)
    start = inc.start_ms - 3_600_000
    step = max(60_000, (end - start) // 200 // 60_000 * 60_000)
    charts = []
    for service, metric in pairs[:limit]:
        chart = (
            _chart(metric, service, step)
            if metric in _DASHBOARD_METRICS
            else _plain_chart(metric, service, step, specs[metric].is_counter)
        )
        charts.append({**chart, "service": service})
    return {"start_ms": start, "end_ms": end, "step_ms": step, "charts": charts}


def _plain_chart(metric: str, service: str, step_ms: int, is_counter: bool) -> dict[str, str]:
    """A chart of a metric outside the dashboard's defaults, per region."""
    sel = f'{{service="{_escape(service)}"}}'
    w = f"{max(step_ms, 60_000) // 1000}s"
    if is_counter:
        query = f"sum by (region) (rate({metric}{sel}[{w}]))"
        title = f"{metric} per second"
    else:
        query = f"max by (region) (max_over_time({metric}{sel}[{w}]))"
        title = metric
    return {"metric": metric, "title": title, "query": query}


def _ingest_json(res: Any) -> dict[str, Any]:
    return {
        "stored": res.stored,
        "dropped": dict(res.dropped),
        "first_bad": dict(res.first_bad),
    }


def _read_arrow(
    body: bytes, headers: dict[bytes, Any] | None = None
) -> tuple[pa.Table, SeriesIndex]:
    """A sample table and its series index from an Arrow IPC stream.

    Two layouts are accepted:

    - ``series_id: uint64, ts: int64, value: float64`` with schema metadata
      ``obscore.series``: a JSON list of ``{"id", "name", "labels"}``.  The
      ids are the sender's; they are mapped to the engine's own.
    - ``name: string, ts, value`` and any other string columns as labels
      (null or empty: absent), the shape ``query`` answers in.

    ``headers`` keeps the id mapping of the last few ``obscore.series``
    headers by their bytes: a sender repeating its header (the usual case)
    pays for reading it once, not on every batch.
    """
    import pyarrow.compute as pc

    table = pa.ipc.open_stream(body).read_all()
    index = SeriesIndex()
    names = table.column_names
    for col, typ in (("ts", pa.int64()), ("value", pa.float64())):
        if col not in names:
            raise ValueError(f"column {col!r} is missing")
        if table[col].type != typ:
            raise TypeError(f"column {col!r} must be {typ}, got {table[col].type}")
        if table[col].null_count:
            raise ValueError(f"column {col!r} has {table[col].null_count} nulls")
    if "series_id" in names:
        meta = (table.schema.metadata or {}).get(b"obscore.series")
        if meta is None:
            raise ValueError("a series_id batch needs schema metadata 'obscore.series'")
        known = headers.get(meta) if headers is not None else None
        if known is not None:
            return _map_ids(table, *known), known[2]
        header = json.loads(meta)
        if not isinstance(header, list):
            raise TypeError("'obscore.series' must be a JSON list")
        mapping: dict[int, int] = {}
        for i, item in enumerate(header):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise TypeError(
                    f"'obscore.series'[{i}] needs 'id', 'name' and 'labels'"
                )
            labels = item.get("labels") or {}
            if not isinstance(labels, dict):
                raise TypeError(f"'obscore.series'[{i}]: labels must be an object")
            mapping[int(item["id"])] = index.add(
                item["name"], {str(k): str(v) for k, v in labels.items()}
            )
        keys = np.fromiter(mapping, np.uint64, len(mapping))
        ours = np.fromiter(mapping.values(), np.uint64, len(mapping))
        order = np.argsort(keys)
        known = (keys[order], ours[order], index)
        out = _map_ids(table, *known)
        if headers is not None:
            while len(headers) >= ARROW_HEADERS_KEPT:
                headers.pop(next(iter(headers)))
            headers[meta] = known
        return out, index
    elif "name" in names:
        label_cols = [c for c in names if c not in ("name", "ts", "value")]
        for c in ["name", *label_cols]:
            if not pa.types.is_string(table[c].type):
                raise TypeError(
                    f"label column {c!r} must be string, got {table[c].type}"
                )
        keys_t = pa.table(
            {c: pc.fill_null(table[c], "") for c in ["name", *label_cols]}
        )
        uniq = keys_t.group_by(keys_t.column_names).aggregate([])
        sid_of = {}
        for row in uniq.to_pylist():
            name = row.pop("name")
            if not name:
                raise ValueError("column 'name' has empty or null values")
            sid_of[(name, *(row[c] for c in label_cols))] = index.add(
                name, {k: v for k, v in row.items() if v}
            )
        cols = [keys_t[c].to_pylist() for c in keys_t.column_names]
        ids = np.fromiter((sid_of[k] for k in zip(*cols)), np.uint64, table.num_rows)
    else:
        raise ValueError("the stream needs a 'series_id' or a 'name' column")
    out = sample_table(ids, table["ts"].to_numpy(), table["value"].to_numpy())
    return out, index


def _map_ids(
    table: pa.Table, keys: np.ndarray, ours: np.ndarray, index: SeriesIndex
) -> pa.Table:
    """The sample table of a series_id batch, the sender's ids (sorted ``keys``) mapped to ``ours``."""
    theirs = table["series_id"].cast(pa.uint64()).to_numpy()
    at = np.searchsorted(keys, theirs)
    at = np.minimum(at, max(len(keys) - 1, 0))
    if len(keys) == 0 or not np.array_equal(keys[at], theirs):
        raise ValueError(
            "series_id holds ids the 'obscore.series' header does not describe"
        )
    return sample_table(ours[at], table["ts"].to_numpy(), table["value"].to_numpy())
