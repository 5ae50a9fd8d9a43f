"""Headless Chromium against ``obscore serve --simulate``: pages, anomaly marks, silencing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from obscore.server.simulate import HOURS, STEP_MS, simulated_incidents

from .conftest import free_port

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


@pytest.fixture(scope="module")
def simulated_server():
    """``obscore serve --simulate`` in a subprocess on a free loopback port."""
    port = free_port()
    # the installed package runs: its kernels are compiled there, not in src/
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "obscore.cli",
            "serve",
            "--simulate",
            "--port",
            str(port),
        ],
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
            pytest.fail(
                f"obscore serve --simulate did not become ready:\n{out[-3000:]}"
            )
        time.sleep(0.5)
    yield base
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_dashboard_pages_marks_and_silencing(simulated_server, tmp_path_factory):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs playwright from PyPI"
    )
    base = simulated_server
    shots = tmp_path_factory.mktemp("screenshots")
    status = _get(base + "/api/v1/obscore/status")
    end_ms = status["data_end_ms"] + STEP_MS
    truths = simulated_incidents(end_ms - int(HOURS * 3_600_000), end_ms)

    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on(
            "console",
            lambda m: (
                errors.append(f"console: {m.text}") if m.type == "error" else None
            ),
        )
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))

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
            path = shots / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot: {path}")

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
        first = page.locator("#incidents a").first
        first.click()
        page.wait_for_selector("#candidates")
        page.wait_for_load_state("networkidle")
        assert page.locator("#candidates tbody tr").count() >= 1
        page.screenshot(path=str(shots / "incident.png"), full_page=True)
        print(f"screenshot: {shots / 'incident.png'}")

        visit("#/alerts", "alerts-before")
        row = page.locator('#alerts tr[data-state="active"]').first
        fingerprint = row.get_attribute("data-fingerprint")
        row.locator("button.silence").click()
        page.wait_for_selector(
            f'#alerts tr[data-fingerprint="{fingerprint}"][data-state="suppressed"]'
        )
        page.screenshot(path=str(shots / "alerts-after.png"), full_page=True)
        print(f"screenshot: {shots / 'alerts-after.png'}")
        browser.close()

    listed = {a["fingerprint"]: a for a in _get(base + "/api/v2/alerts")}
    assert listed[fingerprint]["status"]["state"] == "suppressed"
    assert listed[fingerprint]["status"]["silencedBy"]
    silences = _get(base + "/api/v2/silences")
    assert [s["createdBy"] for s in silences] == ["dashboard"]
    assert errors == []
