"""Continuous operation: live ticks equal a replay, and the state survives a restart."""

from __future__ import annotations

import time

import numpy as np
import pytest

from obscore.catalogue import from_platform
from obscore.engine import Engine
from obscore.sim import CAUSE_METRICS, Incident, default_platform, simulate

H = 3_600_000
M = 60_000
START = 1_767_225_600_000


@pytest.fixture(scope="module")
def day():
    """5 simulated hours with two overlapping incidents (a bad deploy, then a slow db)."""
    incidents = [
        Incident(
            "bad_deploy",
            "recommend",
            CAUSE_METRICS["bad_deploy"],
            "eu-west",
            START + 3 * H,
            START + 3 * H + 40 * M,
        ),
        Incident(
            "slow_db",
            "db",
            CAUSE_METRICS["slow_db"],
            None,
            START + 3 * H + 20 * M,
            START + 4 * H,
        ),
    ]
    return simulate(seed=5, hours=5, incidents=incidents, start_ms=START)


def _feed(engine, sim, until_ms, chunks=(17 * M, 3 * M, 10_000), start_ms=None):
    """Ingest the samples in time order, a chunk at a time, ticking after each chunk."""
    ts = sim.table["ts"].to_numpy()
    t = sim.start_ms if start_ms is None else start_ms
    k = 0
    while t < until_ms:
        hi = min(t + chunks[k % len(chunks)], until_ms)
        a, b = np.searchsorted(ts, t), np.searchsorted(ts, hi)
        engine.ingest(sim.table.slice(a, b - a), sim.index)
        engine.tick(hi - 1)  # the clock: just before the next sample arrives
        t, k = hi, k + 1


def _incidents(result):
    return [
        (
            i.id,
            i.start_ms,
            i.end_ms,
            [(a.signal, a.start_ms, a.end_ms) for a in i.anomalies],
            i.reasons,
        )
        for i in result.incidents
    ]


def _same(live_engine, replay):
    live = live_engine.last_result
    assert live.anomalies == replay.anomalies
    assert [a.context for a in live.anomalies] == [a.context for a in replay.anomalies]
    assert _incidents(live) == _incidents(replay)
    assert live_engine.alerts() == replay.alerts


def test_live_ticks_give_the_same_anomalies_incidents_and_alerts_as_a_replay(day):
    engine = Engine(catalogue=from_platform(day.platform))
    _feed(engine, day, day.end_ms)
    replay = engine.replay(day.start_ms, day.end_ms - 1)
    assert (
        len(replay.anomalies) >= 10
        and len(replay.incidents) >= 2
        and len(replay.alerts) >= 5
    )
    _same(engine, replay)
    during = [
        i
        for i in replay.incidents
        if i.start_ms < day.incidents[1].end_ms
        and day.incidents[0].start_ms <= i.end_ms
    ]
    assert max(len(i.anomalies) for i in during) >= 10


def test_detector_state_and_open_incidents_survive_a_restart(day, tmp_path):
    mid = START + 3 * H + 30 * M  # both incidents under way
    engine = Engine(tmp_path, catalogue=from_platform(day.platform))
    _feed(engine, day, mid)
    before = engine.last_result
    assert engine.runner._open, "an incident should be open at the restart"
    engine.close()

    again = Engine(tmp_path, catalogue=from_platform(default_platform()))
    assert _incidents(again.last_result) == _incidents(before)
    assert again.runner.cursor_ms == engine.runner.cursor_ms
    _feed(again, day, day.end_ms, start_ms=mid)
    _same(again, again.replay(day.start_ms, day.end_ms - 1))
    again.close()


def test_start_and_stop_tick_on_a_background_thread(day):
    engine = Engine(catalogue=from_platform(day.platform))
    engine.ingest(day.table.slice(0, len(day.index) * 360), day.index)  # the first hour
    engine.start(interval_s=0.001, clock=lambda: START + H)
    with pytest.raises(RuntimeError, match="already running"):
        engine.start()
    deadline = time.monotonic() + 30
    while engine.runner.cursor_ms is None and time.monotonic() < deadline:
        time.sleep(0.01)
    engine.stop()
    assert engine.runner.cursor_ms == START + H
    assert engine._ticker is None
    with pytest.raises(ValueError, match="interval_s must be positive"):
        engine.start(interval_s=0)


def test_obscore_replay_prints_what_a_replay_finds(day, tmp_path, capsys):
    import json

    from obscore.cli import main

    with Engine(tmp_path) as engine:  # no catalogue: the command has none either
        engine.ingest(day.table, day.index)
        expected = engine.replay(day.start_ms, day.end_ms - 10_000)
    frm, to = str(day.start_ms / 1000), str((day.end_ms - 10_000) / 1000)
    assert main(["replay", "--data", str(tmp_path), "--from", frm, "--to", to, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [a["signal"] for a in out["anomalies"]] == [
        a.signal for a in expected.anomalies
    ]
    assert [a["fingerprint"] for a in out["alerts"]] == [
        a.fingerprint for a in expected.alerts
    ]
    assert len(out["incidents"]) == len(expected.incidents) >= 2
    assert (
        main(
            [
                "replay",
                "--data",
                str(tmp_path),
                "--from",
                "2026-01-01T03:00:00Z",
                "--to",
                "2026-01-01T02:00:00Z",
            ]
        )
        == 2
    )
    assert "is before --from" in capsys.readouterr().err
    assert main(["replay", "--data", str(tmp_path), "--from", "soon"]) == 2
    assert "'soon' is not a time" in capsys.readouterr().err


# --- a long live run keeps its state bounded -------------------------------------------


def _keys(incidents):
    return {(a.signal, a.start_ms) for inc in incidents for a in inc.anomalies}


def test_settled_incidents_leave_no_per_anomaly_bookkeeping(day):
    engine = Engine(catalogue=from_platform(day.platform))
    _feed(engine, day, day.end_ms)
    runner = engine.runner
    settled = runner.incidents[: len(runner._settled)]
    assert settled, "incidents that ended hours before the cursor are settled"
    assert [i.id for i in settled] == list(range(1, len(settled) + 1))
    unsettled = _keys(runner.incidents[len(settled):])
    assert set(runner._raised) <= unsettled
    assert set(runner._creator.values()) <= unsettled
    assert set(runner._member_creator.values()) <= unsettled
    assert set(runner._member_last.values()) <= unsettled
    assert len(runner._raised) < len(_keys(settled))
    # and what was settled is still what a replay finds (test above, same feed)
    _same(engine, engine.replay(day.start_ms, day.end_ms - 1))


def test_a_live_run_forgets_incidents_kept_past_pipeline_keep(day, tmp_path):
    from dataclasses import replace

    from obscore.config import load_config

    cfg = load_config(overrides={"pipeline": {"keep": "40m"}})
    engine = Engine(tmp_path, config=cfg, catalogue=from_platform(day.platform))
    _feed(engine, day, day.end_ms)
    replay = engine.replay(day.start_ms, day.end_ms - 1)  # a replay keeps everything
    runner = engine.runner
    gone = runner.forgotten
    cutoff = runner.cursor_ms - 40 * M
    assert 0 < gone < len(replay.incidents)
    assert all(i.end_ms < cutoff for i in replay.incidents[:gone])
    kept = replay.incidents[gone:]
    assert _incidents(engine.last_result) == _incidents(replace(replay, incidents=kept))
    assert engine.last_result.anomalies == [
        a for a in replay.anomalies if (a.signal, a.start_ms) in _keys(kept)
    ]
    forgotten = [
        al
        for al in replay.alerts
        if al.end_ms < cutoff and all(i <= gone for i in al.incident_ids)
    ]
    assert forgotten
    assert engine.alerts() == [al for al in replay.alerts if al not in forgotten]
    engine.close()
    # the ids go on after a restart, and the config's keep is the one in force
    again = Engine(tmp_path, config=load_config(), catalogue=from_platform(day.platform))
    assert again.runner.forgotten == gone and again.runner.keep_ms == 7 * 24 * H
    assert _incidents(again.last_result) == _incidents(engine.last_result)
    again.close()


def test_pipeline_keep_shorter_than_quiet_and_dedup_is_refused():
    from obscore.config import load_config
    from obscore.errors import ConfigError

    engine = Engine(config=load_config(overrides={"pipeline": {"keep": "20m"}}))
    with pytest.raises(ConfigError, match=r"pipeline.keep: 20m is shorter than"):
        engine.runner


def test_weeks_of_live_ticks_keep_the_state_bounded():
    """One gauge with a spike every 3 hours for 6 days, ticked every 30 minutes."""
    from obscore.config import load_config
    from obscore.model import SeriesIndex, sample_table

    step, days, every = 10_000, 6, 3 * H
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"service": "web", "region": "eu-west", "host": "w1"})
    ts = START + np.arange(days * 24 * H // step) * step
    rng = np.random.default_rng(7)
    values = 50 + rng.normal(0, 1, len(ts))
    spike = (ts - START) % every
    values[(spike >= 2 * H) & (spike < 2 * H + 3 * M)] += 40  # 3 minutes high
    cfg = load_config(overrides={"pipeline": {"keep": "1h"}})
    engine = Engine(config=cfg)
    sizes = []
    for lo in range(0, len(ts), 180):  # 30 minutes a tick
        hi = lo + 180
        ids = np.full(len(ts[lo:hi]), sid, np.uint64)
        engine.ingest(sample_table(ids, ts[lo:hi], values[lo:hi]), index)
        engine.tick(int(ts[hi - 1]))
        r = engine.runner
        sizes.append(
            (len(r.incidents), len(r._closed_anomalies), len(r.book.alerts),
             len(r._raised), len(r._creator), len(r._final))
        )  # fmt: skip
    runner = engine.runner
    assert runner.forgotten >= 5 * 24 // 3  # a spike every 3 h, all but the last hour
    assert max(max(s) for s in sizes[48:]) <= 2  # after the first day: flat
    ids = [i.id for i in runner.incidents]
    assert ids == list(range(runner.forgotten + 1, runner.forgotten + 1 + len(ids)))
    assert ids[-1] == days * 24 * H // every  # one incident a spike, numbered on


def test_replay_without_from_starts_at_the_oldest_sample_in_blocks_too(day, tmp_path, capsys):
    import json

    from obscore.cli import main

    with Engine(tmp_path) as engine:
        engine.ingest(day.table, day.index)
        assert engine.blocks.blocks("raw"), "5 hours of samples cut blocks"
        assert engine.time_range() == (day.start_ms, day.end_ms - day.step_ms)
    # a new process holds only what came after the last block in its hot tier
    assert main(["replay", "--data", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["start_ms"], out["end_ms"]) == (day.start_ms, day.end_ms - day.step_ms)


def test_diagnose_takes_a_replays_result_and_events_of_services_out_of_the_catalogue(day):
    bad = day.incidents[0]  # recommend's bad deploy in eu-west
    engine = Engine()  # no catalogue: recommend is named only by its series and its event
    engine.ingest(day.table, day.index)
    engine.record_event("recommend", "deploy", "v42", ts_ms=bad.start_ms - M, region="eu-west")
    replay = engine.replay(day.start_ms, day.end_ms - 1)
    assert engine.last_result is None
    (inc,) = [
        i for i in replay.incidents
        if bad.start_ms <= i.start_ms < bad.start_ms + 5 * M and "recommend" in i.services
    ]  # fmt: skip
    with pytest.raises(RuntimeError, match="pass the result of replay as result="):
        engine.diagnose(inc)
    diag = engine.diagnose(inc, result=replay)
    moved = [c for c in diag.candidates if c.service == "recommend" and c.evidence["anomalous"]]
    assert moved and all(c.evidence["change"] == 1.0 for c in moved)
