"""Platform simulator: realistic metrics with injected incidents and their ground truth.

:func:`simulate` runs a platform of services (:func:`default_platform`: gateway,
auth, feed, upload, recommend, db in three regions, two hosts each) over a grid
of steps and returns one sample table with the incidents that were injected.
The kinds of incident, their cause metrics and effects are described in
:mod:`obscore.sim.incident`; the model in :mod:`obscore.sim.simulator`.

Series (every value float64, one sample per series per step):

=============================  =======  =========================================
metric                         type     labels
=============================  =======  =========================================
cpu_usage                      gauge    service, region, host (percent, 0-100)
memory_usage                   gauge    service, region, host (bytes)
network_throughput             counter  service, region, host, interface="eth0",
                                        direction in rx / tx (bytes)
error_rate                     counter  service, region, error_type in 5xx /
                                        timeout (errors; its rate is errors/s)
request_latency_bucket         counter  service, region, endpoint, method, le in
                                        10, 50, 100, 200, 500, 1000, +Inf (ms)
request_latency_sum / _count   counter  service, region, endpoint, method
active_users                   gauge    region, platform in web / ios / android
content_engagement_bucket      counter  region, content_type in video / article,
                                        action in view / share, le in 1, 5, 15,
                                        30, 60, 300, +Inf (seconds)
content_engagement_sum/_count  counter  region, content_type, action
=============================  =======  =========================================

Counters start from a few days of history, never decrease and never reset.

Examples
--------
>>> from obscore.sim import simulate
>>> result = simulate(seed=1, hours=1.0, step_s=60, incidents=[])
>>> result.table.num_rows == len(result.index) * 60
True
"""

from __future__ import annotations

from obscore.sim.incident import (
    CAUSE_LABELS,
    CAUSE_METRICS,
    KINDS,
    Incident,
    candidate_services,
    default_incidents,
    random_incidents,
)
from obscore.sim.platform import Platform, default_platform
from obscore.sim.simulator import (
    ENGAGEMENT_BOUNDS,
    LATENCY_BOUNDS,
    Blip,
    SimResult,
    simulate,
)

__all__ = [
    "CAUSE_LABELS",
    "CAUSE_METRICS",
    "ENGAGEMENT_BOUNDS",
    "KINDS",
    "LATENCY_BOUNDS",
    "Blip",
    "Incident",
    "Platform",
    "SimResult",
    "candidate_services",
    "default_incidents",
    "default_platform",
    "random_incidents",
    "simulate",
]
