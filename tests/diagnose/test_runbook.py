"""Runbooks say what was seen, what is likely, what to do and who approves it."""

from __future__ import annotations

from obscore.diagnose.rca import Candidate, Diagnosis
from obscore.diagnose.runbook import write_runbook
from obscore.model import LabelSet
from obscore.pipeline import Anomaly, Incident


def _incident():
    a = Anomaly('error_rate{service="db"}', "error_rate", LabelSet({"service": "db"}), 0, 60_000, 0, 40.0, 0.9)
    return Incident(7, 0, 60_000, [a])


def _diag(conf):
    c = Candidate("db", "error_rate", conf, {"onset": 1.0}, pattern="bad_deploy", similarity=0.9, steps=("Roll back.",))
    return Diagnosis(7, [c], (0, 60_000))


def test_runbook_lists_steps_and_waits_for_approval_above_severity_07():
    text = write_runbook(_incident(), _diag(0.9), severity=0.8)
    assert "# Runbook: incident 7" in text
    assert "| 1 | db | error_rate | 0.90 | bad_deploy (0.90) |" in text
    assert "1. Roll back." in text
    assert "**waits for approval**" in text


def test_runbook_runs_without_approval_at_low_severity_and_refuses_when_unsure():
    assert "runs without approval" in write_runbook(_incident(), _diag(0.9), severity=0.5)
    unsure = write_runbook(_incident(), _diag(0.6), severity=0.5)
    assert "No automated action proposed: the top cause's confidence 0.60 is below 0.8" in unsure


def test_runbook_gives_the_probability_that_none_is_the_cause():
    d = _diag(0.3)
    d.confidence_none = 0.65
    text = write_runbook(_incident(), d, severity=0.5)
    assert "Probability that none of these is the cause: 0.65." in text
    assert "No automated action proposed: the top cause's confidence 0.30 is below 0.8" in text
