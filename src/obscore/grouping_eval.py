"""How well anomalies are grouped into incidents, measured on the simulator.

Each run simulates the default platform with three injected incidents, two
of them overlapping in time (the second starts 5-25 minutes after the first)
and the third overlapping one of them half of the time, on top of the
simulator's background blips.  Incidents that overlap have different cause
services (kinds, regions and magnitudes are drawn freely).  The pipeline
(:meth:`Engine.replay`) runs over the span, and every anomaly is attributed
to the injected incident it belongs to, or to none (noise).

The attribution asks the simulator what each incident did.  The run is
simulated again without each incident in turn (same seed, so the same noise
and blips), and the anomaly's signal is compared between the full run and
each counterfactual one over the anomaly's span.  The incident whose removal
changes the signal most owns the anomaly, provided the change is at least
``min_effect`` (3) robust standard deviations of that signal over the hour
before (in the run without that incident); otherwise no incident caused it
and it is noise.  Only incidents that had started by the anomaly's onset
count: one that started later may make an anomaly worse, but the onset, and
so the anomaly, was the earlier incident's.  An incident without which the
anomaly would not have fired at all (the detector, run on that
counterfactual signal, finds no anomaly within a minute of its onset) owns
it ahead of that rule, when it changed the signal by at least one robust
standard deviation over the span; the spread of an hour of a signal's level
includes its daily trend and earlier incidents' steps, so it understates
effects that plainly made the anomaly.  This follows the simulated cause
even where incidents overlap on the same services, which a rule on the call
graph and the time alone cannot (the effects of a cause often reach a
service that is itself the cause of another incident).  :func:`attribute` is
that rule, kept as a cross-check: an anomaly of a caller (or, for a traffic
surge, a callee) of the cause in the incident's region, starting within its
span.

Scores are pairwise over the anomalies of a run: a pair is *truly together*
when both belong to the same injected incident (noise anomalies are each
alone, so a noise anomaly grouped with anything is a wrong join), and
*grouped together* when the pipeline put both in one incident.  Precision is
the share of grouped pairs that are truly together, recall the share of
truly-together pairs that are grouped.  A *split* counts the distinct
pipeline incidents that one injected incident's anomalies fall in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from obscore.catalogue import from_platform
from obscore.correlate import group_anomalies
from obscore.engine import Engine
from obscore.model import MetricKind
from obscore.pipeline import Anomaly, Signal, derive_signals, detect_runs
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


Series = tuple[np.ndarray, np.ndarray]  # ts (int64 ms), values (float64)


def signals_of(sim, step_ms: int) -> dict[str, Series]:
    """The pipeline's signals of a simulated run, by signal key."""
    engine = Engine(catalogue=from_platform(sim.platform))
    engine.ingest(sim.table, sim.index)
    derived = derive_signals(
        engine.queries, engine.config.metrics, sim.start_ms, sim.end_ms - step_ms, step_ms
    )
    return {s.key: (s.ts, s.values) for s in derived}


def attribute_by_effect(
    a: Anomaly,
    full: Mapping[str, Series],
    without: Sequence[Mapping[str, Series]],
    min_effect: float = 3.0,
    baseline_ms: int = H,
    starts_ms: Sequence[int] | None = None,
    fired: Sequence[Mapping[str, Sequence[tuple[int, int]]]] | None = None,
    min_necessary_effect: float = 1.0,
) -> int:
    """Index of the injected incident whose removal changes ``a``'s signal most.

    ``without[k]`` holds the signals of the run simulated without incident
    ``k``.  The change is the largest absolute difference over the anomaly's
    span, in robust standard deviations (1.4826 MAD) of the counterfactual
    signal over ``baseline_ms`` before the anomaly.  Returns -1 (noise) when
    no incident changes it by ``min_effect`` or more.

    With ``starts_ms`` (the incidents' starts), an incident that started more
    than a minute (the grid's slack) after the anomaly's onset cannot own it:
    an anomaly that one incident opened and a later one made worse belongs
    to the first, since its onset is what the grouping sees.

    With ``fired`` (``fired[k][signal]``: the ``(start_ms, end_ms)`` of the
    anomalies the detector finds on that signal in the run without incident
    ``k``), an incident without which the anomaly would not have fired (no
    anomaly there within a minute of its onset) owns it when it changed the
    signal by at least ``min_necessary_effect`` over the span; of several,
    the one that changed it most.  Only when no incident was necessary does
    ``min_effect`` decide.  The robust spread of a signal's level over an
    hour includes its daily trend and the steps of earlier incidents, so a
    real effect can measure under 3 of them (a 13 % drop of a service's sent
    bytes from the minute its database ran out of connections measured 2.0);
    whether the anomaly still fires without the incident does not depend on
    that scale.
    """
    ts, values = full[a.signal]
    span = (ts >= a.start_ms) & (ts <= a.end_ms)
    before = (ts >= a.start_ms - baseline_ms) & (ts < a.start_ms)
    best, best_z = -1, min_effect
    necessary, necessary_z = -1, min_necessary_effect
    for k, world in enumerate(without):
        if starts_ms is not None and starts_ms[k] - M > a.start_ms:
            continue  # an effect cannot start before its cause
        other = world.get(a.signal)
        if other is None or len(other[1]) != len(values):
            continue
        diff = np.abs(values[span] - other[1][span])
        if not np.isfinite(diff).any():
            continue
        ref = other[1][before]
        ref = ref[np.isfinite(ref)]
        sd = 1.4826 * float(np.median(np.abs(ref - np.median(ref)))) if len(ref) else 0.0
        if sd <= 0:
            sd = float(np.std(ref)) if len(ref) else 0.0
        z = float(np.nanmax(diff)) / sd if sd > 0 else (np.inf if np.nanmax(diff) > 0 else 0)
        if z >= best_z:
            best, best_z = k, z
        if fired is not None and z >= necessary_z:
            spans = fired[k].get(a.signal, ())
            if not any(s - M <= a.start_ms <= e + M for s, e in spans):
                necessary, necessary_z = k, z
    return necessary if necessary >= 0 else best


def fired_spans(
    world: Mapping[str, Series], anomalies: Sequence[Anomaly], engine: Engine
) -> dict[str, list[tuple[int, int]]]:
    """``(start_ms, end_ms)`` of the anomalies the detector finds in ``world``
    on each signal that has one of ``anomalies``, with ``engine``'s settings."""
    out: dict[str, list[tuple[int, int]]] = {}
    for a in {a.signal: a for a in anomalies}.values():
        series = world.get(a.signal)
        if series is None:
            continue
        spec = engine.config.metrics.get(a.metric)
        counted = spec is not None and spec.kind is MetricKind.COUNTER and not spec.unit
        window_s = 60.0 if counted else None
        sig = Signal(a.metric, a.labels, series[0], series[1], window_s)
        cfg = engine.config
        runs = detect_runs(sig, cfg.zscore_window_ms, cfg.zscore_threshold)
        out[a.signal] = [(r.start_ms, r.end_ms) for r in runs]
    return out


def score_run(
    anomalies: list[Anomaly],
    found: list[Found],
    truth: Sequence[int],
    seed: int,
) -> RunScore:
    """Pairwise precision/recall and splits of one run (see the module docstring).

    ``truth[i]`` is the injected incident anomaly ``i`` belongs to, -1 for noise.
    """
    pred_of = {(a.signal, a.start_ms): inc.id for inc in found for a in inc.anomalies}
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
        for k in sorted({t for t in truth if t >= 0})
    )
    return RunScore(
        seed, n, sum(t >= 0 for t in truth), len(found), grouped, together, tp, splits
    )


def regroup(anomalies: list[Anomaly], engine: Engine) -> list[Found]:
    """Incidents of :func:`obscore.correlate.group_anomalies` over ``anomalies``.

    Grouped at once rather than tick by tick;
    :func:`obscore.pipeline.group_incidents` delegates to the same function, so over
    a replay this gives the replay's own incidents (issue #9).  Pass it as ``group``
    to :func:`evaluate_grouping`, or a variant of it, to score a grouping without
    running it in the pipeline.
    """
    groups = group_anomalies(anomalies, engine.catalogue)
    return [
        Found(k, g.start_ms, g.end_ms, [anomalies[i] for i in g.members], list(g.reasons))
        for k, g in enumerate(groups, 1)
    ]


def evaluate_grouping(
    runs: int = 50,
    hours: float = 6.0,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
    group: Callable[[list[Anomaly], Engine], list[Found]] | None = None,
) -> dict:
    """Score the grouping over ``runs`` seeded simulations.

    ``group``, when given, regroups the anomalies of each replay (for
    measuring a grouping that the pipeline does not use yet); by default the
    replay's own incidents are scored.

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

        def run(incidents: list[Incident]):
            return simulate(
                seed=run_seed,
                hours=hours,
                incidents=incidents,
                start_ms=start,
                platform=platform,
            )

        sim = run(injected)
        engine = Engine(catalogue=from_platform(platform))
        engine.ingest(sim.table, sim.index)
        result = engine.replay(sim.start_ms, sim.end_ms - sim.step_ms)
        full = signals_of(sim, sim.step_ms)
        without = [
            signals_of(run(injected[:k] + injected[k + 1 :]), sim.step_ms)
            for k in range(len(injected))
        ]
        starts = [inc.start_ms for inc in injected]
        fired = [fired_spans(w, result.anomalies, engine) for w in without]
        truth = [
            attribute_by_effect(a, full, without, starts_ms=starts, fired=fired)
            for a in result.anomalies
        ]
        found = result.incidents if group is None else group(result.anomalies, engine)
        scores.append(score_run(result.anomalies, found, truth, run_seed))
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
