"""``obscore serve --simulate``: a simulated day of the default platform, ending now.

The day is :func:`obscore.sim.simulate` with seed 0 over 24 hours, shifted so
its last sample is the current minute, with the demo's three incidents plus
one that is still under way at the end, so the dashboard shows firing alerts
next to resolved ones.
"""

from __future__ import annotations

import logging
import time

from obscore.catalogue import Catalogue, from_platform
from obscore.engine import Engine
from obscore.sim import (
    CAUSE_METRICS,
    Incident,
    default_incidents,
    default_platform,
    simulate,
)

logger = logging.getLogger(__name__)

HOURS = 24.0
STEP_MS = 10_000
ONGOING_MS = 40 * 60_000


def simulated_catalogue() -> Catalogue:
    """The services of the simulated platform, for the engine's catalogue."""
    return from_platform(default_platform())


def simulated_incidents(start_ms: int, end_ms: int, seed: int = 0) -> list[Incident]:
    """The demo's incidents plus a bad deploy of ``feed`` in us-east that is still going on."""
    platform = default_platform()
    incidents = default_incidents(platform, start_ms, end_ms, seed)
    ongoing = Incident(
        "bad_deploy",
        "feed",
        CAUSE_METRICS["bad_deploy"],
        "us-east",
        end_ms - ONGOING_MS,
        end_ms,
    )
    if all(i.end_ms <= ongoing.start_ms for i in incidents):
        incidents.append(ongoing)
    return incidents


def fill_from_simulation(
    engine: Engine, seed: int = 0, end_ms: int | None = None
) -> None:
    """Ingest a simulated day ending at ``end_ms`` (now) and run the pipeline over it."""
    t0 = time.perf_counter()
    if end_ms is None:
        end_ms = time.time_ns() // 1_000_000 // 60_000 * 60_000
    start_ms = end_ms - int(HOURS * 3_600_000)
    incidents = simulated_incidents(start_ms, end_ms, seed)
    sim = simulate(
        seed=seed,
        hours=HOURS,
        step_s=STEP_MS / 1000,
        incidents=incidents,
        start_ms=start_ms,
    )
    engine.ingest(sim.table, sim.index)
    for truth in sim.incidents:
        if truth.kind == "bad_deploy":
            engine.record_event(
                truth.service,
                "deploy",
                f"release of {truth.service}",
                ts_ms=truth.start_ms - 60_000,
                region=truth.region,
            )
    engine.run_pipeline(sim.start_ms, sim.end_ms, sim.step_ms)
    logger.info(
        "simulation loaded: %d series, %d samples, %d incidents injected in %.1f s",
        len(sim.index),
        sim.table.num_rows,
        len(sim.incidents),
        time.perf_counter() - t0,
    )
