"""Deliver notifications: webhook, log, forwarding to Alertmanager.

A notifier sends one ``Notification`` and raises ``NotifyError`` when it
could not.  ``Delivery`` wraps notifiers with retries and exponential backoff
on an explicit clock, and keeps a delivery log keyed by the notification's
idempotency key, so a notification that was delivered once is never sent
again, whether by a retry, a second flush or a restart that reloads the log.

Webhook bodies follow Alertmanager's webhook format (version ``"4"``), so
receivers written for Alertmanager read obscore's notifications unchanged.
"""

from __future__ import annotations

import json
import logging
import random
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from obscore.alert.route import AlertRecord, Notification, format_rfc3339
from obscore.errors import ObscoreError

logger = logging.getLogger(__name__)


class NotifyError(ObscoreError, RuntimeError):
    """A notification could not be delivered (this attempt)."""


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def alert_payload(alert: AlertRecord, note: Notification) -> dict[str, Any]:
    """One alert as it appears in a webhook body."""
    firing = note.is_firing(alert)
    return {
        "status": "firing" if firing else "resolved",
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": format_rfc3339(alert.start_ms),
        "endsAt": format_rfc3339(None if firing else alert.end_ms),
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def webhook_payload(note: Notification, external_url: str = "") -> dict[str, Any]:
    """The JSON body Alertmanager's webhook receiver would get for ``note``.

    Parameters
    ----------
    note : Notification
        What to send.
    external_url : str
        Where users reach this obscore (``externalURL`` in the body).

    Returns
    -------
    dict
        ``version`` "4", ``groupKey``, ``status``, ``receiver``,
        ``groupLabels``, ``commonLabels``, ``commonAnnotations``,
        ``externalURL``, ``truncatedAlerts`` and ``alerts``.

    Notes
    -----
    ``fingerprint`` is obscore's label-set hash, not Alertmanager's; both are
    16 hex digits and stable for a label set, but their values differ.
    """
    return {
        "receiver": note.receiver,
        "status": note.status,
        "alerts": [alert_payload(a, note) for a in note.alerts],
        "groupLabels": dict(note.group_labels),
        "commonLabels": _common([a.labels for a in note.alerts]),
        "commonAnnotations": _common([a.annotations for a in note.alerts]),
        "externalURL": external_url,
        "version": "4",
        "groupKey": note.group_key,
        "truncatedAlerts": 0,
    }


class Notifier(Protocol):
    """Anything that sends a notification or raises ``NotifyError``."""

    name: str

    def send(self, note: Notification) -> None: ...


def _post_json(
    url: str, body: Any, timeout_s: float, headers: Mapping[str, str]
) -> None:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"POST {url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise NotifyError(f"POST {url}: {exc}") from None


@dataclass
class WebhookNotifier:
    """POST Alertmanager-style webhook bodies to a URL.

    Each request carries ``Idempotency-Key: <notification key>``; retries of
    one notification reuse it, so a receiver can drop a duplicate that a
    lost response would otherwise cause.

    Parameters
    ----------
    url : str
        Receiver endpoint.
    external_url : str
        ``externalURL`` written in the body.
    timeout_s : float
        Per-request timeout in seconds.
    """

    url: str
    external_url: str = ""
    timeout_s: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)
    name: str = "webhook"

    def send(self, note: Notification) -> None:
        """POST the body; raise ``NotifyError`` on a non-2xx answer or no answer."""
        headers = {"Idempotency-Key": note.key, **self.headers}
        _post_json(
            self.url, webhook_payload(note, self.external_url), self.timeout_s, headers
        )


@dataclass
class LogNotifier:
    """Write notifications to a logger (``obscore.alert.notify`` by default)."""

    logger_name: str = __name__
    name: str = "log"

    def send(self, note: Notification) -> None:
        """Log one line per notification, at WARNING while firing, INFO when resolved."""
        level = logging.WARNING if note.status == "firing" else logging.INFO
        logging.getLogger(self.logger_name).log(
            level,
            "alert notification: receiver=%s group=%s status=%s alerts=%d key=%s",
            note.receiver,
            note.group_key,
            note.status,
            len(note.alerts),
            note.key,
        )


@dataclass
class AlertmanagerNotifier:
    """Forward the alerts of a notification to an Alertmanager (``/api/v2/alerts``).

    Firing alerts are posted without an end, so Alertmanager applies its own
    resolve timeout; resolved alerts carry their end.  Alertmanager then
    groups and notifies by its own configuration.
    """

    base_url: str
    timeout_s: float = 10.0
    name: str = "alertmanager"

    def send(self, note: Notification) -> None:
        """POST the alerts; raise ``NotifyError`` on failure."""
        body = []
        for a in note.alerts:
            item: dict[str, Any] = {
                "labels": dict(a.labels),
                "annotations": dict(a.annotations),
                "startsAt": format_rfc3339(a.start_ms),
                "generatorURL": a.generator_url,
            }
            if not note.is_firing(a):
                item["endsAt"] = format_rfc3339(a.end_ms)
            body.append(item)
        _post_json(
            self.base_url.rstrip("/") + "/api/v2/alerts", body, self.timeout_s, {}
        )


@dataclass
class _Pending:
    note: Notification
    notifier: Notifier
    attempts: int
    due_ms: int


class Delivery:
    """Send notifications through notifiers, with retries and a delivery log.

    Parameters
    ----------
    notifiers : Mapping[str, Notifier] or Notifier
        Per receiver name, or one notifier for every receiver.
    base_backoff_ms : int
        Wait before the first retry; it doubles at every further attempt.
    max_backoff_ms : int
        Cap on one wait.
    max_attempts : int
        Give up (log an ERROR) after this many failed attempts.
    jitter : float
        Each wait is stretched by a random factor in ``[1, 1 + jitter]``
        (seeded by ``seed``), so many failing receivers do not retry in step.

    Notes
    -----
    Delivery is at least once on the wire and exactly once in obscore's
    log: a notification whose delivery succeeded is never sent again, but a
    request that reached the receiver while its answer was lost is retried
    with the same ``Idempotency-Key``.
    """

    def __init__(
        self,
        notifiers: Mapping[str, Notifier] | Notifier,
        *,
        base_backoff_ms: int = 1_000,
        max_backoff_ms: int = 60_000,
        max_attempts: int = 10,
        jitter: float = 0.0,
        seed: int = 0,
        on_delivered: Callable[[Notification], None] | None = None,
    ) -> None:
        self.notifiers = notifiers
        self.base_backoff_ms = int(base_backoff_ms)
        self.max_backoff_ms = int(max_backoff_ms)
        self.max_attempts = int(max_attempts)
        self.jitter = float(jitter)
        self._rng = random.Random(seed)
        self.delivered: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self._pending: dict[tuple[str, str], _Pending] = {}
        self.on_delivered = on_delivered

    def _notifier(self, receiver: str) -> Notifier | None:
        if isinstance(self.notifiers, Mapping):
            return self.notifiers.get(receiver)
        return self.notifiers

    def submit(self, notes: Sequence[Notification], now_ms: int) -> int:
        """Try to send each notification now; return how many were delivered."""
        for note in notes:
            notifier = self._notifier(note.receiver)
            if notifier is None:
                logger.warning(
                    "no notifier for receiver=%s; notification dropped", note.receiver
                )
                continue
            key = (note.key, notifier.name)
            if note.key in self.delivered or key in self._pending:
                logger.debug(
                    "notification key=%s already delivered or queued", note.key
                )
                continue
            self._pending[key] = _Pending(note, notifier, 0, int(now_ms))
        return self.poll(now_ms)

    def poll(self, now_ms: int) -> int:
        """Run every attempt due by ``now_ms``; return how many succeeded."""
        done = 0
        for key, p in sorted(self._pending.items(), key=lambda kv: kv[1].due_ms):
            if p.due_ms > now_ms:
                continue
            if p.note.key in self.delivered:
                del self._pending[key]
                continue
            try:
                p.notifier.send(p.note)
            except NotifyError as exc:
                p.attempts += 1
                if p.attempts >= self.max_attempts:
                    del self._pending[key]
                    self.failed[p.note.key] = int(now_ms)
                    logger.error(
                        "notification given up after %d attempts: receiver=%s key=%s: %s",
                        p.attempts,
                        p.note.receiver,
                        p.note.key,
                        exc,
                    )
                    continue
                wait = min(
                    self.base_backoff_ms * 2 ** (p.attempts - 1), self.max_backoff_ms
                )
                wait = int(wait * (1.0 + self.jitter * self._rng.random()))
                p.due_ms = int(now_ms) + wait
                logger.warning(
                    "notification failed, retry in %d ms: receiver=%s key=%s attempt=%d: %s",
                    wait,
                    p.note.receiver,
                    p.note.key,
                    p.attempts,
                    exc,
                )
                continue
            del self._pending[key]
            self.delivered[p.note.key] = int(now_ms)
            done += 1
            logger.info(
                "notification delivered: receiver=%s key=%s",
                p.note.receiver,
                p.note.key,
            )
            if self.on_delivered is not None:
                self.on_delivered(p.note)
        return done

    def next_due_ms(self) -> int | None:
        """When the next retry is due, or None when nothing waits."""
        return min((p.due_ms for p in self._pending.values()), default=None)

    @property
    def pending(self) -> int:
        """Notifications waiting for a (re)try."""
        return len(self._pending)

    def state(self) -> dict[str, Any]:
        """The delivery log as JSON-able data (pending retries are not kept)."""
        return {
            "version": 1,
            "delivered": dict(self.delivered),
            "failed": dict(self.failed),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load what ``state()`` returned."""
        self.delivered = {str(k): int(v) for k, v in state.get("delivered", {}).items()}
        self.failed = {str(k): int(v) for k, v in state.get("failed", {}).items()}
