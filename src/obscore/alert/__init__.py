"""Alerts: severity, fingerprints, dedup, routing, rules, notification, remediation."""

from __future__ import annotations

from obscore.alert.dedup import Alert, AlertBook, fingerprint, severity
from obscore.alert.notify import (
    AlertmanagerNotifier,
    Delivery,
    LogNotifier,
    NotifyError,
    WebhookNotifier,
    webhook_payload,
)
from obscore.alert.remediate import RemediationHook, Remediator
from obscore.alert.route import (
    AlertRecord,
    InhibitRule,
    Matcher,
    Notification,
    Route,
    Router,
    Silence,
    parse_matchers,
)
from obscore.alert.rules import Rule, RuleEvaluator
from obscore.alert.state import StateDir

__all__ = [
    "Alert",
    "AlertBook",
    "AlertRecord",
    "AlertmanagerNotifier",
    "Delivery",
    "InhibitRule",
    "LogNotifier",
    "Matcher",
    "Notification",
    "NotifyError",
    "RemediationHook",
    "Remediator",
    "Route",
    "Router",
    "Rule",
    "RuleEvaluator",
    "Silence",
    "StateDir",
    "WebhookNotifier",
    "fingerprint",
    "parse_matchers",
    "severity",
    "webhook_payload",
]
