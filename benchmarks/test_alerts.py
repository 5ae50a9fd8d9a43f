"""Alert routing, dedup and grouping throughput.

What: ``Router.post`` of 100,000 alerts (20,000 distinct label sets, each
posted 5 times, as rule evaluations resend them) through a three-branch
route tree grouping by ``alertname`` and ``service``, then ``tick`` through
every group's first flush.  Reported as alerts/s in ``extra_info``.
Against what: the same alerts folded by ``AlertBook`` (fingerprint dedup only,
no routing), the floor any router pays.
"""

from __future__ import annotations

import random
import time

import pytest

from obscore.alert import AlertBook
from obscore.alert.route import Router

N_ALERTS = 100_000
N_DISTINCT = 20_000

CONFIG = {
    "route": {
        "receiver": "ops",
        "group_by": ["alertname", "service"],
        "group_wait": "30s",
        "group_interval": "5m",
        "routes": [
            {"matchers": ['team="db"'], "receiver": "db", "continue": True},
            {"matchers": ['severity=~"critical|page"'], "receiver": "pager"},
            {
                "matchers": ['region!="eu"'],
                "receiver": "ops",
                "group_by": ["alertname"],
            },
        ],
    },
    "receivers": [{"name": n, "send_resolved": True} for n in ("ops", "db", "pager")],
    "inhibit_rules": [
        {
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["service"],
        }
    ],
}


@pytest.fixture(scope="module")
def alerts():
    rng = random.Random(42)
    distinct = [
        {
            "labels": {
                "alertname": f"alert_{rng.randrange(50)}",
                "service": f"svc-{rng.randrange(200)}",
                "instance": f"host-{i}",
                "team": rng.choice(["db", "web", "api"]),
                "region": rng.choice(["eu", "us", "ap"]),
                "severity": rng.choice(["warning", "warning", "critical", "info"]),
            },
            "annotations": {"summary": "x"},
        }
        for i in range(N_DISTINCT)
    ]
    stream = [distinct[i % N_DISTINCT] for i in range(N_ALERTS)]
    rng.shuffle(stream)
    return stream


def _route_all(stream):
    router = Router(CONFIG)
    batch = 1_000
    for i in range(0, len(stream), batch):
        router.post(stream[i : i + batch], i)  # 1 ms per batch of 1,000
    return router.tick(31_000 + len(stream))


def _fold_all(stream):
    book = AlertBook()
    for i, a in enumerate(stream):
        book.raise_alert(a["labels"], i, i, 0.9, "x")
    return book


@pytest.mark.benchmark(group="alerts-100k")
def test_router_routes_dedups_and_groups_100k_alerts(benchmark, alerts):
    t0 = time.perf_counter()
    notes = benchmark.pedantic(_route_all, args=(alerts,), rounds=3, iterations=1)
    assert notes
    benchmark.extra_info["alerts_per_s"] = round(N_ALERTS / benchmark.stats.stats.mean)
    benchmark.extra_info["notifications"] = len(notes)
    assert time.perf_counter() > t0


@pytest.mark.benchmark(group="alerts-100k")
def test_alertbook_folds_100k_alerts_reference(benchmark, alerts):
    book = benchmark.pedantic(_fold_all, args=(alerts,), rounds=3, iterations=1)
    assert len(book.alerts) == N_DISTINCT
    benchmark.extra_info["alerts_per_s"] = round(N_ALERTS / benchmark.stats.stats.mean)
