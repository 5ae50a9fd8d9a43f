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
from obscore.diagnose.patterns import Pattern, load_patterns, match, symptoms

STRONG_Z = 10.0

WEIGHTS = {"anomalous": 2.0, "strength": 2.0, "onset": 2.5, "graph": 1.5, "granger": 1.0, "correlation": 0.5, "pattern": 3.0}


@dataclass(slots=True)
class Candidate:
    """A possible cause: a service and one of its metrics."""

    service: str
    metric: str
    confidence: float
    evidence: dict[str, float] = field(default_factory=dict)
    pattern: str | None = None  # the best matching pattern with this cause metric
    similarity: float = 0.0
    steps: tuple[str, ...] = ()


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


def _relative_change(sigs, anomalies, baseline_ms: int) -> float:
    """Largest |median during the anomaly - median before| / |median before|."""
    best = 0.0
    by_key = {s.key: s for s in sigs}
    for a in anomalies:
        sig = by_key.get(a.signal)
        if sig is None:
            continue
        before = _window(sig, a.start_ms - baseline_ms, a.start_ms - 60_000)
        during = _window(sig, a.start_ms, a.end_ms)
        before, during = before[np.isfinite(before)], during[np.isfinite(during)]
        if len(before) == 0 or len(during) == 0:
            continue
        pre, post = float(np.median(before)), float(np.median(during))
        scale = max(abs(pre), float(np.percentile(np.abs(before), 90)) * 0.1, 1e-9)
        best = max(best, abs(post - pre) / scale)
    return best


def diagnose(
    incident,
    signals: Mapping[str, object],
    dependencies: Mapping[str, Sequence[str]] | None = None,
    *,
    correlation_window_ms: int = 3_600_000,
    min_correlation: float = 0.7,
    granger_alpha: float = 0.05,
    granger_maxlag: int = 3,
    patterns: Sequence[Pattern] | None = None,
    changes: Mapping[str, Sequence[str]] | None = None,
    pattern_similarity: float = 0.8,
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
    patterns : sequence of Pattern, optional
        The pattern library (the shipped one when None).
    changes : mapping, optional
        Service -> change events (as text) in the hour before the incident.
    pattern_similarity : float
        A pattern matches at this similarity or above.

    Returns
    -------
    Diagnosis
        Candidates ranked by confidence (they sum to 1).

    Notes
    -----
    The onset reference is the earliest start among the incident's strong
    anomalies (robust peak |z| of at least ``STRONG_Z``), so a weak anomaly
    that happened to open the incident does not set the clock; weak ones are
    not candidates either.
    """
    start = incident.start_ms - correlation_window_ms
    end = incident.end_ms
    peak = max(abs(a.peak_z) for a in incident.anomalies)
    strong = [a for a in incident.anomalies if abs(a.peak_z) >= min(STRONG_Z, peak)]
    first_onset = min(a.start_ms for a in strong)
    by_cand: dict[tuple[str, str], list] = {}
    for a in strong:
        svc = a.labels.get("service")
        if svc is not None:
            by_cand.setdefault((svc, a.metric), []).append(a)
    onset_of_service: dict[str, int] = {}
    for (svc, _), anomalies in by_cand.items():
        t = min(a.start_ms for a in anomalies)
        onset_of_service[svc] = min(t, onset_of_service.get(svc, t))
    groups = _service_signals(signals)
    affected_series = {
        key: _sum_window(groups[key], start, end) for key in by_cand if key in groups
    }
    changes = {key: _relative_change(groups.get(key, []), by_cand[key], correlation_window_ms) for key in by_cand}
    top_change = max(changes.values(), default=0.0)
    patterns = load_patterns() if patterns is None else patterns
    service_symptoms = {
        svc: symptoms(svc, strong, signals, dependencies, (changes or {}).get(svc, ()))
        for svc in onset_of_service
    }
    candidates = []
    for (svc, metric), sigs in groups.items():
        ev: dict[str, float] = {}
        anomalies = by_cand.get((svc, metric), [])
        ev["anomalous"] = 1.0 if anomalies else 0.0
        rel = changes.get((svc, metric), 0.0)
        ev["strength"] = math.log1p(rel) / math.log1p(top_change) if top_change > 0 else 0.0
        if anomalies:
            onset = min(a.start_ms for a in anomalies)
            ev["onset"] = math.exp(-(onset - first_onset) / 60_000.0)
        else:
            onset = None
            ev["onset"] = 0.0
        if dependencies is not None:
            callees = set(dependencies.get(svc, ()))
            # a callee that moved before (or with) this candidate explains it better
            earlier = [c for c in callees if c in onset_of_service and onset is not None and onset_of_service[c] <= onset]
            ev["graph"] = 1.0 if anomalies and not earlier else 0.0
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
        best, sim = None, 0.0
        if svc in service_symptoms:
            for pat, value in match([p for p in patterns if p.cause_metric == metric], service_symptoms[svc]):
                best, sim = pat, value
                break
            ev["pattern"] = sim if sim >= pattern_similarity else 0.5 * sim
        score = sum(WEIGHTS[k] * v for k, v in ev.items())
        candidates.append(
            Candidate(
                svc, metric, score, ev,
                pattern=best.name if best is not None and sim >= pattern_similarity else None,
                similarity=sim,
                steps=best.steps if best is not None and sim >= pattern_similarity else (),
            )
        )
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
