from __future__ import annotations

import http.server
import json
import logging
import threading

import pytest

from obscore.alert.notify import (
    AlertmanagerNotifier,
    Delivery,
    LogNotifier,
    NotifyError,
    WebhookNotifier,
    webhook_payload,
)
from obscore.alert.route import Router, format_rfc3339

S = 1_000


class _Receiver(http.server.BaseHTTPRequestHandler):
    fail_first = 0
    requests: list[tuple[str, dict, int]] = []  # noqa: RUF012 (reset per test)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        code = 500 if len(self.requests) < self.fail_first else 200
        self.requests.append((self.headers.get("Idempotency-Key", ""), body, code))
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.requests = []
    _Receiver.fail_first = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Receiver
    finally:
        server.shutdown()
        server.server_close()


def _one_notification(now_ms=1_000):
    r = Router(
        {
            "route": {"receiver": "ops", "group_wait": "1s", "group_by": ["alertname"]},
            "receivers": [{"name": "ops", "send_resolved": True}],
        }
    )
    r.post(
        [
            {
                "labels": {"alertname": "A", "service": "api"},
                "annotations": {"summary": "s"},
            }
        ],
        0,
    )
    (note,) = r.tick(now_ms)
    return r, note


def test_webhook_payload_has_alertmanager_shape():
    _, note = _one_notification()
    body = webhook_payload(note, "http://obscore")
    assert (
        body["version"] == "4"
        and body["status"] == "firing"
        and body["receiver"] == "ops"
    )
    assert body["groupKey"] == '{}:{alertname="A"}'
    assert body["commonLabels"] == {"alertname": "A", "service": "api"}
    assert body["commonAnnotations"] == {"summary": "s"}
    (alert,) = body["alerts"]
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["startsAt"] == format_rfc3339(0) and len(alert["fingerprint"]) == 16


def test_receiver_failing_three_times_then_ok_gets_exactly_one_delivery(receiver):
    url, handler = receiver
    handler.fail_first = 3
    _, note = _one_notification()
    d = Delivery(
        {"ops": WebhookNotifier(url + "/hook")}, base_backoff_ms=S, max_attempts=10
    )
    assert d.submit([note], 1_000) == 0
    delivered = 0
    for t in range(1_000, 30_000, 250):  # virtual time: no sleeping
        delivered += d.poll(t)
        delivered += d.submit([note], t)  # the same notification again must not resend
    assert delivered == 1 and d.pending == 0
    codes = [c for _, _, c in handler.requests]
    assert codes == [500, 500, 500, 200]
    assert (
        len({k for k, _, _ in handler.requests}) == 1
    )  # one idempotency key throughout


def test_backoff_doubles_between_attempts(receiver):
    url, handler = receiver
    handler.fail_first = 100
    _, note = _one_notification()
    d = Delivery(WebhookNotifier(url), base_backoff_ms=1_000, max_attempts=4)
    d.submit([note], 0)
    dues = []
    while d.pending:
        dues.append(d.next_due_ms())
        d.poll(dues[-1])
    assert dues == [1_000, 3_000, 7_000]
    assert note.key in d.failed


def test_unreachable_receiver_raises_notify_error():
    _, note = _one_notification()
    with pytest.raises(NotifyError, match="POST http://127.0.0.1:9/x"):
        WebhookNotifier("http://127.0.0.1:9/x", timeout_s=2).send(note)


def test_log_notifier_writes_one_line(caplog):
    _, note = _one_notification()
    with caplog.at_level(logging.INFO, logger="obscore.alert.notify"):
        LogNotifier().send(note)
    assert (
        "alert notification: receiver=ops" in caplog.text
        and "status=firing" in caplog.text
    )


def test_alertmanager_notifier_posts_v2_alerts(receiver):
    url, handler = receiver
    r, _ = _one_notification()
    r.post(
        [
            {
                "labels": {"alertname": "A", "service": "api"},
                "endsAt": format_rfc3339(2_000),
            }
        ],
        2_000,
    )
    (note,) = r.tick(302_000)  # next flush: 1 s + 5m (default group_interval)
    AlertmanagerNotifier(url).send(note)
    ((_, body, _),) = handler.requests
    assert body == [
        {
            "labels": {"alertname": "A", "service": "api"},
            "annotations": {},
            "startsAt": format_rfc3339(0),
            "generatorURL": "",
            "endsAt": format_rfc3339(2_000),
        }
    ]
