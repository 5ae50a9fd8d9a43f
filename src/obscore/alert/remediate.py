"""Remediation hooks behind an approval gate, with an audit log.

A ``RemediationHook`` is an action (any callable taking the ``Alert``) that
runs for alerts its matchers accept.  For an alert with severity at or below
``approval_severity`` (0.7 by default) the action runs at once; above it,
the action waits until someone calls ``approve`` (or ``reject``).  Every
request, approval, rejection, run and failure is appended to the audit log,
one JSON object per line, flushed to disk before the call returns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obscore.alert.dedup import Alert
from obscore.alert.route import Matcher, matches_all

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RemediationHook:
    """An action run for matching alerts.

    Parameters
    ----------
    name : str
        Shown in the audit log.
    action : callable
        Called with the ``Alert``; its return value is logged (as text).
    matchers : tuple of Matcher
        All must match the alert's labels; none matches every alert.
    """

    name: str
    action: Callable[[Alert], Any]
    matchers: tuple[Matcher, ...] = ()


@dataclass(slots=True)
class _Request:
    id: str
    hook: RemediationHook
    alert: Alert


class Remediator:
    """Run remediation hooks, holding severe alerts' actions for approval.

    Parameters
    ----------
    hooks : iterable of RemediationHook
    audit_path : str or Path
        JSON-lines file, appended to.
    approval_severity : float
        Actions for alerts with ``severity`` above this wait for approval.
    """

    def __init__(
        self,
        hooks: Iterable[RemediationHook],
        audit_path: str | os.PathLike[str],
        approval_severity: float = 0.7,
    ) -> None:
        self.hooks = list(hooks)
        self.audit_path = Path(audit_path)
        self.approval_severity = float(approval_severity)
        self.pending: dict[str, _Request] = {}

    def _audit(self, now_ms: int, event: str, req: _Request, **extra: Any) -> None:
        record = {
            "ts": int(now_ms),
            "event": event,
            "action_id": req.id,
            "hook": req.hook.name,
            "fingerprint": req.alert.fingerprint,
            "severity": round(req.alert.severity, 4),
            **extra,
        }
        with open(self.audit_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def handle(self, alert: Alert, now_ms: int) -> list[str]:
        """Start the hooks that match ``alert``; return their action ids.

        Actions run at once when ``alert.severity <= approval_severity``;
        otherwise they wait in ``pending`` for ``approve``.
        """
        ids = []
        for hook in self.hooks:
            if not matches_all(hook.matchers, alert.labels):
                continue
            digest = hashlib.blake2b(
                f"{hook.name}\xff{alert.fingerprint}\xff{now_ms}".encode(),
                digest_size=6,
            ).hexdigest()
            req = _Request(digest, hook, alert)
            ids.append(req.id)
            if alert.severity > self.approval_severity:
                self.pending[req.id] = req
                self._audit(now_ms, "approval_requested", req)
                logger.info(
                    "remediation waits for approval: action=%s hook=%s fingerprint=%s",
                    req.id,
                    hook.name,
                    alert.fingerprint,
                )
            else:
                self._run(req, now_ms, approved_by=None)
        return ids

    def approve(self, action_id: str, approver: str, now_ms: int) -> None:
        """Approve a pending action and run it.

        Raises
        ------
        KeyError
            When no action with that id waits for approval.
        """
        req = self.pending.pop(action_id)
        self._audit(now_ms, "approved", req, by=approver)
        self._run(req, now_ms, approved_by=approver)

    def reject(self, action_id: str, approver: str, now_ms: int) -> None:
        """Drop a pending action without running it."""
        req = self.pending.pop(action_id)
        self._audit(now_ms, "rejected", req, by=approver)

    def _run(self, req: _Request, now_ms: int, approved_by: str | None) -> None:
        try:
            result = req.hook.action(req.alert)
        except Exception as exc:  # noqa: BLE001 (a failing hook must not stop the others)
            self._audit(now_ms, "failed", req, error=repr(exc), approved_by=approved_by)
            logger.error(
                "remediation failed: action=%s hook=%s: %r", req.id, req.hook.name, exc
            )
            return
        self._audit(now_ms, "ran", req, result=str(result), approved_by=approved_by)
        logger.info("remediation ran: action=%s hook=%s", req.id, req.hook.name)


def read_audit(path: str | os.PathLike[str]) -> Sequence[dict[str, Any]]:
    """The audit log's records, oldest first."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
