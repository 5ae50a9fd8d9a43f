"""Rank candidate causes of an incident from plain metric tables.

The input is two tables of the same series (columns): a normal period and
the incident window, whose rows from ``onset_row`` on are the incident and
whose earlier rows (if any) are the minutes just before it, from the same
recording.  Each series belongs to one candidate (a service, a node of a
call graph) and has a metric name.

Each series gets a *change*: the median over the incident rows of its robust
z-score against the normal period (median, IQR / 1.349; as BARO and
epsilon-Diagnosis compare the two periods), counted in the harmful direction
only (latency, CPU, memory and errors up; availability down; traffic either
way, see :func:`metric_direction`), minus any shift already present in the
lead-in rows.  Its anomaly probability is ``z**2 / (z**2 + z0**2)``, even
odds at ``z0 = RankConfig.z_anomalous``.  Each candidate gets evidence
values in [0, 1], one per kind:

``anomalous``
    The anomaly probability of its most anomalous series (traffic series
    at ``demand_weight``).
``strength``
    ``log1p(z)`` of its most changed series over the same of the
    incident's most changed candidate.
``onset``
    ``exp(-delay / onset_scale_rows)`` of its first row past ``z0``,
    relative to the earliest anomalous candidate (change-point order).
``granger``
    ``(1 + net) / 2``, where ``net`` is the share of other candidates'
    anomalous series that its series Granger-cause minus the share that
    Granger-cause its series (at most ``granger_max_series`` series), from
    :func:`obscore.correlate.granger_matrix` on first differences over the
    incident window, p < ``granger_alpha`` after Benjamini-Hochberg across
    all pairs; 0.5 (no information) when the window is too short.

With a call graph (caller -> callees), where latency and errors climb from
callee to caller:

``callees_quiet``
    One minus the anomaly probability of its most anomalous callee: a
    caller of an anomalous callee is more likely a victim than the origin.
``coverage``
    Its anomaly probability times the share of all anomaly probability held
    by itself and its callers, transitively: how much of the incident it
    would explain.
``path``
    With a target, the strength of its best call path from the target, the
    smallest anomaly probability of the nodes before it (the target
    included): a candidate reached only through quiet nodes cannot explain
    the target's symptom.

The confidence is a posterior by Bayes' rule (:func:`posterior`) over one
hypothesis per candidate and "none of these": the prior gives "none"
``prior_none`` and shares the rest by :func:`candidate_prior` (the call
graph: candidates outside the target's call tree weigh less); each kind
has the likelihoods of :data:`LIKELIHOODS` (and :data:`QUIET_RATES` for
"none", with :data:`INCIDENT_LIKELIHOODS` for the target's own symptom),
measured on the two datasets' cases; docs/diagnosis.md gives the
numbers and the reasons.  Candidates are ranked by posterior.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from obscore.correlate import granger_matrix
from obscore.diagnose.rca import Candidate, Likelihood

logger = logging.getLogger(__name__)

_DOWN = re.compile(r"avail|success|uptime", re.IGNORECASE)
_UP = re.compile(r"lat|cpu|mem|err|fail|duration|time|p\d\d", re.IGNORECASE)


#: Likelihoods of each evidence kind: ``cause`` = P(present | the candidate is
#: the cause), ``other`` = P(present | it is not, in an incident); measured on
#: the Sock Shop and PetShop cases (docs/diagnosis.md), Granger set by hand.
LIKELIHOODS: dict[str, Likelihood] = {
    "anomalous": Likelihood(0.95, 0.15),
    "strength": Likelihood(0.96, 0.15),
    "onset": Likelihood(0.93, 0.14),
    "granger": Likelihood(0.6, 0.4),
    "callees_quiet": Likelihood(0.96, 0.92),
    "coverage": Likelihood(0.57, 0.03),
    "path": Likelihood(0.65, 0.3),
}

#: P(present | normal period) of the kinds that also say whether there is a
#: fault at all: a candidate that is not the cause is anomalous at the
#: ``other`` rate of :data:`LIKELIHOODS` in an incident (a victim) and at this
#: rate when nothing is wrong (PetShop ``noissue`` windows).
QUIET_RATES: dict[str, float] = {"anomalous": 0.03}

#: Likelihoods of the incident-level evidence, about the incident as a whole:
#: ``cause`` = P(present | some candidate is at fault), ``other`` =
#: P(present | nothing is wrong).  ``symptom`` is the anomaly probability of
#: the target, the candidate whose symptom is investigated (PetShop: 26
#: issues against 30 ``noissue`` windows).
INCIDENT_LIKELIHOODS: dict[str, Likelihood] = {"symptom": Likelihood(0.64, 0.03)}

#: Kinds that measure nearly the same thing (how much and how early a
#: candidate moved): their log likelihood ratios are averaged, counting the
#: group as one piece of evidence instead of three.
DEPENDENT_KINDS: tuple[tuple[str, ...], ...] = (("anomalous", "strength", "onset"),)


@dataclass(frozen=True, slots=True)
class RankConfig:
    """Knobs of :func:`rank_candidates`; one setting serves every dataset.

    The defaults were set once for both evaluation datasets (Sock Shop and
    PetShop, see :mod:`obscore.diagnose.evaluate`), not per case.

    Attributes
    ----------
    min_baseline, min_baseline_share : int, float
        Finite values a series needs in the normal period to be scored, as
        a count and as a share of the rows; sparser series (rarely called
        endpoints) have no reliable normal.
    rel_floor : float
        The robust scale is at least ``rel_floor * |median|`` (and 1e-12), so
        a series that never moved in the normal period gets a finite z.
    z_anomalous : float
        Robust z at which a series is even odds anomalous; the probability
        is ``z**2 / (z**2 + z_anomalous**2)``.
    demand_weight : float
        Weight of traffic series (requests, load): they move with users, and
        a fault shifts traffic downstream as much as upstream.
    onset_scale_rows : float
        Rows of delay that cost a factor e of the onset evidence.
    granger_maxlag, granger_alpha, granger_max_series : int, float, int
        Lag orders, significance after Benjamini-Hochberg, and how many of
        the most anomalous series enter the Granger matrix.
    prior_none : float
        Prior probability that none of the candidates is the cause.
    prior_unreachable : float
        Prior weight of a candidate the target does not reach in the call
        graph, against 1 for one it does (:func:`candidate_prior`).
    likelihoods : mapping of str to Likelihood, optional
        By evidence kind; :data:`LIKELIHOODS` when None.
    """

    min_baseline: int = 10
    min_baseline_share: float = 0.5
    rel_floor: float = 1e-3
    z_anomalous: float = 5.0
    demand_weight: float = 0.5
    prior_none: float = 0.5
    prior_unreachable: float = 0.1
    likelihoods: Mapping[str, Likelihood] | None = None
    onset_scale_rows: float = 2.0
    granger_maxlag: int = 3
    granger_alpha: float = 0.05
    granger_max_series: int = 30


@dataclass(frozen=True, slots=True)
class Ranking:
    """Candidates ranked by confidence, and the confidence that none is the cause."""

    candidates: list[Candidate]
    confidence_none: float

    @property
    def names(self) -> list[str]:
        """Candidate names, best first."""
        return [c.service for c in self.candidates]


def metric_direction(metric: str) -> int:
    """Which way a metric goes when things break, from its name.

    Returns
    -------
    int
        -1 for availability and success (lower is worse), +1 for latency,
        CPU, memory, errors, failures, durations and percentiles (higher is
        worse), 0 for anything else, such as request counts and load, which
        is treated as traffic: either direction counts, at ``demand_weight``.
    """
    if _DOWN.search(metric):
        return -1
    if _UP.search(metric):
        return 1
    return 0


def rank_candidates(
    normal: np.ndarray,
    incident: np.ndarray,
    keys: Sequence[tuple[str, str]],
    *,
    onset_row: int = 0,
    graph: Mapping[str, Sequence[str]] | None = None,
    target: str | None = None,
    config: RankConfig | None = None,
) -> Ranking:
    """Rank the candidates that may have caused an incident.

    Parameters
    ----------
    normal : ndarray, shape (n_normal, n_series)
        Float values of every series during normal operation; NaN where
        missing.  It need not be contiguous with ``incident``.
    incident : ndarray, shape (n_rows, n_series)
        The incident window on a regular grid, same columns; NaN allowed.
    keys : sequence of (str, str)
        ``(candidate, metric)`` for each column.  The metric name sets the
        harmful direction (see :func:`metric_direction`).
    onset_row : int, default 0
        First row of ``incident`` inside the incident; earlier rows are the
        lead-in from the same recording.
    graph : mapping of str to sequence of str, optional
        Call graph, caller -> callees, over candidate names.
    target : str, optional
        The candidate whose symptom is investigated; with ``graph``,
        candidates it reaches only through quiet nodes, or not at all, score
        lower (the ``path`` evidence).
    config : RankConfig, optional
        Defaults to ``RankConfig()``.

    Returns
    -------
    Ranking
        Every candidate, best first, each a :class:`Candidate` with
        ``service`` the candidate, ``metric`` its most anomalous metric,
        ``confidence`` and ``evidence`` (the terms of the module docstring
        and ``score``).  ``confidence_none`` is the "no cause" share.

    Raises
    ------
    ValueError
        If the shapes disagree or ``onset_row`` is outside the window.
    """
    cfg = config or RankConfig()
    normal = np.asarray(normal, dtype=float)
    incident = np.asarray(incident, dtype=float)
    n_series = len(keys)
    if normal.ndim != 2 or normal.shape[1] != n_series:
        raise ValueError(
            f"normal must have shape (n_normal, {n_series}), got {normal.shape}"
        )
    if incident.ndim != 2 or incident.shape[1] != n_series:
        raise ValueError(
            f"incident must have shape (n_rows, {n_series}), got {incident.shape}"
        )
    if not 0 <= onset_row < len(incident):
        raise ValueError(
            f"onset_row must be in 0..{len(incident) - 1}, got {onset_row!r}"
        )

    names, evidence, prior, top_series = candidate_evidence(
        normal, incident, keys, onset_row=onset_row, graph=graph, target=target,
        config=cfg,
    )
    table = LIKELIHOODS if cfg.likelihoods is None else cfg.likelihoods
    incident_evidence = {}
    if target is not None and target in names:
        incident_evidence["symptom"] = float(evidence["anomalous"][names.index(target)])
    conf, none, log_lr = posterior(
        evidence, prior, cfg.prior_none, table, incident_evidence=incident_evidence
    )

    candidates = []
    for c in np.argsort(-conf, kind="stable"):
        ev = {k: float(v[c]) for k, v in evidence.items()}
        ev["prior"] = float(prior[c])
        ev["log_lr"] = float(log_lr[c])
        metric = keys[top_series[c]][1]
        candidates.append(Candidate(names[c], metric, float(conf[c]), ev))
    return Ranking(candidates, none)


def candidate_evidence(
    normal: np.ndarray,
    incident: np.ndarray,
    keys: Sequence[tuple[str, str]],
    *,
    onset_row: int = 0,
    graph: Mapping[str, Sequence[str]] | None = None,
    target: str | None = None,
    config: RankConfig | None = None,
) -> tuple[list[str], dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The evidence values and the prior weight of every candidate.

    Parameters are those of :func:`rank_candidates`, already validated.

    Returns
    -------
    names : list of str
        The candidates, in order of first appearance in ``keys``.
    evidence : dict of str to ndarray
        Per evidence kind of the module docstring, one value in [0, 1] per
        candidate; the graph kinds only with ``graph``.
    prior : ndarray
        Prior weight per candidate (:func:`candidate_prior`), not normalised.
    top_series : ndarray of int64
        Per candidate, the column of its most changed series.
    """
    cfg = config or RankConfig()
    change, first_row = _series_change(normal, incident, keys, onset_row, cfg)
    prob = change**2 / (change**2 + cfg.z_anomalous**2)
    weight = np.array(
        [cfg.demand_weight if metric_direction(m) == 0 else 1.0 for _, m in keys]
    )
    names = list(dict.fromkeys(c for c, _ in keys))
    index = {name: k for k, name in enumerate(names)}
    owner = np.array([index[c] for c, _ in keys], dtype=np.int64)

    anomaly, cand_prob, health_prob, top_series = _per_candidate(
        change, prob, weight, owner
    )
    top = anomaly.max() if len(anomaly) else 0.0
    net = _granger_evidence(incident, change, prob, owner, len(names), cfg)
    evidence = {
        "anomalous": cand_prob,
        "strength": anomaly / top if top > 0 else np.zeros(len(names)),
        "onset": _onset_evidence(first_row, prob, owner, len(names), cfg),
        "granger": 0.5 * (1.0 + net),
    }
    if graph is not None:
        callee_prob, coverage, path = _graph_evidence(names, graph, target, health_prob)
        evidence["callees_quiet"] = 1.0 - callee_prob
        # a quiet candidate explains nothing, however central it is
        evidence["coverage"] = cand_prob * coverage
        evidence["path"] = path
    prior = candidate_prior(names, graph, target, cfg.prior_unreachable)
    return names, evidence, prior, top_series


def candidate_prior(
    names: Sequence[str],
    graph: Mapping[str, Sequence[str]] | None,
    target: str | None,
    unreachable: float,
) -> np.ndarray:
    """Prior weight of each candidate, before any metric is looked at.

    Uniform (1 each) without a call graph or a target in it.  With both, a
    candidate the target reaches along the call graph (the target included)
    weighs 1 and any other ``unreachable``: a fault outside the target's
    call tree reaches the target only through a shared resource the graph
    does not show, which is possible but rare.
    """
    prior = np.ones(len(names))
    if graph is None or target is None or target not in names:
        return prior
    reach = _closure(target, graph)
    return np.where([n in reach for n in names], 1.0, unreachable)


def posterior(
    evidence: Mapping[str, np.ndarray],
    prior: np.ndarray,
    prior_none: float,
    likelihoods: Mapping[str, Likelihood],
    quiet_rates: Mapping[str, float] | None = None,
    dependent: Sequence[Sequence[str]] = DEPENDENT_KINDS,
    incident_evidence: Mapping[str, float] | None = None,
    incident_likelihoods: Mapping[str, Likelihood] | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Bayes' rule over the candidates and "none of these".

    Hypothesis *H_c*: candidate *c* is the cause, the other candidates'
    evidence follows the ``other`` rates (victims and bystanders of a
    fault); *H_0*: nothing is wrong, and every candidate's evidence of the
    kinds in ``quiet_rates`` follows those rates (the other kinds are taken
    to be alike under both).  With the kinds independent given the
    hypothesis,

    ``P(H_c | E) / P(H_0 | E) = P(H_c) / P(H_0) * LR_c * F``, with
    ``LR_c = prod_k P(e_ck | cause) / P(e_ck | other)`` (which candidate)
    and ``F = prod_j prod_k P(e_jk | other) / P(e_jk | quiet)`` over all
    candidates *j* and the kinds of ``quiet_rates`` (is there a fault at
    all), times the ratios of ``incident_evidence`` (about the incident as
    a whole, the same for every *H_c*): the non-causes' factors common to
    every *H_c* cancel.  Soft
    evidence ``v`` mixes the present and absent ratios
    (:meth:`Likelihood.log_ratios`).  The log ratios of each group in
    ``dependent`` are averaged instead of summed.

    Parameters
    ----------
    evidence : mapping of str to ndarray
        Per kind, one value in [0, 1] per candidate; kinds missing from
        ``likelihoods`` are ignored.
    prior : ndarray
        Prior weight per candidate; ``1 - prior_none`` is shared in
        proportion to it.
    prior_none : float
        Prior probability of "none of these", in (0, 1).
    likelihoods : mapping of str to Likelihood
    quiet_rates : mapping of str to float, optional
        P(present | normal period) by kind; :data:`QUIET_RATES` when None.
    dependent : sequence of sequence of str
        Groups of kinds counted as one piece of evidence.
    incident_evidence : mapping of str to float, optional
        Incident-level values in [0, 1] (``symptom``); none by default.
    incident_likelihoods : mapping of str to Likelihood, optional
        :data:`INCIDENT_LIKELIHOODS` when None.

    Returns
    -------
    confidence : ndarray
        Posterior of each candidate.
    none : float
        Posterior of "none of these"; with ``confidence`` it sums to 1.
    log_lr : ndarray
        Each candidate's ``log LR_c``.
    """
    quiet = QUIET_RATES if quiet_rates is None else quiet_rates
    n = len(prior)
    if n == 0:
        return np.zeros(0), 1.0, np.zeros(0)
    share = {k: 1.0 for k in evidence}
    for group in dependent:
        present = [k for k in group if k in evidence and k in likelihoods]
        for k in present:
            share[k] = 1.0 / len(present)
    log_lr = np.zeros(n)
    for kind, values in evidence.items():
        if kind in likelihoods:
            log_lr += share[kind] * likelihoods[kind].log_ratios(values)
    log_fault = 0.0
    for kind, rate in quiet.items():
        if kind in evidence and kind in likelihoods:
            ratio = Likelihood(likelihoods[kind].other, rate)
            log_fault += float(ratio.log_ratios(evidence[kind]).sum())
    whole = INCIDENT_LIKELIHOODS if incident_likelihoods is None else incident_likelihoods
    for kind, value in (incident_evidence or {}).items():
        if kind in whole:
            log_fault += whole[kind].log_ratio(value)

    log_prior = np.log((1.0 - prior_none) * prior / prior.sum())
    logits = np.append(log_prior + log_lr + log_fault, math.log(prior_none))
    post = np.exp(logits - logits.max())
    post /= post.sum()
    return post[:-1], float(post[-1]), log_lr


def _per_candidate(
    change: np.ndarray, prob: np.ndarray, weight: np.ndarray, owner: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fold series into candidates.

    Returns the weighted ``log1p`` change of each candidate's most changed
    series, its anomaly probability (traffic weighted down), the anomaly
    probability of its health series alone, and the index of that series.
    """
    n = int(owner.max()) + 1 if len(owner) else 0
    strength = weight * np.log1p(change)
    anomaly = np.zeros(n)
    cand_prob = np.zeros(n)
    health_prob = np.zeros(n)
    top_series = np.full(n, -1, dtype=np.int64)
    for s in np.argsort(-strength, kind="stable"):
        c = owner[s]
        if top_series[c] < 0:
            top_series[c], anomaly[c] = s, strength[s]
        cand_prob[c] = max(cand_prob[c], prob[s] * weight[s])
        if weight[s] == 1.0:
            health_prob[c] = max(health_prob[c], prob[s])
    return anomaly, cand_prob, health_prob, top_series


def _series_change(
    normal: np.ndarray,
    incident: np.ndarray,
    keys: Sequence[tuple[str, str]],
    onset_row: int,
    cfg: RankConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Harmful shift of each series after the onset (robust z, >= 0) and its first row."""
    n_series = normal.shape[1]
    finite = np.isfinite(normal)
    count = finite.sum(axis=0)
    usable = (count >= cfg.min_baseline) & (
        count >= cfg.min_baseline_share * len(normal)
    )
    base = np.where(finite, normal, np.nan)
    q25, med, q75 = _column_quantiles(base, (0.25, 0.5, 0.75))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # all-NaN columns are expected here (unusable series); they end as 0
        warnings.simplefilter("ignore", RuntimeWarning)
        # a series flat for most of the normal period: its mean absolute
        # deviation still says how far it strays when it moves at all
        mad = np.nanmean(np.abs(base - med), axis=0) * 1.2533
    scale = np.where(q75 - q25 > 0, (q75 - q25) / 1.349, mad)
    floor = np.fmax(cfg.rel_floor * np.abs(np.nan_to_num(med)), 1e-12)
    scale = np.fmax(np.nan_to_num(scale, nan=0.0), floor)

    direction = np.array([metric_direction(m) for _, m in keys])
    with np.errstate(all="ignore"):
        z = (incident - med) / scale
    # harm is positive: flip "lower is worse" series, fold two-sided ones
    z = np.where(direction == 0, np.abs(z), z * direction)
    post = z[onset_row:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        level = np.nanmedian(post, axis=0)
        pre = np.nanmedian(z[:onset_row], axis=0) if onset_row else np.zeros(n_series)
    change = np.nan_to_num(level, nan=0.0) - np.fmax(np.nan_to_num(pre, nan=0.0), 0.0)
    change = np.where(usable, np.maximum(change, 0.0), 0.0)

    crossed = np.nan_to_num(post, nan=-np.inf) >= cfg.z_anomalous
    first_row = np.where(crossed.any(axis=0), crossed.argmax(axis=0), -1)
    return change, first_row


def _column_quantiles(values: np.ndarray, qs: Sequence[float]) -> list[np.ndarray]:
    """Per-column quantiles ignoring NaN, numpy's linear rule; NaN for empty columns.

    The same numbers as ``np.nanpercentile(values, 100 * q, axis=0)`` from
    one sort, instead of one sort per column.
    """
    srt = np.sort(values, axis=0)  # NaN sort last
    count = np.isfinite(srt).sum(axis=0)
    cols = np.arange(values.shape[1])
    out = []
    for q in qs:
        pos = q * np.maximum(count - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(count - 1, 0))
        frac = pos - lo
        with np.errstate(invalid="ignore"):
            value = srt[lo, cols] * (1.0 - frac) + srt[hi, cols] * frac
        out.append(np.where(count > 0, value, np.nan))
    return out


def _onset_evidence(
    first_row: np.ndarray, prob: np.ndarray, owner: np.ndarray, n: int, cfg: RankConfig
) -> np.ndarray:
    """exp(-delay / scale) of each candidate's first anomalous row; 0 if never."""
    first = np.full(n, np.inf)
    for s in np.nonzero((first_row >= 0) & (prob >= 0.5))[0]:
        first[owner[s]] = min(first[owner[s]], first_row[s])
    if not np.isfinite(first).any():
        return np.zeros(n)
    delay = first - first[np.isfinite(first)].min()
    return np.where(np.isfinite(first), np.exp(-delay / cfg.onset_scale_rows), 0.0)


def _granger_evidence(
    incident: np.ndarray,
    change: np.ndarray,
    prob: np.ndarray,
    owner: np.ndarray,
    n: int,
    cfg: RankConfig,
) -> np.ndarray:
    """Share of other candidates' anomalous series caused minus share causing."""
    picked = np.nonzero(prob >= 0.5)[0]
    picked = picked[np.argsort(-change[picked], kind="stable")][
        : cfg.granger_max_series
    ]
    out = np.zeros(n)
    if len(picked) < 2 or len(np.unique(owner[picked])) < 2:
        return out
    X = incident[:, picked].T
    matrix = granger_matrix(X, cfg.granger_maxlag, difference=1)
    if matrix.df_resid[-1] < 1:
        logger.debug(
            "granger skipped: %d rows for maxlag %d", X.shape[1], cfg.granger_maxlag
        )
        return out
    links = matrix.significant(cfg.granger_alpha, method="bh")
    who = owner[picked]
    for c in np.unique(who):
        mine = who == c
        # links[a, b]: series a Granger-causes series b
        causes = links[mine][:, ~mine].any(axis=0).sum()
        caused = links[~mine][:, mine].any(axis=1).sum()
        out[c] = (causes - caused) / (~mine).sum()
    return out


def _graph_evidence(
    names: Sequence[str],
    graph: Mapping[str, Sequence[str]],
    target: str | None,
    health_prob: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Callee anomaly, coverage of the anomalies, and the path from the target.

    Returns, per candidate: the anomaly probability of its most anomalous
    callee; the share of all candidates' anomaly probability held by the
    candidate and its callers (transitively), i.e. how much of the incident
    it would explain; and the strength of its best call path from the target
    (see :func:`_widest_path`; all ones without a target).
    """
    index = {name: k for k, name in enumerate(names)}
    callee_prob = np.zeros(len(names))
    callers: dict[str, set[str]] = {name: set() for name in names}
    for caller, callees in graph.items():
        for callee in callees:
            if callee in callers and caller in index and callee != caller:
                callers[callee].add(caller)
    for name, k in index.items():
        probs = [
            health_prob[index[c]]
            for c in graph.get(name, ())
            if c in index and c != name
        ]
        callee_prob[k] = max(probs, default=0.0)

    total = health_prob.sum()
    coverage = np.zeros(len(names))
    if total > 0:
        for name, k in index.items():
            upstream = _closure(name, callers)
            coverage[k] = sum(health_prob[index[u]] for u in upstream) / total
    path = np.ones(len(names))
    if target is not None and target in index:
        path = _widest_path(names, graph, target, health_prob)
    return callee_prob, coverage, path


def _widest_path(
    names: Sequence[str],
    graph: Mapping[str, Sequence[str]],
    target: str,
    prob: np.ndarray,
) -> np.ndarray:
    """Per candidate, the best call path from the target: max over paths of the
    smallest anomaly probability of the nodes before it (the target included).

    1 for the target itself, 0 where no call path leads.  Nodes without
    series do not limit a path.
    """
    index = {name: k for k, name in enumerate(names)}
    best = {target: 1.0}
    heap = [(-1.0, target)]
    while heap:
        neg, node = heapq.heappop(heap)
        if -neg < best[node]:
            continue
        through = min(-neg, prob[index[node]] if node in index else 1.0)
        for callee in graph.get(node, ()):
            if through > best.get(callee, 0.0):
                best[callee] = through
                heapq.heappush(heap, (-through, callee))
    return np.array([best.get(name, 0.0) for name in names])


def _closure(start: str, edges: Mapping[str, Sequence[str] | set[str]]) -> set[str]:
    """``start`` and every node reachable from it along ``edges``."""
    seen = {start}
    stack = [start]
    while stack:
        for nxt in edges.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen
