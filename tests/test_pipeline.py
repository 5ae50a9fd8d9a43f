"""Enrichment and grouping of anomalies into incidents."""

from __future__ import annotations

import tracemalloc

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
    # peak z 12: strong enough to be linked to (the grouping links nothing to an
    # anomaly under 8, see correlate.group_anomalies)
    return Anomaly(key, metric, ls, start, start + 2 * M, start, 12.0, 12 / 17)


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
    assert a.context["changes"] == ["deploy of feed in eu: v42 (2m before)"]
    assert a.context["owner"] == "feed-team" and a.context["downstream"] == ["db"]


def test_burst_of_10000_simultaneous_anomalies_is_grouped_quickly():
    services = [f"svc{i}" for i in range(100)]
    cat = Catalogue()
    for s in services:
        cat.add(Service(s))
    burst = [_a(services[i % 100], 0, region=f"r{i % 7}") for i in range(10_000)]
    # linear in anomalies x open incidents: this runs in about a second
    tracemalloc.start()
    incs = group_incidents(burst, cat)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(incs) == 100 and sum(len(i.anomalies) for i in incs) == 10_000
    # bounded memory: peak 2.0 MB measured (about 200 B per anomaly: a reason line and
    # index entries), nothing per pair; 1 kB per anomaly leaves room across Pythons
    assert peak < 10_000 * 1_024, peak


def test_context_names_the_host_and_the_catalogue_hosts():
    cat = _cat()
    cat.add(Service("feed", owner="feed-team", hosts=("feed-1", "feed-2"), dependencies=("db",)))
    (a,) = enrich([_a("feed", 0)], cat, SPECS)
    assert a.context["host"] == "unknown" and a.context["hosts"] == ["feed-1", "feed-2"]
    hosted = Anomaly("cpu_usage{host=feed-2}", "cpu_usage", LabelSet({"host": "feed-2"}), 0, M, 0, 6.0, 0.6)
    (b,) = enrich([hosted], cat, SPECS)
    assert b.context["host"] == "feed-2" and b.context["service"] == "feed"
    assert b.context["owner"] == "feed-team"


def _deploy_day(tmp_path, config=None):
    """8 simulated hours, a bad deploy of recommend in eu-west at 7h, recorded with ``obscore event``."""
    from obscore.catalogue import from_platform
    from obscore.cli import main
    from obscore.engine import Engine
    from obscore.sim import CAUSE_METRICS, Incident, default_platform, simulate

    start = 1_767_225_600_000
    bad = Incident("bad_deploy", "recommend", CAUSE_METRICS["bad_deploy"], "eu-west",
                   start + 7 * 3_600_000, start + 7 * 3_600_000 + 30 * M)
    sim = simulate(seed=3, hours=8, incidents=[bad], start_ms=start)
    data = tmp_path / "data"
    at = str((bad.start_ms - 2 * M) / 1000)
    assert main(["event", "--data", str(data), "--service", "recommend", "--kind", "deploy",
                 "--region", "eu-west", "--at", at, "--description", "v42"]) == 0
    assert main(["event", "--data", str(data), "--service", "recommend", "--kind", "deploy",
                 "--at", str((bad.start_ms - 3 * 3_600_000) / 1000), "--description", "v41"]) == 0
    engine = Engine(data, config=config, catalogue=from_platform(default_platform()))
    engine.ingest(sim.table, sim.index)
    result = engine.run_pipeline(sim.start_ms, sim.end_ms, sim.step_ms)
    hits = [i for i in result.incidents if i.start_ms < bad.end_ms and bad.start_ms <= i.end_ms]
    return engine, bad, max(hits, key=lambda i: len(i.anomalies))


def test_incident_right_after_a_recorded_deploy_names_that_deploy(tmp_path):
    engine, bad, inc = _deploy_day(tmp_path)
    named = [
        a for a in inc.anomalies
        if any(c.startswith("deploy of recommend in eu-west: v42 (") for c in a.context["changes"])
    ]  # fmt: skip
    assert named, [a.context["changes"] for a in inc.anomalies]
    assert all("v41" not in c for a in inc.anomalies for c in a.context["changes"])  # 3h old
    alerts = [al for al in engine.alerts() if al.incident_id == inc.id]
    assert any("deploy of recommend in eu-west: v42" in al.annotations["changes"] for al in alerts)
    assert all(al.annotations["owner"] != "" and al.annotations["region"] for al in alerts)
    engine.close()


def test_change_lookback_comes_from_the_config(tmp_path):
    from obscore.config import load_config

    cfg = load_config(overrides={"pipeline": {"change_lookback": "30s"}})
    engine, _, inc = _deploy_day(tmp_path, config=cfg)
    assert engine.change_lookback_ms == 30_000
    assert all(not a.context["changes"] for a in inc.anomalies)
    engine.close()


def test_series_with_no_service_label_is_owned_by_the_entry_services_owner():
    region_only = _a(None, 0)
    (a,) = enrich([region_only], _cat(), SPECS)
    assert a.context["service"] == "unknown" and a.context["owner"] == "edge, money"
    cat = _cat()
    cat.business_owner = "growth"
    (b,) = enrich([region_only], cat, SPECS)
    assert b.context["owner"] == "growth"


def test_every_alert_of_the_demo_day_names_owner_region_and_changes():
    from obscore.catalogue import from_platform
    from obscore.cli import _record_demo_changes
    from obscore.engine import Engine
    from obscore.sim import simulate

    sim = simulate(seed=0, hours=24)
    engine = Engine(catalogue=from_platform(sim.platform))
    engine.ingest(sim.table, sim.index)
    _record_demo_changes(engine, sim, 0)
    engine.run_pipeline(sim.start_ms, sim.end_ms, sim.step_ms)
    alerts = engine.alerts()
    assert len(alerts) > 50
    assert all(al.annotations["owner"] not in ("", "unknown") for al in alerts)
    assert all(al.annotations["region"] not in ("", "unknown") for al in alerts)
    assert all(al.annotations["changes"] for al in alerts)
    bad = next(t for t in sim.incidents if t.kind == "bad_deploy")
    named = [al for al in alerts if f"deploy of {bad.service} in {bad.region}" in al.annotations["changes"]]
    assert named and all(al.start_ms >= bad.start_ms - 60_000 for al in named)
