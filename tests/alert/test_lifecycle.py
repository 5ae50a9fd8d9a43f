"""The alert lifecycle as the engine runs it: rules, dedup, routing, state, remediation.

Every test builds an ``Engine`` from a TOML config written to a temporary
file, records samples with explicit times, and steps the alerts with an
explicit clock (``Engine.step_alerts``).  Notifications go to a real webhook
receiver on 127.0.0.1 (``http.server``), so what is counted is what arrived.
"""

from __future__ import annotations

import http.server
import json
import sys
import threading

import pytest

from obscore.alert.lifecycle import AlertLifecycle, rules_from_config
from obscore.alert.remediate import read_audit
from obscore.cli import main
from obscore.config import load_config
from obscore.engine import Engine
from obscore.errors import ConfigError

S = 1_000


class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            status = srv.statuses.pop(0) if srv.statuses else 200
            srv.attempts.append(body)
            if status == 200:
                srv.bodies.append(body)
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hook():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    srv.lock, srv.statuses, srv.attempts, srv.bodies = threading.Lock(), [], [], []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/hook"
    yield srv
    srv.shutdown()
    srv.server_close()


ROUTING = """
[alerts.routing.route]
receiver = "ops"
group_by = ["alertname"]
group_wait = "{group_wait}"
group_interval = "{group_interval}"
repeat_interval = "4h"

[[alerts.routing.receivers]]
name = "ops"
webhook_configs = [{{ url = "{url}", send_resolved = true }}]
"""

METRICS = """
[[metrics]]
name = "temp"
labels = ["host", "region", "service"]
"""


def _engine(tmp_path, url, rules, *, group_wait="30s", group_interval="1m", extra="", data=True):
    text = METRICS + rules + ROUTING.format(url=url, group_wait=group_wait, group_interval=group_interval)
    (tmp_path / "obscore.toml").write_text(text + extra)
    return Engine(tmp_path / "data" if data else None, config=tmp_path / "obscore.toml")


def _run(eng, series, t0_s, t1_s, step_s=10):
    """Record each series' value at every step and step the alerts; series maps labels to f(t_s)."""
    gauge = eng.gauge("temp")
    for t in range(t0_s, t1_s, step_s):
        for labels, fn in series.items():
            value = fn(t)
            if value is not None:
                gauge.labels(**dict(labels)).set(value, ts_ms=t * S)
        eng.step_alerts(t * S)


def _statuses(bodies):
    return [(b["status"], sorted(a["labels"].get("host", "") for a in b["alerts"])) for b in bodies]


HIGH = """
[[alerts.rules]]
name = "HighTemp"
metric = "temp"
threshold = 80
recovery = 70
for = "30s"
keep_firing_for = "20s"
labels = { team = "ops" }
annotations = { summary = "${host} is at $value (over $threshold)" }
"""


# --- rules from the config -----------------------------------------------------------


def test_threshold_rule_from_config_fires_after_for_and_resolves_through_the_webhook(tmp_path, hook):
    eng = _engine(tmp_path, hook.url, HIGH)
    host = (("host", "a"),)
    _run(eng, {host: lambda t: 90.0 if 100 <= t < 300 else 50.0}, 0, 600)
    eng.close()
    assert _statuses(hook.bodies) == [("firing", ["a"]), ("resolved", ["a"])]
    firing = hook.bodies[0]
    assert firing["version"] == "4" and firing["receiver"] == "ops"
    assert firing["groupKey"] == '{}:{alertname="HighTemp"}'
    alert = firing["alerts"][0]
    assert alert["labels"] == {"alertname": "HighTemp", "host": "a", "team": "ops"}
    assert alert["annotations"]["summary"] == "a is at 90.0 (over 80.0)"
    assert 0 <= float(alert["annotations"]["severity"]) <= 1
    assert alert["startsAt"] == "1970-01-01T00:02:10Z"  # pending from 100 s, `for` 30 s


def test_recovery_threshold_keeps_the_alert_firing_between_the_two_levels(tmp_path, hook):
    eng = _engine(tmp_path, hook.url, HIGH)
    # above 80, then 75 (between recovery 70 and trigger 80) for a long time, then 60
    _run(eng, {(("host", "a"),): lambda t: 90.0 if t < 100 else (75.0 if t < 500 else 60.0)}, 0, 800)
    eng.close()
    assert _statuses(hook.bodies) == [("firing", ["a"]), ("resolved", ["a"])]
    resolved = hook.bodies[1]["alerts"][0]
    assert resolved["endsAt"] == "1970-01-01T00:08:30Z"  # last 75 at 490 s + keep_firing 20 s


def test_condition_true_false_true_with_pending_fires_twice(tmp_path, hook):
    eng = _engine(tmp_path, hook.url, HIGH.replace('keep_firing_for = "20s"', 'keep_firing_for = "0s"'),
                  group_interval="10s")
    on = lambda t: 90.0 if (100 <= t < 200 or 400 <= t < 500) else 50.0
    _run(eng, {(("host", "a"),): on}, 0, 700)
    eng.close()
    assert [s for s, _ in _statuses(hook.bodies)] == ["firing", "resolved", "firing", "resolved"]
    starts = {a["startsAt"] for b in hook.bodies for a in b["alerts"]}
    assert starts == {"1970-01-01T00:02:10Z", "1970-01-01T00:07:10Z"}


def test_anomaly_rule_on_a_detector_score_fires_on_a_spike(tmp_path, hook):
    rules = """
[[alerts.rules]]
name = "TempAnomaly"
metric = "temp"
detector = "zscore"
detector_params = { window_ms = 300000, threshold = 3.0 }
threshold = 0.8
keep_firing_for = "30s"
annotations = { summary = "${host} anomaly score $value" }
"""
    eng = _engine(tmp_path, hook.url, rules, group_wait="10s")
    noise = [50.0 + (k * 7 % 5) * 0.1 for k in range(400)]
    _run(eng, {(("host", "a"),): lambda t: 120.0 if 2000 <= t < 2040 else noise[t // 10 % 400]}, 0, 2400)
    eng.close()
    assert _statuses(hook.bodies)[0] == ("firing", ["a"])
    fired = hook.bodies[0]["alerts"][0]
    assert fired["labels"]["alertname"] == "TempAnomaly"
    assert fired["startsAt"] >= "1970-01-01T00:33:20Z"  # not before the spike at 2000 s
    assert [s for s, _ in _statuses(hook.bodies)] == ["firing", "resolved"]


def test_flapping_alert_notifies_once_then_stays_quiet_until_stable(tmp_path, hook):
    rules = HIGH.replace('for = "30s"', 'for = "0s"').replace('keep_firing_for = "20s"', "") + """
flapping = { window = "10m", max_changes = 4, hold = "2m", policy = "notify_once" }
"""
    eng = _engine(tmp_path, hook.url, rules, group_wait="0s", group_interval="10s")
    # flips every 20 s for 10 minutes, then calm
    flip = lambda t: (90.0 if (t // 20) % 2 == 0 else 50.0) if t < 600 else 50.0
    _run(eng, {(("host", "a"),): flip}, 0, 1200)
    eng.close()
    flapping = [b for b in hook.bodies if b["groupKey"].startswith("flapping:")]
    assert [b["status"] for b in flapping] == ["firing", "resolved"]
    assert flapping[0]["alerts"][0]["annotations"]["flapping"] == "true"
    # before flapping was detected (the 5th change, at 80 s): one notification per change;
    # the 5th change sends the flapping notice instead; then nothing for 10 minutes of
    # flips, until it is stable and the notice resolves
    at = hook.bodies.index(flapping[0])
    assert [b["status"] for b in hook.bodies[:at]] == ["firing", "resolved"] * 2
    assert hook.bodies[at + 1:] == [flapping[1]]
    # the last flip up was at 560 s; the hold of 2m runs from the last true step (570 s)
    assert flapping[1]["alerts"][0]["endsAt"] == "1970-01-01T00:11:30Z"
    assert not eng.alert_flow.flapping and not any(
        s.state(1200 * S) == "active" for s in eng.alert_flow.router.silences.values()
    )


def test_flapping_with_policy_notify_keeps_routing_it_held_firing(tmp_path, hook):
    rules = HIGH.replace('for = "30s"', 'for = "0s"').replace('keep_firing_for = "20s"', "") + """
flapping = { window = "10m", max_changes = 4, hold = "2m", policy = "notify" }
"""
    eng = _engine(tmp_path, hook.url, rules, group_wait="0s", group_interval="10s")
    flip = lambda t: (90.0 if (t // 20) % 2 == 0 else 50.0) if t < 600 else 50.0
    _run(eng, {(("host", "a"),): flip}, 0, 1200)
    eng.close()
    assert not [b for b in hook.bodies if b["groupKey"].startswith("flapping:")]
    assert _statuses(hook.bodies)[-1][0] == "resolved"


def test_similar_alerts_fold_into_one_notification_with_their_members(tmp_path, hook):
    rules = HIGH.replace('labels = { team = "ops" }', "").replace(
        'annotations = { summary = "${host} is at $value (over $threshold)" }',
        'annotations = { summary = "temperature high" }',
    )
    eng = _engine(tmp_path, hook.url, rules)
    hot = lambda t: 90.0 if t >= 100 else 50.0
    series = {
        (("host", "h1"), ("region", "eu"), ("service", "api")): hot,
        (("host", "h1"), ("region", "us"), ("service", "api")): hot,
    }
    _run(eng, series, 0, 400)
    eng.close()
    firing = [b for b in hook.bodies if b["status"] == "firing"]
    assert len(firing) == 1 and len(firing[0]["alerts"]) == 1
    assert len(firing[0]["alerts"][0]["annotations"]["members"].split(",")) == 2


def test_exact_only_dedup_sends_both_similar_alerts(tmp_path, hook):
    rules = HIGH.replace('labels = { team = "ops" }', "").replace(
        'annotations = { summary = "${host} is at $value (over $threshold)" }',
        'annotations = { summary = "temperature high" }',
    )
    eng = _engine(tmp_path, hook.url, rules, extra="\n[alerts]\nsimilarity = 1.0\n")
    hot = lambda t: 90.0 if t >= 100 else 50.0
    series = {
        (("host", "h1"), ("region", "eu"), ("service", "api")): hot,
        (("host", "h1"), ("region", "us"), ("service", "api")): hot,
    }
    _run(eng, series, 0, 400)
    eng.close()
    assert len(hook.bodies[0]["alerts"]) == 2


def test_bad_rules_are_refused_naming_the_rule_and_key(tmp_path):
    def raw(rule):
        return {"alerts": {"rules": [rule]}}

    with pytest.raises(ConfigError, match=r"alerts.rules\[0\]: a rule needs a 'name'"):
        rules_from_config(raw({"metric": "x"}))
    with pytest.raises(ConfigError, match=r"\('Hot'\): a rule needs the 'metric'"):
        rules_from_config(raw({"name": "Hot", "threshold": 1}))
    with pytest.raises(ConfigError, match=r"\('Hot'\), for: .*not a duration"):
        rules_from_config(raw({"name": "Hot", "metric": "x", "threshold": 1, "for": "5x"}))
    with pytest.raises(ConfigError, match=r"detector: 'nope' is not registered"):
        rules_from_config(raw({"name": "Hot", "metric": "x", "detector": "nope"}))
    with pytest.raises(ConfigError, match=r"flapping.policy: 'loud' is not one of"):
        rules_from_config(raw({"name": "Hot", "metric": "x", "threshold": 1,
                               "flapping": {"policy": "loud"}}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['treshold'\]"):
        rules_from_config(raw({"name": "Hot", "metric": "x", "treshold": 1}))
    (tmp_path / "c.toml").write_text(
        '[alerts.routing.route]\nreceiver = "x"\n[[alerts.routing.receivers]]\nname = "x"\n'
        'webhook_configs = [{ url = "ftp://nowhere" }]\n'
    )
    with pytest.raises(ConfigError, match=r"receivers\[0\] \('x'\), webhook_configs\[0\].url"):
        AlertLifecycle.from_config(load_config(tmp_path / "c.toml"))


# --- delivery, state and restarts --------------------------------------------------------


def test_receiver_failing_three_times_then_ok_gets_exactly_one_delivery(tmp_path, hook):
    hook.statuses[:] = [500, 500, 500]
    eng = _engine(tmp_path, hook.url, HIGH)
    _run(eng, {(("host", "a"),): lambda t: 90.0}, 0, 200)
    eng.close()
    assert len(hook.attempts) == 4
    assert _statuses(hook.bodies) == [("firing", ["a"])]


def test_engine_restart_during_group_wait_sends_the_group_once(tmp_path, hook):
    rules = HIGH.replace('for = "30s"', 'for = "0s"')
    host = {(("host", "a"),): lambda t: 90.0}
    eng = _engine(tmp_path, hook.url, rules, group_wait="60s")
    _run(eng, host, 0, 30)  # fires at 0 s; the group waits until 60 s
    eng.close()  # the process stops in the middle of group_wait
    assert hook.bodies == []

    eng = _engine(tmp_path, hook.url, rules, group_wait="60s")
    assert len(eng.alert_flow.router.groups()) == 1
    _run(eng, host, 30, 90)  # the flush at 60 s runs in the new process
    eng.close()
    eng = _engine(tmp_path, hook.url, rules, group_wait="60s")
    _run(eng, host, 90, 120)
    eng.close()
    assert _statuses(hook.bodies) == [("firing", ["a"])]
    assert hook.bodies[0]["alerts"][0]["startsAt"] == "1970-01-01T00:00:00Z"


def test_restart_keeps_rule_state_silences_and_the_notification_log(tmp_path, hook):
    rules = HIGH.replace('for = "30s"', 'for = "60s"')
    host = {(("host", "a"),): lambda t: 90.0}
    eng = _engine(tmp_path, hook.url, rules)
    eng.alert_flow.router.add_silence('host="b"', 10_000 * S, 0, author="me", comment="maintenance")
    _run(eng, host, 0, 40)  # pending since 0 s
    eng.close()
    eng = _engine(tmp_path, hook.url, rules)
    st = eng.alert_flow.evaluator.state_of("HighTemp", {"host": "a"})
    assert st is not None and st.state == "pending" and st.pending_since_ms == 0
    assert [s.author for s in eng.alert_flow.router.silences.values()] == ["me"]
    _run(eng, host, 40, 200)  # fires at 60 s, as if nothing had stopped
    eng.close()
    eng = _engine(tmp_path, hook.url, rules)
    _run(eng, host, 200, 300)
    eng.close()
    assert _statuses(hook.bodies) == [("firing", ["a"])]
    assert hook.bodies[0]["alerts"][0]["startsAt"] == "1970-01-01T00:01:00Z"


def test_cli_silence_mutes_matching_alerts_and_its_expiry_ends_the_muting(tmp_path, hook, capsys):
    rules = HIGH.replace('for = "30s"', 'for = "0s"')
    # the run steps past the silence's wall-clock end: samples 2 h ahead of the clock
    eng = _engine(tmp_path, hook.url, rules, group_interval="10s",
                  extra='\n[store]\nmax_future = "3h"\n')
    data = str(tmp_path / "data")
    assert main(["silence", "--data", data, "--matcher", "host=a", "--duration", "2h",
                 "--author", "ann", "--comment", "disk swap"]) == 0
    assert "recorded" in capsys.readouterr().out
    eng.alert_flow.router.now_ms = None
    # wall-clock silence (now .. now + 2h): step at the wall clock
    import time

    now_s = time.time_ns() // 1_000_000_000
    _run(eng, {(("host", "a"),): lambda t: 90.0, (("host", "b"),): lambda t: 90.0},
         now_s, now_s + 120)
    assert [sorted(a["labels"]["host"] for a in b["alerts"]) for b in hook.bodies] == [["b"]]
    sil = next(iter(eng.alert_flow.router.silences.values()))
    assert (sil.author, sil.comment) == ("ann", "disk swap")
    _run(eng, {(("host", "a"),): lambda t: 90.0, (("host", "b"),): lambda t: 90.0},
         now_s + 7200 + 10, now_s + 7200 + 60)  # the silence has expired
    eng.close()
    assert sorted(a["labels"]["host"] for a in hook.bodies[-1]["alerts"]) == ["a", "b"]


def test_cli_silence_refuses_a_bad_matcher_and_a_missing_data_directory(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    assert main(["silence", "--data", str(tmp_path / "d"), "--matcher", "host",
                 "--duration", "2h", "--comment", "x"]) == 2
    assert "matcher" in capsys.readouterr().err
    assert main(["silence", "--data", str(tmp_path / "nope"), "--matcher", "host=a",
                 "--duration", "2h", "--comment", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- remediation ---------------------------------------------------------------------------


def _remediation_rules(severity: float, marker) -> str:
    return HIGH.replace('for = "30s"', 'for = "0s"') + f"""
severity = {severity}

[[remediation.actions]]
name = "cool-down"
command = ["{sys.executable}", "-c", "import os, pathlib; pathlib.Path({str(marker)!r}).write_text(os.environ['OBSCORE_ALERT_LABELS']); print('cooled')"]
timeout = "20s"
rules = ["HighTemp"]
"""


def test_action_on_a_severity_0_8_alert_waits_for_cli_approval(tmp_path, hook, capsys):
    marker = tmp_path / "ran.txt"
    eng = _engine(tmp_path, hook.url, _remediation_rules(0.8, marker))
    host = {(("host", "a"),): lambda t: 90.0}
    _run(eng, host, 0, 60)
    assert not marker.exists()
    (pending,) = eng.alert_flow.remediator.pending
    audit_path = tmp_path / "data" / "alerts" / "remediation-audit.jsonl"
    assert [r["event"] for r in read_audit(audit_path)] == ["approval_requested"]
    _run(eng, host, 60, 120)  # time alone does not run it
    assert not marker.exists()

    data = str(tmp_path / "data")
    assert main(["approve", "--data", data, "nope", "--by", "bob"]) == 2
    assert "no remediation action 'nope'" in capsys.readouterr().err
    assert main(["approve", "--data", data, pending, "--by", "bob"]) == 0
    _run(eng, host, 120, 130)  # the engine applies the approval at its next step
    eng.close()
    assert json.loads(marker.read_text())["host"] == "a"
    records = read_audit(audit_path)
    assert [r["event"] for r in records] == ["approval_requested", "approved", "ran"]
    assert records[1]["by"] == "bob" and records[2]["approved_by"] == "bob"
    assert "cooled" in records[2]["result"] and records[0]["severity"] == 0.8


def test_action_on_a_severity_0_5_alert_runs_at_once_and_is_audited(tmp_path, hook):
    marker = tmp_path / "ran.txt"
    eng = _engine(tmp_path, hook.url, _remediation_rules(0.5, marker))
    _run(eng, {(("host", "a"),): lambda t: 90.0}, 0, 10)
    assert marker.exists()
    _run(eng, {(("host", "a"),): lambda t: 90.0}, 10, 100)  # still firing: not run again
    eng.close()
    records = read_audit(tmp_path / "data" / "alerts" / "remediation-audit.jsonl")
    assert [(r["event"], r["severity"], r["approved_by"]) for r in records] == [("ran", 0.5, None)]


def test_cli_reject_drops_the_action_and_a_failing_command_is_audited(tmp_path, hook):
    marker = tmp_path / "ran.txt"
    eng = _engine(tmp_path, hook.url, _remediation_rules(0.9, marker))
    _run(eng, {(("host", "a"),): lambda t: 90.0}, 0, 10)
    (pending,) = eng.alert_flow.remediator.pending
    assert main(["reject", "--data", str(tmp_path / "data"), pending, "--by", "eve"]) == 0
    _run(eng, {(("host", "a"),): lambda t: 90.0}, 10, 20)
    eng.close()
    assert not marker.exists() and not eng.alert_flow.remediator.pending
    events = [r["event"] for r in read_audit(tmp_path / "data" / "alerts" / "remediation-audit.jsonl")]
    assert events == ["approval_requested", "rejected"]

    rules = HIGH.replace('for = "30s"', 'for = "0s"') + f"""
severity = 0.2
[[remediation.actions]]
name = "broken"
command = ["{sys.executable}", "-c", "import sys; print('no disk'); sys.exit(3)"]
"""
    eng = _engine(tmp_path / "x", hook.url, rules) if (tmp_path / "x").mkdir() is None else None
    _run(eng, {(("host", "a"),): lambda t: 90.0}, 0, 10)
    eng.close()
    (rec,) = read_audit(tmp_path / "x" / "data" / "alerts" / "remediation-audit.jsonl")
    assert rec["event"] == "failed" and "exited with 3" in rec["error"] and "no disk" in rec["error"]


def test_bad_remediation_actions_are_refused(tmp_path):
    from obscore.alert.lifecycle import hooks_from_config

    with pytest.raises(ConfigError, match=r"remediation.actions\[0\] \('x'\): give exactly one of"):
        hooks_from_config({"remediation": {"actions": [{"name": "x"}]}})
    with pytest.raises(ConfigError, match=r"command: expected an array of strings"):
        hooks_from_config({"remediation": {"actions": [{"name": "x", "command": "rm -rf /"}]}})
    with pytest.raises(ConfigError, match=r"callable: cannot import 'nowhere.mod:fn'"):
        hooks_from_config({"remediation": {"actions": [{"name": "x", "callable": "nowhere.mod:fn"}]}})
    (hook,) = hooks_from_config({"remediation": {"actions": [
        {"name": "x", "callable": "json:dumps", "matchers": ['service="api"'], "patterns": ["bad_deploy"]}
    ]}})
    assert hook.patterns == ("bad_deploy",) and hook.matchers[0].name == "service"


def test_load_config_refuses_bad_alert_tables_naming_the_file(tmp_path):
    path = tmp_path / "obscore.toml"
    path.write_text('[[alerts.rules]]\nname = "Hot"\nmetric = "temp"\nthreshold = 1\nfor = "5x"\n')
    with pytest.raises(ConfigError, match=r"obscore.toml, alerts.rules\[0\] \('Hot'\), for: '5x'"):
        load_config(path)
    path.write_text('[alerts.routing.route]\nreceiver = "nobody"\n[[alerts.routing.receivers]]\nname = "ops"\n')
    with pytest.raises(ConfigError, match=r"obscore.toml, alerts.routing: route: receiver 'nobody' is not defined"):
        load_config(path)
    path.write_text('[[remediation.actions]]\nname = "x"\ncommand = []\n')
    with pytest.raises(ConfigError, match=r"obscore.toml, remediation.actions\[0\] \('x'\), command"):
        load_config(path)
