"""Reports: Markdown with PNG plots of the affected signals, alerts marked,
and the dashboard's pages frozen into one self-contained HTML file.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np

from obscore.diagnose.runbook import write_runbook

logger = logging.getLogger(__name__)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def plot_signals(path: Path, title: str, signals, alerts, span: tuple[int, int], truth=None) -> None:
    """Write one PNG: each signal in its own panel over ``span``, alerts shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(signals), 1, figsize=(10, 1.9 * len(signals) + 0.6), sharex=True, squeeze=False)
    lo, hi = span
    for ax, sig in zip(axes[:, 0], signals):
        a = np.searchsorted(sig.ts, lo)
        b = np.searchsorted(sig.ts, hi, side="right")
        hours = (sig.ts[a:b] - lo) / 3_600_000
        ax.plot(hours, sig.values[a:b], lw=0.8, color="#1f4e79")
        ax.set_title(sig.key, fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        if truth is not None:
            ax.axvspan((truth.start_ms - lo) / 3_600_000, (truth.end_ms - lo) / 3_600_000, color="#999999", alpha=0.15)
        for al in alerts:
            if al.end_ms < lo or al.start_ms > hi:
                continue
            same = (
                al.labels.get("alertname") == f"{sig.metric}_anomaly"
                and al.labels.get("service") == sig.labels.get("service")
                and al.labels.get("region") == sig.labels.get("region")
            )
            if same:
                a0 = (max(al.start_ms, lo) - lo) / 3_600_000
                a1 = (min(al.end_ms, hi) - lo) / 3_600_000 + 1 / 360
                ax.axvspan(a0, a1, color="#c0392b", alpha=0.35)
        ax.set_xlim(0, (hi - lo) / 3_600_000)
    axes[-1, 0].set_xlabel(f"hours after {_when(lo)} UTC (grey: injected incident, red: alerts)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_demo_report(
    out_dir: Path,
    sim,
    result,
    matches: Sequence[tuple],
    alerts,
    folded: int,
    dependencies=None,
) -> Path:
    """Write ``report.md`` and its plots into ``out_dir``; return the report path.

    ``matches`` holds ``(truth, incident or None, diagnosis or None)`` per
    injected incident.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# obscore demo report",
        "",
        f"Simulated {len(sim.platform.services)} services in {len(sim.platform.regions)} regions, "
        f"{len(sim.index)} series, {sim.table.num_rows:,} samples, "
        f"{_when(sim.start_ms)} to {_when(sim.end_ms)} UTC.",
        "",
        f"Pipeline: {len(result.signals)} signals, {len(result.anomalies)} anomalies, "
        f"{len(result.incidents)} incidents, {len(alerts)} alerts ({folded} repeats folded by dedup).",
        "",
        "## Injected incidents and their diagnosis",
        "",
        "| # | kind | true cause | window (UTC) | detected | diagnosed first | confidence |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, (truth, inc, diag) in enumerate(matches, 1):
        top = diag.top if diag is not None else None
        lines.append(
            f"| {i} | {truth.kind} | {truth.service} / {truth.metric} | {_when(truth.start_ms)} - {_when(truth.end_ms)} "
            f"| {'yes' if inc else 'no'} | {f'{top.service} / {top.metric}' if top else '-'} "
            f"| {f'{top.confidence:.2f}' if top else '-'} |"
        )
    for i, (truth, inc, diag) in enumerate(matches, 1):
        lines += ["", f"### Incident {i}: {truth.kind} in {truth.service}", ""]
        if inc is None:
            lines.append("Not detected.")
            continue
        lines.append(f"Detected as incident {inc.id}: {len(inc.anomalies)} anomalies from {_when(inc.start_ms)} to {_when(inc.end_ms)}; first: `{inc.first.signal}`.")
        if diag is not None:
            runbook = out_dir / f"runbook_{i}.md"
            sev = max((a.severity for a in alerts if a.incident_id == inc.id), default=0.0)
            runbook.write_text(
                write_runbook(inc, diag, signals=result.signals, dependencies=dependencies, severity=sev),
                encoding="utf-8",
            )
            lines += ["", f"Runbook: [{runbook.name}]({runbook.name})"]
            lines += ["", "| rank | service | metric | confidence | evidence |", "|---|---|---|---|---|"]
            for r, c in enumerate(diag.candidates[:3], 1):
                ev = ", ".join(f"{k} {v:.2f}" for k, v in c.evidence.items())
                lines.append(f"| {r} | {c.service} | {c.metric} | {c.confidence:.2f} | {ev} |")
        ranked = sorted(inc.anomalies, key=lambda a: -abs(a.peak_z))

        def best(service: str, metric: str) -> list[str]:
            # the most anomalous signal of that service and metric, else any of them
            hit = [a.signal for a in ranked if a.service == service and a.metric == metric]
            return hit[:1] or [
                s.key for s in result.signals.values() if s.service == service and s.metric == metric
            ][:1]

        keys = []
        if diag is not None and diag.top is not None:
            keys += best(diag.top.service, diag.top.metric)
        keys += best(truth.service, truth.metric)
        keys += [a.signal for a in ranked]
        seen: list[str] = []
        for k in keys:
            if k not in seen:
                seen.append(k)
        sigs = [result.signals[k] for k in seen[:5]]
        span = (truth.start_ms - 2 * 3_600_000, truth.end_ms + 3_600_000)
        png = out_dir / f"incident_{i}.png"
        plot_signals(png, f"{truth.kind} in {truth.service}", sigs, alerts, span, truth)
        lines += ["", f"![incident {i}]({png.name})"]
    lines += ["", "## Alerts", "", "| start (UTC) | severity | repeats | incident | summary |", "|---|---|---|---|---|"]
    for al in sorted(alerts, key=lambda a: a.start_ms):
        lines.append(f"| {_when(al.start_ms)} | {al.severity:.2f} | {al.count} | {al.incident_id} | {al.summary} |")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    logger.info("report written: %s", path)
    return path


# --- the dashboard as a static HTML report ------------------------------------------

_STEPS_S = (60, 300, 3600)  # the resolutions of the service charts: 1m, 5m, 1h


def write_html_report(
    engine, out_dir: Path, start_ms: int, end_ms: int, name: str = "report.html"
) -> Path:
    """Write the dashboard's pages over ``[start_ms, end_ms]`` as one HTML file.

    The file holds the dashboard's own script and style sheet and every API
    answer its pages read (overview, each service's charts at 1m, 5m and
    1h, alerts, incidents with their diagnosis, evidence charts and
    runbook), so it opens in a browser without a server or network access
    and shows the same charts as ``obscore serve``.

    Parameters
    ----------
    engine : Engine
        An engine whose pipeline has run over the range (``last_result``).
    out_dir : Path
        Created if missing.
    start_ms, end_ms : int
        The range of the report, ms since the epoch.
    name : str
        File name inside ``out_dir``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        When ``end_ms`` is not after ``start_ms``.
    """
    from obscore.server.app import STATIC_DIR, create_app

    if end_ms <= start_ms:
        raise ValueError(f"report range: end {end_ms} is not after start {start_ms}")
    app = create_app(engine, clock=lambda: end_ms)
    app.state.obscore.ready.set()
    answers = asyncio.run(_collect(app, int(start_ms), int(end_ms)))
    data = {
        "start_ms": int(start_ms),
        "end_ms": int(end_ms),
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "answers": answers,
    }
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    css = (STATIC_DIR / "style.css").read_text(encoding="utf-8")
    js = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    inline = {
        '<link rel="stylesheet" href="/static/style.css">': f"<style>\n{css}</style>",
        '<script src="/static/app.js" defer></script>': (
            f'<script id="report-data" type="application/json">{_script_safe(blob)}</script>\n'
            f"<script>\n{_script_safe(js)}</script>"
        ),
        "<title>obscore</title>": f"<title>obscore report {_when(start_ms)} to {_when(end_ms)} UTC</title>",
    }
    for old, new in inline.items():
        if old not in page:
            raise RuntimeError(f"index.html no longer contains {old!r}; update write_html_report")
        page = page.replace(old, new)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(page, encoding="utf-8")
    logger.info("HTML report written: %s (%d answers, %d bytes)", path, len(answers), len(page))
    return path


def _script_safe(text: str) -> str:
    # inside <script>, only "</" (as in "</script>") and "<!--" end or bend the element
    # (both escapes mean the same inside a JSON or JavaScript string)
    return text.replace("</", "<\\/").replace("<!--", "\\u003c!--")


def _key(path: str, params: Mapping[str, str]) -> str:
    """The key app.js looks an answer up by (``reportKey`` there)."""
    return json.dumps([path, sorted([k, str(v)] for k, v in params.items())], separators=(",", ":"), ensure_ascii=False)


async def _collect(app, start_ms: int, end_ms: int) -> dict[str, Any]:
    """Ask ``app`` every question the dashboard's pages ask over the range."""
    answers: dict[str, Any] = {}

    async def get(path: str, params: Mapping[str, str] | None = None) -> Any:
        params = dict(params or {})
        key = _key(path, params)
        if key not in answers:
            answers[key] = await _asgi_get(app, path, params)
        return answers[key]

    rng = {"start": f"{start_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}"}
    await get("/api/v1/obscore/status")
    overview = await get("/api/v1/obscore/overview", rng)
    incidents = await get("/api/v1/obscore/incidents", rng)
    for service in overview["services"]:
        for step_s in _STEPS_S:
            step = f"{step_s}s"
            info = await get(f"/api/v1/obscore/services/{_component(service)}", {**rng, "step": step})
            for chart in info["charts"]:
                await get("/api/v1/query_range", {"query": chart["query"], **rng, "step": step})
    await get("/api/v2/alerts", {"resolved": "true"})
    await get("/api/v2/alerts/groups")
    await get("/api/v2/silences")
    for item in incidents:
        inc = await get(f"/api/v1/obscore/incidents/{item['id']}")
        ev = inc["evidence"]
        window = {
            "start": f"{ev['start_ms'] / 1000:.3f}",
            "end": f"{ev['end_ms'] / 1000:.3f}",
            "step": f"{ev['step_ms'] // 1000}s",
        }
        for chart in ev["charts"]:
            await get("/api/v1/query_range", {"query": chart["query"], **window})
    return answers


def _component(text: str) -> str:
    # as JavaScript's encodeURIComponent
    return quote(text, safe="!'()*~")


async def _asgi_get(app, path: str, params: Mapping[str, str]) -> Any:
    """GET ``path`` from an ASGI application in this process; the parsed JSON answer."""
    from urllib.parse import unquote

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": urlencode(params).encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"accept", b"application/json")],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 80),
    }
    status = 0
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    answer = json.loads(b"".join(body) or b"null")
    if status != 200:
        raise RuntimeError(f"report: GET {path} answered {status}: {answer}")
    return answer
