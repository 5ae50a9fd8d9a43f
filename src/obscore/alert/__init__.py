"""Alerts: severity, fingerprints and deduplication of repeats."""

from __future__ import annotations

from obscore.alert.dedup import Alert, AlertBook, fingerprint, severity

__all__ = ["Alert", "AlertBook", "fingerprint", "severity"]
