"""Reports: Markdown with PNG plots of the affected signals, alerts marked."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

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
