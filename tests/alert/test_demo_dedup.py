"""Similarity dedup beyond Alertmanager, on the ``obscore demo`` platform.

The demo's simulated day (seed 0, 24 h, three injected incidents) runs
through the pipeline once; its incidents raise alerts twice, into an
exact-only ``AlertBook`` and into one with similarity dedup (the config's
0.8 within 15m).  Both alert sets then go through the same router on their
own clock, and the notifications that name each injected incident (an alert
of it, or a member folded into an alert) are counted, firing and resolved
ones alike.  Two routings: one notification per alert (``group_by =
["..."]``, a page per alert) and obscore's default (grouped by alertname and
service).

Figures of the run that wrote this test (seed 0), notifications per injected
incident (memory_leak, slow_db, bad_deploy), firing ones in brackets:

- per alert: exact 6 / 84 / 24 (3 / 42 / 12), similarity 6 / 12 / 8
  (3 / 6 / 4); all notifications 228 -> 108; alerts 124 -> 59
- grouped: exact 6 / 33 / 20 (3 / 17 / 10), similarity 6 / 12 / 8
  (3 / 6 / 4); all notifications 158 -> 108
"""

from __future__ import annotations

import pytest

from obscore.alert import AlertBook
from obscore.alert.lifecycle import DEFAULT_ROUTING, replay_notifications
from obscore.catalogue import from_platform
from obscore.cli import _overlap, _record_demo_changes
from obscore.engine import Engine
from obscore.pipeline import raise_alerts
from obscore.sim import simulate

pytestmark = pytest.mark.slow

PER_ALERT = {
    "route": {"receiver": "pager", "group_by": ["..."]},
    "receivers": [{"name": "pager", "send_resolved": True}],
}


@pytest.fixture(scope="module")
def demo():
    sim = simulate(seed=0, hours=24)
    engine = Engine(catalogue=from_platform(sim.platform))
    engine.ingest(sim.table, sim.index)
    _record_demo_changes(engine, sim, 0)
    result = engine.run_pipeline(sim.start_ms, sim.end_ms, sim.step_ms)
    exact = AlertBook(engine.config.dedup_window_ms, None)
    raise_alerts(exact, result.incidents, engine.config.metrics)
    # which pipeline incidents each injected incident became (all that overlap it)
    found = [
        (
            truth,
            {
                str(i.id)
                for i in result.incidents
                if _overlap(i.start_ms, i.end_ms, truth.start_ms, truth.end_ms)
            },
        )
        for truth in sim.incidents
    ]
    return sim, found, exact, engine.alert_book


def _names(note, ids):
    return any(
        ids & set(a.annotations.get("incident_ids", "").split(",")) for a in note.alerts
    )


def _per_incident(notes, found, status=None):
    return [
        sum(1 for n in notes if (status is None or n.status == status) and _names(n, ids))
        for _, ids in found
    ]


@pytest.mark.parametrize(
    "routing", [PER_ALERT, DEFAULT_ROUTING], ids=["per_alert", "grouped"]
)
def test_similarity_dedup_sends_fewer_notifications_and_loses_no_incident(demo, routing):
    sim, found, exact, similar = demo
    until = sim.end_ms + 86_400_000
    n_exact = replay_notifications(exact.alerts, routing, until)
    n_similar = replay_notifications(similar.alerts, routing, until)
    per_exact, per_similar = _per_incident(n_exact, found), _per_incident(n_similar, found)
    fire_exact = _per_incident(n_exact, found, "firing")
    fire_similar = _per_incident(n_similar, found, "firing")
    kinds = [t.kind for t, _ in found]
    print(
        f"{routing['route']['group_by']}: per injected incident {kinds}: "
        f"exact {per_exact} (firing {fire_exact}), similarity {per_similar} "
        f"(firing {fire_similar}); total {len(n_exact)} -> {len(n_similar)}; "
        f"alerts {len(exact.alerts)} -> {len(similar.alerts)}"
    )
    assert len(similar.alerts) < len(exact.alerts)
    assert len(n_similar) < len(n_exact)
    assert all(s <= e for s, e in zip(per_similar, per_exact))
    # the incident with the most alerts gets at most two thirds of the notifications
    worst = max(range(len(found)), key=lambda k: per_exact[k])
    assert 3 * per_similar[worst] <= 2 * per_exact[worst]
    # no injected incident is lost: each still has a firing notification naming it
    for (truth, ids), count in zip(found, fire_similar):
        assert ids and count >= 1, truth.kind
    # every alert folded away is still listed, with its own range, by the alert it joined
    assert {fp for a in exact.alerts for fp in [a.fingerprint]} == {
        fp for a in similar.alerts for fp in [a.fingerprint, *a.members]
    }
    for a in similar.alerts:
        for m in a.members.values():
            assert a.start_ms <= m.start_ms <= m.end_ms <= a.end_ms
