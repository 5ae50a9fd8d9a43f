"""The grouping-quality harness: attribution, pairwise scores, and the figures over 50 runs."""

from __future__ import annotations

import os

import numpy as np
import pytest

from obscore.grouping_eval import (
    attribute,
    attribute_by_effect,
    draw_incidents,
    evaluate_grouping,
    regroup,
    score_run,
)
from obscore.model import LabelSet
from obscore.pipeline import Anomaly
from obscore.pipeline import Incident as Found
from obscore.sim import default_platform

M = 60_000
T0 = 1_767_225_600_000


def _a(service, start, region="eu-west"):
    labels = (
        {"region": region}
        if service is None
        else {"service": service, "region": region}
    )
    return Anomaly(
        f"x{{{service},{region},{start}}}",
        "error_rate",
        LabelSet(labels),
        start,
        start + 5 * M,
        start,
        6.0,
        0.6,
    )


def test_draw_gives_two_overlapping_incidents_with_different_causes():
    platform = default_platform()
    for seed in range(20):
        first, second, _ = draw_incidents(platform, T0, 6, seed)
        assert first.start_ms < second.start_ms < first.end_ms
        assert first.service != second.service


def test_attribution_follows_the_call_graph_and_time():
    platform = default_platform()
    first, second, third = draw_incidents(platform, T0, 6, 0)
    cause = _a(first.service, first.start_ms, first.region or "eu-west")
    assert attribute(cause, [first, second, third], platform) == 0
    assert (
        attribute(_a(first.service, first.start_ms - 30 * M), [first], platform) == -1
    )  # before the cause
    assert (
        attribute(_a(first.service, first.end_ms + 30 * M), [first], platform) == -1
    )  # long after


def test_pairwise_scores_count_noise_as_alone():
    platform = default_platform()
    inc = draw_incidents(platform, T0, 6, 0)[0]
    region = inc.region or "eu-west"
    members = [_a(inc.service, inc.start_ms + k * M, region) for k in range(3)]
    noise = _a(inc.service, T0, region)  # hours before the incident
    found = [Found(1, T0, inc.end_ms, [*members, noise])]
    s = score_run([*members, noise], found, [0, 0, 0, -1], 0)
    # the noise anomaly's three pairs with the members are wrong joins
    assert (s.grouped_pairs, s.together_pairs, s.true_positive_pairs) == (6, 3, 3)
    assert s.precision == 0.5 and s.recall == 1.0 and s.splits == (1,)
    # two noise anomalies grouped together are a wrong join too
    s = score_run([noise, members[0]], [Found(1, T0, inc.end_ms, [noise, members[0]])],
                  [-1, -1], 0)
    assert (s.grouped_pairs, s.together_pairs, s.precision) == (1, 0, 0.0)


def test_attribution_by_effect_follows_the_incident_whose_removal_changes_the_signal():
    ts = T0 + np.arange(0, 3 * 3_600_000, 10_000)
    rng = np.random.default_rng(1)
    base = 100 + rng.normal(0, 1, len(ts))
    on = (ts >= T0 + 2 * 3_600_000) & (ts < T0 + 2 * 3_600_000 + 20 * M)
    a = _a("feed", T0 + 2 * 3_600_000)
    full = {a.signal: (ts, base + 10 * on)}  # incident 1 moved it, incident 0 did not
    without = [{a.signal: (ts, base + 10 * on)}, {a.signal: (ts, base)}]
    assert attribute_by_effect(a, full, without) == 1
    # a change within the noise (under 3 robust sd) is nobody's: noise
    small = {a.signal: (ts, base + 1.0 * on)}
    assert attribute_by_effect(a, small, [{a.signal: (ts, base)}]) == -1
    # a signal no counterfactual run has is noise, not an error
    assert attribute_by_effect(a, full, [{}]) == -1
    # an incident that started after the onset cannot own the anomaly, however
    # much it made it worse: the onset was the earlier incident's
    worse = {a.signal: (ts, base + 10 * on + 30 * (ts >= a.start_ms + 5 * M) * on)}
    without = [{a.signal: (ts, base + 30 * (ts >= a.start_ms + 5 * M) * on)},
               {a.signal: (ts, base + 10 * on)}]
    assert attribute_by_effect(a, worse, without) == 1
    starts = [a.start_ms, a.start_ms + 5 * M]
    assert attribute_by_effect(a, worse, without, starts_ms=starts) == 0


def test_attribution_by_effect_prefers_the_incident_without_which_it_would_not_fire():
    ts = T0 + np.arange(0, 3 * 3_600_000, 10_000)
    rng = np.random.default_rng(2)
    base = 100 + rng.normal(0, 1, len(ts))
    on = (ts >= T0 + 2 * 3_600_000) & (ts < T0 + 2 * 3_600_000 + 20 * M)
    a = _a("feed", T0 + 2 * 3_600_000)
    full = {a.signal: (ts, base + 2 * on)}
    without = [{a.signal: (ts, base)}]
    # a change of 2, about 2 robust sd of the hour before: under 3
    assert attribute_by_effect(a, full, without) == -1
    # but the anomaly does not fire without the incident: the incident made it
    assert attribute_by_effect(a, full, without, fired=[{a.signal: []}]) == 0
    # still firing without it: the 3 sd rule decides (noise here)
    still = [{a.signal: [(a.start_ms, a.end_ms)]}]
    assert attribute_by_effect(a, full, without, fired=still) == -1
    # no change at all over the span owns nothing, even if the detector differs
    assert attribute_by_effect(a, {a.signal: (ts, base)}, without, fired=[{}]) == -1


# 50 runs take about 3 minutes on 2 shared cores: kept out of the default run.
needs_eval = pytest.mark.skipif(
    not os.environ.get("OBSCORE_EVAL"),
    reason="50 simulated runs take ~3 min; set OBSCORE_EVAL=1 (or run obscore eval grouping -)",
)


@pytest.fixture(scope="module")
def fifty_runs():
    r = evaluate_grouping(runs=50)
    print({k: v for k, v in r.items() if k != "per_run"})
    return r


@pytest.fixture(scope="module")
def fifty_runs_regrouped():
    r = evaluate_grouping(runs=50, group=regroup)
    print({k: v for k, v in r.items() if k != "per_run"})
    return r


@pytest.mark.slow
@needs_eval
def test_grouping_over_50_runs_has_pairwise_precision_of_095(fifty_runs):
    # the pipeline's grouping (pipeline.group_incidents -> correlate.group_anomalies)
    # measured 0.955 pooled, worst run seed 37 (precision 0.68, recall 0.57); other
    # seeds in docs/pipeline.md (150-199: 0.930, 200-249: 0.928, 300-349: 0.928)
    assert fifty_runs["precision"] >= 0.95


@pytest.mark.slow
@needs_eval
def test_grouping_over_50_runs_has_pairwise_recall_of_095(fifty_runs):
    # measured 0.973 pooled (seeds 50-99: 0.979, 100-149: 0.978, 200-249: 0.943)
    assert fifty_runs["recall"] >= 0.95


@pytest.mark.slow
@needs_eval
@pytest.mark.xfail(
    reason="#9: 1 of 149 injected incidents (seed 37, three incidents in us-east "
    "at once) falls into 3 incidents: a weak anomaly of auth goes with auth's own "
    "memory leak and gateway's timeouts come back in the slow-db incident they "
    "fired in minutes before (9 of 1042 over seeds 0-349, docs/pipeline.md)",
    strict=True,
)
def test_grouping_over_50_runs_splits_no_incident_in_more_than_2(fifty_runs):
    assert fifty_runs["split_over_2"] == 0
