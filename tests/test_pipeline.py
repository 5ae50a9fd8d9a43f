"""Enrichment and grouping of anomalies into incidents."""

from __future__ import annotations

from obscore.catalogue import Catalogue, Service
from obscore.config import load_config
from obscore.model import LabelSet
from obscore.pipeline import Anomaly, enrich, group_incidents

M = 60_000
SPECS = load_config().metrics


def _a(service, start, region="eu", metric="error_rate"):
    labels = {"region": region} if service is None else {"service": service, "region": region}
    ls = LabelSet(labels)
    key = f"{metric}{{{','.join(f'{k}={v}' for k, v in ls.items_tuple)}}}"
    return Anomaly(key, metric, ls, start, start + 2 * M, start, 6.0, 0.6)


def _cat(cycle=False):
    cat = Catalogue()
    cat.add(Service("gateway", owner="edge", dependencies=("feed",)))
    cat.add(Service("feed", owner="feed-team", dependencies=("db", "gateway") if cycle else ("db",)))
    cat.add(Service("db", owner="data"))
    cat.add(Service("billing", owner="money"))
    return cat


def test_neighbours_join_and_unrelated_stay_apart_at_the_same_time():
    incs = group_incidents([_a("db", 0), _a("feed", M), _a("billing", M)], _cat())
    by_services = sorted(sorted(i.services) for i in incs)
    assert by_services == [["billing"], ["db", "feed"]]
    joined = next(i for i in incs if "feed" in i.services)
    assert any("'feed' is 1 hop(s) from 'db'" in r for r in joined.reasons)


def test_incident_closes_after_a_quiet_period():
    incs = group_incidents([_a("db", 0), _a("db", 40 * M)], _cat(), quiet_ms=15 * M)
    assert len(incs) == 2


def test_series_without_catalogue_entry_keeps_its_anomaly_with_unknown_context():
    (a,) = enrich([_a("mystery", 0)], _cat(), SPECS)
    assert a.context["owner"] == "unknown" and a.context["service"] == "mystery"
    assert a.context["kind"] == "counter"
    assert len(group_incidents([a], _cat())) == 1


def test_dependency_cycle_neither_hangs_nor_crashes():
    cat = _cat(cycle=True)
    assert cat.distance("db", "gateway", 5) == 2
    incs = group_incidents([_a("gateway", 0), _a("db", M), _a("feed", 2 * M)], cat, max_hops=3)
    assert len(incs) == 1 and len(incs[0].anomalies) == 3


def test_change_event_before_anomaly_is_named_in_its_context():
    cat = _cat()
    cat.record_event(-2 * M, "feed", "deploy", "v42", region="eu")
    cat.record_event(-3 * 3_600_000, "feed", "deploy", "too old")
    (a,) = enrich([_a("feed", 0)], cat, SPECS)
    assert a.context["changes"] == ["deploy of feed in eu: v42"]
    assert a.context["owner"] == "feed-team" and a.context["downstream"] == ["db"]


def test_burst_of_10000_simultaneous_anomalies_is_grouped_quickly():
    services = [f"svc{i}" for i in range(100)]
    cat = Catalogue()
    for s in services:
        cat.add(Service(s))
    burst = [_a(services[i % 100], 0, region=f"r{i % 7}") for i in range(10_000)]
    # linear in anomalies x open incidents: this runs in about a second
    incs = group_incidents(burst, cat)
    assert len(incs) == 100 and sum(len(i.anomalies) for i in incs) == 10_000
