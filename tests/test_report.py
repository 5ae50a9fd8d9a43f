"""The static HTML report: the dashboard's pages with every answer they read."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from obscore.catalogue import from_platform
from obscore.cli import main
from obscore.engine import Engine
from obscore.report import write_html_report
from obscore.sim import CAUSE_METRICS, Incident, default_platform, simulate
from obscore.sim.simulator import DEFAULT_START_MS

HOUR_MS = 3_600_000
LEAK = Incident(
    "memory_leak",
    "gateway",
    CAUSE_METRICS["memory_leak"],
    "eu-west",
    DEFAULT_START_MS + 2 * HOUR_MS,
    DEFAULT_START_MS + 2 * HOUR_MS + 30 * 60_000,
)


@pytest.fixture(scope="module")
def sim():
    return simulate(seed=0, hours=3, incidents=[LEAK])


def _filled(sim, data_dir=None) -> Engine:
    engine = Engine(data_dir, catalogue=from_platform(default_platform()))
    engine.ingest(sim.table, sim.index)
    return engine


class _Scripts(HTMLParser):
    """The report-data blob and every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.blob: str | None = None
        self._in_data = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]
        self._in_data = tag == "script" and a.get("id") == "report-data"

    def handle_data(self, data):
        if self._in_data:
            self.blob = (self.blob or "") + data

    def handle_endtag(self, tag):
        self._in_data = False


def _parse(path):
    parser = _Scripts()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.refs, json.loads(parser.blob)


def _answer(data, path, **params):
    key = json.dumps([path, sorted([k, str(v)] for k, v in params.items())], separators=(",", ":"))
    return data["answers"][key]


def test_html_report_holds_every_answer_of_its_pages_and_needs_no_network(sim, tmp_path):
    engine = _filled(sim)
    engine.run_pipeline(sim.start_ms, sim.end_ms, sim.step_ms)
    path = write_html_report(engine, tmp_path / "out", sim.start_ms, sim.end_ms)

    refs, data = _parse(path)
    assert path == tmp_path / "out" / "report.html"
    # nothing to fetch: only in-page links and data: URLs, script and style inline
    assert all(r.startswith(("#", "data:")) for r in refs), refs
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?(?:https?:)?//""", text)
    assert "<style>" in text and "/static/" not in text

    rng = {"start": f"{sim.start_ms / 1000:.3f}", "end": f"{sim.end_ms / 1000:.3f}"}
    overview = _answer(data, "/api/v1/obscore/overview", **rng)
    assert set(overview["services"]) == set(default_platform().services)
    for service in overview["services"]:
        for step in ("60s", "300s", "3600s"):
            info = _answer(data, f"/api/v1/obscore/services/{service}", **rng, step=step)
            assert [c["metric"] for c in info["charts"]] == [
                "cpu_usage", "memory_usage", "network_throughput", "request_latency", "error_rate"
            ]
            for chart in info["charts"]:
                res = _answer(data, "/api/v1/query_range", query=chart["query"], **rng, step=step)
                assert res["status"] == "success" and res["data"]["result"]

    # the injected leak: marked on gateway's memory chart and diagnosed with a runbook
    gateway = _answer(data, "/api/v1/obscore/services/gateway", **rng, step="60s")
    marks = [a for a in gateway["anomalies"] if a["metric"] == "memory_usage"]
    assert any(a["start_ms"] <= LEAK.end_ms and LEAK.start_ms <= a["end_ms"] for a in marks)
    incidents = _answer(data, "/api/v1/obscore/incidents", **rng)
    leak = max(
        (i for i in incidents if "gateway" in i["services"] and i["start_ms"] <= LEAK.end_ms),
        key=lambda i: i["anomalies"],
    )
    inc = _answer(data, f"/api/v1/obscore/incidents/{leak['id']}")
    assert inc["diagnosis"]["candidates"][0]["service"] == "gateway"
    assert inc["runbook"].startswith(f"# Runbook: incident {leak['id']}")
    assert ("gateway", "memory_usage") in {(c["service"], c["metric"]) for c in inc["evidence"]["charts"]}
    assert _answer(data, "/api/v2/alerts", resolved="true")


def test_html_report_refuses_an_empty_range(sim, tmp_path):
    engine = _filled(sim)
    engine.run_pipeline(sim.start_ms, sim.end_ms, sim.step_ms)
    with pytest.raises(ValueError, match="report range: end .* is not after start"):
        write_html_report(engine, tmp_path, sim.end_ms, sim.start_ms)


def test_cli_report_writes_the_html_of_a_stored_range(sim, tmp_path, capsys):
    data = tmp_path / "data"
    _filled(sim, data).close()
    out = tmp_path / "rep"
    rc = main(["report", "--data", str(data), "--from", "2026-01-01T01:00:00Z",
               "--to", "2026-01-01T03:00:00Z", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "2026-01-01 01:00:00 to 2026-01-01 03:00:00 UTC" in printed
    _, blob = _parse(out / "report.html")
    assert (blob["start_ms"], blob["end_ms"]) == (sim.start_ms + HOUR_MS, sim.start_ms + 3 * HOUR_MS)
    assert "<title>obscore report 2026-01-01 01:00 to 2026-01-01 03:00 UTC</title>" in (
        out / "report.html"
    ).read_text(encoding="utf-8")


def test_cli_report_refuses_a_range_that_ends_before_it_starts(sim, tmp_path, capsys):
    data = tmp_path / "data"
    _filled(sim, data).close()
    rc = main(["report", "--data", str(data), "--from", "2026-01-01T03:00:00Z",
               "--to", "2026-01-01T01:00:00Z", "--out", str(tmp_path / "rep")])
    assert rc == 2
    assert "obscore report: --to 2026-01-01 01:00:00 is not after --from 2026-01-01 03:00:00" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "rep").exists()
