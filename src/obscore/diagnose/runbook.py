"""Runbooks: a diagnosis written out as Markdown a person can act on."""

from __future__ import annotations

from datetime import datetime, timezone

from obscore.diagnose.patterns import symptoms


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def write_runbook(
    incident,
    diagnosis,
    *,
    signals=None,
    dependencies=None,
    severity: float = 0.0,
    approval_severity: float = 0.7,
    act_confidence: float = 0.8,
    top: int = 3,
) -> str:
    """Markdown runbook for one diagnosed incident.

    Sections: symptoms (affected services, metrics, regions, start, and the
    features the pattern library saw), ranked candidate causes with their
    evidence and confidence, the resolution steps of the matched pattern,
    and the supervised actions: automated action is proposed only when the
    top cause's confidence reaches ``act_confidence``, and it waits for
    approval when the incident's severity is above ``approval_severity``.
    """
    lines = [f"# Runbook: incident {incident.id}", ""]
    services = sorted(incident.services) or ["(no service label)"]
    metrics = sorted({a.metric for a in incident.anomalies})
    regions = sorted({a.labels.get("region") for a in incident.anomalies if a.labels.get("region")})
    lines += [
        "## Symptoms",
        "",
        f"- started {_when(incident.start_ms)}, last anomaly ended {_when(incident.end_ms)}",
        f"- services: {', '.join(services)}",
        f"- metrics: {', '.join(metrics)}",
        f"- regions: {', '.join(regions) or 'n/a'}",
        f"- anomalies: {len(incident.anomalies)}; first: `{incident.first.signal}`",
    ]
    cands = diagnosis.candidates[:top]
    if cands and signals is not None:
        feats = symptoms(cands[0].service, incident.anomalies, signals, dependencies)
        shown = ", ".join(f"`{k}`" for k, v in sorted(feats.items()) if v)
        lines.append(f"- what {cands[0].service} shows: {shown or 'nothing specific'}")
    lines += ["", "## Likely causes", "", "| rank | service | metric | confidence | pattern | evidence |", "|---|---|---|---|---|---|"]
    for r, c in enumerate(cands, 1):
        ev = ", ".join(f"{k} {v:.2f}" for k, v in c.evidence.items())
        pat = f"{c.pattern} ({c.similarity:.2f})" if c.pattern else f"none (best {c.similarity:.2f})"
        lines.append(f"| {r} | {c.service} | {c.metric} | {c.confidence:.2f} | {pat} | {ev} |")
    none = getattr(diagnosis, "confidence_none", 0.0)
    if none > 0:
        lines += ["", f"Probability that none of these is the cause: {none:.2f}."]
    lines += ["", "## Resolution", ""]
    best = cands[0] if cands else None
    if best is not None and best.steps:
        lines.append(f"Matched pattern **{best.pattern}** for {best.service} / {best.metric}:")
        lines.append("")
        lines += [f"{k}. {step}" for k, step in enumerate(best.steps, 1)]
    else:
        lines.append("No pattern matched at the required similarity; investigate the ranked causes by hand.")
    lines += ["", "## Supervised actions", ""]
    if best is None or best.confidence < act_confidence:
        conf = best.confidence if best is not None else 0.0
        lines.append(
            f"No automated action proposed: the top cause's confidence {conf:.2f} is below {act_confidence:g}."
        )
    elif severity > approval_severity:
        lines.append(
            f"Proposed: apply the first resolution step to {best.service}. Severity {severity:.2f} is above "
            f"{approval_severity:g}, so it **waits for approval** (API or `obscore` command line)."
        )
    else:
        lines.append(
            f"Proposed: apply the first resolution step to {best.service}. Severity {severity:.2f} is at or below "
            f"{approval_severity:g}, so it runs without approval; it is written to the audit log."
        )
    return "\n".join(lines) + "\n"
