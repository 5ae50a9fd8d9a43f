"""Alert routing, dedup and grouping throughput.

What: ``Router.post`` of 100,000 alerts (20,000 distinct label sets, each
posted 5 times, as rule evaluations resend them) through a three-branch
route tree grouping by ``alertname`` and ``service``, then ``tick`` through
every group's first flush.  Reported as alerts/s in ``extra_info``.
Against what: the same alerts folded by ``AlertBook`` (fingerprint dedup only,
no routing), the floor any router pays.

With similarity: the same 100,000 alerts first folded by ``AlertBook`` with
similarity dedup (0.8 within 15m, as the config ships: exact fingerprints,
then similar label sets and descriptions fold into one alert with members),
the representatives posted to the same router and grouped, then the tick;
and the lifecycle's own path (``AlertLifecycle.evaluate`` of one rule over
the 20,000 label sets, 5 evaluations 10 s apart: rule state, severity,
similarity fold, routing, grouping).
"""

from __future__ import annotations

import random
import time

import pytest

from obscore.alert import AlertBook
from obscore.alert.lifecycle import AlertLifecycle, RuleSpec
from obscore.alert.route import Router
from obscore.alert.rules import Rule

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


def _fold_route_all(stream):
    book = AlertBook(900_000, 0.8)
    router = Router(CONFIG)
    batch = 1_000
    for i in range(0, len(stream), batch):
        posts = []
        for k, a in enumerate(stream[i : i + batch], i):
            al, _ = book.raise_alert(a["labels"], k, k, 0.9, a["annotations"]["summary"])
            posts.append({"labels": al.labels, "annotations": {"summary": al.summary}})
        router.post(posts, i)
    return book, router.tick(31_000 + len(stream))


@pytest.mark.benchmark(group="alerts-100k")
def test_similarity_dedup_routing_and_grouping_of_100k_alerts(benchmark, alerts):
    book, notes = benchmark.pedantic(_fold_route_all, args=(alerts,), rounds=3, iterations=1)
    assert notes and book.folded_by_similarity > 0
    benchmark.extra_info["alerts_per_s"] = round(N_ALERTS / benchmark.stats.stats.mean)
    benchmark.extra_info["alerts_after_dedup"] = len(book.alerts)
    benchmark.extra_info["folded_by_similarity"] = book.folded_by_similarity
    benchmark.extra_info["notifications"] = len(notes)


def _lifecycle_all(stream):
    flow = AlertLifecycle([RuleSpec(Rule("r", 0.5, ">="), "m")], CONFIG, similarity=0.8)
    distinct = list({id(a): a for a in stream}.values())
    for k in range(N_ALERTS // N_DISTINCT):  # every evaluation sees every label set
        flow.evaluate({"r": [(a["labels"], 1.0) for a in distinct]}, k * 10_000)
    return flow, flow.tick(31_000 + N_ALERTS)


@pytest.mark.benchmark(group="alerts-100k")
def test_lifecycle_rules_dedup_routing_and_grouping_of_100k_alerts(benchmark, alerts):
    flow, notes = benchmark.pedantic(_lifecycle_all, args=(alerts,), rounds=3, iterations=1)
    assert notes
    benchmark.extra_info["alerts_per_s"] = round(N_ALERTS / benchmark.stats.stats.mean)
    benchmark.extra_info["representatives"] = len(flow.active)
    benchmark.extra_info["notifications"] = len(notes)
