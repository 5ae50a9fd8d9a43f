"""Incident history: diagnoses persisted, matched by symptoms, used as evidence."""

from __future__ import annotations

import json

import pytest

from obscore.diagnose.history import IncidentHistory, IncidentRecord, similarity

M = 60_000


def _rec(key, service="db", metric="error_rate", confidence=0.9, confirmed=False, feats=None):
    feats = feats or {"error_rate:5xx_up": 1.0, "first:error_rate": 1.0, "callers_anomalous": 1.0}
    return IncidentRecord(key, 0, {service: feats, "gateway": {"request_latency_up": 1.0}}, service, metric,
                          ["Roll back."], confidence, confirmed)


def test_similarity_is_weighted_jaccard_per_service():
    a = {"db": {"x": 1.0, "y": 1.0}}
    assert similarity(a, a) == 1.0
    assert similarity(a, {"db": {"x": 1.0}}) == 0.5
    assert similarity(a, {"auth": {"x": 1.0, "y": 1.0}}) == 0.0  # same features, other service
    assert similarity({}, {}) == 0.0


def test_history_persists_and_reloads_last_record_per_key(tmp_path):
    path = tmp_path / "d" / "incidents.jsonl"
    h = IncidentHistory(path)
    assert len(h) == 0 and not path.exists()
    h.record(_rec("1:db"))
    h.record(_rec("1:db", metric="cpu_usage"))
    h.record(_rec("2:db"))
    h.record(_rec("2:db"))  # the same diagnosis again: not written twice
    assert len(path.read_text().splitlines()) == 3
    again = IncidentHistory(path)
    assert len(again) == 2
    assert again.get("1:db").cause_metric == "cpu_usage"
    assert again.get("1:db").resolution == ["Roll back."]


def test_a_damaged_line_is_skipped_with_a_warning_naming_file_and_line(tmp_path, caplog):
    path = tmp_path / "incidents.jsonl"
    IncidentHistory(path).record(_rec("1:db"))
    with path.open("a") as fh:
        fh.write("{not json\n")
        fh.write(json.dumps({"key": "3:db"}) + "\n")
    IncidentHistory(path).record(_rec("2:db"))
    h = IncidentHistory(path)
    assert sorted(r.key for r in h) == ["1:db", "2:db"]
    assert "incidents.jsonl, line 2 skipped" in caplog.text
    assert "line 3 skipped" in caplog.text


def test_matches_exclude_itself_and_untrusted_causes(tmp_path):
    h = IncidentHistory(tmp_path / "incidents.jsonl")
    h.record(_rec("1:db", confidence=0.9))
    h.record(_rec("2:db", service="db", metric="cpu_usage", confidence=0.4))  # unsure, not confirmed
    new = _rec("3:db").symptoms
    assert [(r.key, s) for r, s in h.matches(new)] == [("1:db", 1.0)]
    assert h.matches(new, exclude="1:db") == []
    h.confirm("2:db", "db", "cpu_usage", ["Kill the hog."])
    assert sorted(r.key for r, _ in h.matches(new)) == ["1:db", "2:db"]
    assert IncidentHistory(h.path).get("2:db").confirmed
    # an unconfirmed diagnosis does not overwrite a confirmed one
    h.record(_rec("2:db", metric="memory_usage", confidence=0.95))
    assert h.get("2:db").cause_metric == "cpu_usage"
    assert h.evidence(new, exclude="1:db") == [("db", "cpu_usage", 1.0)]
    # a different incident does not match
    assert h.matches({"auth": {"memory_usage_up": 1.0}}) == []


def test_confirm_of_an_unknown_incident_says_which(tmp_path):
    h = IncidentHistory(tmp_path / "incidents.jsonl")
    with pytest.raises(KeyError, match="no incident '9:x'"):
        h.confirm("9:x", "db", "cpu_usage")


def _day(engine_dir, day, seed):
    from obscore.catalogue import from_platform
    from obscore.engine import Engine
    from obscore.sim import CAUSE_METRICS, Incident, default_platform, simulate

    start = 1_767_225_600_000 + day * 86_400_000
    bad = Incident("bad_deploy", "recommend", CAUSE_METRICS["bad_deploy"], "eu-west",
                   start + 7 * 3_600_000, start + 7 * 3_600_000 + 30 * M)
    sim = simulate(seed=seed, hours=8, incidents=[bad], start_ms=start)
    engine = Engine(engine_dir, catalogue=from_platform(default_platform()))
    engine.ingest(sim.table, sim.index)
    result = engine.run_pipeline(sim.start_ms, sim.end_ms, sim.step_ms)
    hits = [i for i in result.incidents if i.start_ms < bad.end_ms and bad.start_ms <= i.end_ms]
    return engine, max(hits, key=lambda i: len(i.anomalies))


def test_engine_records_diagnoses_and_uses_a_matching_past_incident_as_evidence(tmp_path):
    from obscore.diagnose.history import incident_key

    data = tmp_path / "data"
    first, inc = _day(data, 0, seed=3)
    diag = first.diagnose(inc)
    stored = IncidentHistory(data / "incidents.jsonl").get(incident_key(inc))
    assert stored is not None
    assert (stored.cause_service, stored.cause_metric) == (diag.top.service, diag.top.metric)
    assert "recommend" in stored.symptoms
    assert all(c.evidence["history"] == 0.0 for c in diag.candidates)  # nothing before it
    first.incident_history.confirm(stored.key, "recommend", "error_rate", ["Roll back v42."])
    first.close()

    # the same fault on another day: the confirmed incident is evidence for its cause
    second, inc2 = _day(data, 1, seed=4)
    with_history = second.diagnose(inc2)
    cand = next(c for c in with_history.candidates if (c.service, c.metric) == ("recommend", "error_rate"))
    assert cand.evidence["history"] >= 0.5
    second.close()
    alone, inc3 = _day(None, 1, seed=4)
    without = alone.diagnose(inc3)
    base = next(c for c in without.candidates if (c.service, c.metric) == ("recommend", "error_rate"))
    assert cand.confidence >= base.confidence
    assert with_history.top.service == "recommend"
    assert len(IncidentHistory(data / "incidents.jsonl")) >= 2
