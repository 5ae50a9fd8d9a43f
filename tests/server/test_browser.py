"""Headless Chromium against ``obscore serve``: pages, anomaly marks, silencing,
the incident page, live updates while the pipeline runs, and the static report.

Screenshots of every page are kept twice: under pytest's basetemp
(``screenshots*``) and in ``test-artifacts/screenshots/`` at the repository
root, which survives the run (and is ignored by git).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from obscore.server.simulate import HOURS, STEP_MS, simulated_incidents

from .conftest import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "screenshots"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"
    ),
]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as res:
        return json.loads(res.read())


def _post(url: str, body: bytes, ctype: str = "text/plain") -> dict:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": ctype}
    )
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.loads(res.read())


class Shots:
    """Full-page screenshots, under basetemp and in test-artifacts/screenshots/."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(self, page, name: str) -> Path:
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shutil.copy2(path, ARTIFACTS / path.name)
        print(f"screenshot: {path} (copied to {ARTIFACTS / path.name})")
        return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Shots:
    return Shots(tmp_path_factory.mktemp("screenshots"))


def _watch(page, errors: list[str]) -> None:
    page.on(
        "console",
        lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))


def _start_serve(args: list[str]) -> tuple[subprocess.Popen, str]:
    """``obscore serve ARGS`` in a subprocess on a free loopback port, once ready."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "obscore.cli", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(base + "/-/ready", timeout=5) as res:
                if res.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"obscore serve {args} did not become ready:\n{out[-3000:]}")
        time.sleep(0.5)
    return proc, base


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def simulated_server():
    """``obscore serve --simulate`` in a subprocess on a free loopback port."""
    proc, base = _start_serve(["--simulate"])
    yield base
    _stop(proc)


def test_dashboard_pages_marks_and_silencing(simulated_server, shots):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs playwright from PyPI"
    )
    base = simulated_server
    status = _get(base + "/api/v1/obscore/status")
    end_ms = status["data_end_ms"] + STEP_MS
    truths = simulated_incidents(end_ms - int(HOURS * 3_600_000), end_ms)

    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _watch(page, errors)

        def visit(fragment: str, name: str) -> None:
            before = page.evaluate(
                "document.getElementById('view')?.dataset.loaded || ''"
            )
            page.goto(f"{base}/{fragment}")
            # a hash change re-renders without a reload: wait for a newer render
            page.wait_for_function(
                "prev => { const v = document.getElementById('view'); "
                "return v && v.dataset.loaded && v.dataset.loaded !== prev; }",
                arg=before,
            )
            page.wait_for_load_state("networkidle")
            shots.take(page, name)

        page.goto(base + "/")
        page.select_option("#range", "86400000")  # the whole simulated day
        visit("#/", "overview")
        assert page.locator("#health-grid .cell").count() == 18
        assert page.locator('#health-grid .cell[data-health="critical"]').count() >= 1

        for truth in truths:
            visit(f"#/service/{truth.service}", f"service-{truth.service}-{truth.kind}")
            marks = page.locator(
                f'.chart[data-metric="{truth.metric}"] rect.anomaly-mark'
            )
            spans = [
                (
                    int(marks.nth(i).get_attribute("data-start-ms")),
                    int(marks.nth(i).get_attribute("data-end-ms")),
                )
                for i in range(marks.count())
            ]
            hits = [s for s in spans if s[0] <= truth.end_ms and truth.start_ms <= s[1]]
            assert hits, (
                f"no anomaly mark of {truth.metric} on {truth.service} during the injected {truth.kind}"
            )

        visit("#/incidents", "incidents")
        assert page.locator("#incidents tbody tr").count() >= len(truths)
        # the incident of the injected memory leak: diagnosis, evidence, runbook
        leak = next(t for t in truths if t.kind == "memory_leak")
        incidents = _get(base + "/api/v1/obscore/incidents?start=0&end=9e12")
        chosen = max(
            (
                i
                for i in incidents
                if leak.service in i["services"]
                and i["start_ms"] <= leak.end_ms
                and leak.start_ms <= i["end_ms"]
            ),
            key=lambda i: i["anomalies"],
        )
        page.locator(f'#incidents a[href="#/incident/{chosen["id"]}"]').click()
        page.wait_for_selector("#candidates")
        page.wait_for_load_state("networkidle")
        assert page.locator("#candidates tbody tr").count() >= 1
        top = page.locator('#candidates tr[data-rank="1"] td').nth(1).inner_text()
        assert top == leak.service
        runbook = page.locator("#runbook").inner_text()
        assert f"Runbook: incident {chosen['id']}" in runbook
        assert "memory_leak" in runbook and "Resolution" in runbook
        evidence = page.locator(
            f'#evidence .chart[data-service="{leak.service}"][data-metric="{leak.metric}"]'
        )
        assert evidence.count() == 1
        assert evidence.locator("rect.anomaly-mark").count() >= 1
        assert evidence.locator("path").count() >= 1  # the series are drawn
        shots.take(page, "incident")

        visit("#/alerts", "alerts-before")
        row = page.locator('#alerts tr[data-state="active"]').first
        fingerprint = row.get_attribute("data-fingerprint")
        row.locator("button.silence").click()
        page.wait_for_selector(
            f'#alerts tr[data-fingerprint="{fingerprint}"][data-state="suppressed"]'
        )
        shots.take(page, "alerts-after")
        browser.close()

    listed = {a["fingerprint"]: a for a in _get(base + "/api/v2/alerts")}
    assert listed[fingerprint]["status"]["state"] == "suppressed"
    assert listed[fingerprint]["status"]["silencedBy"]
    silences = _get(base + "/api/v2/silences")
    assert [s["createdBy"] for s in silences] == ["dashboard"]
    assert errors == []


def _exposition(rows: list[tuple[str, float, int]]) -> bytes:
    """Prometheus text lines ``cpu_usage{...} value ts`` for (region, value, ts) rows."""
    return "".join(
        f'cpu_usage{{service="auth",region="{region}",host="auth-{region}-1"}} '
        f"{value:.3f} {ts}\n"
        for region, value, ts in rows
    ).encode()


def test_charts_update_live_while_the_pipeline_runs(tmp_path, shots):
    """Samples pushed while the page is open reach its chart, then the live
    pipeline's anomaly mark does, without reloading the page."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs playwright from PyPI"
    )
    config = tmp_path / "live.toml"
    config.write_text('[pipeline]\nlive = true\ninterval = "1s"\nstep = "2s"\n')
    proc, base = _start_serve(["--data", str(tmp_path / "data"), "--config", str(config)])
    step = 2_000
    rng = np.random.default_rng(0)
    try:
        now = time.time_ns() // 1_000_000 // step * step
        history = [
            (region, 20.0 + 5.0 * r + rng.normal(0, 0.5), ts)
            for ts in range(now - 75 * 60_000, now + step, step)
            for r, region in enumerate(("us-east", "eu-west"))
        ]
        assert _post(base + "/api/v1/push", _exposition(history))["stored"] == len(history)
        errors: list[str] = []
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            _watch(page, errors)
            page.goto(base + "/")
            page.select_option("#range", "3600000")
            page.goto(base + "/#/service/auth")
            page.wait_for_selector('.chart[data-metric="cpu_usage"] path')
            marks = page.locator('.chart[data-metric="cpu_usage"] rect.anomaly-mark')
            assert marks.count() == 0
            first_end = int(page.locator("#view").get_attribute("data-data-end-ms"))
            assert first_end >= history[-1][2]
            shots.take(page, "live-before")

            # a spike in us-east over the next 12 s, then calm again, sent now:
            # the pipeline evaluates each point once the wall clock passes it
            spike_end = now + 12_000
            later = [
                (region, (90.0 if region == "us-east" and ts <= spike_end else 20.0 + 5.0 * r)
                 + rng.normal(0, 0.5), ts)
                for ts in range(now + step, now + 20_000, step)
                for r, region in enumerate(("us-east", "eu-west"))
            ]
            _post(base + "/api/v1/push", _exposition(later))
            page.wait_for_function(
                "end => Number(document.getElementById('view').dataset.dataEndMs) > end",
                arg=first_end,
                timeout=15_000,
            )
            shots.take(page, "live-new-samples")
            page.wait_for_selector(
                '.chart[data-metric="cpu_usage"] rect.anomaly-mark', timeout=60_000
            )
            mark = marks.first
            marked_ms = int(mark.get_attribute("data-start-ms"))
            assert now < marked_ms <= spike_end
            assert "us-east" in mark.get_attribute("data-signal")
            shots.take(page, "live-anomaly")
            status = _get(base + "/api/v1/obscore/status")
            browser.close()
        assert status["pipeline"]["live"] is True
        assert status["pipeline"]["cursor_ms"] >= marked_ms  # the live pipeline saw it
        assert errors == []
    finally:
        _stop(proc)


def test_static_report_renders_every_page_offline(tmp_path, shots):
    """The HTML report of a simulated leak, opened from a file with the network blocked."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs playwright from PyPI"
    )
    from obscore.catalogue import from_platform
    from obscore.engine import Engine
    from obscore.report import write_html_report
    from obscore.sim import CAUSE_METRICS, Incident, default_platform, simulate
    from obscore.sim.simulator import DEFAULT_START_MS

    hour = 3_600_000
    leak = Incident(
        "memory_leak", "gateway", CAUSE_METRICS["memory_leak"], "eu-west",
        DEFAULT_START_MS + 2 * hour, DEFAULT_START_MS + 2 * hour + 30 * 60_000,
    )
    sim = simulate(seed=0, hours=3, incidents=[leak])
    engine = Engine(catalogue=from_platform(default_platform()))
    engine.ingest(sim.table, sim.index)
    result = engine.run_pipeline(sim.start_ms, sim.end_ms, sim.step_ms)
    path = write_html_report(engine, tmp_path, sim.start_ms, sim.end_ms)
    inc = max(
        (i for i in result.incidents if "gateway" in i.services and i.start_ms <= leak.end_ms),
        key=lambda i: len(i.anomalies),
    )

    errors: list[str] = []
    fetched: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _watch(page, errors)

        def only_files(route):
            fetched.append(route.request.url)
            if route.request.url.startswith(("file:", "data:")):
                route.continue_()
            else:
                route.abort()

        page.route("**/*", only_files)
        url = path.as_uri()

        def visit(fragment: str, name: str) -> None:
            page.goto(url + fragment)
            page.wait_for_function(
                "f => { const v = document.getElementById('view'); "
                "return v && v.dataset.loaded && location.hash === f; }",
                arg=fragment,
            )
            shots.take(page, name)

        visit("#/", "report-overview")
        assert page.locator("#health-grid .cell").count() == 18
        visit("#/service/gateway", "report-service-gateway")
        marks = page.locator('.chart[data-metric="memory_usage"] rect.anomaly-mark')
        assert marks.count() >= 1
        assert int(marks.first.get_attribute("data-start-ms")) <= leak.end_ms
        page.locator('button[data-step="5m"]').click()
        page.wait_for_selector('button[data-step="5m"].on')
        assert page.locator('.chart[data-metric="memory_usage"] rect.anomaly-mark').count() >= 1
        visit("#/alerts", "report-alerts")
        stored = page.evaluate(
            "Object.entries(ui.report.answers)"
            ".find(([k]) => k.startsWith('[\"/api/v2/alerts\",'))[1].length"
        )
        assert page.locator("#alerts tbody tr").count() == stored >= 1
        assert page.locator("#alerts button").count() == 0  # a report changes nothing
        visit(f"#/incident/{inc.id}", "report-incident")
        assert "Resolution" in page.locator("#runbook").inner_text()
        assert page.locator("#evidence .chart rect.anomaly-mark").count() >= 1
        browser.close()
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in fetched), fetched
