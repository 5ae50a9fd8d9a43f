"""Root cause as a posterior probability over candidate causes.

For an incident, every (service, metric) that has a signal is a candidate
cause.  :func:`evidence` measures, for each candidate, evidence values in
[0, 1]:

- ``anomalous``: the candidate has a strong anomaly in the incident;
- ``strength``: its relative change, log-scaled against the incident's
  largest;
- ``magnitude``: its relative change on an absolute scale (1 once the
  median at least tripled);
- ``onset``: how early its anomaly began relative to the incident's first
  (change-point order);
- ``graph``: with a dependency graph, whether the service's own dependencies
  stayed healthy (a cause sits at the bottom of the affected sub-graph);
- ``granger``: the share of the other affected signals that the candidate
  Granger-causes over the hour before and the incident, all pairs tested in
  one :func:`~obscore.correlate.granger_matrix` on first differences and
  kept at p < alpha after Benjamini-Hochberg across the pairs;
- ``correlation``: the share of the other affected signals it correlates
  with at ``|r| >= 0.7`` (lags up to 3 steps) over the same window;
- ``pattern``: the similarity of its service's symptoms to the best pattern
  with this cause metric (halved below the match threshold);
- ``change``: a change event of its service in the hour before;
- ``history``: the similarity of the best matching past incident whose
  cause was this candidate.

:func:`posterior` combines them by Bayes' rule with the priors and
likelihoods of :data:`PRIOR_NONE` and :data:`LIKELIHOODS`, including the
hypothesis that none of the candidates is the cause (docs/diagnosis.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from obscore.correlate import granger_matrix, lagged_correlation
from obscore.diagnose.patterns import LARGE_CHANGE, Pattern, load_patterns, match, symptoms

logger = logging.getLogger(__name__)

STRONG_Z = 10.0


@dataclass(frozen=True, slots=True)
class Likelihood:
    """How often an evidence kind is present for the cause and for any other candidate.

    Attributes
    ----------
    cause : float
        P(present | the candidate is the cause), in (0, 1).
    other : float
        P(present | it is not), in (0, 1).
    """

    cause: float
    other: float

    def __post_init__(self) -> None:
        for name in ("cause", "other"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"likelihood {name} must be in (0, 1), got {v!r}")

    def log_ratio(self, value: float) -> float:
        """log P(e | cause) / P(e | other) for soft evidence ``value`` in [0, 1].

        ``value`` 1 is "present", 0 "absent"; in between, the log ratios of
        the two are mixed linearly (a share, a similarity).
        """
        v = min(1.0, max(0.0, float(value)))
        present = math.log(self.cause / self.other)
        absent = math.log((1.0 - self.cause) / (1.0 - self.other))
        return v * present + (1.0 - v) * absent

    def log_ratios(self, values: np.ndarray) -> np.ndarray:
        """:meth:`log_ratio` of each value of an array; NaN counts as absent."""
        v = np.clip(np.nan_to_num(np.asarray(values, dtype=float), nan=0.0), 0.0, 1.0)
        present = math.log(self.cause / self.other)
        absent = math.log((1.0 - self.cause) / (1.0 - self.other))
        return v * present + (1.0 - v) * absent


#: Prior probability that none of the candidates caused the incident.
PRIOR_NONE = 0.5

#: Likelihoods of the incident-level evidence (:func:`fault_evidence`): ``cause``
#: is the rate given a fault, ``other`` given a false alarm.
FAULT_LIKELIHOODS: dict[str, Likelihood] = {
    "corroboration": Likelihood(0.85, 0.02),
    "magnitude": Likelihood(0.9, 0.3),
    "pattern": Likelihood(0.9, 0.4),
}

#: Likelihoods of each candidate's evidence kinds (docs/diagnosis.md gives the reasons).
LIKELIHOODS: dict[str, Likelihood] = {
    "anomalous": Likelihood(0.95, 0.72),
    "strength": Likelihood(0.7, 0.46),
    "onset": Likelihood(0.85, 0.56),
    "graph": Likelihood(0.9, 0.67),
    "granger": Likelihood(0.75, 0.52),
    "correlation": Likelihood(0.8, 0.25),
    "pattern": Likelihood(0.85, 0.22),
    "change": Likelihood(0.3, 0.05),
    "history": Likelihood(0.6, 0.02),
}


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
    confidence_none: float = 0.0  # posterior that none of the candidates is the cause

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


def evidence(
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
    history: Sequence[tuple[str, str, float]] = (),
) -> list[Candidate]:
    """The evidence for every candidate cause of an incident, not yet weighed.

    Parameters are those of :func:`diagnose`; ``history`` holds
    ``(service, metric, similarity)`` of past incidents that match this one.

    Returns
    -------
    list of Candidate
        One per (service, metric) with a signal, in signal order, with
        ``evidence`` filled (each value in [0, 1]) and ``confidence`` 0.
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
    affected = [key for key in by_cand if key in groups]
    affected_series = {key: _sum_window(groups[key], start, end) for key in affected}
    granger_share = _granger_shares(affected_series, granger_maxlag, granger_alpha)
    rel_change = {
        key: _relative_change(groups.get(key, []), by_cand[key], correlation_window_ms)
        for key in by_cand
    }
    top_change = max(rel_change.values(), default=0.0)
    patterns = load_patterns() if patterns is None else patterns
    changes = changes or {}
    service_symptoms = {
        svc: symptoms(svc, strong, signals, dependencies, changes.get(svc, ()))
        for svc in onset_of_service
    }
    remembered: dict[tuple[str, str], float] = {}
    for svc, metric, sim in history:
        remembered[(svc, metric)] = max(remembered.get((svc, metric), 0.0), float(sim))
    candidates = []
    for (svc, metric), sigs in groups.items():
        ev: dict[str, float] = {}
        anomalies = by_cand.get((svc, metric), [])
        ev["anomalous"] = 1.0 if anomalies else 0.0
        rel = rel_change.get((svc, metric), 0.0)
        ev["strength"] = math.log1p(rel) / math.log1p(top_change) if top_change > 0 else 0.0
        ev["magnitude"] = min(1.0, math.log1p(rel) / math.log1p(LARGE_CHANGE)) if anomalies else 0.0
        if anomalies:
            onset = min(a.start_ms for a in anomalies)
            ev["onset"] = math.exp(-(onset - first_onset) / 60_000.0)
        else:
            onset = None
            ev["onset"] = 0.0
        if dependencies is not None:
            callees = set(dependencies.get(svc, ()))
            # a callee that moved before (or with) this candidate explains it better
            earlier = [
                c for c in callees
                if c in onset_of_service and onset is not None and onset_of_service[c] <= onset
            ]
            ev["graph"] = 1.0 if anomalies and not earlier else 0.0
        if anomalies:
            own = affected_series.get((svc, metric))
            others = [v for k, v in affected_series.items() if k != (svc, metric)]
            c = 0
            if own is not None:
                for other in others:
                    if len(other) != len(own):
                        continue
                    r, _ = lagged_correlation(own, other, 3)
                    if abs(r) >= min_correlation:
                        c += 1
            ev["granger"] = granger_share.get((svc, metric), 0.0)
            ev["correlation"] = c / len(others) if others else 0.0
        else:
            ev["granger"] = ev["correlation"] = 0.0
        best, sim = None, 0.0
        if svc in service_symptoms:
            for pat, value in match([p for p in patterns if p.cause_metric == metric], service_symptoms[svc]):
                best, sim = pat, value
                break
        ev["pattern"] = sim if sim >= pattern_similarity else 0.5 * sim
        ev["change"] = 1.0 if anomalies and changes.get(svc) else 0.0
        ev["history"] = remembered.get((svc, metric), 0.0)
        matched = best is not None and sim >= pattern_similarity
        candidates.append(
            Candidate(
                svc, metric, 0.0, ev,
                pattern=best.name if matched else None,
                similarity=sim,
                steps=best.steps if matched else (),
            )
        )
    return candidates


def fault_evidence(candidates: Sequence[Candidate]) -> dict[str, float]:
    """Incident-level evidence that some candidate is at fault, each in [0, 1].

    ``corroboration``: the largest share of the other affected signals that
    one anomalous candidate correlates with (a fault moves several signals
    together; a false alarm is usually one signal alone).  ``magnitude``
    and ``pattern``: the largest of the candidates' own values.
    """
    anomalous = [c.evidence for c in candidates if c.evidence.get("anomalous", 0.0) > 0]
    return {
        "corroboration": max((e.get("correlation", 0.0) for e in anomalous), default=0.0),
        "magnitude": max((e.get("magnitude", 0.0) for e in anomalous), default=0.0),
        "pattern": max((e.get("pattern", 0.0) for e in anomalous), default=0.0),
    }


def posterior(
    candidates: Sequence[Candidate],
    prior_none: float = PRIOR_NONE,
    likelihoods: Mapping[str, Likelihood] | None = None,
    fault_likelihoods: Mapping[str, Likelihood] | None = None,
) -> float:
    """Set each candidate's ``confidence`` to its posterior probability.

    Two questions, each answered by Bayes' rule with independent evidence
    kinds (naive Bayes):

    1. Is any candidate at fault?  Prior ``1 - prior_none``; the evidence is
       :func:`fault_evidence`, with the likelihoods ``fault_likelihoods``
       (``cause`` = P(present | a fault), ``other`` = P(present | a false
       alarm)).
    2. Given a fault, which candidate?  Uniform prior over the candidates;
       the cause's evidence follows the ``cause`` rates of ``likelihoods``
       and every other candidate's the ``other`` rates, so the posterior of
       *c* is proportional to the product of its likelihood ratios.

    The posterior of *c* is P(fault | E) * P(c | fault, E); "none of the
    candidates" gets 1 - P(fault | E).

    Parameters
    ----------
    candidates : sequence of Candidate
        With ``evidence`` from :func:`evidence`.
    prior_none : float
        Prior probability that none of the candidates caused the incident.
    likelihoods, fault_likelihoods : mapping of str to Likelihood, optional
        By evidence kind; :data:`LIKELIHOODS` and :data:`FAULT_LIKELIHOODS`
        when None.  Kinds missing from the evidence (``graph`` without a
        dependency graph) contribute nothing.

    Returns
    -------
    float
        The posterior probability of "none of the candidates".
    """
    table = LIKELIHOODS if likelihoods is None else likelihoods
    fault_table = FAULT_LIKELIHOODS if fault_likelihoods is None else fault_likelihoods
    if not candidates:
        return 1.0
    log_odds = math.log((1.0 - prior_none) / prior_none) + sum(
        fault_table[k].log_ratio(v) for k, v in fault_evidence(candidates).items() if k in fault_table
    )
    p_fault = 1.0 / (1.0 + math.exp(-log_odds)) if log_odds > -700 else 0.0
    logs = [
        sum(table[k].log_ratio(v) for k, v in c.evidence.items() if k in table)
        for c in candidates
    ]
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    total = sum(weights)
    for c, w in zip(candidates, weights):
        c.confidence = p_fault * w / total
    return 1.0 - p_fault


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
    history: Sequence[tuple[str, str, float]] = (),
) -> Diagnosis:
    """Rank candidate causes of an incident by posterior probability.

    Parameters
    ----------
    incident : Incident
        From the pipeline.
    signals : mapping of str to Signal
        Every signal of the pipeline run, by key.
    dependencies : mapping, optional
        Caller -> callees; used for the graph evidence.
    correlation_window_ms : int
        How far before the incident the correlation and Granger evidence
        look (the hour before, by default).
    min_correlation, granger_alpha, granger_maxlag : float, float, int
        |r| that counts as correlated (lags up to 3 steps); significance of
        a Granger link after Benjamini-Hochberg across all pairs and lags;
        the largest lag order.
    patterns : sequence of Pattern, optional
        The pattern library (the shipped one when None).
    changes : mapping, optional
        Service -> change events (as text) in the hour before the incident.
    pattern_similarity : float
        A pattern matches at this similarity or above.
    history : sequence of (str, str, float), optional
        ``(service, metric, similarity)`` of past incidents whose symptoms
        match this one's (see :mod:`obscore.diagnose.history`).

    Returns
    -------
    Diagnosis
        Candidates ranked by posterior probability; with
        ``confidence_none``, the probability that none of them is the
        cause, they sum to 1.

    Notes
    -----
    The onset reference is the earliest start among the incident's strong
    anomalies (robust peak |z| of at least ``STRONG_Z``), so a weak anomaly
    that happened to open the incident does not set the clock; weak ones are
    not candidates either.  docs/diagnosis.md lists the priors and the
    likelihoods.
    """
    candidates = evidence(
        incident, signals, dependencies,
        correlation_window_ms=correlation_window_ms,
        min_correlation=min_correlation,
        granger_alpha=granger_alpha,
        granger_maxlag=granger_maxlag,
        patterns=patterns,
        changes=changes,
        pattern_similarity=pattern_similarity,
        history=history,
    )
    none = posterior(candidates)
    candidates.sort(key=lambda c: c.confidence, reverse=True)
    window = (incident.start_ms - correlation_window_ms, incident.end_ms)
    return Diagnosis(incident.id, candidates, window, none)


def _granger_shares(
    series: Mapping[tuple[str, str], np.ndarray], maxlag: int, alpha: float
) -> dict[tuple[str, str], float]:
    """Per affected signal, the share of the other affected signals it Granger-causes.

    One :func:`granger_matrix` over the first differences of every signal of
    the most common length (the others score 0), links kept at ``alpha``
    after Benjamini-Hochberg across all ordered pairs (each pair's p-value
    Bonferroni-corrected over the lag orders first).
    """
    keys = list(series)
    out = {key: 0.0 for key in keys}
    if len(keys) < 2:
        return out
    lengths = [len(series[k]) for k in keys]
    common = max(set(lengths), key=lengths.count)
    same = [k for k in keys if len(series[k]) == common]
    if len(same) < 2:
        return out
    matrix = granger_matrix(np.array([series[k] for k in same]), maxlag, difference=1)
    if matrix.df_resid[-1] < 1:
        logger.debug("granger skipped: %d points for maxlag %d", common, maxlag)
        return out
    links = matrix.significant(alpha, method="bh")
    for i, key in enumerate(same):
        out[key] = float(links[i].sum()) / (len(keys) - 1)
    return out


def _sum_window(sigs, start_ms: int, end_ms: int) -> np.ndarray:
    parts = [np.nan_to_num(_window(s, start_ms, end_ms)) for s in sigs]
    n = min(len(p) for p in parts)
    return np.sum([p[:n] for p in parts], axis=0)
