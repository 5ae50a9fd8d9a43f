"""The grouping-quality harness: attribution, pairwise scores, and the figures over 50 runs."""

from __future__ import annotations

import os

import pytest

from obscore.grouping_eval import (
    attribute,
    draw_incidents,
    evaluate_grouping,
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
    s = score_run([*members, noise], found, [inc], platform, 0)
    assert (s.grouped_pairs, s.together_pairs, s.true_positive_pairs) == (6, 3, 3)
    assert s.precision == 0.5 and s.recall == 1.0 and s.splits == (1,)


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


@pytest.mark.slow
@needs_eval
def test_grouping_over_50_runs_keeps_recall_and_splits_no_incident_in_more_than_2(
    fifty_runs,
):
    # on this tree: recall 0.996 pooled, largest split 2 (148 injected incidents with anomalies)
    assert fifty_runs["split_over_2"] == 0
    assert fifty_runs["recall"] >= 0.95


@pytest.mark.slow
@needs_eval
@pytest.mark.xfail(
    reason="#9: pooled pairwise precision 0.53 (worst run 0.09) < 0.95: overlapping "
    "incidents on connected services of one region are merged into one incident",
    strict=True,
)
def test_grouping_over_50_runs_has_pairwise_precision_of_095(fifty_runs):
    assert fifty_runs["precision"] >= 0.95
