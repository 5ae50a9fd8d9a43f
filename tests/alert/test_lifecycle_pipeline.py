"""The live pipeline's anomaly alerts reach the config's receivers through the lifecycle.

5 simulated hours with two overlapping injected incidents (a bad deploy of
``recommend`` in eu-west, then a slow ``db``) are ingested in time order and
ticked as a live engine would be; the config routes to a webhook on
127.0.0.1.  Also: a steady rule alert evaluated at jittered and delayed step
times never sends resolved-then-firing.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from obscore.catalogue import from_platform
from obscore.engine import Engine
from obscore.sim import CAUSE_METRICS, Incident, simulate

sys.path.insert(0, str(Path(__file__).parent))
from test_lifecycle import HIGH, _engine, hook  # noqa: F401 (the webhook fixture)

H = 3_600_000
M = 60_000
START = 1_767_225_600_000

pytestmark = pytest.mark.slow


def test_live_pipeline_alerts_are_routed_to_the_webhook_and_resolve_once(tmp_path, hook):  # noqa: F811
    incidents = [
        Incident("bad_deploy", "recommend", CAUSE_METRICS["bad_deploy"], "eu-west",
                 START + 3 * H, START + 3 * H + 40 * M),
        Incident("slow_db", "db", CAUSE_METRICS["slow_db"], None,
                 START + 3 * H + 20 * M, START + 4 * H),
    ]
    sim = simulate(seed=5, hours=5, incidents=incidents, start_ms=START)
    (tmp_path / "obscore.toml").write_text(f"""
[alerts.routing.route]
receiver = "ops"
group_by = ["alertname", "service"]
group_wait = "30s"
group_interval = "5m"

[[alerts.routing.receivers]]
name = "ops"
webhook_configs = [{{ url = "{hook.url}", send_resolved = true }}]
""")
    engine = Engine(tmp_path / "data", config=tmp_path / "obscore.toml",
                    catalogue=from_platform(sim.platform))
    ts = sim.table["ts"].to_numpy()
    t = sim.start_ms
    while t < sim.end_ms + 3 * H:  # and on after the data ends, until all resolved
        hi = t + 20 * M  # a tick every 20 simulated minutes
        a, b = np.searchsorted(ts, t), np.searchsorted(ts, hi)
        if b > a:
            engine.ingest(sim.table.slice(a, b - a), sim.index)
        engine.tick(hi - 1)
        t = hi
    engine.close()

    firing = [b for b in hook.bodies if b["status"] == "firing"]
    services = {a["labels"].get("service") for b in firing for a in b["alerts"]}
    assert {"recommend", "db"} <= services
    assert all(a["labels"]["alertname"].endswith("_anomaly") for b in hook.bodies for a in b["alerts"])
    # no resolved-then-firing flip of one alert (same fingerprint and start), and every
    # fingerprint that fired is announced resolved in the end (a later occurrence of a
    # fingerprint, more than the dedup window after the last, replaces the earlier one)
    seen: dict[tuple[str, str], str] = {}
    last: dict[str, str] = {}
    for body in hook.bodies:
        for a in body["alerts"]:
            key = (a["fingerprint"], a["startsAt"])
            assert not (seen.get(key) == "resolved" and a["status"] == "firing"), a["labels"]
            seen[key] = last[a["fingerprint"]] = a["status"]
    assert [fp for fp, status in last.items() if status != "resolved"] == []
    assert set(last) == {al.fingerprint for al in engine.alert_book.alerts}
    assert json.loads((tmp_path / "data" / "alerts" / "delivery.json").read_text())["delivered"]


def test_steady_rule_alert_with_jittered_and_delayed_steps_never_resolves_then_fires(tmp_path, hook):  # noqa: F811
    rules = HIGH.replace('keep_firing_for = "20s"', 'keep_firing_for = "3m"')
    eng = _engine(tmp_path, hook.url, rules, group_wait="10s", group_interval="20s")
    rng = random.Random(11)
    gauge = eng.gauge("temp")
    t = 0
    while t < 3_600_000:
        gauge.labels(host="a").set(90.0, ts_ms=t)  # steady: samples every 10 s
        t += 10_000
        if rng.random() < 0.3:
            # the evaluation runs late (jitter up to 9 s) or skips up to 2 minutes
            eng.step_alerts(t + rng.randrange(0, 9_000) + (rng.random() < 0.2) * rng.randrange(0, 120_000))
    eng.close()
    assert hook.bodies and all(b["status"] == "firing" for b in hook.bodies)
    assert len({a["startsAt"] for b in hook.bodies for a in b["alerts"]}) == 1
