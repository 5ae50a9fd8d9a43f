"""Simulate the metrics of a platform, with injected incidents, as a sample table.

The model, in the order it is computed on a grid of ``n`` steps:

1. Outside traffic per region follows a daily cycle peaking in the region's
   evening, with slow noise. Each service receives its callers' traffic times
   the calls they make per request; a traffic surge adds requests at the cause
   and passes half of the extra on to its callees, one step later.
2. CPU of a host follows its requests; garbage collection (memory leak) adds
   to it and saturation pins it near 100. Above 75 % CPU the service's own
   latency grows, and extra requests slow it a little before that.
3. Latency is computed from the leaves up. An endpoint's median latency is its
   own work, scaled by incident, CPU and noise, plus the share of it spent
   waiting on each callee, scaled by that callee's latency one step earlier.
4. Errors are computed from the leaves up too. A service fails with its base
   5xx and timeout rates, timeouts from its own latency tail (slower than 10x
   its normal median), the incident's own errors, and 0.45 times each
   callee's extra failure rate two steps earlier (times the share of its
   requests that call the callee, at most 1).
5. Counters and histograms are drawn from those rates: request counts
   Poisson, latency buckets from a log-normal around the median, plus timed-out
   requests at 10x the normal median; then added up over time.
6. Memory is flat with a per-host garbage-collection sawtooth; users and
   engagement follow the region's traffic and the feed's health.

A few harmless one-step blips (CPU, latency, 5xx, received bytes) are added;
:attr:`SimResult.blips` lists them.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from scipy import special

from obscore.errors import ConfigError
from obscore.model import SeriesIndex, sample_table
from obscore.sim.incident import (
    CAUSE_METRICS,
    Incident,
    check_incidents,
    default_incidents,
)
from obscore.sim.noise import NoiseSource, binomial_from_normal, poisson_from_uniform
from obscore.sim.platform import Platform, default_platform
from obscore.sim.profile import DEFAULT_PROFILES, Profiles

logger = logging.getLogger(__name__)

LATENCY_BOUNDS: tuple[float, ...] = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
"""Finite bucket bounds of ``request_latency``, ms."""

ENGAGEMENT_BOUNDS: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0)
"""Finite bucket bounds of ``content_engagement``, seconds."""

LATENCY_LAG_STEPS = 1
"""Steps a callee's latency takes to show in its callers, per hop."""

ERROR_LAG_STEPS = 2
"""Steps a callee's errors take to show in its callers, per hop."""

ERROR_PASS = 0.45
"""Share of a callee's extra failure rate that its callers take on as their own."""

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z

_DAY_MS = 86_400_000
_IDLE_CPU = 4.0
_TIMEOUT_FACTOR = 10.0
_BACKGROUND_BYTES_PER_S = 40_000.0
_PLATFORMS = (("web", 0.45, 0.0), ("ios", 0.30, 1.5), ("android", 0.25, 1.5))
# content type, action, views per feed request, median s, sigma
_ENGAGEMENT = (
    ("video", "view", 0.30, 40.0, 1.0),
    ("video", "share", 0.012, 3.0, 0.6),
    ("article", "view", 0.45, 25.0, 0.8),
    ("article", "share", 0.02, 2.5, 0.6),
)


@dataclass(frozen=True, slots=True)
class Blip:
    """A harmless one-step spike, not an incident.

    ``metric`` is the metric it shows in; ``host`` is set for host metrics
    (``cpu_usage``, ``network_throughput``); ``factor`` is the multiplier, or
    for CPU the points added.
    """

    ts: int
    metric: str
    service: str
    region: str
    host: str | None
    factor: float


@dataclass(slots=True)
class SimResult:
    """The output of :func:`simulate`.

    Attributes
    ----------
    table : pa.Table
        Samples in ``SAMPLE_SCHEMA``, sorted by ts, then series_id; one sample
        per series per step.
    index : SeriesIndex
        Every series of the table.
    incidents : list of Incident
        The injected incidents (the ground truth).
    platform : Platform
    start_ms, end_ms : int
        The span; ``end_ms`` is exclusive (the last sample is at
        ``end_ms - step_ms``).
    step_ms : int
    blips : list of Blip
        The harmless one-step spikes.
    """

    table: pa.Table
    index: SeriesIndex
    incidents: list[Incident]
    platform: Platform
    start_ms: int
    end_ms: int
    step_ms: int
    blips: list[Blip] = field(default_factory=list)

    @property
    def n_steps(self) -> int:
        return (self.end_ms - self.start_ms) // self.step_ms

    def series_ids(self, name: str, **labels: str) -> list[int]:
        """Ids of the series of ``name`` whose labels include ``labels``."""
        return [
            sid
            for sid in self.index.ids(name)
            if all(self.index.labels(sid).get(k) == v for k, v in labels.items())
        ]

    def cause_series(self, incident: Incident) -> list[int]:
        """Ids of the series carrying an incident's cause metric on its cause.

        Histograms give their ``_bucket``, ``_sum`` and ``_count`` series.
        """
        metric = CAUSE_METRICS[incident.kind]
        labels = incident.cause_labels
        if metric == "request_latency":
            names = [f"{metric}_bucket", f"{metric}_sum", f"{metric}_count"]
        else:
            names = [metric]
        return [sid for name in names for sid in self.series_ids(name, **labels)]

    def values(self, sid: int) -> np.ndarray:
        """The values of one series, one per step, float64."""
        ids = self.table.column("series_id").to_numpy()
        n_series = len(self.index)
        row = np.searchsorted(ids[:n_series], np.uint64(sid))
        if row >= n_series or ids[row] != sid:
            raise KeyError(f"series_id={sid} is not in the table")
        return self.table.column("value").to_numpy()[row::n_series]


def simulate(
    seed: int = 0,
    hours: float = 24.0,
    step_s: float = 10,
    incidents: list[Incident] | None = None,
    start_ms: int = DEFAULT_START_MS,
    platform: Platform | None = None,
) -> SimResult:
    """Simulate a platform's metrics with injected incidents.

    Parameters
    ----------
    seed : int
        Non-negative; the same arguments give the same table.
    hours : float
        Length of the span; ``round(hours * 3600 / step_s)`` steps.
    step_s : float
        Seconds between samples, at least 1 ms.
    incidents : list of Incident or None
        None for :func:`~obscore.sim.incident.default_incidents` (drawn from
        ``seed``), ``[]`` for a normal period.
    start_ms : int
        First sample time, ms since the epoch.
    platform : Platform or None
        None for :func:`~obscore.sim.platform.default_platform`.

    Returns
    -------
    SimResult

    Raises
    ------
    ConfigError
        On a bad argument or an incident that does not fit the platform.

    Notes
    -----
    For the same seed, grid and platform, the samples outside the incident
    windows do not depend on the incidents: a run without incidents is the
    counterfactual of a run with them. The series are listed in the module
    :mod:`obscore.sim`.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    step_ms = int(round(float(step_s) * 1000))
    if step_ms < 1:
        raise ConfigError(f"step_s must be at least 0.001, got {step_s!r}")
    n_steps = int(round(float(hours) * 3_600_000 / step_ms))
    if n_steps < 1:
        raise ConfigError(f"hours must cover at least one step, got {hours!r}")
    platform = default_platform() if platform is None else platform
    end_ms = int(start_ms) + n_steps * step_ms
    if incidents is None:
        incidents = default_incidents(platform, int(start_ms), end_ms, int(seed))
    incidents = list(incidents)
    check_incidents(platform, incidents)

    began = time.perf_counter()
    world = _World(
        platform, DEFAULT_PROFILES, int(seed), int(start_ms), step_ms, n_steps
    )
    world.apply(incidents)
    series = world.run()
    table, index = _assemble(series, world.ts)
    logger.info(
        "simulated %d series x %d steps (%d samples, %d incidents, %d blips) in %.2f s",
        len(index),
        n_steps,
        table.num_rows,
        len(incidents),
        len(world.blips),
        time.perf_counter() - began,
    )
    return SimResult(
        table, index, incidents, platform, int(start_ms), end_ms, step_ms, world.blips
    )


def _assemble(
    series: list[tuple[str, dict[str, str], np.ndarray]], ts: np.ndarray
) -> tuple[pa.Table, SeriesIndex]:
    """Register the series and lay them out sorted by ts, then series_id."""
    index = SeriesIndex()
    ids = np.array([index.add(name, labels) for name, labels, _ in series], np.uint64)
    order = np.argsort(ids, kind="stable")
    values = np.empty((len(ts), len(series)))
    for col, row in enumerate(order):
        values[:, col] = series[row][2]

    n_series = len(series)
    table = sample_table(
        np.tile(ids[order], len(ts)), np.repeat(ts, n_series), values.reshape(-1)
    )
    return table, index


def _shift(x: np.ndarray, lag: int) -> np.ndarray:
    """Delay along the last axis by ``lag`` steps, holding the first value."""
    if lag <= 0:
        return x
    out = np.empty_like(x)
    lag = min(lag, x.shape[-1])
    out[..., lag:] = x[..., : x.shape[-1] - lag]
    out[..., :lag] = x[..., :1]
    return out


def _fmt_bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _bucket_probs(
    median: np.ndarray, sigma: float, bounds: tuple[float, ...]
) -> np.ndarray:
    """P(value <= bound) for a log-normal, stacked on a new first axis."""
    log_median = np.log(np.maximum(median, 1e-9))
    return np.stack([special.ndtr((math.log(b) - log_median) / sigma) for b in bounds])


def _cumulative_buckets(
    total: np.ndarray, probs: np.ndarray, z: np.ndarray
) -> np.ndarray:
    """Counts at or below each bound, given the total and P(value <= bound).

    Walks from the top bucket down, drawing each count as a binomial share of
    the one above, so the counts never decrease with the bound.
    """
    counts = np.empty_like(probs)
    above, p_above = total, np.ones_like(total)
    for k in range(probs.shape[0] - 1, -1, -1):
        ratio = np.divide(
            probs[k], p_above, out=np.zeros_like(total), where=p_above > 0
        )
        counts[k] = binomial_from_normal(above, ratio, z[k])
        above, p_above = counts[k], probs[k]
    return counts


def _cumulate(increments: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Running total along the last axis, starting from ``offset``."""
    return np.cumsum(increments, axis=-1) + np.asarray(offset)[..., None]


class _World:
    """State of one simulation run; stages fill arrays in order.

    Pair arrays are ``(services, regions, steps)``, host arrays
    ``(hosts, steps)`` and endpoint arrays ``(endpoints, regions, steps)``.
    """

    def __init__(
        self,
        platform: Platform,
        profiles: Profiles,
        seed: int,
        start_ms: int,
        step_ms: int,
        n_steps: int,
    ):
        self.platform = platform
        self.profiles = profiles
        self.noise = NoiseSource(seed)
        self.start_ms = start_ms
        self.step_ms = step_ms
        self.step_s = step_ms / 1000.0
        self.n = n_steps
        self.ts = start_ms + np.arange(n_steps, dtype=np.int64) * step_ms
        self.blips: list[Blip] = []
        self.rx_blips: list[tuple[int, int, float]] = []  # host, step, factor

        self.services = platform.services
        self.regions = platform.regions
        self.s_of = {s: i for i, s in enumerate(self.services)}
        self.n_s, self.n_r = len(self.services), len(self.regions)
        self.order = platform.topological_order()
        self._layout_hosts()
        self._layout_endpoints()
        self._mean_traffic()

        shape = (self.n_s, self.n_r, self.n)
        self.surge = np.zeros(shape)
        self.lat_mult = np.ones(shape)
        self.deploy = np.zeros(shape)
        self.conn_timeouts = np.zeros(shape)
        self.gc_cpu = np.zeros((self.n_h, self.n))
        self.leak = np.zeros((self.n_h, self.n))
        self.sat_weight = np.zeros((self.n_h, self.n))
        self.sat_target = np.full((self.n_h, self.n), 98.0)

    # --- layout: hosts, endpoints and analytic means ---

    def _layout_hosts(self) -> None:
        names: list[str] = []
        pair_s: list[int] = []
        pair_r: list[int] = []
        rank: list[float] = []
        for s, service in enumerate(self.services):
            for r, region in enumerate(self.regions):
                hosts = self.platform.hosts[(service, region)]
                names.extend(hosts)
                pair_s.extend([s] * len(hosts))
                pair_r.extend([r] * len(hosts))
                # Hosts of one pair leak at different speeds (1.1x down to 0.9x).
                spread = np.linspace(1.1, 0.9, len(hosts)) if len(hosts) > 1 else [1.0]
                rank.extend(float(x) for x in spread)
        self.host_names = names
        self.h_s = np.array(pair_s)
        self.h_r = np.array(pair_r)
        self.h_rank = np.array(rank, dtype=np.float64)
        self.n_h = len(names)
        # Hosts are laid out pair by pair: these are the first host of each pair.
        self.h_starts = np.flatnonzero(
            np.r_[True, (np.diff(self.h_s) != 0) | (np.diff(self.h_r) != 0)]
        )
        self.h_count = np.diff(np.r_[self.h_starts, self.n_h])

    def _layout_endpoints(self) -> None:
        profiles = self.profiles
        self.ep_s: list[int] = []
        self.ep_name: list[str] = []
        self.ep_method: list[str] = []
        self.ep_latency: list[float] = []
        self.ep_waits: list[dict[int, float]] = []
        shares: list[float] = []
        for s, service in enumerate(self.services):
            prof = profiles.service(service)
            callees = self.platform.callees(service)
            endpoints = self.platform.endpoints[service]
            for path, method in endpoints:
                ep = profiles.endpoints.get((service, path))
                if ep is None:
                    share = 1.0 / len(endpoints)
                    latency = prof.latency_ms
                    waits = {c: prof.wait_share / len(callees) for c in callees}
                else:
                    share, latency = ep.share, ep.latency_ms
                    waits = {c: w for c, w in ep.waits.items() if c in callees}
                self.ep_s.append(s)
                self.ep_name.append(path)
                self.ep_method.append(method)
                self.ep_latency.append(latency)
                self.ep_waits.append({self.s_of[c]: w for c, w in waits.items()})
                shares.append(share)
        self.n_e = len(self.ep_s)
        # Shares of one service's endpoints add up to 1 whatever the profile said.
        self.ep_share = np.array(shares)
        for s in range(self.n_s):
            mine = [e for e in range(self.n_e) if self.ep_s[e] == s]
            self.ep_share[mine] /= self.ep_share[mine].sum()

    def _mean_traffic(self) -> None:
        """Daily-mean requests per second of each pair, without noise or incidents."""
        mean = np.zeros((self.n_s, self.n_r))
        self.region_rps = np.array(
            [self.profiles.region(r, i).rps for i, r in enumerate(self.regions)]
        )
        for service in self.order:
            s = self.s_of[service]
            callers = self.platform.callers(service)
            if not callers:
                mean[s] = self.region_rps * self.profiles.service(service).entry_rps
            for caller in callers:
                mean[s] += (
                    self.profiles.call_rate(caller, service) * mean[self.s_of[caller]]
                )
        self.mean_rps = mean
        per_host = mean[self.h_s, self.h_r] / self.h_count.repeat(self.h_count)
        busiest = np.zeros(self.n_s)
        np.maximum.at(busiest, self.h_s, per_host)
        target = np.array([self.profiles.service(s).cpu_percent for s in self.services])
        # CPU per request, so the busiest region's hosts average the profile's CPU.
        self.cpu_per_rps = (target - _IDLE_CPU) / np.maximum(busiest, 1e-9)

    # --- incidents: turn each into effect arrays ---

    def apply(self, incidents: list[Incident]) -> None:
        settle_steps = ERROR_LAG_STEPS * self._longest_path() + 2
        for incident in incidents:
            self._apply_one(incident, settle_steps)

    def _longest_path(self) -> int:
        depth = dict.fromkeys(self.services, 0)
        for service in reversed(self.order):
            for callee in self.platform.callees(service):
                depth[service] = max(depth[service], depth[callee] + 1)
        return max(depth.values())

    def _apply_one(self, incident: Incident, settle_steps: int) -> None:
        duration = incident.end_ms - incident.start_ms
        # The cause stops early enough for its callers to settle by end_ms.
        settle = min(settle_steps * self.step_ms, duration // 4)
        stop_ms = incident.end_ms - settle
        elapsed = (self.ts - incident.start_ms).astype(float)
        active = (self.ts >= incident.start_ms) & (self.ts < stop_ms)
        if not active.any():
            return
        progress = np.clip(
            (elapsed + self.step_ms) / (stop_ms - incident.start_ms), 0, 1
        )
        progress *= active
        late = np.clip(2.0 * progress - 1.0, 0.0, 1.0)

        def ramp(ramp_ms: float) -> np.ndarray:
            return (
                np.clip((elapsed + self.step_ms) / max(ramp_ms, 1.0), 0.0, 1.0) * active
            )

        s = self.s_of[incident.service]
        regions = (
            list(range(self.n_r))
            if incident.region is None
            else [self.regions.index(incident.region)]
        )
        hosts = np.flatnonzero((self.h_s == s) & np.isin(self.h_r, regions))
        m = float(incident.magnitude)
        kind = incident.kind

        if kind == "memory_leak":
            self.leak[hosts] += 1.5 * m * progress * self.h_rank[hosts, None]
            self.gc_cpu[hosts] += 20.0 * m * late
            self.lat_mult[s, regions] *= 1.0 + 0.6 * m * late
        elif kind == "bad_deploy":
            self.deploy[s, regions] += 29.0 * m * active
            self.lat_mult[s, regions] *= 1.0 + 0.15 * m * active
        elif kind == "slow_db":
            self.lat_mult[s, regions] *= 1.0 + 4.0 * m * ramp(2 * self.step_ms)
        elif kind == "cpu_saturation":
            weight = ramp(30_000)
            self.sat_weight[hosts] = np.maximum(self.sat_weight[hosts], weight)
            target = min(99.5, 90.0 + 8.0 * m)
            self.sat_target[hosts] = np.where(
                weight > 0, target, self.sat_target[hosts]
            )
        elif kind == "traffic_surge":
            self.surge[s, regions] += 3.0 * m * ramp(60_000)
        elif kind == "connection_exhaustion":
            weight = ramp(30_000)
            self.conn_timeouts[s, regions] += 0.25 * m * weight
            self.lat_mult[s, regions] *= 1.0 + 0.8 * m * weight

    # --- the run: stages in dependency order ---

    def run(self) -> list[tuple[str, dict[str, str], np.ndarray]]:
        self._traffic()
        self._cpu()
        self._latency_and_errors()
        self._blips()
        out: list[tuple[str, dict[str, str], np.ndarray]] = []
        out += self._host_series()
        out += self._error_series()
        out += self._latency_series()
        out += self._business_series()
        return out

    def _daily(self, shift_h: float = 0.0) -> np.ndarray:
        """Daily cycle per region, mean 1, shape ``(regions, steps)``."""
        hour = (self.ts % _DAY_MS) / 3_600_000.0
        peaks = np.array(
            [self.profiles.region(r, i).peak_hour for i, r in enumerate(self.regions)]
        )
        phase = 2.0 * np.pi * (hour[None, :] - peaks[:, None] - shift_h) / 24.0
        return 1.0 + 0.45 * np.cos(phase) + 0.08 * np.cos(2.0 * phase + np.pi / 2.0)

    def _traffic(self) -> None:
        noise, step_s = self.noise, self.step_s
        self.daily = self._daily()
        entry = self.region_rps[:, None] * self.daily
        entry *= np.exp(
            noise.ar1("traffic.region", (self.n_r, self.n), 0.05, 300.0, step_s)
        )
        own = np.exp(
            noise.ar1(
                "traffic.service", (self.n_s, self.n_r, self.n), 0.02, 120.0, step_s
            )
        )

        base = np.zeros((self.n_s, self.n_r, self.n))
        excess = np.zeros_like(base)
        for service in self.order:
            s = self.s_of[service]
            callers = [self.s_of[c] for c in self.platform.callers(service)]
            if not callers:
                base[s] = entry * self.profiles.service(service).entry_rps
            inflow = [
                self.profiles.call_rate(self.services[c], service) * base[c]
                for c in callers
            ]
            for flow in inflow:
                base[s] += flow
            # Callees see half the extra requests of their callers (caches,
            # rate limits), one step later.
            for c, flow in zip(callers, inflow, strict=True):
                excess[s] += (
                    0.5 * flow / np.maximum(base[s], 1e-9) * _shift(excess[c], 1)
                )
            excess[s] += self.surge[s]
            base[s] *= own[s]
        self.traffic = base * (1.0 + excess)
        self.load_excess = excess

    def _cpu(self) -> None:
        noise, step_s = self.noise, self.step_s
        jitter = noise.uniform("hosts.split", (self.n_h,)) * 0.12 - 0.06
        weight = (1.0 + jitter)[:, None] * np.exp(
            noise.ar1("hosts.split.drift", (self.n_h, self.n), 0.02, 60.0, step_s)
        )
        totals = np.add.reduceat(weight, self.h_starts, axis=0)
        self.host_share = weight / totals.repeat(self.h_count, axis=0)
        self.host_rps = self.traffic[self.h_s, self.h_r] * self.host_share

        waiting = 1.0 - 0.7 * np.minimum(self.conn_timeouts[self.h_s, self.h_r], 1.0)
        cpu = _IDLE_CPU + self.cpu_per_rps[self.h_s, None] * self.host_rps * waiting
        cpu += self.gc_cpu
        cpu += noise.ar1("cpu.drift", (self.n_h, self.n), 1.5, 120.0, step_s)
        cpu += 0.8 * noise.normal("cpu.jitter", (self.n_h, self.n))
        pinned = self.sat_target + 0.7 * noise.normal("cpu.pinned", (self.n_h, self.n))
        cpu += (pinned - cpu) * self.sat_weight
        self.cpu = np.clip(cpu, 0.5, 100.0)

        per_pair = (
            np.add.reduceat(self.cpu, self.h_starts, axis=0) / self.h_count[:, None]
        )
        pair_cpu = np.empty((self.n_s, self.n_r, self.n))
        pair_cpu[self.h_s[self.h_starts], self.h_r[self.h_starts]] = per_pair
        self.cpu_slowdown = 1.0 + 2.0 * np.clip((pair_cpu - 75.0) / 25.0, 0.0, 1.0) ** 2

    def _latency_and_errors(self) -> None:
        noise, step_s = self.noise, self.step_s
        # Extra load slows a service a little before its CPU runs out.
        own = self.lat_mult * self.cpu_slowdown * (1.0 + 0.25 * self.load_excess)
        own = own * np.exp(
            noise.ar1("latency.own", (self.n_s, self.n_r, self.n), 0.04, 60.0, step_s)
        )
        shape = (self.n_s, self.n_r, self.n)
        self.rel = np.ones(shape)
        self.ep_rel = np.ones((self.n_e, self.n_r, self.n))
        self.err_5xx = np.zeros(shape)
        self.err_timeout = np.zeros(shape)
        self.extra_timeout = np.zeros(shape)
        self.stuck = np.zeros(shape)
        extra_5xx = np.zeros(shape)

        for service in reversed(self.order):
            s = self.s_of[service]
            prof = self.profiles.service(service)
            rel = np.zeros((self.n_r, self.n))
            for e in (e for e in range(self.n_e) if self.ep_s[e] == s):
                waits = self.ep_waits[e]
                ep_rel = (1.0 - sum(waits.values())) * own[s]
                for c, share in waits.items():
                    ep_rel = ep_rel + share * _shift(self.rel[c], LATENCY_LAG_STEPS)
                self.ep_rel[e] = ep_rel
                rel += self.ep_share[e] * ep_rel
            self.rel[s] = rel

            # Failed calls to callees, as a share of this service's requests.
            passed_5xx = np.zeros((self.n_r, self.n))
            passed_timeout = np.zeros((self.n_r, self.n))
            for callee in self.platform.callees(service):
                c = self.s_of[callee]
                calls = self.profiles.call_rate(service, callee)
                for frac, passed in (
                    (extra_5xx[c], passed_5xx),
                    (self.extra_timeout[c], passed_timeout),
                ):
                    lagged = np.clip(_shift(frac, ERROR_LAG_STEPS), 0.0, 1.0)
                    passed += ERROR_PASS * min(calls, 1.0) * lagged

            tail = special.ndtr((np.log(rel) - math.log(_TIMEOUT_FACTOR)) / prof.sigma)
            timeout = self.conn_timeouts[s] + passed_timeout
            self.extra_timeout[s] = np.clip(timeout + tail, 0.0, 0.95)
            self.err_timeout[s] = np.clip(
                prof.error_timeout + timeout + tail, 0.0, 0.95
            )
            fail = prof.error_5xx * (1.0 + self.deploy[s]) + passed_5xx
            self.err_5xx[s] = np.clip(fail, 0.0, 0.95 - self.err_timeout[s])
            extra_5xx[s] = np.maximum(self.err_5xx[s] - prof.error_5xx, 0.0)
            # Timed-out requests beyond the log-normal tail sit at the timeout.
            self.stuck[s] = np.clip(timeout, 0.0, 0.95)

        # Noise of each endpoint's own, not passed on. Callers average their
        # callees' noise, so they get more of it: every service ends up about
        # equally noisy (6-7 % robust spread per step) and a cause is not
        # drowned out by a steadier caller.
        waiting = np.array([sum(w.values()) for w in self.ep_waits])[:, None, None]
        self.ep_rel *= np.exp(
            (1.0 + waiting)
            * noise.ar1(
                "latency.endpoint", (self.n_e, self.n_r, self.n), 0.04, 30.0, step_s
            )
        )

    # --- blips: harmless one-step spikes ---

    def _blips(self) -> None:
        rng = self.noise.generator("blips")
        hours = self.n * self.step_ms / 3_600_000
        for _ in range(int(rng.poisson(hours))):
            k = int(rng.integers(self.n))
            kind = int(rng.integers(4))
            h = int(rng.integers(self.n_h))
            s, r = int(self.h_s[h]), int(self.h_r[h])
            service, region = self.services[s], self.regions[r]
            if kind == 0:
                size = float(rng.uniform(20.0, 40.0))
                self.cpu[h, k] = min(100.0, self.cpu[h, k] + size)
                blip = Blip(
                    int(self.ts[k]),
                    "cpu_usage",
                    service,
                    region,
                    self.host_names[h],
                    size,
                )
            elif kind == 1:
                size = float(rng.uniform(2.5, 4.0))
                self.ep_rel[np.array(self.ep_s) == s, r, k] *= size
                blip = Blip(
                    int(self.ts[k]), "request_latency", service, region, None, size
                )
            elif kind == 2:
                size = float(rng.uniform(8.0, 15.0))
                self.err_5xx[s, r, k] = min(0.5, self.err_5xx[s, r, k] * size)
                blip = Blip(int(self.ts[k]), "error_rate", service, region, None, size)
            else:
                size = float(rng.uniform(2.0, 4.0))
                self.rx_blips.append((h, k, size))
                blip = Blip(
                    int(self.ts[k]),
                    "network_throughput",
                    service,
                    region,
                    self.host_names[h],
                    size,
                )
            self.blips.append(blip)
        self.blips.sort(key=lambda b: b.ts)

    # --- series: host metrics, errors, latency, business ---

    def _offset_steps(self, name: str, count: int) -> np.ndarray:
        """How many steps of history each counter carries at the start (0.5-3 days)."""
        days = self.noise.uniform(name, (count,)) * 2.5 + 0.5
        return np.floor(days * _DAY_MS / self.step_ms)

    def _host_series(self) -> list[tuple[str, dict[str, str], np.ndarray]]:
        noise, step_s = self.noise, self.step_s
        out = [
            ("cpu_usage", self._host_labels(h), self.cpu[h]) for h in range(self.n_h)
        ]
        mem = self._memory()
        out += [("memory_usage", self._host_labels(h), mem[h]) for h in range(self.n_h)]

        rx_bytes = np.array([self.profiles.service(s).rx_bytes for s in self.services])
        tx_bytes = np.array([self.profiles.service(s).tx_bytes for s in self.services])
        ok = 1.0 - self.err_5xx - self.err_timeout
        requests = self.host_rps * step_s
        shape = (self.n_h, self.n)
        background = _BACKGROUND_BYTES_PER_S * step_s
        rx = (
            requests
            * rx_bytes[self.h_s, None]
            * np.exp(0.03 * noise.normal("net.rx", shape))
        )
        rx += background * (1.0 + 0.1 * noise.normal("net.rx.bg", shape))
        for h, k, factor in self.rx_blips:
            rx[h, k] *= factor
        sent = (
            ok[self.h_s, self.h_r] * tx_bytes[self.h_s, None]
            + (1.0 - ok[self.h_s, self.h_r]) * 400.0
        )
        tx = requests * sent * np.exp(0.03 * noise.normal("net.tx", shape))
        tx += background * (1.0 + 0.1 * noise.normal("net.tx.bg", shape))

        history = self._offset_steps("net.offset", self.n_h)
        mean_rps = self.mean_rps[self.h_s, self.h_r] / self.h_count.repeat(self.h_count)
        for direction, incr, size in (("rx", rx, rx_bytes), ("tx", tx, tx_bytes)):
            per_step = mean_rps * step_s * size[self.h_s] + background
            totals = _cumulate(
                np.round(np.maximum(incr, 0.0)), np.round(history * per_step)
            )
            for h in range(self.n_h):
                labels = self._host_labels(h, interface="eth0", direction=direction)
                out.append(("network_throughput", labels, totals[h]))
        return out

    def _host_labels(self, h: int, **extra: str) -> dict[str, str]:
        return {
            "service": self.services[self.h_s[h]],
            "region": self.regions[self.h_r[h]],
            "host": self.host_names[h],
            **extra,
        }

    def _memory(self) -> np.ndarray:
        noise = self.noise
        size = np.array([self.profiles.service(s).memory_bytes for s in self.services])
        base = size[self.h_s] * (
            1.0 + 0.16 * noise.uniform("mem.size", (self.n_h,)) - 0.08
        )
        period_ms = (15.0 + 30.0 * noise.uniform("mem.period", (self.n_h,))) * 60_000.0
        phase = noise.uniform("mem.phase", (self.n_h,))
        amplitude = 0.04 + 0.05 * noise.uniform("mem.amplitude", (self.n_h,))

        since = (self.ts - self.start_ms)[None, :] / period_ms[:, None]
        saw = np.mod(since + phase[:, None], 1.0)
        level = 1.0 + amplitude[:, None] * saw + 0.03 * (self.daily[self.h_r] - 1.0)
        mem = base[:, None] * (level + self.leak)
        mem += base[:, None] * 0.004 * noise.normal("mem.jitter", (self.n_h, self.n))
        return np.round(mem)

    def _error_series(self) -> list[tuple[str, dict[str, str], np.ndarray]]:
        shape = (self.n_s, self.n_r, self.n)
        requests = self.traffic * self.step_s
        history = self._offset_steps("errors.offset", 2 * self.n_s * self.n_r)
        history = history.reshape(2, self.n_s, self.n_r)
        out = []
        profiles = [self.profiles.service(s) for s in self.services]
        kinds = (
            ("5xx", self.err_5xx, [p.error_5xx for p in profiles]),
            ("timeout", self.err_timeout, [p.error_timeout for p in profiles]),
        )
        for i, (error_type, frac, base_frac) in enumerate(kinds):
            counts = poisson_from_uniform(
                requests * frac, self.noise.uniform(f"errors.{error_type}", shape)
            )
            base = np.array(base_frac)
            per_step = self.mean_rps * self.step_s * base[:, None]
            totals = _cumulate(counts, np.round(history[i] * per_step))
            for s, service in enumerate(self.services):
                for r, region in enumerate(self.regions):
                    labels = {
                        "service": service,
                        "region": region,
                        "error_type": error_type,
                    }
                    out.append(("error_rate", labels, totals[s, r]))
        return out

    def _latency_series(self) -> list[tuple[str, dict[str, str], np.ndarray]]:
        noise = self.noise
        ep_s = np.array(self.ep_s)
        shape = (self.n_e, self.n_r, self.n)
        base_ms = np.array(self.ep_latency)[:, None, None]
        median = base_ms * self.ep_rel
        timeout_ms = _TIMEOUT_FACTOR * base_ms
        stuck = self.stuck[ep_s]
        sigma = np.array([self.profiles.service(s).sigma for s in self.services])[ep_s]

        rate = self.traffic[ep_s] * self.ep_share[:, None, None] * self.step_s
        total = poisson_from_uniform(rate, noise.uniform("latency.count", shape))
        probs = np.stack(
            [
                _bucket_probs(median[e], float(sigma[e]), LATENCY_BOUNDS)
                for e in range(self.n_e)
            ],
            axis=1,
        )
        bounds = np.array(LATENCY_BOUNDS)[:, None, None, None]
        probs = (1.0 - stuck) * probs + stuck * (timeout_ms[None] <= bounds)
        z = noise.normal("latency.buckets", (len(LATENCY_BOUNDS), *shape))
        buckets = _cumulative_buckets(total, probs, z)

        spread = np.exp(sigma**2)[:, None, None]
        mean = (1.0 - stuck) * median * np.sqrt(spread) + stuck * timeout_ms
        sd = median * np.sqrt(spread * (spread - 1.0))
        sums = total * mean + np.sqrt(total) * sd * noise.normal("latency.sum", shape)
        sums = np.maximum(sums, 0.0)

        # Counter history: the normal distribution times a few days of traffic.
        history = self._offset_steps("latency.offset", self.n_e * self.n_r)
        history = history.reshape(self.n_e, self.n_r)
        mean_n = self.mean_rps[ep_s] * self.ep_share[:, None] * self.step_s
        past_n = np.round(history * mean_n)
        past_p = np.stack(
            [
                _bucket_probs(
                    np.full(self.n_r, self.ep_latency[e]),
                    float(sigma[e]),
                    LATENCY_BOUNDS,
                )
                for e in range(self.n_e)
            ],
            axis=1,
        )
        past_buckets = np.round(past_p * past_n)
        past_sum = (
            past_n * np.array(self.ep_latency)[:, None] * np.sqrt(spread[:, :, 0])
        )

        out = []
        for e in range(self.n_e):
            for r, region in enumerate(self.regions):
                labels = {
                    "service": self.services[ep_s[e]],
                    "region": region,
                    "endpoint": self.ep_name[e],
                    "method": self.ep_method[e],
                }
                for k, bound in enumerate(LATENCY_BOUNDS):
                    values = _cumulate(buckets[k, e, r], past_buckets[k, e, r])
                    out.append(
                        (
                            "request_latency_bucket",
                            {**labels, "le": _fmt_bound(bound)},
                            values,
                        )
                    )
                count = _cumulate(total[e, r], past_n[e, r])
                out.append(("request_latency_bucket", {**labels, "le": "+Inf"}, count))
                out.append(
                    (
                        "request_latency_sum",
                        labels,
                        _cumulate(sums[e, r], past_sum[e, r]),
                    )
                )
                out.append(("request_latency_count", labels, count))
        return out

    def _business_series(self) -> list[tuple[str, dict[str, str], np.ndarray]]:
        noise, step_s = self.noise, self.step_s
        out = []

        # Users drop a little while the front door fails.
        fronts = [self.s_of[s] for s in self.services if not self.platform.callers(s)]
        front_fail = np.zeros((self.n_r, self.n))
        for s in fronts:
            prof = self.profiles.service(self.services[s])
            failing = (
                self.err_5xx[s]
                + self.err_timeout[s]
                - prof.error_5xx
                - prof.error_timeout
            )
            front_fail = np.maximum(front_fail, np.clip(failing, 0.0, 1.0))
        leaving = 1.0 - 0.5 * _shift(front_fail, 1)
        users_total = self.region_rps[:, None] * 60.0
        for platform, share, shift_h in _PLATFORMS:
            drift = noise.ar1(
                f"users.{platform}", (self.n_r, self.n), 0.015, 600.0, step_s
            )
            users = users_total * share * self._daily(shift_h) * np.exp(drift) * leaving
            for r, region in enumerate(self.regions):
                labels = {"region": region, "platform": platform}
                out.append(("active_users", labels, np.round(users[r])))

        # Engagement follows the feed's successful requests; a slow feed
        # shortens it.
        feed = self.s_of.get("feed", self.s_of[self.order[0]])
        good = self.traffic[feed] * (1.0 - self.err_5xx[feed] - self.err_timeout[feed])
        patience = 1.0 / (1.0 + 0.3 * np.maximum(self.rel[feed] - 1.0, 0.0))
        history = self._offset_steps("engagement.offset", len(_ENGAGEMENT) * self.n_r)
        history = history.reshape(len(_ENGAGEMENT), self.n_r)
        shape = (self.n_r, self.n)
        for i, (content_type, action, per_request, median_s, sigma) in enumerate(
            _ENGAGEMENT
        ):
            name = f"engagement.{content_type}.{action}"
            total = poisson_from_uniform(
                good * per_request * step_s, noise.uniform(f"{name}.count", shape)
            )
            median = median_s * patience
            probs = _bucket_probs(median, sigma, ENGAGEMENT_BOUNDS)
            z = noise.normal(f"{name}.buckets", (len(ENGAGEMENT_BOUNDS), *shape))
            buckets = _cumulative_buckets(total, probs, z)
            spread = math.exp(sigma**2)
            mean = median * math.sqrt(spread)
            sd = median * math.sqrt(spread * (spread - 1.0))
            sums = total * mean + np.sqrt(total) * sd * noise.normal(
                f"{name}.sum", shape
            )
            sums = np.maximum(sums, 0.0)

            past_n = np.round(history[i] * self.mean_rps[feed] * per_request * step_s)
            past_p = _bucket_probs(
                np.full(self.n_r, median_s), sigma, ENGAGEMENT_BOUNDS
            )
            for r, region in enumerate(self.regions):
                labels = {
                    "region": region,
                    "content_type": content_type,
                    "action": action,
                }
                for k, bound in enumerate(ENGAGEMENT_BOUNDS):
                    values = _cumulate(
                        buckets[k, r], np.round(past_p[k, r] * past_n[r])
                    )
                    out.append(
                        (
                            "content_engagement_bucket",
                            {**labels, "le": _fmt_bound(bound)},
                            values,
                        )
                    )
                count = _cumulate(total[r], past_n[r])
                out.append(
                    ("content_engagement_bucket", {**labels, "le": "+Inf"}, count)
                )
                past_sum = past_n[r] * median_s * math.sqrt(spread)
                out.append(
                    ("content_engagement_sum", labels, _cumulate(sums[r], past_sum))
                )
                out.append(("content_engagement_count", labels, count))
        return out
