"""Scrape Prometheus targets over HTTP into sample batches.

:func:`scrape_once` fetches a set of targets concurrently, parses what each
returns (text 0.0.4 or OpenMetrics, gzip or not) and turns the samples into
one sample batch.  :class:`Scraper` does the same on each target's own
interval in a background thread and hands every batch to a sink such as
``engine.ingest``.

Like Prometheus, every scrape adds three series of its own, written at the
scrape's start time with the target labels:

==========================  ==============================================
``up``                      1 when the target answered with a parseable
                            exposition, else 0
``scrape_duration_seconds``  seconds from connecting to the last byte read
``scrape_samples_scraped``  samples the exposition held (0 on failure)
==========================  ==============================================

Every series, scraped or synthetic, carries the target labels ``job`` and
``instance``.  A scraped label of the same name is kept as ``exported_job``
or ``exported_instance``, as Prometheus does when ``honor_labels`` is off.
"""

from __future__ import annotations

import functools
import heapq
import http.client
import logging
import queue
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Self, cast
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from obscore.errors import ConfigError, InvalidSampleError
from obscore.ingest.exposition import (
    ACCEPT_HEADER,
    ParseResult,
    format_from_content_type,
    parse,
)
from obscore.model import (
    SAMPLE_SCHEMA,
    LabelSet,
    MetricKind,
    MetricSpec,
    SeriesIndex,
    sample_table,
)

logger = logging.getLogger(__name__)

USER_AGENT = "obscore-scraper"

#: Specs of the three series every scrape writes.
SYNTHETIC_SPECS = (
    MetricSpec(
        "up",
        MetricKind.GAUGE,
        ("instance", "job"),
        help="1 if the last scrape of the target succeeded, else 0",
        group="system",
    ),
    MetricSpec(
        "scrape_duration_seconds",
        MetricKind.GAUGE,
        ("instance", "job"),
        help="Duration of the scrape",
        unit="seconds",
        group="system",
    ),
    MetricSpec(
        "scrape_samples_scraped",
        MetricKind.GAUGE,
        ("instance", "job"),
        help="Samples the target exposed",
        group="system",
    ),
)

_TARGET_LABELS = ("job", "instance")
_CHUNK_BYTES = 1 << 16
# Extra time a worker gets past its target's timeout before the result is
# written off as unanswered; the socket timeouts normally end it sooner.
_GRACE_S = 0.25


@dataclass(frozen=True, slots=True)
class Target:
    """One ``/metrics`` endpoint and how to scrape it.

    Parameters
    ----------
    url : str
        ``http://`` or ``https://`` address of the exposition.
    job : str
        Value of the ``job`` label on every series of the target.
    interval_s : float
        Seconds between scrape starts (used by :class:`Scraper`).
    timeout_s : float, optional
        Seconds one scrape may take, at most ``interval_s``; None takes the
        default of the caller (:func:`scrape_once`, :class:`Scraper`).
    labels : mapping, optional
        Extra target labels put on every series.
    instance : str, optional
        Value of the ``instance`` label; the URL's ``host:port`` by default.
    max_body_bytes : int
        Largest exposition accepted, after decompression; 64 MiB by default.
    """

    url: str
    job: str = "scrape"
    interval_s: float = 15.0
    timeout_s: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    instance: str | None = None
    max_body_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"target {self.url!r}: expected an http:// or https:// URL with a host"
            )
        try:
            _ = parts.port  # raises on a port that is not a number
        except ValueError:
            raise ConfigError(
                f"target {self.url!r}: the port is not a number"
            ) from None
        if not self.interval_s > 0:
            raise ConfigError(
                f"target {self.url!r}: interval_s must be positive, "
                f"got {self.interval_s!r}"
            )
        if self.timeout_s is not None and not 0 < self.timeout_s <= self.interval_s:
            raise ConfigError(
                f"target {self.url!r}: timeout_s must be in (0, interval_s = "
                f"{self.interval_s!r}], got {self.timeout_s!r}"
            )
        if self.max_body_bytes <= 0:
            raise ConfigError(
                f"target {self.url!r}: max_body_bytes must be positive, "
                f"got {self.max_body_bytes!r}"
            )
        extra = LabelSet(self.labels)
        clash = sorted(set(extra) & set(_TARGET_LABELS))
        if clash:
            raise ConfigError(
                f"target {self.url!r}: labels may not set {clash!r}; "
                "use the job and instance fields"
            )
        object.__setattr__(self, "labels", extra)
        if self.instance is None:
            object.__setattr__(self, "instance", parts.netloc.rsplit("@", 1)[-1])

    @property
    def target_labels(self) -> dict[str, str]:
        """``job``, ``instance`` and the extra labels, as put on every series."""
        return {**self.labels, "job": self.job, "instance": cast(str, self.instance)}


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    """What one scrape of one target gave.

    Attributes
    ----------
    target : Target
        The target scraped.
    ts : int
        Scrape start, ms since the epoch: the time of every sample written
        without one and of the three synthetic samples.
    up : bool
        The target answered with status 200 and an exposition that is empty
        or has at least one valid sample.
    duration_s : float
        Seconds from connecting to the last byte read (``scrape_duration_seconds``).
    n_samples : int
        Samples the exposition held (``scrape_samples_scraped``).
    n_bad_lines : int
        Lines (or whole families) of the exposition dropped as invalid.
    n_new_series : int
        Series the scrape added to the series index, synthetic ones included.
    error : str or None
        Why the scrape failed, or the first bad line of a body that was kept.
    format : str or None
        ``"prometheus"`` or ``"openmetrics"`` when a body was parsed.
    n_bytes : int
        Size of the exposition after decompression.
    specs : tuple of MetricSpec
        Specs of the metrics of this scrape when it added series, else empty;
        hand them to the engine before ingesting the batch.
    body : bytes or None
        The exposition as received (decompressed), when asked for.
    """

    target: Target
    ts: int
    up: bool
    duration_s: float
    n_samples: int = 0
    n_bad_lines: int = 0
    n_new_series: int = 0
    error: str | None = None
    format: str | None = None
    n_bytes: int = 0
    specs: tuple[MetricSpec, ...] = ()
    body: bytes | None = field(default=None, repr=False)

    @property
    def job(self) -> str:
        return self.target.job

    @property
    def instance(self) -> str:
        return cast(str, self.target.instance)


class _Fetched(NamedTuple):
    """A worker's answer: the body parsed, or why there is none."""

    ts: int
    duration_s: float
    parsed: ParseResult | None
    error: str | None
    n_bytes: int
    body: bytes | None


class _ScrapeFailed(Exception):
    """A scrape failed for the reason in the message."""


# --- fetching ----------------------------------------------------------------------


def _read_body(url: str, timeout_s: float, max_bytes: int) -> tuple[bytes, str | None]:
    """GET ``url`` within ``timeout_s`` seconds; the body and its Content-Type."""
    deadline = time.monotonic() + timeout_s
    parts = urlsplit(url)
    host = parts.hostname or ""  # Target checked there is one
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            host,
            parts.port,
            timeout=timeout_s,
            context=ssl.create_default_context(),
        )
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=timeout_s)
    try:
        conn.request(
            "GET",
            path,
            headers={
                "Accept": ACCEPT_HEADER,
                "Accept-Encoding": "gzip",
                "User-Agent": USER_AGENT,
                "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout_s:g}",
            },
        )
        # The connection drops its socket once a response says it closes;
        # keep our own handle to shorten the timeout of each read.
        sock = conn.sock
        _set_remaining(sock, deadline, timeout_s)
        resp = conn.getresponse()
        if resp.status != 200:
            raise _ScrapeFailed(
                f"server returned HTTP status {resp.status} {resp.reason}"
            )
        encoding = (resp.getheader("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("gzip", "identity"):
            raise _ScrapeFailed(f"unsupported Content-Encoding {encoding!r}")

        chunks, size = [], 0
        while True:
            _set_remaining(sock, deadline, timeout_s)
            chunk = resp.read1(_CHUNK_BYTES)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise _ScrapeFailed(f"body exceeds the limit of {max_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        if encoding == "gzip":
            body = _gunzip(body, max_bytes)
        return body, resp.getheader("Content-Type")
    finally:
        conn.close()


def _set_remaining(sock: Any, deadline: float, timeout_s: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"timed out after {timeout_s:g} s")
    if sock is not None:
        sock.settimeout(remaining)


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes)
    except zlib.error as exc:
        raise _ScrapeFailed(f"gzip body cannot be decompressed: {exc}") from None
    if inflater.unconsumed_tail:
        raise _ScrapeFailed(f"decompressed body exceeds the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise _ScrapeFailed("gzip body is truncated")
    return out


def _fetch(target: Target, timeout_s: float, ts: int, keep_body: bool) -> _Fetched:
    """Scrape one target and parse its body; never raises."""
    start = time.perf_counter()
    body: bytes | None = None
    error: str | None = None
    try:
        body, content_type = _read_body(target.url, timeout_s, target.max_body_bytes)
    except _ScrapeFailed as exc:
        error = str(exc)
    except TimeoutError:
        error = f"timed out after {timeout_s:g} s"
    except ConnectionRefusedError:
        error = "connection refused"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    duration_s = time.perf_counter() - start
    if body is None:
        return _Fetched(ts, duration_s, None, error, 0, None)

    kept = body if keep_body else None
    try:
        parsed = parse(
            body,
            format=format_from_content_type(content_type),
            lenient=True,
            default_ts_ms=ts,
            now_ms=ts,
        )
    except InvalidSampleError as exc:
        return _Fetched(ts, duration_s, None, str(exc), len(body), kept)
    if parsed.errors and not parsed.n_samples:  # nothing of it could be read
        line, message = parsed.errors[0]
        return _Fetched(
            ts, duration_s, None, f"line {line}: {message}", len(body), kept
        )
    return _Fetched(ts, duration_s, parsed, None, len(body), kept)


# --- turning answers into a batch --------------------------------------------------


class _TargetIndex:
    """Puts a target's labels on each series it registers in an index.

    :meth:`ParseResult.to_batch` needs nothing of an index but ``add``, so
    this stands in for one; it also counts the series new to ``index``.
    """

    __slots__ = ("index", "n_new", "target_labels")

    def __init__(self, index: SeriesIndex, target_labels: Mapping[str, str]) -> None:
        self.index = index
        self.target_labels = target_labels
        self.n_new = 0

    def add(self, name: str, labels: Mapping[str, str]) -> int:
        merged = dict(labels)
        for key, value in self.target_labels.items():
            if key in merged:
                exported = "exported_" + key
                while exported in merged:
                    exported = "exported_" + exported
                merged[exported] = merged.pop(key)
            merged[key] = value
        before = len(self.index)
        sid = self.index.add(name, merged)
        self.n_new += len(self.index) - before
        return sid


def _assemble(
    targets: Sequence[Target],
    fetched: Sequence[_Fetched],
    index: SeriesIndex,
    caches: Sequence[dict[str, int]],
) -> tuple[pa.Table, list[ScrapeResult]]:
    """One sample batch and a result per target, in target order."""
    parts: list[pa.Table] = []
    results: list[ScrapeResult] = []
    for target, got, cache in zip(targets, fetched, caches):
        adder = _TargetIndex(index, target.target_labels)
        parsed, error = got.parsed, got.error
        n_samples = n_bad = 0
        if parsed is not None:
            try:
                parts.append(
                    parsed.to_batch(cast(SeriesIndex, adder), got.ts, cache=cache)
                )
            except InvalidSampleError as exc:
                parsed, error = None, str(exc)
            else:
                n_samples, n_bad = parsed.n_samples, parsed.n_errors
                if n_bad:
                    line, message = parsed.errors[0]
                    error = f"line {line}: {message}"
        up = parsed is not None

        synthetic = (float(up), got.duration_s, float(n_samples))
        ids = []
        for spec in SYNTHETIC_SPECS:
            key = _synthetic_key(spec.name)
            sid = cache.get(key)
            if sid is None:
                sid = cache[key] = adder.add(spec.name, {})
            ids.append(sid)
        parts.append(
            sample_table(
                np.array(ids, np.uint64), np.full(3, got.ts), np.array(synthetic)
            )
        )

        specs: tuple[MetricSpec, ...] = ()
        if adder.n_new:
            specs = (
                (*parsed.specs(), *SYNTHETIC_SPECS)
                if parsed is not None
                else SYNTHETIC_SPECS
            )
        results.append(
            ScrapeResult(
                target,
                got.ts,
                up,
                got.duration_s,
                n_samples,
                n_bad,
                adder.n_new,
                error,
                parsed.format if parsed is not None else None,
                got.n_bytes,
                specs,
                got.body,
            )
        )
    table = pa.concat_tables(parts) if parts else SAMPLE_SCHEMA.empty_table()
    return table, results


def targets_from_config(entries: Iterable[Any]) -> list[Target]:
    """Targets of the ``[[scrape]]`` tables of a config.

    Parameters
    ----------
    entries : iterable of obscore.config.ScrapeTarget
        ``Config.scrape_targets``: URL, job, interval and timeout (ms), labels.

    Returns
    -------
    list of Target
        One per URL, each with its own interval and timeout.
    """
    return [
        Target(
            e.url,
            job=e.job,
            interval_s=e.interval_ms / 1000,
            timeout_s=e.timeout_ms / 1000,
            labels=e.labels,
        )
        for e in entries
    ]


def _synthetic_key(name: str) -> str:
    # Cache keys of the synthetic series; the NUL keeps them apart from the
    # text of any scraped series, which cannot contain one.
    return "\x00" + name


def _as_targets(targets: Iterable[Target | str]) -> list[Target]:
    out = [t if isinstance(t, Target) else Target(str(t)) for t in targets]
    seen: dict[tuple[str, str], str] = {}
    for t in out:
        key = (t.job, cast(str, t.instance))
        if key in seen:
            raise ConfigError(
                f"targets {seen[key]!r} and {t.url!r} share job {t.job!r} and "
                f"instance {t.instance!r}; their series would collide"
            )
        seen[key] = t.url
    return out


def _timeout_of(target: Target, default_s: float) -> float:
    if target.timeout_s is not None:
        return target.timeout_s
    return min(default_s, target.interval_s)


def scrape_once(
    targets: Iterable[Target | str],
    index: SeriesIndex,
    now_ms: int,
    *,
    timeout_s: float = 10.0,
    keep_body: bool = False,
    max_workers: int = 32,
) -> tuple[pa.Table, list[ScrapeResult]]:
    """Scrape each target once, all at the same time, into one sample batch.

    Parameters
    ----------
    targets : iterable of Target or str
        Targets, or plain URLs (job ``"scrape"``).
    index : SeriesIndex
        Receives every series not yet in it, target labels included.
    now_ms : int
        Time (ms since the epoch) of the samples written without one and of
        the synthetic series.
    timeout_s : float
        Seconds a scrape may take, for targets that set no ``timeout_s``.
    keep_body : bool
        Keep each exposition on its :class:`ScrapeResult`.
    max_workers : int
        Most targets fetched at the same time.

    Returns
    -------
    pa.Table
        ``SAMPLE_SCHEMA`` rows, target by target: the exposition's samples
        in line order, then ``up``, ``scrape_duration_seconds`` and
        ``scrape_samples_scraped``.
    list of ScrapeResult
        One per target, in the order given.

    Raises
    ------
    ConfigError
        When a target is malformed or two share a job and an instance.

    Notes
    -----
    A target that refuses, fails or times out gets ``up`` 0 and no other
    samples; it holds the others back by nothing, and the call returns at
    the latest about ``timeout_s`` after the last target started (each
    worker ends its own scrape at its deadline).

    Bad lines do not fail a scrape: the valid families are kept, counted in
    ``scrape_samples_scraped``, and ``n_bad_lines`` says how many lines went.
    Prometheus would fail the whole scrape instead.

    Series a target stops exposing are not marked stale.
    """
    targets = _as_targets(targets)
    if not targets:
        return SAMPLE_SCHEMA.empty_table(), []
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s!r}")
    timeouts = [_timeout_of(t, timeout_s) for t in targets]

    n_workers = max(1, min(max_workers, len(targets)))
    pool = ThreadPoolExecutor(n_workers, thread_name_prefix="obscore-scrape")
    try:
        futures = [
            pool.submit(_fetch, t, timeout, now_ms, keep_body)
            for t, timeout in zip(targets, timeouts)
        ]
        waves = -(-len(targets) // n_workers)
        wait_futures(futures, timeout=waves * max(timeouts) + _GRACE_S)
    finally:
        # A worker stuck past its deadline is left to end on its own.
        pool.shutdown(wait=False, cancel_futures=True)
    fetched = [_answer(f, now_ms, timeout) for f, timeout in zip(futures, timeouts)]
    caches: list[dict[str, int]] = [{} for _ in targets]
    return _assemble(targets, fetched, index, caches)


def _answer(future: Future[_Fetched], ts: int, timeout_s: float) -> _Fetched:
    if future.done() and not future.cancelled():
        try:
            return future.result()
        except Exception as exc:  # a bug, not a bad target: say so loudly
            logger.exception("scrape worker failed")
            return _Fetched(
                ts, timeout_s, None, f"{type(exc).__name__}: {exc}", 0, None
            )
    return _Fetched(ts, timeout_s, None, f"timed out after {timeout_s:g} s", 0, None)


# --- the background scraper --------------------------------------------------------


Sink = Callable[[pa.Table, SeriesIndex], object]


@dataclass(slots=True)
class TargetStats:
    """Running totals of one target, kept by :class:`Scraper`."""

    target: Target
    scrapes: int = 0
    failures: int = 0
    skipped: int = 0
    last: ScrapeResult | None = None


class Scraper:
    """Scrape targets on their own intervals in a background thread.

    Parameters
    ----------
    targets : iterable of Target or str
        What to scrape; each target on its ``interval_s``.
    sink : callable
        Called as ``sink(batch, index)`` from the scraper's thread, one call
        at a time, with the samples of the scrapes that ended since the last
        call and the scraper's :attr:`index`, which names every series of
        the batch.  ``engine.ingest`` has this signature.
    index : SeriesIndex, optional
        Index the scraper registers series in; a new one by default.  Only
        the scraper's thread writes to it while it runs, so the sink may
        read it but must not keep it for use from another thread.
    timeout_s : float
        Default scrape timeout, capped at each target's interval.
    on_results : callable, optional
        Called with the list of :class:`ScrapeResult` of each batch, after
        the sink.
    keep_body : bool
        Keep each exposition on its result.
    max_workers : int
        Most scrapes in flight at the same time.

    Notes
    -----
    Scrapes of target ``i`` of ``n`` start at ``i / n`` of its interval
    after :meth:`start` and then every interval.  A scrape never starts
    while the previous one of the same target is still running: that slot
    is skipped and counted.  When the thread falls behind by more than an
    interval it scrapes once and skips the slots it missed.  An exception
    from the sink is logged and the scraper goes on.

    Examples
    --------
    >>> from obscore import Engine  # doctest: +SKIP
    >>> engine = Engine()  # doctest: +SKIP
    >>> url = "http://127.0.0.1:9100/metrics"
    >>> with Scraper([url], engine.ingest):  # doctest: +SKIP
    ...     time.sleep(60)
    """

    def __init__(
        self,
        targets: Iterable[Target | str],
        sink: Sink,
        *,
        index: SeriesIndex | None = None,
        timeout_s: float = 10.0,
        on_results: Callable[[list[ScrapeResult]], object] | None = None,
        keep_body: bool = False,
        max_workers: int = 32,
    ) -> None:
        self.targets = _as_targets(targets)
        if not self.targets:
            raise ConfigError("a scraper needs at least one target")
        if not timeout_s > 0:
            raise ConfigError(f"timeout_s must be positive, got {timeout_s!r}")
        self.index = SeriesIndex() if index is None else index
        self.sink = sink
        self.on_results = on_results
        self.keep_body = keep_body
        self.stats = [TargetStats(t) for t in self.targets]
        self.specs: dict[str, MetricSpec] = {}
        self.n_sink_errors = 0
        self._timeouts = [_timeout_of(t, timeout_s) for t in self.targets]
        self._caches: list[dict[str, int]] = [{} for _ in self.targets]
        self._max_workers = max(1, min(max_workers, len(self.targets)))
        self._done: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def forget(self, series_ids: Iterable[int]) -> int:
        """Drop series from :attr:`index` and the per-target caches.

        For the sink to call, from the scraper's thread, with the series it
        refused (a series limit): a target that makes up a label value on
        every scrape then leaves nothing behind in the scraper either.  A
        forgotten series that comes back is registered again.

        Returns
        -------
        int
            How many series were held and are now gone.
        """
        gone = set(series_ids)
        if not gone:
            return 0
        for cache in self._caches:
            for key in [k for k, sid in cache.items() if sid in gone]:
                del cache[key]
        return self.index.discard(gone)

    def target_stats(self) -> list[dict[str, object]]:
        """Per target: job, instance, up, duration_seconds, samples (of the last
        scrape), scrapes and failures, as ``selfmetrics.render`` takes them."""
        out: list[dict[str, object]] = []
        for stats in self.stats:
            row: dict[str, object] = {
                "job": stats.target.job,
                "instance": stats.target.instance,
                "scrapes": stats.scrapes,
                "failures": stats.failures,
            }
            if stats.last is not None:
                row["up"] = int(stats.last.up)
                row["duration_seconds"] = stats.last.duration_s
                row["samples"] = stats.last.n_samples
            out.append(row)
        return out

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start scraping in a background thread."""
        if self.is_running:
            raise RuntimeError("the scraper is running already")
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="obscore-scraper", daemon=True
        )
        self._thread.start()
        logger.info("scraper started: %d targets", len(self.targets))

    def stop(self) -> None:
        """Stop scheduling, hand the scrapes in flight to the sink, and return.

        Waits at most the longest target timeout (plus a little).
        """
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(max(self._timeouts) + 2 * _GRACE_S + 1.0)
        if thread.is_alive():
            logger.error("scraper thread did not stop in time; it is left running")
        self._thread = None
        n = sum(s.scrapes for s in self.stats)
        logger.info("scraper stopped: %d scrapes, %d series", n, len(self.index))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the scraper's thread ----------------------------------------------------

    def _run(self) -> None:
        pool = ThreadPoolExecutor(
            self._max_workers, thread_name_prefix="obscore-scrape"
        )
        inflight: dict[int, tuple[Future[_Fetched], float, int]] = {}
        start = time.monotonic()
        n = len(self.targets)
        due = [(start + i / n * t.interval_s, i) for i, t in enumerate(self.targets)]
        heapq.heapify(due)
        try:
            while not self._stop.is_set():
                self._launch_due(due, inflight, pool)
                self._wait(due, inflight)
                self._deliver(inflight, final=False)
            # Let what is in flight finish (each scrape ends at its deadline).
            if inflight:
                deadline = max(d for _, d, _ in inflight.values()) + _GRACE_S
                wait_futures(
                    [f for f, _, _ in inflight.values()], deadline - time.monotonic()
                )
            self._deliver(inflight, final=True)
        except Exception:
            logger.exception("scraper thread failed; scraping stopped")
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _launch_due(
        self,
        due: list[tuple[float, int]],
        inflight: dict[int, tuple[Future[_Fetched], float, int]],
        pool: ThreadPoolExecutor,
    ) -> None:
        now = time.monotonic()
        while due and due[0][0] <= now:
            slot, i = heapq.heappop(due)
            target, timeout = self.targets[i], self._timeouts[i]
            if i in inflight:
                self.stats[i].skipped += 1
                logger.debug(
                    "scrape of %s skipped: the last one is still running", target.url
                )
            else:
                ts = time.time_ns() // 1_000_000
                future = pool.submit(_fetch, target, timeout, ts, self.keep_body)
                future.add_done_callback(functools.partial(self._notify, i))
                inflight[i] = (future, now + timeout + _GRACE_S, ts)
            interval = target.interval_s
            slot += interval
            if slot <= now:
                missed = int((now - slot) // interval) + 1
                self.stats[i].skipped += missed
                slot += missed * interval
            heapq.heappush(due, (slot, i))

    def _notify(self, i: int, _future: Future[_Fetched]) -> None:
        self._done.put(i)

    def _wait(
        self,
        due: list[tuple[float, int]],
        inflight: dict[int, tuple[Future[_Fetched], float, int]],
    ) -> None:
        wake = min([due[0][0], *(d for _, d, _ in inflight.values())])
        # A short cap keeps stop() responsive.
        timeout = min(max(wake - time.monotonic(), 0.0), 0.2)
        try:
            self._done.get(timeout=timeout)
        except queue.Empty:
            pass

    def _deliver(
        self,
        inflight: dict[int, tuple[Future[_Fetched], float, int]],
        *,
        final: bool,
    ) -> None:
        while True:  # the queue only wakes the thread; done() says what ended
            try:
                self._done.get_nowait()
            except queue.Empty:
                break
        now = time.monotonic()
        ready = sorted(
            i
            for i, (future, deadline, _) in inflight.items()
            if future.done() or now >= deadline or final
        )
        if not ready:
            return
        fetched = []
        for i in ready:
            future, _, ts = inflight.pop(i)
            future.cancel()  # only takes when it has not started
            fetched.append(_answer(future, ts, self._timeouts[i]))
        targets = [self.targets[i] for i in ready]
        caches = [self._caches[i] for i in ready]
        table, results = _assemble(targets, fetched, self.index, caches)

        for i, result in zip(ready, results):
            stats = self.stats[i]
            was_up = stats.last is None or stats.last.up
            stats.scrapes += 1
            stats.failures += not result.up
            stats.last = result
            for spec in result.specs:
                self.specs.setdefault(spec.name, spec)
            # Log when a target goes down or comes back, not on every scrape.
            if not result.up and was_up:
                logger.warning(
                    "scrape of %s failed: %s (further failures logged at DEBUG)",
                    result.target.url,
                    result.error,
                )
            elif not result.up:
                logger.debug("scrape of %s failed: %s", result.target.url, result.error)
            elif not was_up:
                logger.info("scrape of %s succeeds again", result.target.url)
        try:
            self.sink(table, self.index)
            if self.on_results is not None:
                self.on_results(results)
        except Exception:
            self.n_sink_errors += 1
            logger.exception(
                "scraper sink failed on a batch of %d samples (%d failures so far)",
                table.num_rows,
                self.n_sink_errors,
            )
