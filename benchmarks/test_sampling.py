"""Per-call cost of a histogram observation: obscore's sampled histogram
against prometheus_client's.

What: a Python loop calling ``observe(v)`` once per value of a pre-built list
of latencies (lognormal, median 55 ms, from a fixed seed) into a histogram
with the default latency buckets (10, 50, 100, 200, 500, 1000 ms, +Inf).
Four ways, in one benchmark group per size:

- ``obscore_baseline``: ``SampledHistogram.observe`` at the baseline rate
  0.1 (one draw; a bucket search for the kept tenth);
- ``obscore_burst``: the same during a burst, rate 1.0 (every value kept);
- ``obscore_engine``: the public API, ``Engine.histogram(...).labels(...)``
  and its ``observe``, which hands the value to the series' sampler (at the
  baseline rate unless a burst starts);
- ``prometheus_client``: ``prometheus_client.Histogram.observe`` (version
  pinned by the environment, 0.26.0 when written).

Sizes: 10,000 values, and 1,000,000 (a 32 MB list of floats, past the CPU
caches).  The loop costs the same for all three; the report is the ratio of
the means within a group, i.e. the ratio per call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from obscore.ingest.sampling import AdaptiveSampler

prometheus_client = pytest.importorskip("prometheus_client")

BOUNDS = [10.0, 50.0, 100.0, 200.0, 500.0, 1000.0]
SIZES = [10_000, 1_000_000]
IMPLS = ["obscore_baseline", "obscore_burst", "obscore_engine", "prometheus_client"]


@pytest.fixture(scope="module")
def latencies() -> dict[int, list[float]]:
    rng = np.random.default_rng(20240918)
    values = rng.lognormal(np.log(55.0), 0.9, max(SIZES))
    return {n: values[:n].tolist() for n in SIZES}


def _observer(impl: str) -> Callable[[float], None]:
    if impl == "prometheus_client":
        registry = prometheus_client.CollectorRegistry()
        hist = prometheus_client.Histogram(
            "latency_ms", "Request latency.", buckets=BOUNDS, registry=registry
        )
        return hist.observe
    if impl == "obscore_engine":
        from obscore import Engine
        from obscore.config import load_config

        config = load_config(
            overrides={
                "metrics": [
                    {
                        "name": "latency_ms",
                        "kind": "histogram",
                        "labels": ["endpoint"],
                        "buckets": BOUNDS,
                    }
                ]
            }
        )
        engine = Engine(config=config)
        return engine.histogram("latency_ms").labels(endpoint="/").observe
    sampler = AdaptiveSampler(seed=1)
    if impl == "obscore_burst":
        sampler.trigger(reason="benchmark")
    return sampler.histogram(BOUNDS).observe


def _loop(observe: Callable[[float], None], values: list[float]) -> None:
    for v in values:
        observe(v)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", SIZES)
def test_histogram_observe(benchmark, latencies, size: int, impl: str) -> None:
    benchmark.group = f"histogram observe: {size:,} calls"
    observe = _observer(impl)
    rounds = 20 if size <= 10_000 else 3
    benchmark.pedantic(
        _loop,
        args=(observe, latencies[size]),
        rounds=rounds,
        iterations=1,
        warmup_rounds=1,
    )
