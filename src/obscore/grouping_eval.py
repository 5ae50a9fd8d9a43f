"""How well anomalies are grouped into incidents, measured on the simulator.

Each run simulates the default platform with three injected incidents, two
of them overlapping in time (the second starts 5-25 minutes after the first)
and the third overlapping one of them half of the time, on top of the
simulator's background blips.  Incidents that overlap have different cause
services (kinds, regions and magnitudes are drawn freely).  The pipeline (:meth:`Engine.replay`) runs
over the span, and every anomaly is attributed to the injected incident it
belongs to, or to none (noise):

- an anomaly of service ``s`` belongs to an incident caused at service ``c``
  when ``s`` is ``c`` or one of the services whose requests reach ``c``
  (effects travel up the call graph; a traffic surge also reaches the
  services ``c`` calls), its region is the incident's (or the incident hit
  every region), and it starts within the incident's span (from a minute
  before to ``settle_ms``, 10 minutes, after it);
- an anomaly with no service label (business signals) belongs by region and
  time alone;
- when two incidents fit, the one caused at the anomaly's own service wins,
  then the nearer one in the call graph, then the earlier one.

Scores are pairwise over the anomalies of a run: a pair is *truly together*
when both belong to the same injected incident (noise anomalies are each
alone), and *grouped together* when the pipeline put both in one incident.
Precision is the share of grouped pairs that are truly together, recall the
share of truly-together pairs that are grouped.  A *split* counts the
distinct pipeline incidents that one injected incident's anomalies fall in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from obscore.catalogue import from_platform
from obscore.engine import Engine
from obscore.pipeline import Anomaly
from obscore.pipeline import Incident as Found
from obscore.sim import (
    KINDS,
    Incident,
    Platform,
    candidate_services,
    default_platform,
    simulate,
)
from obscore.sim.incident import CAUSE_METRICS

logger = logging.getLogger(__name__)

M = 60_000
H = 3_600_000


@dataclass(frozen=True, slots=True)
class RunScore:
    """The grouping figures of one simulated run."""

    seed: int
    anomalies: int
    attributed: int
    incidents_found: int
    grouped_pairs: int
    together_pairs: int
    true_positive_pairs: int
    splits: tuple[int, ...]  # per injected incident with anomalies

    @property
    def precision(self) -> float:
        return (
            self.true_positive_pairs / self.grouped_pairs if self.grouped_pairs else 1.0
        )

    @property
    def recall(self) -> float:
        return (
            self.true_positive_pairs / self.together_pairs
            if self.together_pairs
            else 1.0
        )


def draw_incidents(
    platform: Platform, start_ms: int, hours: float, seed: int
) -> list[Incident]:
    """Three incidents, at least two overlapping, after a 2 h warm-up."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x6E0]))
    span_end = start_ms + int(hours * H)

    def one(start: int) -> Incident:
        kind = str(rng.choice(KINDS))
        service = str(rng.choice(list(candidate_services(platform, kind))))
        region = (
            None if rng.random() < 0.25 else str(rng.choice(list(platform.regions)))
        )
        end = min(start + int(rng.integers(20, 46)) * M, span_end - 10 * M)
        return Incident(
            kind,
            service,
            CAUSE_METRICS[kind],
            region,
            start,
            end,
            round(float(rng.uniform(0.8, 1.4)), 2),
        )

    def other(start: int, *taken: Incident) -> Incident:
        # overlapping incidents have different causes: the same service twice at
        # once is one problem to whoever watches it
        while True:
            inc = one(start)
            if all(inc.service != t.service for t in taken):
                return inc

    first = one(start_ms + 2 * H + int(rng.integers(0, 60)) * M)
    second = other(first.start_ms + int(rng.integers(5, 26)) * M, first)
    if rng.random() < 0.5:
        third = other(second.start_ms + int(rng.integers(5, 26)) * M, first, second)
    else:
        third = one(max(first.end_ms, second.end_ms) + int(rng.integers(40, 80)) * M)
    return [first, second, third]


def attribute(
    a: Anomaly, incidents: list[Incident], platform: Platform, settle_ms: int = 10 * M
) -> int:
    """Index of the injected incident ``a`` belongs to, or -1 for noise."""
    best, best_key = -1, None
    for k, inc in enumerate(incidents):
        # an effect cannot start before its cause (one minute of slack for the grid)
        if a.start_ms < inc.start_ms - M or a.start_ms > inc.end_ms + settle_ms:
            continue
        if inc.region is not None and a.region is not None and a.region != inc.region:
            continue
        svc = a.service
        if svc is None:
            hops = 99
        elif svc == inc.service:
            hops = 0
        else:
            near = _affected(platform, inc)
            if svc not in near:
                continue
            hops = 1 + near.index(svc)
        key = (hops, inc.start_ms)
        if best_key is None or key < best_key:
            best, best_key = k, key
    return best


def _affected(platform: Platform, inc: Incident) -> tuple[str, ...]:
    """Services an incident reaches besides its cause, nearest first: the callers,
    and for a traffic surge also the callees (they get part of the extra traffic)."""
    out = list(platform.upstream(inc.service))
    if inc.kind == "traffic_surge":
        frontier = [inc.service]
        while frontier:
            nxt = []
            for name in frontier:
                for callee in platform.callees(name):
                    if callee not in out and callee != inc.service:
                        out.append(callee)
                        nxt.append(callee)
            frontier = nxt
    return tuple(out)


def score_run(
    anomalies: list[Anomaly],
    found: list[Found],
    injected: list[Incident],
    platform: Platform,
    seed: int,
) -> RunScore:
    """Pairwise precision/recall and splits of one run (see the module docstring)."""
    pred_of = {(a.signal, a.start_ms): inc.id for inc in found for a in inc.anomalies}
    truth = [attribute(a, injected, platform) for a in anomalies]
    pred = [pred_of[(a.signal, a.start_ms)] for a in anomalies]
    grouped = together = tp = 0
    n = len(anomalies)
    for i in range(n):
        for j in range(i + 1, n):
            same_pred = pred[i] == pred[j]
            same_truth = truth[i] >= 0 and truth[i] == truth[j]
            grouped += same_pred
            together += same_truth
            tp += same_pred and same_truth
    splits = tuple(
        len({p for p, t in zip(pred, truth) if t == k})
        for k in range(len(injected))
        if k in truth
    )
    return RunScore(
        seed, n, sum(t >= 0 for t in truth), len(found), grouped, together, tp, splits
    )


def evaluate_grouping(
    runs: int = 50,
    hours: float = 6.0,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
) -> dict:
    """Score the grouping over ``runs`` seeded simulations.

    Returns
    -------
    dict
        ``precision`` and ``recall`` pooled over all pairs of all runs, the
        same ``mean`` over runs, the ``worst`` run (lowest of precision and
        recall) with its figures, the largest ``max_split`` and how many
        injected incidents were split into more than 2, and ``per_run``.
    """
    platform = default_platform()
    scores = []
    for r in range(runs):
        run_seed = seed + r
        start = 1_767_225_600_000
        injected = draw_incidents(platform, start, hours, run_seed)
        sim = simulate(
            seed=run_seed,
            hours=hours,
            incidents=injected,
            start_ms=start,
            platform=platform,
        )
        engine = Engine(catalogue=from_platform(platform))
        engine.ingest(sim.table, sim.index)
        result = engine.replay(sim.start_ms, sim.end_ms - sim.step_ms)
        scores.append(
            score_run(result.anomalies, result.incidents, injected, platform, run_seed)
        )
        if progress is not None:
            progress()
    grouped = sum(s.grouped_pairs for s in scores)
    together = sum(s.together_pairs for s in scores)
    tp = sum(s.true_positive_pairs for s in scores)
    worst = min(scores, key=lambda s: min(s.precision, s.recall))
    splits = [k for s in scores for k in s.splits]
    return {
        "runs": runs,
        "hours": hours,
        "precision": tp / grouped if grouped else 1.0,
        "recall": tp / together if together else 1.0,
        "mean_precision": float(np.mean([s.precision for s in scores])),
        "mean_recall": float(np.mean([s.recall for s in scores])),
        "worst": {
            "seed": worst.seed,
            "precision": worst.precision,
            "recall": worst.recall,
            "anomalies": worst.anomalies,
            "attributed": worst.attributed,
            "incidents_found": worst.incidents_found,
            "splits": list(worst.splits),
        },
        "max_split": max(splits, default=0),
        "split_over_2": sum(k > 2 for k in splits),
        "injected_with_anomalies": len(splits),
        "anomalies": sum(s.anomalies for s in scores),
        "attributed": sum(s.attributed for s in scores),
        "per_run": [
            {
                "seed": s.seed,
                "precision": s.precision,
                "recall": s.recall,
                "anomalies": s.anomalies,
                "attributed": s.attributed,
                "incidents_found": s.incidents_found,
                "splits": list(s.splits),
            }
            for s in scores
        ],
    }
