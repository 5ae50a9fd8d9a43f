"""Tests of the platform simulator, obscore.sim."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from obscore.errors import ConfigError
from obscore.model import SAMPLE_SCHEMA
from obscore.sim import (
    CAUSE_METRICS,
    KINDS,
    Incident,
    Platform,
    SimResult,
    default_incidents,
    default_platform,
    random_incidents,
    simulate,
)

HOUR_MS = 3_600_000
START_MS = 1_767_225_600_000
COUNTER_NAMES = (
    "network_throughput",
    "error_rate",
    "request_latency_bucket",
    "request_latency_sum",
    "request_latency_count",
    "content_engagement_bucket",
    "content_engagement_sum",
    "content_engagement_count",
)


# --- helpers: read a result as a (steps, series) matrix and derive signals ---


class Frame:
    """A SimResult as a matrix, one column per series, in table order."""

    def __init__(self, result: SimResult):
        n_series = len(result.index)
        self.result = result
        self.ids = result.table.column("series_id").to_numpy()[:n_series]
        self.values = result.table.column("value").to_numpy().reshape(-1, n_series)
        self.names = [result.index.name(int(s)) for s in self.ids]
        self.labels = [result.index.labels(int(s)) for s in self.ids]

    def columns(self, name: str, **labels: str) -> list[int]:
        return [
            i
            for i, (n, ls) in enumerate(zip(self.names, self.labels, strict=True))
            if n == name and all(ls.get(k) == v for k, v in labels.items())
        ]

    def signal(self, metric: str, **labels: str) -> np.ndarray:
        """One value per step: gauges averaged, counters as per-step increase,
        latency as the mean of the step's requests (ms). NaN at step 0."""
        if metric in ("cpu_usage", "memory_usage"):
            return self.values[:, self.columns(metric, **labels)].mean(axis=1)
        if metric in ("error_rate", "network_throughput", "request_latency_count"):
            total = self.values[:, self.columns(metric, **labels)].sum(axis=1)
            return np.r_[np.nan, np.diff(total)]
        if metric == "request_latency":
            sums = self.values[:, self.columns("request_latency_sum", **labels)]
            counts = self.values[:, self.columns("request_latency_count", **labels)]
            d_sum = np.diff(sums.sum(axis=1))
            d_count = np.diff(counts.sum(axis=1))
            return np.r_[np.nan, d_sum / np.maximum(d_count, 1.0)]
        raise KeyError(metric)


def cause_signal(frame: Frame, incident: Incident, service: str | None = None):
    labels = incident.cause_labels
    if service is not None:
        labels["service"] = service
    return frame.signal(incident.metric, **labels)


def robust_z(x: np.ndarray, result: SimResult, incident: Incident):
    """z-scores of the incident window and of the hour before, against that
    baseline (median and 1.4826 x MAD); incidents are at least an hour apart."""
    k0 = (incident.start_ms - result.start_ms) // result.step_ms
    k1 = (incident.end_ms - result.start_ms) // result.step_ms
    before = x[max(1, k0 - 360) : k0]
    median = np.median(before)
    mad = 1.4826 * np.median(np.abs(before - median))
    scale = max(mad, 1e-9 * max(abs(median), 1.0), 0.5)
    return (x[k0:k1] - median) / scale, (before - median) / scale


def ratio(x: np.ndarray, result: SimResult, incident: Incident) -> float:
    """Median of the incident's second half over the median of the hour before."""
    k0 = (incident.start_ms - result.start_ms) // result.step_ms
    k1 = (incident.end_ms - result.start_ms) // result.step_ms
    during = x[(k0 + k1) // 2 : k1]
    return float(np.median(during) / np.median(x[max(1, k0 - 360) : k0]))


# --- fixtures: three 24 h runs shared by the module ---


@pytest.fixture(scope="module")
def default_run() -> SimResult:
    return simulate(seed=7)


@pytest.fixture(scope="module")
def quiet_run() -> SimResult:
    return simulate(seed=7, incidents=[])


@pytest.fixture(scope="module")
def every_kind_run() -> SimResult:
    """One incident of each kind, in eu-west, two hours apart."""
    incidents = []
    for n, kind in enumerate(KINDS):
        service = "db" if kind == "slow_db" else "feed"
        start = START_MS + (7 + 2 * n) * HOUR_MS
        incidents.append(
            Incident(
                kind,
                service,
                CAUSE_METRICS[kind],
                "eu-west",
                start,
                start + 40 * 60_000,
            )
        )
    return simulate(seed=11, incidents=incidents)


# --- the table ---


def test_simulate_same_seed_gives_identical_table():
    first = simulate(seed=3, hours=8.0, step_s=30)
    second = simulate(seed=3, hours=8.0, step_s=30)
    other = simulate(seed=4, hours=8.0, step_s=30)
    assert first.table.equals(second.table)
    assert first.incidents == second.incidents
    assert first.blips == second.blips
    assert not first.table.equals(other.table)


def test_table_has_sample_schema_sorted_by_ts_then_series_id(default_run):
    table = default_run.table
    n_series = len(default_run.index)
    n_steps = 24 * 360
    assert table.schema.equals(SAMPLE_SCHEMA)
    assert table.num_rows == n_series * n_steps
    assert default_run.end_ms - default_run.start_ms == n_steps * default_run.step_ms

    ts = table.column("ts").to_numpy().reshape(n_steps, n_series)
    ids = table.column("series_id").to_numpy().reshape(n_steps, n_series)
    assert (ts == ts[:, :1]).all()
    assert (np.diff(ts[:, 0]) == default_run.step_ms).all()
    assert ts[0, 0] == default_run.start_ms
    assert (np.diff(ids.astype(np.float64), axis=1) > 0).all()
    assert (ids == ids[:1]).all()
    assert set(ids[0].tolist()) == set(default_run.index)


def test_series_counts_and_label_sets_per_metric(default_run):
    index = default_run.index
    expected = {
        "cpu_usage": (36, {"service", "region", "host"}),
        "memory_usage": (36, {"service", "region", "host"}),
        "network_throughput": (
            72,
            {"service", "region", "host", "interface", "direction"},
        ),
        "error_rate": (36, {"service", "region", "error_type"}),
        "request_latency_bucket": (
            7 * 3 * 7,
            {"service", "region", "endpoint", "method", "le"},
        ),
        "request_latency_sum": (21, {"service", "region", "endpoint", "method"}),
        "request_latency_count": (21, {"service", "region", "endpoint", "method"}),
        "active_users": (9, {"region", "platform"}),
        "content_engagement_bucket": (
            12 * 7,
            {"region", "content_type", "action", "le"},
        ),
        "content_engagement_sum": (12, {"region", "content_type", "action"}),
        "content_engagement_count": (12, {"region", "content_type", "action"}),
    }
    assert sorted(index.metric_names) == sorted(expected)
    for name, (count, keys) in expected.items():
        ids = index.ids(name)
        assert len(ids) == count, name
        assert all(set(index.labels(s)) == keys for s in ids), name
    assert len(index) == 486

    def values(name: str, key: str) -> set[str]:
        return {index.labels(s)[key] for s in index.ids(name)}

    assert values("request_latency_bucket", "le") == {
        "10", "50", "100", "200", "500", "1000", "+Inf"
    }  # fmt: skip
    assert values("content_engagement_bucket", "le") == {
        "1", "5", "15", "30", "60", "300", "+Inf"
    }  # fmt: skip
    assert values("network_throughput", "direction") == {"rx", "tx"}
    assert values("network_throughput", "interface") == {"eth0"}
    assert values("error_rate", "error_type") == {"5xx", "timeout"}
    assert values("active_users", "platform") == {"web", "ios", "android"}
    assert values("content_engagement_bucket", "content_type") == {"video", "article"}
    assert values("content_engagement_bucket", "action") == {"view", "share"}
    assert values("cpu_usage", "host") == {
        h for hosts in default_run.platform.hosts.values() for h in hosts
    }


@pytest.mark.parametrize("metric", ["request_latency", "content_engagement"])
def test_bucket_series_are_cumulative_in_le_and_over_time(default_run, metric):
    frame = Frame(default_run)
    groups: dict[tuple, dict[str, int]] = {}
    for col, (name, labels) in enumerate(zip(frame.names, frame.labels, strict=True)):
        if name == f"{metric}_bucket":
            key = labels.without("le").items_tuple
            groups.setdefault(key, {})[labels["le"]] = col
    counts = {
        labels.items_tuple: col
        for col, (name, labels) in enumerate(
            zip(frame.names, frame.labels, strict=True)
        )
        if name == f"{metric}_count"
    }
    assert groups
    for key, by_le in groups.items():
        order = sorted(
            by_le, key=lambda le: float("inf") if le == "+Inf" else float(le)
        )
        block = frame.values[:, [by_le[le] for le in order]]
        assert (np.diff(block, axis=1) >= 0).all(), key
        assert (np.diff(block, axis=0) >= 0).all(), key
        assert np.array_equal(block[:, -1], frame.values[:, counts[key]])
        assert (block == np.round(block)).all()


def test_counters_never_decrease(default_run):
    frame = Frame(default_run)
    cols = [i for i, name in enumerate(frame.names) if name in COUNTER_NAMES]
    assert len(cols) == 72 + 36 + 147 + 21 + 21 + 84 + 12 + 12
    steps = np.diff(frame.values[:, cols], axis=0)
    assert (steps >= 0).all()
    assert (frame.values[0, cols] >= 0).all()


def test_gauges_stay_in_range(default_run):
    frame = Frame(default_run)
    cpu = frame.values[:, frame.columns("cpu_usage")]
    memory = frame.values[:, frame.columns("memory_usage")]
    users = frame.values[:, frame.columns("active_users")]
    assert cpu.min() >= 0.0 and cpu.max() <= 100.0
    assert memory.min() > 0.0
    assert users.min() > 0.0
    assert np.isfinite(frame.values).all()


def test_traffic_and_active_users_follow_a_daily_cycle(quiet_run):
    frame = Frame(quiet_run)
    requests = frame.signal("request_latency_count", region="us-east")
    hourly = np.nanmean(requests.reshape(24, -1), axis=1)
    assert hourly.max() > 2.0 * hourly.min()
    users = frame.values[:, frame.columns("active_users", region="eu-west")].sum(axis=1)
    hourly = users.reshape(24, -1).mean(axis=1)
    assert hourly.max() > 2.0 * hourly.min()
    assert np.argmax(hourly) != np.argmax(
        frame.values[:, frame.columns("active_users", region="ap-south")]
        .sum(axis=1)
        .reshape(24, -1)
        .mean(axis=1)
    )


# --- incidents ---


def test_default_incidents_are_three_kinds_spread_after_warmup(default_run):
    incidents = default_run.incidents
    assert sorted(i.kind for i in incidents) == ["bad_deploy", "memory_leak", "slow_db"]
    assert incidents == default_incidents(
        default_run.platform, default_run.start_ms, default_run.end_ms, seed=7
    )
    for incident in incidents:
        assert incident.metric == CAUSE_METRICS[incident.kind]
        assert incident.start_ms >= default_run.start_ms + 6 * HOUR_MS
        assert incident.end_ms <= default_run.end_ms
        assert 20 * 60_000 <= incident.duration_ms <= 60 * 60_000
    for a, b in itertools.pairwise(incidents):
        assert b.start_ms - a.end_ms >= HOUR_MS
    slow = next(i for i in incidents if i.kind == "slow_db")
    assert slow.service == "db"


def test_default_incident_cause_deviates_during_and_not_before(default_run):
    frame = Frame(default_run)
    for incident in default_run.incidents:
        during, before = robust_z(cause_signal(frame, incident), default_run, incident)
        # Memory grows linearly, so look at the second half for the leak.
        half = during[len(during) // 2 :]
        assert np.median(half) > 5.0, incident
        assert np.mean(np.abs(before) > 5.0) < 0.01, incident
        assert np.median(np.abs(before[-90:])) < 2.0, incident


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_moves_its_cause_metric_first_on_the_cause(every_kind_run, kind):
    result = every_kind_run
    frame = Frame(result)
    incident = next(i for i in result.incidents if i.kind == kind)
    cause = cause_signal(frame, incident)
    during, before = robust_z(cause, result, incident)
    assert np.median(during[len(during) // 2 :]) > 5.0
    assert np.mean(np.abs(before) > 5.0) < 0.01
    onset = int(np.argmax(during > 5.0))
    # A leak takes a few minutes to outgrow the GC sawtooth; the rest are sudden.
    assert onset <= (30 if kind == "memory_leak" else 3)

    cause_ratio = ratio(cause, result, incident)
    assert cause_ratio > 1.5
    for caller in result.platform.upstream(incident.service):
        other = cause_signal(frame, incident, service=caller)
        if np.median(other[1:]) > 0:
            assert ratio(other, result, incident) < cause_ratio, caller


def test_slow_db_callers_slow_down_less_and_later_than_the_cause(every_kind_run):
    result = every_kind_run
    frame = Frame(result)
    incident = next(i for i in result.incidents if i.kind == "slow_db")
    cause = cause_signal(frame, incident)
    cause_ratio = ratio(cause, result, incident)
    cause_onset = int(np.argmax(robust_z(cause, result, incident)[0] > 5.0))
    assert 3.0 < cause_ratio < 8.0
    for caller in result.platform.callers(incident.service):
        latency = cause_signal(frame, incident, service=caller)
        caller_ratio = ratio(latency, result, incident)
        assert 1.3 < caller_ratio < cause_ratio, caller
        onset = int(np.argmax(robust_z(latency, result, incident)[0] > 5.0))
        assert onset > cause_onset, caller

        timeouts = frame.signal(
            "error_rate", service=caller, region="eu-west", error_type="timeout"
        )
        k0 = (incident.start_ms - result.start_ms) // result.step_ms
        k1 = (incident.end_ms - result.start_ms) // result.step_ms
        assert timeouts[k0:k1].mean() > 5 * timeouts[k0 - 360 : k0].mean() + 1, caller


def test_incident_effects_are_gone_by_end(every_kind_run):
    result = every_kind_run
    late = Frame(result).values
    calm = Frame(simulate(seed=11, incidents=[])).values
    for incident in result.incidents:
        k1 = -(-(incident.end_ms - result.start_ms) // result.step_ms)
        # From end_ms on, gauges are back and counters grow as if nothing happened.
        np.testing.assert_allclose(
            np.diff(late[k1 - 1 : k1 + 60], axis=0),
            np.diff(calm[k1 - 1 : k1 + 60], axis=0),
            rtol=1e-9,
            atol=1e-3,
            err_msg=incident.kind,
        )


def test_no_incidents_is_the_counterfactual_of_the_default_run(default_run, quiet_run):
    assert quiet_run.incidents == []
    assert quiet_run.blips == default_run.blips
    with_incidents, without = Frame(default_run), Frame(quiet_run)
    assert np.array_equal(with_incidents.ids, without.ids)

    outside = np.ones(len(with_incidents.values), dtype=bool)
    for incident in default_run.incidents:
        k0 = (incident.start_ms - default_run.start_ms) // default_run.step_ms
        k1 = -(-(incident.end_ms - default_run.start_ms) // default_run.step_ms)
        outside[k0:k1] = False
    gauges = [
        i
        for i, name in enumerate(with_incidents.names)
        if name in ("cpu_usage", "memory_usage", "active_users")
    ]
    assert np.array_equal(
        with_incidents.values[outside][:, gauges], without.values[outside][:, gauges]
    )

    for incident in default_run.incidents:
        during, _ = robust_z(cause_signal(without, incident), quiet_run, incident)
        assert np.mean(np.abs(during) > 5.0) < 0.02, incident


def test_blips_are_single_steps(quiet_run):
    frame = Frame(quiet_run)
    assert quiet_run.blips
    for blip in quiet_run.blips:
        k = (blip.ts - quiet_run.start_ms) // quiet_run.step_ms
        if blip.metric != "cpu_usage" or not 2 <= k < len(frame.values) - 2:
            continue
        cpu = frame.values[:, frame.columns("cpu_usage", host=blip.host)[0]]
        assert cpu[k] > max(cpu[k - 1], cpu[k + 1]) + 10 or cpu[k] == 100.0


def test_random_incidents_are_apart_and_of_the_requested_kinds():
    platform = default_platform()
    end_ms = START_MS + 24 * HOUR_MS
    incidents = random_incidents(platform, START_MS, end_ms, n=8, seed=5)
    assert len(incidents) == 8
    assert {i.kind for i in incidents} == set(KINDS)
    for a, b in itertools.pairwise(incidents):
        assert b.start_ms - a.end_ms >= HOUR_MS
    for incident in incidents:
        assert incident.start_ms >= START_MS + 6 * HOUR_MS
        assert incident.end_ms <= end_ms
        assert incident.metric == CAUSE_METRICS[incident.kind]
        assert incident.region in (None, *platform.regions)
        assert 0.7 <= incident.magnitude <= 1.5
        if incident.kind == "slow_db":
            assert incident.service == "db"

    chosen = random_incidents(
        platform,
        START_MS,
        end_ms,
        n=4,
        seed=6,
        kinds=("cpu_saturation", "traffic_surge"),
    )
    assert sorted(i.kind for i in chosen) == sorted(
        ["cpu_saturation", "traffic_surge"] * 2
    )
    assert random_incidents(platform, START_MS, end_ms, n=8, seed=5) == incidents
    assert random_incidents(platform, START_MS, end_ms, n=0, seed=5) == []


def test_random_incidents_refuse_what_does_not_fit():
    platform = default_platform()
    with pytest.raises(ConfigError, match="cannot fit 20 incidents"):
        random_incidents(platform, START_MS, START_MS + 24 * HOUR_MS, n=20, seed=0)
    with pytest.raises(ConfigError, match="unknown incident kind 'oom'"):
        random_incidents(platform, START_MS, START_MS + 24 * HOUR_MS, 2, 0, ("oom",))


def test_random_incidents_simulate_with_their_effects():
    platform = default_platform()
    end_ms = START_MS + 12 * HOUR_MS
    incidents = random_incidents(platform, START_MS, end_ms, n=3, seed=2)
    result = simulate(seed=2, hours=12.0, step_s=30, incidents=incidents)
    frame = Frame(result)
    for incident in incidents:
        during, _ = robust_z(cause_signal(frame, incident), result, incident)
        assert np.median(during[len(during) // 2 :]) > 5.0, incident


def test_simulate_rejects_incidents_that_do_not_fit_the_platform():
    bad = Incident("bad_deploy", "billing", "error_rate", None, START_MS, START_MS + 1)
    with pytest.raises(ConfigError, match="unknown service"):
        simulate(hours=1.0, incidents=[bad])
    wrong = Incident("slow_db", "db", "cpu_usage", None, START_MS, START_MS + 60_000)
    with pytest.raises(ConfigError, match="metric must be 'request_latency'"):
        simulate(hours=1.0, incidents=[wrong])
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        simulate(seed=-1, hours=1.0)


# --- the platform ---


def test_default_platform_shape_and_lookups():
    platform = default_platform()
    assert platform.services == ("gateway", "auth", "feed", "upload", "recommend", "db")
    assert platform.regions == ("us-east", "eu-west", "ap-south")
    assert all(len(hosts) == 2 for hosts in platform.hosts.values())
    assert platform.hosts[("feed", "eu-west")] == ("feed-eu-west-1", "feed-eu-west-2")
    assert platform.host_service("feed-eu-west-1") == ("feed", "eu-west")
    assert platform.callers("db") == ("auth", "feed", "upload", "recommend")
    assert platform.callers("gateway") == ()
    assert platform.upstream("db") == ("auth", "feed", "upload", "recommend", "gateway")
    assert platform.topological_order()[0] == "gateway"
    assert platform.topological_order()[-1] == "db"
    assert ("/login", "POST") in platform.endpoints["auth"]
    assert platform.owner("db") == "data"
    assert hash(platform) == hash(default_platform())
    with pytest.raises(KeyError, match="unknown host"):
        platform.host_service("nope-1")


def test_platform_refuses_a_dependency_cycle():
    platform = default_platform()
    cyclic = dict(platform.dependencies, db=("feed",))
    with pytest.raises(ConfigError, match="cycle"):
        Platform(
            platform.services,
            platform.regions,
            platform.hosts,
            cyclic,
            platform.endpoints,
            platform.owners,
        )


def test_custom_platform_simulates_with_generic_profiles():
    services = ("web", "api", "cache")
    regions = ("north",)
    platform = Platform(
        services=services,
        regions=regions,
        hosts={(s, "north"): (f"{s}-1",) for s in services},
        dependencies={"web": ("api",), "api": ("cache",)},
        endpoints=dict.fromkeys(services, (("/", "GET"),)),
        owners={},
    )
    incidents = random_incidents(platform, START_MS, START_MS + 10 * HOUR_MS, 2, seed=1)
    result = simulate(
        seed=1, hours=10.0, step_s=60, incidents=incidents, platform=platform
    )
    assert len(result.index.ids("cpu_usage")) == 3
    assert len(result.index.ids("request_latency_bucket")) == 3 * 7
    assert np.isfinite(result.table.column("value").to_numpy()).all()


def test_result_helpers_find_series_and_values(default_run):
    leak = next(i for i in default_run.incidents if i.kind == "memory_leak")
    ids = default_run.cause_series(leak)
    assert len(ids) == 2
    assert {default_run.index.labels(s)["host"] for s in ids} == set(
        default_run.platform.hosts[(leak.service, leak.region)]
    )
    values = default_run.values(ids[0])
    assert values.shape == (default_run.n_steps,)
    frame = Frame(default_run)
    col = int(np.flatnonzero(frame.ids == ids[0])[0])
    assert np.array_equal(values, frame.values[:, col])

    slow = next(i for i in default_run.incidents if i.kind == "slow_db")
    names = {default_run.index.name(s) for s in default_run.cause_series(slow)}
    assert names == {
        "request_latency_bucket",
        "request_latency_sum",
        "request_latency_count",
    }
    with pytest.raises(KeyError, match="not in the table"):
        default_run.values(12345)
