"""Root cause by timing, correlation, Granger causality and the dependency graph.

For an incident, every (service, metric) that has a signal is a candidate
cause.  The evidence for each candidate:

- ``anomalous``: the candidate's own signal is among the incident's anomalies,
  and how strongly (peak |z|);
- ``onset``: how early its anomaly began relative to the incident's first;
- ``graph``: with a dependency graph, whether the service's own dependencies
  stayed healthy (a cause sits at the bottom of the affected sub-graph);
- ``granger``: the share of the other affected signals that the candidate
  Granger-causes (p < alpha, Bonferroni over lags) over the hour before and
  the incident itself;
- ``correlation``: the share of the other affected signals it correlates with
  at ``|r| >= 0.7`` (lags up to 3 steps).

The evidence enters a log-linear score; the confidence is the softmax of the
scores over the candidates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from obscore.correlate import granger_best, lagged_correlation

WEIGHTS = {"anomalous": 2.0, "strength": 1.0, "onset": 2.5, "graph": 1.5, "granger": 1.0, "correlation": 0.5}


@dataclass(slots=True)
class Candidate:
    """A possible cause: a service and one of its metrics."""

    service: str
    metric: str
    confidence: float
    evidence: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Diagnosis:
    """Ranked candidate causes of one incident."""

    incident_id: int
    candidates: list[Candidate]
    window: tuple[int, int]

    @property
    def top(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


def _service_signals(signals) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = {}
    for s in signals.values():
        if s.service is not None:
            out.setdefault((s.service, s.metric), []).append(s)
    return out


def _window(sig, start_ms: int, end_ms: int) -> np.ndarray:
    lo = np.searchsorted(sig.ts, start_ms, side="left")
    hi = np.searchsorted(sig.ts, end_ms, side="right")
    return sig.values[lo:hi]


def diagnose(
    incident,
    signals: Mapping[str, object],
    dependencies: Mapping[str, Sequence[str]] | None = None,
    *,
    correlation_window_ms: int = 3_600_000,
    min_correlation: float = 0.7,
    granger_alpha: float = 0.05,
    granger_maxlag: int = 3,
) -> Diagnosis:
    """Rank candidate causes of an incident.

    Parameters
    ----------
    incident : Incident
        From the pipeline.
    signals : mapping of str to Signal
        Every signal of the pipeline run, by key.
    dependencies : mapping, optional
        Caller -> callees; used for the graph evidence.

    Returns
    -------
    Diagnosis
        Candidates ranked by confidence (they sum to 1).
    """
    start = incident.start_ms - correlation_window_ms
    end = incident.end_ms
    first_onset = min(a.start_ms for a in incident.anomalies)
    by_cand: dict[tuple[str, str], list] = {}
    for a in incident.anomalies:
        svc = a.labels.get("service")
        if svc is not None:
            by_cand.setdefault((svc, a.metric), []).append(a)
    affected_services = {svc for svc, _ in by_cand}
    groups = _service_signals(signals)
    # the series each candidate is compared with: the affected signals' sums
    affected_series = {
        key: _sum_window(groups[key], start, end) for key in by_cand if key in groups
    }
    candidates = []
    for (svc, metric), sigs in groups.items():
        ev: dict[str, float] = {}
        anomalies = by_cand.get((svc, metric), [])
        ev["anomalous"] = 1.0 if anomalies else 0.0
        peak = max((abs(a.peak_z) for a in anomalies), default=0.0)
        ev["strength"] = min(math.log1p(peak) / math.log1p(20.0), 1.5)
        if anomalies:
            lead = (min(a.start_ms for a in anomalies) - first_onset) / 300_000.0
            ev["onset"] = math.exp(-lead)
        else:
            ev["onset"] = 0.0
        if dependencies is not None:
            callees = set(dependencies.get(svc, ()))
            ev["graph"] = 0.0 if callees & affected_services else 1.0
        if anomalies:
            own = _sum_window(sigs, start, end)
            others = [v for k, v in affected_series.items() if k != (svc, metric)]
            g = c = 0
            for other in others:
                if len(other) != len(own):
                    continue
                if granger_best(np.diff(own), np.diff(other), granger_maxlag).p_value < granger_alpha:
                    g += 1
                r, _ = lagged_correlation(own, other, 3)
                if abs(r) >= min_correlation:
                    c += 1
            ev["granger"] = g / len(others) if others else 0.0
            ev["correlation"] = c / len(others) if others else 0.0
        score = sum(WEIGHTS[k] * v for k, v in ev.items())
        candidates.append(Candidate(svc, metric, score, ev))
    if candidates:
        top = max(c.confidence for c in candidates)
        weights = [math.exp(c.confidence - top) for c in candidates]
        total = sum(weights)
        for c, w in zip(candidates, weights):
            c.confidence = w / total
        candidates.sort(key=lambda c: c.confidence, reverse=True)
    return Diagnosis(incident.id, candidates, (start, end))


def _sum_window(sigs, start_ms: int, end_ms: int) -> np.ndarray:
    parts = [np.nan_to_num(_window(s, start_ms, end_ms)) for s in sigs]
    n = min(len(p) for p in parts)
    return np.sum([p[:n] for p in parts], axis=0)
