"""Escalation: levels and delays, acknowledgement through the API and the CLI, restarts."""

from __future__ import annotations

import warnings

import pytest

from obscore.alert.escalate import Escalator, policies_from_config
from obscore.errors import ConfigError

M = 60_000
T0 = 1_767_225_600_000
CONFIG = {
    "escalation": {
        "policies": [
            {
                "name": "web",
                "matchers": ['service=~"gateway|auth"'],
                "levels": [
                    {"receiver": "web-oncall", "delay": "10m"},
                    {"receiver": "web-lead", "delay": "20m"},
                    {"receiver": "cto"},
                ],
            },
            {"name": "severe", "min_severity": 0.8, "levels": [{"receiver": "sre"}]},
        ]
    }
}
LABELS = {"alertname": "error_rate_anomaly", "service": "auth"}


def _escalator(state_dir=None, sent=None):
    return Escalator(
        policies_from_config(CONFIG), None if sent is None else sent.append, state_dir
    )


def test_unacknowledged_alert_goes_to_the_next_level_after_each_delay():
    sent = []
    esc = _escalator(sent=sent)
    esc.fire("fp1", LABELS, 0.5, "auth errors", T0)
    assert [(p.level, p.receiver, p.at_ms) for p in sent] == [(0, "web-oncall", T0)]
    assert esc.tick(T0 + 10 * M - 1) == []
    assert [(p.level, p.receiver) for p in esc.tick(T0 + 10 * M)] == [(1, "web-lead")]
    assert esc.tick(T0 + 29 * M) == []
    assert [(p.level, p.receiver) for p in esc.tick(T0 + 30 * M)] == [(2, "cto")]
    assert esc.tick(T0 + 5 * 60 * M) == []  # the last level has nobody after it
    assert esc.status()[0]["state"] == "exhausted"


def test_acknowledgement_within_the_delay_stops_the_escalation():
    esc = _escalator(sent=[])
    esc.fire("fp1", LABELS, 0.5, "auth errors", T0)
    esc.acknowledge("fp1", "ana", "looking", T0 + 9 * M)
    assert esc.tick(T0 + 60 * M) == []
    (st,) = esc.status()
    assert (
        st["state"] == "acknowledged"
        and st["acknowledged_by"] == "ana"
        and st["level"] == 0
    )


def test_first_covering_policy_applies_and_uncovered_alerts_are_not_paged():
    esc = _escalator(sent=[])
    assert esc.fire("a", {"service": "db"}, 0.5, "", T0) is None
    assert esc.fire("b", {"service": "db"}, 0.9, "", T0).receiver == "sre"
    assert esc.fire("c", {"service": "gateway"}, 0.9, "", T0).receiver == "web-oncall"


def test_a_resolved_alert_is_not_escalated_further():
    esc = _escalator(sent=[])
    esc.fire("fp1", LABELS, 0.5, "", T0)
    esc.resolve("fp1", T0 + 5 * M)
    assert esc.tick(T0 + 60 * M) == []


def test_a_restart_pages_no_level_twice_and_keeps_the_acknowledgement(tmp_path):
    sent = []
    esc = _escalator(tmp_path, sent)
    esc.fire("fp1", LABELS, 0.5, "", T0)
    esc.fire("fp2", {**LABELS, "region": "eu"}, 0.5, "", T0)
    esc.tick(T0 + 10 * M)
    esc.acknowledge("fp2", "kim", "", T0 + 11 * M)
    again = _escalator(tmp_path, sent)
    assert again.tick(T0 + 10 * M) == []  # level 1 was paged before the restart
    assert [(p.fingerprint, p.level) for p in again.tick(T0 + 30 * M)] == [("fp1", 2)]
    assert again.acks["fp2"]["by"] == "kim"
    assert [(p.fingerprint, p.level) for p in sent] == [
        ("fp1", 0),
        ("fp2", 0),
        ("fp1", 1),
        ("fp2", 1),
        ("fp1", 2),
    ]


def test_a_long_pause_pages_every_due_level_once_at_its_due_time():
    esc = _escalator(sent=[])
    esc.fire("fp1", LABELS, 0.5, "", T0)
    assert [(p.level, p.at_ms) for p in esc.tick(T0 + 3 * 60 * M)] == [
        (1, T0 + 10 * M),
        (2, T0 + 30 * M),
    ]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            {"name": "x", "levels": []},
            r"escalation.policies\[0\] \('x'\): 'levels' must be a non-empty list",
        ),
        (
            {"levels": [{"receiver": "a"}, {"receiver": "b"}]},
            r"escalation.policies\[0\].levels\[0\]: needs a 'delay' before the next level",
        ),
        ({"levels": [{"delay": "5m"}]}, r"levels\[0\]: needs a string 'receiver'"),
        (
            {"levels": [{"receiver": "a", "delay": "5x"}, {"receiver": "b"}]},
            r"levels\[0\].delay: ",
        ),
        (
            {"min_severity": 2, "levels": [{"receiver": "a"}]},
            r"min_severity: expected a number in \[0, 1\], got 2",
        ),
    ],
)
def test_bad_policies_are_refused_naming_the_key(policy, message):
    with pytest.raises(ConfigError, match=message):
        policies_from_config({"escalation": {"policies": [policy]}})


# --- through the engine, the API and the command line ---------------------------------


def _engine(tmp_path):
    from obscore.config import load_config
    from obscore.engine import Engine

    engine = Engine(tmp_path, config=load_config(overrides=CONFIG))
    alert, _ = engine.alert_book.raise_alert(LABELS, T0, T0 + 2 * M, 0.7, "auth errors")
    return engine, alert.fingerprint


def test_cli_ack_stops_the_escalation_of_a_running_engine(tmp_path, capsys):
    from obscore.cli import main

    engine, fp = _engine(tmp_path)
    pages = []
    engine.on_page.append(pages.append)
    assert [p.receiver for p in engine.escalate(T0 + 2 * M)] == ["web-oncall"]
    assert (
        main(
            [
                "ack",
                "--data",
                str(tmp_path),
                fp[:6],
                "--by",
                "lee",
                "--comment",
                "on it",
            ]
        )
        == 0
    )
    assert "acknowledged " + fp in capsys.readouterr().out
    assert engine.escalate(T0 + 12 * M) == []  # read acks.jsonl: no level 1
    assert engine.escalator.status()[0]["acknowledged_by"] == "lee"
    assert [p.level for p in pages] == [0]
    assert main(["ack", "--data", str(tmp_path), "ffffff", "--by", "lee"]) == 2
    assert "no escalated alert" in capsys.readouterr().err
    engine.close()


def test_an_unacknowledged_engine_alert_reaches_level_1_in_time(tmp_path):
    engine, fp = _engine(tmp_path)
    engine.escalate(T0 + 2 * M)
    assert engine.escalate(T0 + 11 * M) == []
    assert [(p.fingerprint, p.receiver) for p in engine.escalate(T0 + 12 * M)] == [
        (fp, "web-lead")
    ]
    engine.close()


def test_api_ack_drives_the_escalation_and_survives_a_restart(tmp_path):
    with warnings.catch_warnings():  # starlette asks for httpx2; httpx still works
        warnings.filterwarnings(
            "ignore", message="Using `httpx` with `starlette.testclient`"
        )
        from starlette.testclient import TestClient

    from obscore.config import load_config
    from obscore.engine import Engine
    from obscore.server import create_app

    engine, fp = _engine(tmp_path)
    now = [T0 + 2 * M]
    app = create_app(engine, token="t", clock=lambda: now[0])
    auth = {"Authorization": "Bearer t"}
    with TestClient(app, base_url="http://127.0.0.1") as c:
        engine.escalate(now[0])
        c.get("/api/v2/alerts")  # syncs the engine's alerts into the desk
        (st,) = c.get("/api/v1/obscore/escalations").json()
        assert (st["fingerprint"], st["level"], st["state"]) == (fp, 0, "escalating")
        now[0] = T0 + 5 * M
        res = c.post(
            f"/api/v1/obscore/alerts/{fp}/ack", json={"by": "ana"}, headers=auth
        )
        assert (
            res.status_code == 200
            and res.json()["annotations"]["acknowledged_by"] == "ana"
        )
        assert engine.escalate(T0 + 60 * M) == []
        assert c.get("/api/v1/obscore/escalations").json()[0]["state"] == "acknowledged"
    engine.close()
    again = Engine(tmp_path, config=load_config(overrides=CONFIG))
    assert again.escalator.acks[fp]["by"] == "ana"
    assert again.escalator.status()[0]["state"] == "acknowledged"
    again.close()
