from __future__ import annotations

import pytest

from obscore.alert import AlertBook
from obscore.alert.remediate import RemediationHook, Remediator, read_audit
from obscore.alert.route import parse_matchers


def _alert(score, labels=None):
    book = AlertBook()
    alert, _ = book.raise_alert(
        labels or {"alertname": "x", "service": "api"}, 0, 60_000, score, "s"
    )
    return alert


def test_action_at_or_below_0_7_runs_at_once_and_is_audited(tmp_path):
    ran = []
    rem = Remediator(
        [RemediationHook("restart", lambda a: ran.append(a.fingerprint) or "ok")],
        tmp_path / "audit.jsonl",
    )
    alert = _alert(0.6)
    assert alert.severity <= 0.7
    (action_id,) = rem.handle(alert, 1_000)
    assert ran == [alert.fingerprint] and not rem.pending
    (rec,) = read_audit(tmp_path / "audit.jsonl")
    assert (
        rec["event"] == "ran"
        and rec["action_id"] == action_id
        and rec["approved_by"] is None
    )


def test_action_above_0_7_waits_for_approval_and_both_are_audited(tmp_path):
    ran = []
    rem = Remediator(
        [RemediationHook("failover", ran.append)], tmp_path / "audit.jsonl"
    )
    alert = _alert(1.0, {"alertname": "x", "service": "a"})
    alert.severity = 0.9
    (action_id,) = rem.handle(alert, 1_000)
    assert ran == [] and action_id in rem.pending
    rem.approve(action_id, "alice", 2_000)
    assert ran == [alert]
    events = [(r["event"], r.get("by")) for r in read_audit(tmp_path / "audit.jsonl")]
    assert events == [
        ("approval_requested", None),
        ("approved", "alice"),
        ("ran", None),
    ]
    with pytest.raises(KeyError):
        rem.approve(action_id, "alice", 3_000)


def test_rejected_and_failing_actions_are_audited(tmp_path):
    def boom(alert):
        raise RuntimeError("no route to host")

    hooks = [
        RemediationHook("boom", boom, parse_matchers('service="api"')),
        RemediationHook("never", print, parse_matchers('service="db"')),
    ]
    rem = Remediator(hooks, tmp_path / "a.jsonl")
    low = _alert(0.6)
    assert len(rem.handle(low, 1)) == 1  # 'never' does not match
    high = _alert(0.6)
    high.severity = 0.95
    (aid,) = rem.handle(high, 2)
    rem.reject(aid, "bob", 3)
    events = [r["event"] for r in read_audit(tmp_path / "a.jsonl")]
    assert events == ["failed", "approval_requested", "rejected"]
