"""Remediation hooks behind an approval gate, with an audit log.

A ``RemediationHook`` is an action (any callable taking the ``Alert``, or a
:class:`CommandAction` running a program) that runs for alerts its matchers,
rule names and diagnosis patterns accept.  For an alert with severity at or below
``approval_severity`` (0.7 by default) the action runs at once; above it,
the action waits until someone calls ``approve`` (or ``reject``).  Every
request, approval, rejection, run and failure is appended to the audit log,
one JSON object per line, flushed to disk before the call returns.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obscore.alert.dedup import Alert
from obscore.alert.route import Matcher, matches_all
from obscore.errors import ConfigError

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
    rules : tuple of str
        When given, only alerts of these rules (their ``alertname``) match.
    patterns : tuple of str
        When given, only alerts whose diagnosis pattern (label or annotation
        ``pattern``) is one of these match.
    """

    name: str
    action: Callable[[Alert], Any]
    matchers: tuple[Matcher, ...] = ()
    rules: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()

    def accepts(self, alert: Alert) -> bool:
        """Whether the hook runs for ``alert``."""
        if self.rules and alert.labels.get("alertname") not in self.rules:
            return False
        if self.patterns:
            pattern = alert.labels.get("pattern") or alert.annotations.get("pattern")
            if pattern not in self.patterns:
                return False
        return matches_all(self.matchers, alert.labels)


@dataclass(frozen=True, slots=True)
class CommandAction:
    """Run a program for an alert: an argument list, never a shell string.

    Parameters
    ----------
    argv : tuple of str
        The program and its arguments, as written in the config; nothing of
        the alert is put into them.  The alert reaches the program through
        the environment: ``OBSCORE_ALERT_FINGERPRINT``,
        ``OBSCORE_ALERT_SEVERITY``, ``OBSCORE_ALERT_SUMMARY`` and
        ``OBSCORE_ALERT_LABELS`` (JSON).
    timeout_s : float
        The program is killed after this many seconds, and the run fails.
    max_output_chars : int
        Standard output and error are cut to this many characters each in
        the result written to the audit log.

    Raises
    ------
    RuntimeError
        From ``__call__`` when the program exits non-zero, times out or
        cannot start; the message holds the exit code and the output.
    """

    argv: tuple[str, ...]
    timeout_s: float = 30.0
    max_output_chars: int = 4_000
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) and a for a in self.argv):
            raise ConfigError(
                f"a command action needs a non-empty list of non-empty strings, got {self.argv!r}"
            )
        if not self.timeout_s > 0:
            raise ConfigError(f"command {self.argv[0]!r}: timeout must be positive")

    def __call__(self, alert: Alert) -> dict[str, Any]:
        env = {
            **os.environ,
            **self.env,
            "OBSCORE_ALERT_FINGERPRINT": alert.fingerprint,
            "OBSCORE_ALERT_SEVERITY": f"{alert.severity:.4f}",
            "OBSCORE_ALERT_SUMMARY": alert.summary,
            "OBSCORE_ALERT_LABELS": json.dumps(alert.labels, sort_keys=True),
        }
        cut = self.max_output_chars
        try:
            done = subprocess.run(
                list(self.argv),
                shell=False,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                env=env,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(
                f"command {self.argv[0]!r} timed out after {self.timeout_s:g} s"
            ) from exc
        except OSError as exc:
            raise RuntimeError(f"command {self.argv[0]!r} could not start: {exc}") from None
        result = {
            "returncode": done.returncode,
            "stdout": done.stdout[-cut:],
            "stderr": done.stderr[-cut:],
        }
        if done.returncode != 0:
            raise RuntimeError(f"command {self.argv[0]!r} exited with {done.returncode}: {result}")
        return result


def load_callable(spec: str, where: str) -> Callable[[Alert], Any]:
    """Import ``"package.module:function"`` from the config.

    Raises
    ------
    ConfigError
        When the text is not ``module:attribute`` or the import fails.
    """
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"{where}: callable must be written 'package.module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}: cannot import {spec!r}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"{where}: {spec!r} is not callable")
    return fn


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
        self.audit_path.parent.mkdir(parents=True, exist_ok=True)

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
            if not hook.accepts(alert):
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


    def state(self) -> dict[str, Any]:
        """The actions waiting for approval, as JSON-able data."""
        return {
            "version": 1,
            "pending": [
                {
                    "id": r.id,
                    "hook": r.hook.name,
                    "alert": {
                        "fingerprint": r.alert.fingerprint,
                        "labels": r.alert.labels,
                        "start_ms": r.alert.start_ms,
                        "end_ms": r.alert.end_ms,
                        "severity": r.alert.severity,
                        "score": r.alert.score,
                        "summary": r.alert.summary,
                        "annotations": r.alert.annotations,
                    },
                }
                for r in self.pending.values()
            ],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load what ``state()`` returned; actions of hooks no longer configured are dropped."""
        hooks = {h.name: h for h in self.hooks}
        for item in state.get("pending", ()):
            hook = hooks.get(item["hook"])
            if hook is None:
                logger.warning(
                    "remediation restore: hook %s is gone; action %s dropped",
                    item["hook"],
                    item["id"],
                )
                continue
            a = item["alert"]
            alert = Alert(
                a["fingerprint"], dict(a["labels"]), int(a["start_ms"]), int(a["end_ms"]),
                float(a["severity"]), float(a["score"]), str(a["summary"]),
                annotations=dict(a.get("annotations", {})),
            )
            self.pending[item["id"]] = _Request(item["id"], hook, alert)


def read_audit(path: str | os.PathLike[str]) -> Sequence[dict[str, Any]]:
    """The audit log's records, oldest first."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
