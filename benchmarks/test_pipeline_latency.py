"""Live pipeline latency: a sample's arrival to its alert decision, in real time.

What: 10,000 ``cpu_usage`` series (50 services x 4 regions x 50 hosts, 200
signals) scraped every 10 s of wall time for ``LIVE_S`` (2 minutes): each
period ingests one sample per series stamped with the wall clock, then
``Engine.tick`` decides the alerts for that grid point.  The latency of a
period is the time from the start of its ingest to the end of its tick; the
pipeline's CPU share is the process CPU time over the wall time of the live
phase.  From the 7th period on, 200 series of one service jump, so some
ticks raise alerts.  One hour of history is loaded first (not timed) so
the detector is past its warm-up.
Against what: ``Engine.run_pipeline`` over the last hour, the batch way of
staying current (what ``obscore serve``'s periodic loop did), timed on three
periods; the ratio is its median over the live tick's median.

First run (2 shared cores, four other test runs going): 13 periods, latency
p50 2.23 s, p99 3.86 s, CPU share 7.1 % (0.7 s of CPU per 10 s period), batch
hour 3.63 s, ratio 1.6.  Issue 9 asks p99 < 1 s on one core: not shown here.
A profile of one tick on a quieter machine: 0.45-0.8 s, half in the query
layer (one instant lookup per series) and 40 % in the robust z-score (pandas
rolling per signal per tick).

After the batched gauge read and the incremental ensemble (cafce96,
483fe74), 2026-12-04 on a 2-core AVX-512 EPYC, load 0.2-3: 13 periods,
latency p50 21-26 ms, p99 37-41 ms, CPU share 0.2-0.3 %, batch hour
0.46-0.51 s, ratio 20-22 (two runs, the second with the grouping of
correlate.group_anomalies).  With the signal tests of the grouping's
dependency ties (c5472c6), same kind of machine, load 0.1-0.5: p50 14 ms,
p99 20 ms, CPU share 0.16 %, batch hour 0.32 s, ratio 23.5; with the
shared-dependency tie (e8c32cf): p50 13 ms, p99 22 ms, CPU share 0.16 %,
ratio 24.8.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from obscore.engine import Engine
from obscore.model import SeriesIndex, sample_table

STEP_MS = 10_000
LIVE_S = 120.0
N_SERVICES, N_REGIONS, N_HOSTS = 50, 4, 50


def _series() -> tuple[SeriesIndex, np.ndarray]:
    index = SeriesIndex()
    ids = [
        index.add(
            "cpu_usage",
            {"service": f"svc{s}", "region": f"r{r}", "host": f"h{s}-{r}-{h}"},
        )
        for s in range(N_SERVICES)
        for r in range(N_REGIONS)
        for h in range(N_HOSTS)
    ]
    return index, np.array(ids, np.uint64)


def _warm_engine(index, ids, rng, now_ms: int) -> Engine:
    engine = Engine()
    t0 = now_ms - 3_600_000
    for k in range(360):
        values = 50 + rng.normal(0, 5, len(ids))
        engine.ingest(
            sample_table(ids, np.full(len(ids), t0 + k * STEP_MS), values),
            index if k == 0 else None,
        )
    engine.tick(t0 + 359 * STEP_MS)  # catch up on the hour: not timed
    return engine


@pytest.mark.slow
def test_live_tick_latency_10k_series_every_10s(benchmark):
    rng = np.random.default_rng(7)
    index, ids = _series()
    now = time.time_ns() // 1_000_000 // STEP_MS * STEP_MS
    engine = _warm_engine(index, ids, rng, now)
    latencies: list[float] = []

    def live() -> None:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        period = 0
        next_at = time.monotonic()
        while time.perf_counter() - wall0 < LIVE_S:
            time.sleep(max(0.0, next_at - time.monotonic()))
            ts = time.time_ns() // 1_000_000
            values = 50 + rng.normal(0, 5, len(ids))
            if period >= 6:
                values[:200] += 60
            start = time.perf_counter()
            engine.ingest(sample_table(ids, np.full(len(ids), ts), values))
            engine.tick(ts)
            latencies.append(time.perf_counter() - start)
            period += 1
            next_at += STEP_MS / 1000
        benchmark.extra_info["cpu_share"] = (time.process_time() - cpu0) / (
            time.perf_counter() - wall0
        )

    benchmark.pedantic(live, rounds=1, iterations=1)
    lat = np.array(latencies)
    end = engine.runner.cursor_ms
    batch = []
    for _ in range(3):
        t = time.perf_counter()
        engine.run_pipeline(end - 3_600_000, end, STEP_MS)
        batch.append(time.perf_counter() - t)
    benchmark.extra_info.update(
        periods=len(lat),
        latency_p50_s=float(np.percentile(lat, 50)),
        latency_p99_s=float(np.percentile(lat, 99)),
        latency_max_s=float(lat.max()),
        alerts=len(engine.alerts()),
        batch_last_hour_median_s=float(np.median(batch)),
        ratio_batch_over_live=float(np.median(batch) / np.median(lat)),
    )
    print(benchmark.extra_info)
    assert len(lat) >= 12 and engine.alerts()
