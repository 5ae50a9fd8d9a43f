"""The alert lifecycle with real services: ``obscore serve``'s API and a live Alertmanager 0.25.

- the server's alert desk runs the engine's lifecycle: a remediation action of
  a severe rule alert waits until approved through the API, and silences
  posted to the API survive a restart of the server (state in the data dir);
- a receiver with ``alertmanager_configs`` forwards obscore's alerts to the
  Debian ``prometheus-alertmanager`` binary through its v2 API, started on
  127.0.0.1 by the launcher of ``test_route_vs_alertmanager.py``; the alerts
  then show in Alertmanager's own ``/api/v2/alerts``.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from obscore.alert.remediate import read_audit
from obscore.engine import Engine
from obscore.server import create_app

sys.path.insert(0, str(Path(__file__).parent))
from test_route_vs_alertmanager import alertmanager  # noqa: F401 (the launcher fixture)

S = 1_000
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

CONFIG = """
[[metrics]]
name = "temp"
labels = ["host"]

[[alerts.rules]]
name = "HighTemp"
metric = "temp"
threshold = 80
severity = 0.8
annotations = {{ summary = "${{host}} too hot" }}

[alerts.routing.route]
receiver = "{receiver}"
group_by = ["alertname"]
group_wait = "0s"
group_interval = "1s"

[[alerts.routing.receivers]]
name = "{receiver}"
{integration}

[[remediation.actions]]
name = "marker"
command = ["{python}", "-c", "import pathlib; pathlib.Path({marker!r}).write_text('ran')"]
rules = ["HighTemp"]
"""


def _engine(tmp_path: Path, receiver: str = "log", integration: str = "log_configs = [{}]",
            extra: str = "") -> Engine:
    (tmp_path / "obscore.toml").write_text(
        CONFIG.format(receiver=receiver, integration=integration, python=sys.executable,
                      marker=str(tmp_path / "ran.txt")) + extra
    )
    return Engine(tmp_path / "data", config=tmp_path / "obscore.toml")


def _fire(eng: Engine, now_ms: int) -> None:
    eng.gauge("temp").labels(host="a").set(95.0, ts_ms=now_ms)
    eng.step_alerts(now_ms)


def test_serve_approves_a_waiting_action_through_the_api_and_audits_it(tmp_path):
    eng = _engine(tmp_path)
    now = time.time_ns() // 1_000_000
    _fire(eng, now)
    with TestClient(create_app(eng, token=TOKEN, clock=lambda: now + 1_000)) as client:
        (action,) = client.get("/api/v1/obscore/actions").json()
        assert action["hook"] == "marker" and action["severity"] == 0.8
        assert not (tmp_path / "ran.txt").exists()
        res = client.post(f"/api/v1/obscore/actions/{action['id']}/approve",
                          json={"by": "ana"}, headers=AUTH)
        assert res.status_code == 200, res.text
        assert client.get("/api/v1/obscore/actions").json() == []
    eng.close()
    assert (tmp_path / "ran.txt").read_text() == "ran"
    events = [(r["event"], r.get("by")) for r in
              read_audit(tmp_path / "data" / "alerts" / "remediation-audit.jsonl")]
    assert events == [("approval_requested", None), ("approved", "ana"), ("ran", None)]


def test_serve_keeps_silences_and_alerts_across_a_restart(tmp_path):
    now = time.time_ns() // 1_000_000
    eng = _engine(tmp_path)
    _fire(eng, now)
    body = {
        "matchers": [{"name": "host", "value": "a", "isRegex": False, "isEqual": True}],
        "startsAt": "", "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000 + 7200)),
        "createdBy": "ana", "comment": "maintenance",
    }
    with TestClient(create_app(eng, token=TOKEN, clock=lambda: now + 1_000)) as client:
        res = client.post("/api/v2/silences", json=body, headers=AUTH)
        assert res.status_code == 200, res.text
        sid = res.json()["silenceID"]
    eng.close()

    eng = _engine(tmp_path)  # a new process: state from data/alerts
    with TestClient(create_app(eng, token=TOKEN, clock=lambda: now + 2_000)) as client:
        (silence,) = client.get("/api/v2/silences").json()
        assert (silence["id"], silence["createdBy"], silence["status"]["state"]) == (sid, "ana", "active")
        (alert,) = client.get("/api/v2/alerts").json()
        assert alert["labels"]["alertname"] == "HighTemp"
        assert alert["status"]["silencedBy"] == [sid]
        assert len(client.get("/api/v1/obscore/actions").json()) == 1  # still waiting
    eng.close()


@pytest.mark.integration
def test_alerts_forwarded_to_a_real_alertmanager_show_in_its_v2_api(tmp_path, alertmanager):  # noqa: F811
    base, _ = alertmanager
    # exact-only dedup: "a too hot" and "b too hot" at once would fold by similarity
    # into one alert listing both, and this test follows each alert in Alertmanager
    eng = _engine(
        tmp_path, "am",
        f'alertmanager_configs = [{{ url = "{base}", send_resolved = true }}]',
        extra="\n[alerts]\nsimilarity = 1.0\n",
    )
    eng.alert_flow.am_resend_ms = 1_000  # re-post firing alerts every second (default 1m)
    now = time.time_ns() // 1_000_000
    gauge = eng.gauge("temp")
    for host in ("a", "b"):
        gauge.labels(host=host).set(95.0, ts_ms=now)
    notes = eng.step_alerts(now)
    assert [n.receiver for n in notes] == ["am"]
    assert eng.alert_flow.delivery.delivered  # posted, answered 200
    with urllib.request.urlopen(base + "/api/v2/alerts", timeout=5) as r:
        got = json.loads(r.read())
    seen = {(a["labels"]["alertname"], a["labels"]["host"]) for a in got}
    first_end = {a["labels"]["host"]: a["endsAt"] for a in got}
    assert seen == {("HighTemp", "a"), ("HighTemp", "b")}
    for a in got:
        assert a["status"]["state"] == "active"
        assert a["annotations"]["summary"] == f"{a['labels']['host']} too hot"
        assert a["annotations"]["severity"] == "0.800"

    # host b cools down: the resolution is forwarded with its end, and Alertmanager
    # stops listing it as active (its clock is the wall clock: wait for it)
    time.sleep(1.2)
    later = time.time_ns() // 1_000_000
    gauge.labels(host="a").set(95.0, ts_ms=later)
    gauge.labels(host="b").set(20.0, ts_ms=later)
    eng.step_alerts(later)
    time.sleep(1.2)
    eng.step_alerts(time.time_ns() // 1_000_000)  # the group's next flush (group_interval 1s)
    eng.close()
    with urllib.request.urlopen(base + "/api/v2/alerts?active=true", timeout=5) as r:
        active = {a["labels"]["host"]: a for a in json.loads(r.read())}
    assert set(active) == {"a"}
    # host a was posted again while firing: Alertmanager moved its end (resolve timeout) on
    assert active["a"]["endsAt"] > first_end["a"]


def test_a_cli_silence_reaches_a_running_server_at_its_next_alert_post(tmp_path):
    from obscore.cli import main

    eng = _engine(tmp_path)
    now = time.time_ns() // 1_000_000
    with TestClient(create_app(eng, token=TOKEN, clock=lambda: now + 1_000)) as client:
        assert main(["silence", "--data", str(tmp_path / "data"), "--matcher", "host=b",
                     "--duration", "1h", "--author", "cli", "--comment", "reboot"]) == 0
        res = client.post("/api/v2/alerts", json=[{"labels": {"alertname": "Up", "host": "b"}}],
                          headers=AUTH)
        assert res.status_code == 200, res.text
        (alert,) = client.get("/api/v2/alerts").json()
        (silence,) = client.get("/api/v2/silences").json()
        assert alert["status"]["silencedBy"] == [silence["id"]]
        assert silence["createdBy"] == "cli" and silence["comment"] == "reboot"
    eng.close()
