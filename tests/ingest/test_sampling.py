"""Tests for obscore.ingest.sampling: adaptive rates and unbiased estimates."""

from __future__ import annotations

import numpy as np
import pytest

from obscore.errors import ConfigError
from obscore.ingest.sampling import AdaptiveSampler

BOUNDS = [10.0, 50.0, 100.0, 200.0, 500.0, 1000.0]  # the default latency buckets (ms)


class _Clock:
    """A simulated clock in ms that the test moves."""

    def __init__(self) -> None:
        self.now_ms = 0

    def __call__(self) -> int:
        return self.now_ms


def _truth(values: np.ndarray) -> np.ndarray:
    # Prometheus' le: a value goes to the first bucket whose bound is >= it.
    return np.bincount(
        np.searchsorted(BOUNDS, values, side="left"), minlength=len(BOUNDS) + 1
    )


def _traffic(seed: int = 20240918) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1,000,000 latencies (ms) with Poisson arrivals: times (ms), values, segment."""
    rng = np.random.default_rng(seed)
    segments = [  # name, observations, per second, median latency (ms)
        ("calm", 150_000, 2_000, 80.0),
        ("rate burst", 200_000, 20_000, 80.0),
        ("calm", 200_000, 2_000, 80.0),
        ("latency burst", 40_000, 2_000, 400.0),
        ("calm", 410_000, 2_000, 80.0),
    ]
    ts, values, names = [], [], []
    start = 0.0
    for name, n, per_s, median in segments:
        arrivals = start + np.cumsum(rng.exponential(1000.0 / per_s, n))
        start = arrivals[-1]
        ts.append(arrivals)
        values.append(rng.lognormal(np.log(median), 0.6, n))
        names.append(np.full(n, name))
    return (
        np.concatenate(ts).astype(np.int64),
        np.concatenate(values),
        np.concatenate(names),
    )


def test_a_million_observations_with_two_bursts_are_estimated_without_bias():
    ts, values, segment = _traffic()
    n = len(values)
    latency = np.flatnonzero(segment == "latency burst")
    trigger_at, release_at = latency[0], latency[-1] + 1
    clock = _Clock()
    sampler = AdaptiveSampler(clock=clock, seed=1)
    hist = sampler.histogram(BOUNDS)
    kept = np.zeros(n, dtype=bool)
    in_burst = np.zeros(n, dtype=bool)

    for i, (t, v) in enumerate(zip(ts.tolist(), values.tolist())):
        clock.now_ms = t
        if i == trigger_at:  # what the engine does on a latency anomaly
            sampler.trigger(reason="latency anomaly")
        elif i == release_at:
            sampler.release()
        in_burst[i] = sampler.in_burst
        before = hist.count
        hist.observe(v)
        kept[i] = hist.count != before

    # Unbiased: 1% on count and sum (their standard errors are about 0.3%),
    # 3 standard errors on each bucket.
    assert hist.count == pytest.approx(n, rel=0.01)
    assert hist.sum == pytest.approx(values.sum(), rel=0.01)
    z = (hist.bucket_counts - _truth(values)) / hist.standard_errors
    assert np.abs(z).max() <= 3.0, z

    # Two bursts, one per trigger, no flapping; every observation made during
    # a burst was kept.
    assert [b.reason for b in sampler.bursts] == ["rate", "latency anomaly"]
    assert kept[in_burst].all()
    assert in_burst[trigger_at:release_at].all()
    # The rate burst is noticed within its first window (1 s, 20,000
    # observations) and holds to its end.
    rate = np.flatnonzero(segment == "rate burst")
    noticed = rate[np.argmax(in_burst[rate])]
    assert 0 < noticed - rate[0] < 20_000
    assert in_burst[noticed : rate[-1] + 1].all()
    # About 0.1 of the calm observations and all of the bursts: 0.31 overall.
    assert 0.25 < kept.mean() < 0.35
    calm = segment == "calm"
    assert kept[calm & ~in_burst].mean() == pytest.approx(0.1, abs=0.005)


def _feed(
    sampler: AdaptiveSampler, clock: _Clock, hist, per_window: list[int]
) -> list[bool]:
    """One window per entry: move the clock 1 s, observe that many values."""
    rng = np.random.default_rng(3)
    states = []
    for n in per_window:
        clock.now_ms += 1_000
        hist.observe_many(rng.lognormal(4.0, 0.5, n))
        states.append(sampler.in_burst)
    return states


def test_hysteresis_keeps_a_burst_from_flapping():
    # Traffic that swings between calm and 3.5 times calm every second.
    swings = [1_000] * 10 + [3_500, 1_000] * 10 + [1_000] * 10

    clock = _Clock()
    sampler = AdaptiveSampler(clock=clock, seed=5)
    states = _feed(sampler, clock, sampler.histogram(BOUNDS), swings)
    assert len(sampler.bursts) == 1
    assert states[10:30] == [True] * 20  # on at the first swing, on through all
    assert not states[-1]  # off after three calm windows

    clock = _Clock()
    flappy = AdaptiveSampler(
        clock=clock, seed=5, exit_factor=3.0, exit_windows=1, min_burst_ms=0
    )
    _feed(flappy, clock, flappy.histogram(BOUNDS), swings)
    assert len(flappy.bursts) >= 5  # without hysteresis: on and off with the swings


def test_a_lasting_rise_becomes_the_new_baseline():
    clock = _Clock()
    sampler = AdaptiveSampler(clock=clock, seed=2, max_burst_ms=20_000)
    states = _feed(
        sampler, clock, sampler.histogram(BOUNDS), [1_000] * 10 + [5_000] * 40
    )

    assert states[10] and not states[-1]
    assert len(sampler.bursts) == 1
    assert sampler.bursts[0].end_ms - sampler.bursts[0].start_ms == 20_000
    assert sampler.baseline == pytest.approx(5_000, rel=0.15)


def test_trigger_for_a_duration_ends_by_itself():
    clock = _Clock()
    sampler = AdaptiveSampler(clock=clock, seed=4)
    sampler.trigger(2_000, reason="latency anomaly")
    assert (sampler.in_burst, sampler.rate) == (True, 1.0)
    clock.now_ms = 1_999
    sampler.tick()
    assert sampler.in_burst
    clock.now_ms = 2_000
    sampler.tick()
    assert (sampler.in_burst, sampler.rate) == (False, 0.1)
    assert list(sampler.bursts) == [(0, 2_000, "latency anomaly")]


def test_observe_many_at_full_rate_matches_a_plain_histogram(rng):
    sampler = AdaptiveSampler(baseline_rate=1.0, seed=0)
    hist = sampler.histogram(BOUNDS)
    values = np.concatenate(
        [rng.lognormal(4.0, 1.0, 50_000), [np.nan, np.inf, -np.inf, 10.0]]
    )

    hist.observe_many(values[:30_000])
    for v in values[30_000:].tolist():
        hist.observe(v)

    finite = values[~np.isnan(values)]
    np.testing.assert_array_equal(hist.bucket_counts, _truth(finite))
    assert hist.n_nan == 1
    assert hist.count == len(finite)
    # inf - inf: the sum is NaN as soon as both infinities are in, as with floats
    assert np.isnan(hist.sum)
    assert hist.standard_errors.tolist() == [0.0] * (len(BOUNDS) + 1)


def test_observe_many_at_baseline_is_unbiased(rng):
    sampler = AdaptiveSampler(seed=11)
    hist = sampler.histogram(BOUNDS)
    values = rng.lognormal(4.0, 1.0, 400_000)

    hist.observe_many(values)

    z = (hist.bucket_counts - _truth(values)) / hist.standard_errors
    assert np.abs(z).max() <= 3.0, z
    assert hist.count == pytest.approx(len(values), rel=0.01)
    assert hist.sum == pytest.approx(values.sum(), rel=0.02)


def test_same_seed_same_estimates(rng):
    values = rng.lognormal(4.0, 1.0, 10_000).tolist()
    counts = []
    for _ in range(2):
        hist = AdaptiveSampler(seed=9).histogram(BOUNDS)
        for v in values:
            hist.observe(v)
        counts.append(hist.bucket_counts.tolist())
    assert counts[0] == counts[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline_rate": 0.0}, r"baseline_rate must be in \(0, 1\], got 0\.0"),
        (
            {"burst_rate": 0.05},
            r"burst_rate must be in \[baseline_rate = 0\.1, 1\], got 0\.05",
        ),
        ({"exit_factor": 4.0}, "exit_factor 4.0 and enter_factor 3.0"),
        ({"window_ms": 0}, "window_ms must be positive, got 0"),
        (
            {"min_burst_ms": 10, "max_burst_ms": 5},
            "need 0 <= min_burst_ms <= max_burst_ms",
        ),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AdaptiveSampler(**kwargs)


def test_bad_bounds_are_refused():
    with pytest.raises(
        ConfigError,
        match=r"bounds must be finite and strictly increasing, got \[1\.0, 1\.0\]",
    ):
        AdaptiveSampler().histogram([1.0, 1.0])


# --- through the engine ------------------------------------------------------------


def _engine(**sampling):
    from obscore import Engine
    from obscore.config import load_config

    config = load_config(
        overrides={
            "metrics": [
                {
                    "name": "latency_ms",
                    "kind": "histogram",
                    "labels": ["service", "endpoint"],
                    "buckets": BOUNDS,
                },
                {"name": "errors_total", "kind": "counter", "labels": ["service"]},
            ],
            "sampling": sampling,
        }
    )
    return Engine(config=config)


def test_engine_histogram_observe_is_unbiased_and_keeps_all_in_a_burst():
    engine = _engine()
    hist = engine.histogram("latency_ms")
    a = hist.labels(service="shop", endpoint="/cart")
    b = hist.labels(service="shop", endpoint="/pay")
    rng = np.random.default_rng(11)
    values = rng.lognormal(np.log(80.0), 0.6, 1_000_000)
    calm, burst = values[:600_000], values[600_000:]

    for v in calm.tolist():
        a.observe(v)
    count_calm = a.sampled.count
    n_triggered = engine.trigger_sampling(
        "latency_ms", labels={"endpoint": "/cart"}, reason="latency anomaly"
    )
    for v in burst.tolist():
        a.observe(v)
    for v in values[:10_000].tolist():
        b.observe(v)

    # The trigger reached the one series named, for [sampling] anomaly_burst.
    assert n_triggered == 1
    assert a.sampled._sampler.in_burst and a.sampled._sampler.rate == 1.0
    assert not b.sampled._sampler.in_burst and b.sampled._sampler.rate == 0.1
    # In the burst every observation is kept with weight 1: its count is exact.
    assert a.sampled.count - count_calm == len(burst)

    # What the engine stores at the flush: unbiased estimates of the truth.
    engine.flush()
    stored = {
        name: engine.query_promql(f'{name}{{endpoint="/cart"}}')["value"].to_pylist()
        for name in ("latency_ms_count", "latency_ms_sum")
    }
    buckets = engine.query_promql('latency_ms_bucket{endpoint="/cart"}')
    by_le = dict(zip(buckets["le"].to_pylist(), buckets["value"].to_pylist()))
    les = ("10", "50", "100", "200", "500", "1000", "+Inf")
    cumulative = np.array([by_le[le] for le in les])
    assert stored["latency_ms_count"] == [a.sampled.count]
    np.testing.assert_allclose(cumulative, a.sampled.cumulative_counts)

    truth = _truth(values)
    se = a.sampled.standard_errors
    count_se = float(np.sqrt((se**2).sum()))
    assert abs(stored["latency_ms_count"][0] - len(values)) <= 4 * count_se
    assert count_se / len(values) < 0.005  # so within 2% at the worst
    # the sum's standard error at rate 0.1 on the calm part bounds it
    sum_se = float(np.sqrt((calm**2).sum() * (1 / 0.1 - 1)))
    assert abs(stored["latency_ms_sum"][0] - values.sum()) <= 4 * sum_se
    # per bucket, against its true standard error (rate 0.1 on the calm part):
    # the estimated one is 0 for a tail bucket no kept observation fell in
    true_se = np.sqrt(_truth(calm) * (1 / 0.1 - 1))
    z = (np.diff(cumulative, prepend=0.0) - truth) / np.maximum(true_se, 1.0)
    assert np.abs(z).max() <= 4.0, z


def test_pipeline_latency_and_error_anomalies_trigger_the_same_series():
    import time

    engine = _engine(anomaly_burst="10m")
    step = 10_000
    now = int(time.time() * 1000) // step * step
    start = now - 2 * 3_600_000  # the detectors learn the first hour
    hist = engine.histogram("latency_ms")
    errors = engine.counter("errors_total")
    series = [("auth", "/login"), ("shop", "/cart"), ("shop", "/pay"), ("feed", "/")]
    children = {s: hist.labels(service=s[0], endpoint=s[1]) for s in series}
    rng = np.random.default_rng(5)
    for t in range(start, now + 1, step):
        late = t > now - 240_000
        for (service, endpoint), child in children.items():
            median = 400.0 if late and endpoint == "/cart" else 80.0
            for k, v in enumerate(rng.lognormal(np.log(median), 0.3, 5).tolist()):
                child.observe(v, ts_ms=t + k)  # timed: exact, not sampled
        for service in ("auth", "shop", "feed"):
            n = rng.poisson(50 if late and service == "auth" else 2)
            errors.labels(service=service).inc(float(n), ts_ms=t)

    result = engine.run_pipeline(start, now, step)

    signals = {a.signal for a in result.anomalies}
    assert 'latency_ms{service="shop"}' in signals
    assert 'errors_total{service="auth"}' in signals
    reasons = {
        dict(labels)["endpoint"]: [b.reason for b in sampler.bursts]
        for (_, labels), sampler in engine._samplers.items()
    }
    assert reasons == {
        "/login": ['error anomaly on errors_total{service="auth"}'],
        "/cart": ['latency anomaly on latency_ms{service="shop"}'],
        "/pay": ['latency anomaly on latency_ms{service="shop"}'],
        "/": [],
    }
    assert engine.stats()["sampling_rate"] == {"latency_ms": 1.0}

    # The live pipeline (Engine.tick) triggers the same way.
    live = _engine()
    child = live.histogram("latency_ms").labels(service="shop", endpoint="/cart")
    live.ingest(engine.hot.read_table(), engine.index)
    live.tick(now_ms=now + step)
    assert [b.reason for b in child.sampled._sampler.bursts] == [
        'latency anomaly on latency_ms{service="shop"}'
    ]

    # The same incident an hour ago (a replay) triggers nothing.
    import pyarrow.compute as pc

    old = _engine()
    child = old.histogram("latency_ms").labels(service="shop", endpoint="/cart")
    table = engine.hot.read_table()
    hour = 3_600_000
    table = table.set_column(1, "ts", pc.subtract(table["ts"], hour))
    old.ingest(table, engine.index)
    replayed = old.run_pipeline(start - hour, now - hour, step)
    assert 'latency_ms{service="shop"}' in {a.signal for a in replayed.anomalies}
    assert not child.sampled._sampler.bursts


def test_sampling_trigger_settings_come_from_the_config():
    engine = _engine(enter_factor=5.0, exit_factor=2.0, window="2s", min_burst="1s")
    child = engine.histogram("latency_ms").labels(service="a", endpoint="/")
    sampler = child.sampled._sampler
    assert (sampler.enter_factor, sampler.exit_factor) == (5.0, 2.0)
    assert (sampler.window_ms, sampler.min_burst_ms) == (2_000, 1_000)
    with pytest.raises(ConfigError, match="sampling.exit_factor: 6.0 is above"):
        _engine(exit_factor=6.0)
