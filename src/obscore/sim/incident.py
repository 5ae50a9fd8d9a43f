"""Injected incidents: what goes wrong, where, when, and how to draw some.

Six kinds of incident are simulated. Each has one cause metric, the metric of
the cause service that moves first and most; the other effects follow from it
and reach the callers of the cause, weaker and a little later.

======================  ==================  ==========================================
kind                    cause metric        effects (magnitude ``m``, 1.0 by default)
======================  ==================  ==========================================
memory_leak             memory_usage        memory of the cause hosts grows linearly,
                                            by ``1.5 m`` times its normal level at
                                            the end; in the second half CPU rises
                                            (garbage collection, up to ``+20 m``
                                            points) and latency up to ``1 + 0.6 m``
                                            times; callers' latency rises a little
bad_deploy              error_rate (5xx)    5xx errors of the cause jump at once to
                                            ``1 + 29 m`` times baseline (20-50x for
                                            m in 0.7-1.7); latency ``1 + 0.15 m``
                                            times; callers see a share of the errors
                                            as their own 5xx
slow_db                 request_latency     latency of the cause (a leaf dependency,
                                            ``db`` on the default platform)
                                            multiplies by ``1 + 4 m`` within two
                                            steps; callers' latency rises by a
                                            fraction of it, one step later per hop;
                                            timeouts rise at the cause and callers
cpu_saturation          cpu_usage           CPU of the cause hosts is pinned at
                                            ``90 + 8 m`` percent (at most 99.5);
                                            latency of the cause follows (about 2.5x),
                                            callers slightly
traffic_surge           network_throughput  the cause gets ``1 + 3 m`` times its
                                            requests within a minute: received bytes
                                            (``direction="rx"``), request counts and
                                            CPU jump; latency rises with the load
                                            (about 1.3x) and more once CPU passes
                                            75 %; callees get half of the extra
                                            traffic they would see, one step later;
                                            callers' latency rises a little
connection_exhaustion   error_rate          the cause runs out of connections:
                        (timeout)           ``25 m`` percent of its requests time out
                                            within half a minute and take 10x the
                                            normal median, the others
                                            ``1 + 0.8 m`` times (mean latency about
                                            3x); CPU and sent bytes drop a little;
                                            callers see a share of the timeouts as
                                            their own
======================  ==================  ==========================================

Errors reach each caller two steps later per hop: its failure rate rises by
0.45 times the callee's extra failure rate (times the share of its requests
that call the callee). Latency reaches callers one step later per hop: a
caller's relative rise is the sum over its callees of the share of its latency
spent waiting on each (0.25-0.45 per callee on the default platform, 0.35-0.6
in all) times that callee's relative rise.

The cause's own effects stop a few steps before ``end_ms`` (8 steps on the
default platform, at most a quarter of the incident), so that the callers,
which follow with a lag, are back to normal by ``end_ms`` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from obscore.errors import ConfigError
from obscore.sim.platform import Platform

KINDS: tuple[str, ...] = (
    "memory_leak",
    "bad_deploy",
    "slow_db",
    "cpu_saturation",
    "traffic_surge",
    "connection_exhaustion",
)

CAUSE_METRICS: dict[str, str] = {
    "memory_leak": "memory_usage",
    "bad_deploy": "error_rate",
    "slow_db": "request_latency",
    "cpu_saturation": "cpu_usage",
    "traffic_surge": "network_throughput",
    "connection_exhaustion": "error_rate",
}
"""Cause metric (base name) of each kind."""

CAUSE_LABELS: dict[str, dict[str, str]] = {
    "bad_deploy": {"error_type": "5xx"},
    "traffic_surge": {"direction": "rx"},
    "connection_exhaustion": {"error_type": "timeout"},
}
"""Extra labels narrowing the cause metric, for the kinds that need them."""

WARMUP_MS = 6 * 3_600_000
"""Incidents drawn by this module start after this warm-up (detectors learn)."""

MIN_GAP_MS = 3_600_000
"""Drawn incidents are at least this far apart (end of one to start of next)."""

_MIN_DURATION_MS = 20 * 60_000
_MAX_DURATION_MS = 60 * 60_000
_MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Incident:
    """One injected incident: the ground truth a diagnosis is scored against.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    service : str
        The cause service.
    metric : str
        The cause metric, base name (``"memory_usage"``, ``"error_rate"``, ...);
        must be ``CAUSE_METRICS[kind]``.
    region : str or None
        The region affected, or None for every region.
    start_ms, end_ms : int
        The span of the incident, ms since the epoch, end exclusive; every
        effect, also at the callers, is gone by ``end_ms``.
    magnitude : float
        Scales the effect size; 1.0 is the documented size, 0.7-1.5 stays
        realistic.
    """

    kind: str
    service: str
    metric: str
    region: str | None
    start_ms: int
    end_ms: int
    magnitude: float = 1.0

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    @property
    def cause_labels(self) -> dict[str, str]:
        """Labels that pick the cause series: service, region and per kind more."""
        labels = {"service": self.service}
        if self.region is not None:
            labels["region"] = self.region
        labels.update(CAUSE_LABELS.get(self.kind, {}))
        return labels

    def overlaps(self, start_ms: int, end_ms: int) -> bool:
        """Whether the incident shares any time with ``[start_ms, end_ms)``."""
        return self.start_ms < end_ms and start_ms < self.end_ms


def check_incidents(platform: Platform, incidents: Sequence[Incident]) -> None:
    """Check that incidents name known kinds, services and regions.

    Raises
    ------
    ConfigError
        On the first incident that does not fit the platform.
    """
    for n, incident in enumerate(incidents):
        where = f"incident {n} ({incident.kind!r} on {incident.service!r})"
        if incident.kind not in KINDS:
            raise ConfigError(f"{where}: unknown kind; expected one of {KINDS!r}")
        if incident.service not in platform.services:
            raise ConfigError(
                f"{where}: unknown service; expected one of {platform.services!r}"
            )
        if incident.region is not None and incident.region not in platform.regions:
            raise ConfigError(
                f"{where}: unknown region {incident.region!r}; expected one of "
                f"{platform.regions!r} or None"
            )
        expected = CAUSE_METRICS[incident.kind]
        if incident.metric != expected:
            raise ConfigError(
                f"{where}: metric must be {expected!r}, got {incident.metric!r}"
            )
        if incident.end_ms <= incident.start_ms:
            raise ConfigError(
                f"{where}: end_ms must follow start_ms, got {incident.start_ms!r} "
                f"-> {incident.end_ms!r}"
            )
        if not incident.magnitude > 0:
            raise ConfigError(
                f"{where}: magnitude must be positive, got {incident.magnitude!r}"
            )


def candidate_services(platform: Platform, kind: str) -> tuple[str, ...]:
    """Services that can be the cause of ``kind`` when incidents are drawn.

    ``slow_db`` goes to leaf dependencies (called by someone, calling nobody);
    every other kind to any service.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown incident kind {kind!r}; expected one of {KINDS!r}")
    if kind != "slow_db":
        return platform.services
    leaves = tuple(
        s for s in platform.services if platform.callers(s) and not platform.callees(s)
    )
    return leaves or tuple(s for s in platform.services if platform.callers(s))


def default_incidents(
    platform: Platform, start_ms: int, end_ms: int, seed: int = 0
) -> list[Incident]:
    """The demo's three incidents: a memory leak, a bad deploy and a slow db.

    Parameters
    ----------
    platform : Platform
    start_ms, end_ms : int
        The simulated span, ms since the epoch, end exclusive.
    seed : int
        Picks order, services, regions, times and durations.

    Returns
    -------
    list of Incident
        Three incidents, sorted by start, 20-60 min long, at least an hour
        apart, after the warm-up (6 h, or a quarter of shorter spans).

    Raises
    ------
    ConfigError
        When the span is too short to hold them (spans of 8 h or more always
        do).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1DC]))
    kinds = ["memory_leak", "bad_deploy", "slow_db"]
    order = rng.permutation(len(kinds))
    kinds = [kinds[i] for i in order]

    # A deploy of the database itself is rare: keep bad deploys on services
    # that have callees or callers other than the slow_db target.
    leaves = candidate_services(platform, "slow_db")
    choices = {
        "memory_leak": [s for s in platform.services if s not in leaves]
        or list(platform.services),
        "bad_deploy": [s for s in platform.services if s not in leaves]
        or list(platform.services),
        "slow_db": list(leaves),
    }
    spans = _place(rng, start_ms, end_ms, len(kinds))

    incidents = []
    for kind, (start, end) in zip(kinds, spans, strict=True):
        service = str(rng.choice(choices[kind]))
        if kind == "memory_leak" or rng.random() < 0.5:
            region: str | None = str(rng.choice(list(platform.regions)))
        else:
            region = None
        incidents.append(
            Incident(kind, service, CAUSE_METRICS[kind], region, start, end, 1.0)
        )
    return incidents


def random_incidents(
    platform: Platform,
    start_ms: int,
    end_ms: int,
    n: int,
    seed: int,
    kinds: Sequence[str] = KINDS,
) -> list[Incident]:
    """Draw ``n`` non-overlapping incidents for an evaluation run.

    Parameters
    ----------
    platform : Platform
    start_ms, end_ms : int
        The simulated span, ms since the epoch, end exclusive.
    n : int
        How many incidents, non-negative.
    seed : int
    kinds : sequence of str
        Kinds to draw from; each is used about ``n / len(kinds)`` times, in a
        random order.

    Returns
    -------
    list of Incident
        Sorted by start; each 20-60 min long, at least an hour from the next,
        after the warm-up (6 h, or a quarter of shorter spans). The service
        fits the kind (see :func:`candidate_services`), the region is one
        region or, one time in four, None; the magnitude is drawn in 0.7-1.5.

    Raises
    ------
    ConfigError
        For an unknown kind, a negative ``n``, or when ``n`` incidents do not
        fit in the span.
    """
    kinds = tuple(kinds)
    if n < 0:
        raise ConfigError(f"n must be non-negative, got {n!r}")
    if not kinds:
        raise ConfigError("kinds must name at least one incident kind")
    for kind in kinds:
        candidate_services(platform, kind)
    if n == 0:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x2A7]))

    repeats = -(-n // len(kinds))
    drawn = [kinds[i % len(kinds)] for i in range(repeats * len(kinds))]
    drawn = [drawn[i] for i in rng.permutation(len(drawn))[:n]]
    spans = _place(rng, start_ms, end_ms, n)

    incidents = []
    for kind, (start, end) in zip(drawn, spans, strict=True):
        service = str(rng.choice(list(candidate_services(platform, kind))))
        if rng.random() < 0.25:
            region: str | None = None
        else:
            region = str(rng.choice(list(platform.regions)))
        magnitude = round(float(rng.uniform(0.7, 1.5)), 2)
        incidents.append(
            Incident(kind, service, CAUSE_METRICS[kind], region, start, end, magnitude)
        )
    return incidents


def _place(
    rng: np.random.Generator, start_ms: int, end_ms: int, n: int
) -> list[tuple[int, int]]:
    """Spans for ``n`` incidents, in whole minutes, spread over the span."""
    span = end_ms - start_ms
    warmup = min(WARMUP_MS, span // 4)
    first = start_ms + warmup
    durations = (
        rng.integers(
            _MIN_DURATION_MS // _MINUTE_MS, _MAX_DURATION_MS // _MINUTE_MS + 1, size=n
        )
        * _MINUTE_MS
    )
    # Keep clear of the very end, so the last incident is seen ending.
    slack = (
        end_ms - _MINUTE_MS * 10 - first - int(durations.sum()) - (n - 1) * MIN_GAP_MS
    )
    if slack < 0:
        raise ConfigError(
            f"cannot fit {n} incidents of 20-60 min, {MIN_GAP_MS // 60_000} min "
            f"apart, after a {warmup // 60_000} min warm-up in a span of "
            f"{span // 60_000} min; simulate longer or ask for fewer incidents"
        )
    # One offset per stratum of the slack: increasing, and the incidents end
    # up spread over the span instead of bunched.
    strata = (np.arange(n) + rng.uniform(0.0, 1.0, size=n)) / n
    offsets = (np.floor(strata * (slack // _MINUTE_MS))).astype(np.int64) * _MINUTE_MS
    spans = []
    cursor = first
    used = 0
    for duration, offset in zip(durations.tolist(), offsets.tolist(), strict=True):
        start = cursor + (offset - used)
        spans.append((int(start), int(start + duration)))
        cursor = start + duration + MIN_GAP_MS
        used = offset
    return spans
