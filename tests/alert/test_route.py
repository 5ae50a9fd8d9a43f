from __future__ import annotations

import json

import pytest

from obscore.alert.notify import webhook_payload
from obscore.alert.route import (
    Matcher,
    Route,
    Router,
    format_rfc3339,
    parse_matcher,
    parse_matchers,
    parse_rfc3339,
)
from obscore.errors import ConfigError, DroppedDataWarning

S = 1_000


def _router(route: dict, *, send_resolved: bool = True, **extra) -> Router:
    cfg = {
        "route": {"receiver": "ops", **route},
        "receivers": [
            {
                "name": "ops",
                "webhook_configs": [{"url": "x", "send_resolved": send_resolved}],
            },
            {"name": "db", "webhook_configs": [{"url": "y"}]},
            {"name": "blackhole"},
        ],
        **extra,
    }
    return Router(cfg)


def _fire(name: str, **labels: str) -> dict:
    return {"labels": {"alertname": name, **labels}}


def _summary(notes):
    return [
        (
            n.ts_ms,
            n.group_key,
            sorted((a.labels.get("id", ""), n.is_firing(a)) for a in n.alerts),
        )
        for n in notes
    ]


# --- matchers and config ---


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('a="1"', {"a": "1"}, True),
        ('a="1"', {"a": "12"}, False),
        ('a!="1"', {}, True),
        ('a=""', {"b": "x"}, True),  # a missing label reads as empty
        ('a=~"1|2"', {"a": "2"}, True),
        ('a=~"1"', {"a": "12"}, False),  # regexes are anchored
        ('a!~"x.*"', {"a": "xyz"}, False),
        ("a=plain", {"a": "plain"}, True),
    ],
)
def test_matcher_ops_follow_alertmanager(text, labels, expected):
    assert parse_matcher(text).matches(labels) is expected


def test_parse_matchers_reads_braces_and_commas_in_quotes():
    ms = parse_matchers('{a="x,y", b=~"p|q"}')
    assert ms == (Matcher("a", "=", "x,y"), Matcher("b", "=~", "p|q"))
    assert str(ms[0]) == 'a="x,y"'


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"receiver": "ops", "match": {"a": "1"}}, "root route must not have matchers"),
        ({"group_wait": "1s"}, "needs a receiver"),
        (
            {"receiver": "ops", "group_wait": "1x"},
            "route.group_wait: '1x' is not a duration",
        ),
        ({"receiver": "ops", "bogus": 1}, "unknown key 'bogus'"),
        (
            {"receiver": "ops", "routes": [{"matchers": ["a=~'('"]}]},
            "not a regular expression",
        ),
        ({"receiver": "ops", "group_by": ["...", "a"]}, "'...' must stand alone"),
    ],
)
def test_route_config_errors_say_where(cfg, message):
    with pytest.raises(ConfigError, match=message):
        Route.from_config(cfg)


def test_router_refuses_unknown_receiver():
    with pytest.raises(ConfigError, match="receiver 'nobody' is not defined"):
        _router({"routes": [{"receiver": "nobody", "match": {"a": "1"}}]})


def test_route_tree_inherits_and_honours_continue():
    root = Route.from_config(
        {
            "receiver": "ops",
            "group_by": ["alertname"],
            "group_wait": "5s",
            "routes": [
                {"matchers": ['team="db"'], "receiver": "db", "continue": True},
                {"match_re": {"team": "db|web"}, "group_by": ["..."]},
                {"matchers": ['team="web"'], "receiver": "db"},
            ],
        }
    )
    db = root.match({"team": "db"})
    assert [r.receiver for r in db] == ["db", "ops"]
    assert db[0].group_wait_ms == 5 * S and db[0].group_by == ("alertname",)
    assert db[1].group_by is None  # '...'
    assert root.match({"team": "web"}) == [root.routes[1]]  # no continue: stop
    assert root.match({"team": "x"}) == [root]
    assert root.routes[0].key == '{}/{team="db"}'


# --- timing ---


def test_group_wait_then_group_interval_then_repeat():
    r = _router(
        {
            "group_by": ["alertname"],
            "group_wait": "2s",
            "group_interval": "5s",
            "repeat_interval": "12s",
        }
    )
    r.post([_fire("A", id="1")], 0)
    assert r.tick(1_999) == []
    r.post([_fire("A", id="2")], 1_000)
    first = r.tick(2_000)
    assert _summary(first) == [
        (2_000, '{}:{alertname="A"}', [("1", True), ("2", True)])
    ]
    r.post([_fire("A", id="3")], 3_000)
    assert _summary(r.tick(7_000))[0][2] == [("1", True), ("2", True), ("3", True)]
    # 7 s sent, no change: 12 s, 17 s quiet; repeat when more than 12 s passed.
    assert r.tick(17_000) == []
    assert [n.ts_ms for n in r.tick(22_000)] == [22_000]


def test_resolved_alert_is_notified_once_then_dropped():
    r = _router({"group_wait": "1s", "group_interval": "2s"})
    r.post([_fire("A", id="1"), _fire("A", id="2")], 0)
    assert len(r.tick(1_000)) == 1
    r.post([{**_fire("A", id="2"), "endsAt": format_rfc3339(1_500)}], 1_500)
    notes = r.tick(3_000)
    assert _summary(notes)[0][2] == [("1", True), ("2", False)]
    assert notes[0].status == "firing"
    assert [a.labels["id"] for _, als in r.groups() for a in als] == ["1"]
    assert r.tick(20_000) == []


def test_send_resolved_false_hides_resolutions_but_reports_all_clear():
    r = _router({"group_wait": "1s", "group_interval": "2s"}, send_resolved=False)
    r.post([_fire("A", id="1"), _fire("A", id="2")], 0)
    r.tick(1_000)
    r.post([{**_fire("A", id="2"), "endsAt": format_rfc3339(1_500)}], 1_500)
    assert r.tick(3_000) == []  # one resolved, one still firing: nothing to say
    r.post([{**_fire("A", id="1"), "endsAt": format_rfc3339(3_500)}], 3_500)
    assert r.tick(10_000) == []  # all resolved, but this receiver hears no resolutions
    assert r.groups() == []


def test_alert_older_than_group_wait_flushes_at_once():
    r = _router({"group_wait": "30s"})
    r.post([{**_fire("A"), "startsAt": format_rfc3339(0)}], 60 * S)
    assert [n.ts_ms for n in r.tick(60 * S)] == [60 * S]


def test_resolve_timeout_ends_an_alert_that_is_not_posted_again():
    r = _router(
        {"group_wait": "1s", "group_interval": "10s"},
        **{"global": {"resolve_timeout": "30s"}},
    )
    r.post([_fire("A")], 0)
    assert r.tick(1_000)[0].status == "firing"
    notes = r.tick(41_000)
    assert [(n.ts_ms, n.status) for n in notes] == [(31_000, "resolved")]


def test_late_and_jittered_ticks_give_the_same_notifications():
    def run(ticks):
        r = _router(
            {"group_by": ["alertname"], "group_wait": "2s", "group_interval": "3s"}
        )
        events = {
            0: [_fire("A", id="1")],
            4_000: [_fire("B", id="1")],
            5_000: [{**_fire("A", id="1"), "endsAt": format_rfc3339(5_000)}],
        }
        out = []
        for t in ticks:
            for et in sorted(events):
                if et <= t:
                    out += r.tick(et)
                    r.post(events.pop(et), et)
            out += r.tick(t)
        return _summary(out)

    punctual = run(range(0, 20_001, 100))
    jittered = run([0, 1_700, 4_300, 4_900, 9_999, 20_000])
    assert punctual == jittered and len(punctual) == 3


def test_invalid_alerts_are_dropped_and_the_rest_kept():
    r = _router({})
    with pytest.warns(
        DroppedDataWarning, match="2 alert\\(s\\) dropped, first: an alert needs"
    ):
        n = r.post([{"labels": {}}, _fire("A"), {"labels": {"1x": "y"}}], 0)
    assert n == 1
    with pytest.warns(
        DroppedDataWarning,
        match="2 alert\\(s\\) dropped, first: labels must be an object of name: value pairs, got 'x'",
    ):
        n = r.post([{"labels": "x"}, _fire("B"), {"labels": {"a": "b"}, "annotations": [1]}], 0)
    assert n == 1


# --- silences and inhibition ---


def test_silence_mutes_and_an_expired_silence_stops_muting():
    r = _router({"group_wait": "1s", "group_interval": "2s"})
    sid = r.add_silence(
        'alertname="A"', end_ms=10_000, now_ms=0, author="me", comment="deploy"
    )
    r.post([_fire("A")], 0)
    assert r.tick(9_000) == []
    assert r.silences[sid].state(5_000) == "active"
    notes = r.tick(12_000)  # the silence ended at 10 s; next flush at 11 s
    assert [n.ts_ms for n in notes] == [11_000]
    assert r.silences[sid].state(12_000) == "expired"


def test_expire_silence_early():
    r = _router({"group_wait": "1s", "group_interval": "2s"})
    sid = r.add_silence(['alertname="A"'], end_ms=3_600_000, now_ms=0)
    r.post([_fire("A")], 0)
    assert r.tick(4_000) == []
    r.expire_silence(sid, 4_000)
    assert [n.ts_ms for n in r.tick(6_000)] == [5_000]


def test_silence_refuses_an_end_in_the_past():
    r = _router({})
    with pytest.raises(ConfigError, match="silence end 5 must not be before"):
        r.add_silence('a="1"', end_ms=5, now_ms=10)


def test_inhibition_mutes_targets_with_equal_labels_while_the_source_fires():
    r = _router(
        {"group_by": ["alertname"], "group_wait": "1s", "group_interval": "2s"},
        inhibit_rules=[
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["cluster"],
            }
        ],
    )
    r.post(
        [
            _fire("Down", severity="critical", cluster="a"),
            _fire("Slow", severity="warning", cluster="a", id="a"),
            _fire("Slow", severity="warning", cluster="b", id="b"),
        ],
        0,
    )
    notes = {n.group_key: n for n in r.tick(1_000)}
    assert [a.labels["id"] for a in notes['{}:{alertname="Slow"}'].alerts] == ["b"]
    r.post(
        [
            {
                **_fire("Down", severity="critical", cluster="a"),
                "endsAt": format_rfc3339(2_000),
            }
        ],
        2_000,
    )
    notes = {n.group_key: n for n in r.tick(3_000)}
    assert sorted(a.labels["id"] for a in notes['{}:{alertname="Slow"}'].alerts) == [
        "a",
        "b",
    ]


def test_an_alert_matching_both_sides_does_not_inhibit_itself():
    r = _router(
        {"group_wait": "1s"},
        inhibit_rules=[
            {
                "source_match_re": {"severity": ".+"},
                "target_match_re": {"severity": ".+"},
            }
        ],
    )
    r.post([_fire("A", severity="warning")], 0)
    assert len(r.tick(1_000)) == 1


# --- the captured Alertmanager 0.25 run, replayed ---


def test_replay_matches_captured_alertmanager_notifications(shared_data):
    """Replay the posts of the captured run; compare with its 5 webhook bodies.

    Source: shared/data/alerting/alertmanager-0.25.0 (Debian Alertmanager
    0.25.0, README there).  Receive times are reconstructed: Prometheus
    posts at each alert's startsAt (endsAt 4m later, as Prometheus does) and
    again at its updatedAt; obscore's two posts at 18:09:34.744 and
    18:09:35.744 (the updatedAt of the winning post), the resolve at 18:09:43.2.
    """
    d = shared_data / "alerting" / "alertmanager-0.25.0"
    r = Router(
        {
            "route": {
                "receiver": "webhook",
                "group_by": ["alertname"],
                "group_wait": "2s",
                "group_interval": "10s",
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "webhook",
                    "webhook_configs": [{"url": "x", "send_resolved": True}],
                },
                {"name": "blackhole"},
            ],
            "inhibit_rules": [
                {
                    "source_matchers": ['severity="critical"'],
                    "target_matchers": ['severity="warning"'],
                    "equal": ["alertname"],
                }
            ],
        }
    )
    groups = json.loads((d / "groups_after_post.json").read_text())
    peer = [
        a
        for g in groups
        for a in g["alerts"]
        if a["labels"]["alertname"] == "ObscorePeerTargetUp"
    ]
    events = []
    for a in peer:
        body = {k: a[k] for k in ("labels", "annotations", "generatorURL", "startsAt")}
        for sent in (a["startsAt"], a["updatedAt"]):
            ms = parse_rfc3339(sent)
            events.append((ms + 2, [{**body, "endsAt": format_rfc3339(ms + 240_000)}]))
    posted = json.loads((d / "posted_alerts_1.json").read_text())
    events.append((parse_rfc3339("2026-12-03T18:09:34.744Z"), posted))
    events.append((parse_rfc3339("2026-12-03T18:09:35.744Z"), posted))
    events.append(
        (
            parse_rfc3339("2026-12-03T18:09:43.200Z"),
            json.loads((d / "posted_resolve.json").read_text()),
        )
    )
    notes = []
    for ms, body in sorted(events, key=lambda e: e[0]):
        notes += r.tick(ms)
        r.post(body, ms)
    notes += r.tick(parse_rfc3339("2026-12-03T18:10:30Z"))

    captured = [
        json.loads(p.read_text()) for p in sorted((d / "webhook").glob("*.json"))
    ]
    ours = [webhook_payload(n, captured[0]["externalURL"]) for n in notes]
    for body in ours + captured:
        for a in body["alerts"]:
            a.pop("fingerprint")  # obscore hashes label sets differently
    assert ours == captured
