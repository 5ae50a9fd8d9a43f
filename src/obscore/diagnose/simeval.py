"""Diagnosis accuracy on the simulator: seeded incidents of every kind, run
through the whole engine, ranked against the ground truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One injected incident: whether it was detected and the cause's ranks."""

    seed: int
    kind: str
    service: str
    metric: str
    detected: bool
    service_rank: int | None  # 1-based rank of the true service, None if absent
    metric_rank: int | None  # 1-based rank of the true (service, metric)
    confidence: float  # the top candidate's confidence
    top_is_right: bool


def _ranks(diag, truth) -> tuple[int | None, int | None]:
    services: list[str] = []
    service_rank = metric_rank = None
    for k, c in enumerate(diag.candidates, 1):
        if c.service not in services:
            services.append(c.service)
        if service_rank is None and c.service == truth.service:
            service_rank = len(services)
        if metric_rank is None and c.service == truth.service and c.metric == truth.metric:
            metric_rank = k
    return service_rank, metric_rank


def accuracy(ranks: list[int | None], k: int) -> float:
    """AC@k: the share of cases whose true cause is in the top k."""
    if not ranks:
        return float("nan")
    return float(np.mean([r is not None and r <= k for r in ranks]))


def avg_at(ranks: list[int | None], k: int = 5) -> float:
    """Avg@k: the mean of AC@1 .. AC@k."""
    return float(np.mean([accuracy(ranks, j) for j in range(1, k + 1)]))


def evaluate_sim(
    n_incidents: int = 100,
    per_run: int = 4,
    seed: int = 0,
    hours: float = 24.0,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Inject ``n_incidents`` seeded incidents (``per_run`` a simulated day),
    run the engine on each day and score the diagnoses.

    Returns
    -------
    dict
        ``service`` and ``metric`` AC@1, AC@3, Avg@5; detection rate; the
        chance level for a service (1 / services) and for a metric;
        calibration (share right among diagnoses with confidence >= 0.8; on
        the pipeline's incidents that overlap no injected incident, i.e.
        false alarms in normal periods, how many there were, the largest
        top confidence and how many reached 0.8) and the per-case rows.
    """
    from obscore.catalogue import from_platform
    from obscore.engine import Engine
    from obscore.sim import KINDS, default_platform, random_incidents, simulate

    platform = default_platform()
    cases: list[CaseResult] = []
    normal: list[float] = []  # top confidence on incidents that overlap no injected one
    run = 0
    while len(cases) < n_incidents:
        run_seed = seed * 1000 + run
        start = 1_767_225_600_000
        end = start + int(hours * 3_600_000)
        want = min(per_run, n_incidents - len(cases))
        truths = random_incidents(platform, start, end, want, run_seed, KINDS)
        sim = simulate(seed=run_seed, hours=hours, incidents=truths, start_ms=start, platform=platform)
        engine = Engine(catalogue=from_platform(platform))
        engine.ingest(sim.table, sim.index)
        result = engine.run_pipeline(sim.start_ms, sim.end_ms, sim.step_ms)
        for truth in sim.incidents:
            hits = [i for i in result.incidents if i.start_ms <= truth.end_ms and truth.start_ms <= i.end_ms]
            if not hits:
                cases.append(CaseResult(run_seed, truth.kind, truth.service, truth.metric, False, None, None, 0.0, False))
                continue
            inc = max(hits, key=lambda i: len(i.anomalies))
            diag = engine.diagnose(inc)
            s_rank, m_rank = _ranks(diag, truth)
            top = diag.top
            cases.append(
                CaseResult(
                    run_seed, truth.kind, truth.service, truth.metric, True, s_rank, m_rank,
                    top.confidence if top else 0.0,
                    bool(top and top.service == truth.service),
                )
            )
        for inc in result.incidents:
            if not any(inc.start_ms <= t.end_ms and t.start_ms <= inc.end_ms for t in sim.incidents):
                top = engine.diagnose(inc).top
                normal.append(top.confidence if top is not None else 0.0)
        if progress is not None:
            progress(len(sim.incidents))
        run += 1
    s_ranks = [c.service_rank for c in cases]
    m_ranks = [c.metric_rank for c in cases]
    sure = [c for c in cases if c.confidence >= 0.8]
    n_metrics = 6
    by_kind = {}
    for kind in sorted({c.kind for c in cases}):
        ks = [c for c in cases if c.kind == kind]
        by_kind[kind] = {
            "cases": len(ks),
            "detected": sum(c.detected for c in ks),
            "service_ac1": accuracy([c.service_rank for c in ks], 1),
            "metric_ac1": accuracy([c.metric_rank for c in ks], 1),
        }
    return {
        "dataset": "sim",
        "cases": len(cases),
        "detected": float(np.mean([c.detected for c in cases])),
        "service": {"AC@1": accuracy(s_ranks, 1), "AC@3": accuracy(s_ranks, 3), "Avg@5": avg_at(s_ranks)},
        "metric": {"AC@1": accuracy(m_ranks, 1), "AC@3": accuracy(m_ranks, 3), "Avg@5": avg_at(m_ranks)},
        "chance": {"service_AC@1": 1 / len(platform.services), "metric_AC@1": 1 / (len(platform.services) * n_metrics)},
        "calibration": {
            "confident": len(sure),
            "confident_right": float(np.mean([c.top_is_right for c in sure])) if sure else float("nan"),
            "normal_incidents": len(normal),
            "normal_max_confidence": max(normal, default=float("nan")),
            "normal_confident": sum(c >= 0.8 for c in normal),
        },
        "by_kind": by_kind,
        "per_case": [
            {"seed": c.seed, "kind": c.kind, "service": c.service, "detected": c.detected,
             "service_rank": c.service_rank, "metric_rank": c.metric_rank,
             "confidence": round(c.confidence, 4)}
            for c in cases
        ],
    }
