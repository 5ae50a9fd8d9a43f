"""The server's alert desk: the engine's alerts in Alertmanager's v2 shapes.

The desk feeds the engine's alerts to an Alertmanager-compatible
:class:`~obscore.alert.Router` (for silences, inhibition and grouping), keeps
who acknowledged what, and holds remediation actions that wait for approval.
An engine alert whose anomaly was seen in the last 20 minutes of the stored
data is posted as firing (without an end, so the router times it out unless the next
sync posts it again); one that ended earlier is posted with its end, resolved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from obscore.alert import Alert, RemediationHook, Remediator, Router
from obscore.alert.lifecycle import AlertLifecycle
from obscore.alert.route import (
    AlertRecord,
    Matcher,
    Silence,
    format_rfc3339,
    parse_rfc3339,
)
from obscore.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_ROUTING = {
    "route": {"receiver": "obscore", "group_by": ["alertname", "service"]},
    "receivers": [{"name": "obscore"}],
}

# An alert whose anomaly was last seen within this time of the newest sample
# still fires: the dedup window (15m), within which a repeat would fold into
# it, plus Alertmanager's resolve timeout (5m).
FIRING_MARGIN_MS = 20 * 60_000
MAX_MATCHER_CHARS = 1_024


class DeskError(Exception):
    """A request the desk refuses: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AlertDesk:
    """Alerts, silences, acknowledgements and approvals for the API.

    Parameters
    ----------
    routing : Mapping, optional
        Alertmanager-shaped ``route``/``receivers``/``inhibit_rules``; by
        default one receiver grouping by ``alertname`` and ``service``.
    hooks : iterable of RemediationHook, optional
        Remediation actions; those for severe alerts wait for ``approve``.
    audit_path : Path, optional
        JSON-lines audit log of remediation (needed when hooks are given).
    approval_severity : float
        Severity above which an action waits for approval.
    lifecycle : AlertLifecycle, optional
        The engine's alert lifecycle (``Engine.alert_flow``): the desk then
        uses its router, notifiers and remediation hooks, all from the
        config, and saves their state in the data directory after every
        change; ``routing``, ``hooks`` and ``audit_path`` are ignored.
    """

    def __init__(
        self,
        routing: Mapping[str, Any] | None = None,
        hooks: Iterable[RemediationHook] = (),
        audit_path: Path | None = None,
        approval_severity: float = 0.7,
        lifecycle: AlertLifecycle | None = None,
    ) -> None:
        self.lifecycle = lifecycle
        self.router = Router(routing or DEFAULT_ROUTING) if lifecycle is None else lifecycle.router
        hooks = list(hooks)
        self.remediator: Remediator | None = None
        if lifecycle is not None:
            self.remediator = lifecycle.remediator
        elif hooks:
            if audit_path is None:
                raise ConfigError("remediation hooks need an audit log path")
            self.remediator = Remediator(hooks, audit_path, approval_severity)
        self.records: dict[str, AlertRecord] = {}
        self.extra: dict[str, dict[str, str]] = {}
        self.acks: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, tuple[int, bool]] = {}

    # --- in ------------------------------------------------------------------

    def sync(
        self, alerts: Iterable[Alert], data_end_ms: int | None, now_ms: int
    ) -> None:
        """Post the engine's alerts that are new, changed or still firing."""
        if self.lifecycle is not None:
            self.lifecycle.sync_alerts(alerts, data_end_ms, now_ms, FIRING_MARGIN_MS)
            self._remember(now_ms)
            return
        posts = []
        for al in alerts:
            firing = (
                data_end_ms is not None and al.end_ms >= data_end_ms - FIRING_MARGIN_MS
            )
            key = (al.end_ms, firing)
            if self._seen.get(al.fingerprint) == key and not firing:
                continue
            is_new = al.fingerprint not in self._seen
            self._seen[al.fingerprint] = key
            annotations = {
                "summary": al.summary,
                **al.annotations,
                "severity": f"{al.severity:.3f}",
                "count": str(al.count),
            }
            if al.incident_id is not None:
                annotations["incident_id"] = str(al.incident_id)
            item: dict[str, Any] = {
                "labels": al.labels,
                "annotations": annotations,
                "start_ms": al.start_ms,
            }
            if not firing:
                item["end_ms"] = max(al.end_ms, al.start_ms)
            posts.append(item)
            if is_new and self.remediator is not None:
                self.remediator.handle(al, now_ms)
        if posts:
            self.router.post(posts, now_ms)
            self._remember(now_ms)

    def post(self, items: list[Mapping[str, Any]], now_ms: int) -> int:
        """Receive alerts in Alertmanager's ``postableAlerts`` shape."""
        n = self.router.post(items, now_ms)
        self._remember(now_ms)
        return n

    def _remember(self, now_ms: int) -> None:
        for rec in self.router.alerts():
            self.records[rec.fingerprint] = rec
        if self.lifecycle is not None:
            self.lifecycle.tick(now_ms)  # notifies through the config's receivers, saves
        else:
            self.router.tick(now_ms)

    # --- views ---------------------------------------------------------------

    def state_of(self, rec: AlertRecord, now_ms: int) -> dict[str, Any]:
        silenced = self.router.is_silenced(rec.labels, now_ms)
        inhibited = self.router.is_inhibited(rec.labels, now_ms)
        if rec.is_resolved_at(now_ms):
            state = "resolved"
        elif silenced or inhibited:
            state = "suppressed"
        else:
            state = "active"
        return {"state": state, "silencedBy": silenced, "inhibitedBy": inhibited}

    def gettable(self, rec: AlertRecord, now_ms: int) -> dict[str, Any]:
        """One alert as Alertmanager's ``gettableAlert``, obscore fields in annotations."""
        annotations = dict(rec.annotations)
        ack = self.acks.get(rec.fingerprint)
        if ack is not None:
            annotations["acknowledged_by"] = ack["by"]
            annotations["acknowledged_at"] = format_rfc3339(ack["at_ms"])
        return {
            "labels": rec.labels,
            "annotations": annotations,
            "startsAt": format_rfc3339(rec.start_ms),
            "endsAt": format_rfc3339(rec.end_ms),
            "updatedAt": format_rfc3339(rec.updated_ms),
            "fingerprint": rec.fingerprint,
            "receivers": [
                {"name": r.receiver} for r in self.router.route.match(rec.labels)
            ],
            "status": self.state_of(rec, now_ms),
            "generatorURL": rec.generator_url,
        }

    def alerts_json(
        self,
        now_ms: int,
        *,
        active: bool = True,
        silenced: bool = True,
        inhibited: bool = True,
        resolved: bool = False,
        matchers: Iterable[Matcher] = (),
    ) -> list[dict[str, Any]]:
        matchers = list(matchers)
        out = []
        for rec in sorted(
            self.records.values(), key=lambda r: (-r.start_ms, r.fingerprint)
        ):
            if not all(m.matches(rec.labels) for m in matchers):
                continue
            item = self.gettable(rec, now_ms)
            st = item["status"]
            if st["state"] == "resolved" and not resolved:
                continue
            if st["state"] == "active" and not active:
                continue
            if st["silencedBy"] and not silenced:
                continue
            if st["inhibitedBy"] and not inhibited:
                continue
            out.append(item)
        return out

    def groups(self, now_ms: int) -> list[dict[str, Any]]:
        out = []
        for key, alerts in self.router.groups():
            labels = {}
            receiver = "obscore"
            for route in self.router.route.walk():
                if key.startswith(route.key + ":"):
                    receiver = route.receiver
            if alerts:
                for route in self.router.route.match(alerts[0].labels):
                    labels = route.group_labels(alerts[0].labels)
            out.append(
                {
                    "labels": labels,
                    "receiver": {"name": receiver},
                    "alerts": [self.gettable(a, now_ms) for a in alerts],
                }
            )
        return out

    # --- silences ------------------------------------------------------------

    def add_silence(self, body: Mapping[str, Any], now_ms: int) -> str:
        """Create or replace a silence from Alertmanager's ``postableSilence``."""
        raw = body.get("matchers")
        if not isinstance(raw, list) or not raw:
            raise DeskError(400, "a silence needs at least one matcher")
        matchers = []
        for i, m in enumerate(raw):
            if (
                not isinstance(m, Mapping)
                or not isinstance(m.get("name"), str)
                or not isinstance(m.get("value"), str)
            ):
                raise DeskError(400, f"matchers[{i}]: needs string 'name' and 'value'")
            if len(m["value"]) > MAX_MATCHER_CHARS:
                raise DeskError(
                    400,
                    f"matchers[{i}]: value longer than {MAX_MATCHER_CHARS} characters",
                )
            is_regex = bool(m.get("isRegex", False))
            is_equal = bool(m.get("isEqual", True))
            op = (
                ("=~" if is_equal else "!~")
                if is_regex
                else ("=" if is_equal else "!=")
            )
            try:
                matchers.append(Matcher(m["name"], op, m["value"]))
            except ConfigError as exc:
                raise DeskError(400, f"matchers[{i}]: {exc}") from None
        for field_name in ("createdBy", "comment"):
            if not isinstance(body.get(field_name), str) or not body[field_name]:
                raise DeskError(400, f"silence: missing {field_name}")
        try:
            start = parse_rfc3339(str(body.get("startsAt", ""))) or now_ms
            end = parse_rfc3339(str(body.get("endsAt", "")))
        except ValueError as exc:
            raise DeskError(400, f"silence: {exc}") from None
        if end is None:
            raise DeskError(400, "silence: missing endsAt")
        sid = body.get("id") or None
        if sid is not None and (
            not isinstance(sid, str) or sid not in self.router.silences
        ):
            raise DeskError(404, f"silence {sid!r} not found")
        try:
            sid = self.router.add_silence(
                matchers,
                end,
                now_ms,
                start_ms=start,
                author=body["createdBy"],
                comment=body["comment"],
                silence_id=sid,
            )
        except ConfigError as exc:
            raise DeskError(400, str(exc)) from None
        if self.lifecycle is not None:
            self.lifecycle.save()
        return sid

    def silence_json(self, s: Silence, now_ms: int) -> dict[str, Any]:
        return {
            "id": s.id,
            "status": {"state": s.state(now_ms)},
            "updatedAt": format_rfc3339(s.updated_ms),
            "matchers": [
                {
                    "name": m.name,
                    "value": m.value,
                    "isRegex": m.op in ("=~", "!~"),
                    "isEqual": m.op in ("=", "=~"),
                }
                for m in s.matchers
            ],
            "startsAt": format_rfc3339(s.start_ms),
            "endsAt": format_rfc3339(s.end_ms),
            "createdBy": s.author,
            "comment": s.comment,
        }

    def silences(self, now_ms: int) -> list[dict[str, Any]]:
        order = {"active": 0, "pending": 1, "expired": 2}
        items = [self.silence_json(s, now_ms) for s in self.router.silences.values()]
        return sorted(items, key=lambda s: (order[s["status"]["state"]], s["endsAt"]))

    def silence(self, sid: str, now_ms: int) -> dict[str, Any]:
        s = self.router.silences.get(sid)
        if s is None:
            raise DeskError(404, f"silence {sid!r} not found")
        return self.silence_json(s, now_ms)

    def expire_silence(self, sid: str, now_ms: int) -> None:
        if sid not in self.router.silences:
            raise DeskError(404, f"silence {sid!r} not found")
        self.router.expire_silence(sid, now_ms)
        if self.lifecycle is not None:
            self.lifecycle.save()

    # --- acknowledge and approve ----------------------------------------------

    def acknowledge(
        self, fingerprint: str, by: str, comment: str, now_ms: int
    ) -> dict[str, Any]:
        if fingerprint not in self.records:
            raise DeskError(404, f"alert {fingerprint!r} not found")
        self.acks[fingerprint] = {"by": by, "comment": comment, "at_ms": now_ms}
        logger.info("alert acknowledged: fingerprint=%s by=%s", fingerprint, by)
        return self.gettable(self.records[fingerprint], now_ms)

    def actions(self) -> list[dict[str, Any]]:
        if self.remediator is None:
            return []
        return [
            {
                "id": r.id,
                "hook": r.hook.name,
                "fingerprint": r.alert.fingerprint,
                "severity": r.alert.severity,
                "summary": r.alert.summary,
            }
            for r in self.remediator.pending.values()
        ]

    def decide(self, action_id: str, by: str, approve: bool, now_ms: int) -> None:
        if self.remediator is None or action_id not in self.remediator.pending:
            raise DeskError(
                404, f"no remediation action {action_id!r} waits for approval"
            )
        if approve:
            self.remediator.approve(action_id, by, now_ms)
        else:
            self.remediator.reject(action_id, by, now_ms)
        if self.lifecycle is not None:
            self.lifecycle.save()
