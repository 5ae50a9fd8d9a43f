"""rank.py's confidence: Bayes' rule over the candidates and "none of these"."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from obscore.diagnose.rank import (
    DEPENDENT_KINDS,
    INCIDENT_LIKELIHOODS,
    LIKELIHOODS,
    QUIET_RATES,
    RankConfig,
    candidate_prior,
    posterior,
    rank_candidates,
)
from obscore.diagnose.rca import Likelihood


def test_posterior_is_prior_times_likelihood_ratio_normalised_with_none():
    table = {"a": Likelihood(0.8, 0.2)}
    evidence = {"a": np.array([1.0, 0.0, 0.5])}
    conf, none, log_lr = posterior(evidence, np.ones(3), 0.5, table, quiet_rates={})
    assert log_lr == pytest.approx([math.log(4), math.log(0.25), 0.0])
    # odds against "none": prior 0.5 / 3 over 0.5, times the ratio
    odds = np.array([4.0, 0.25, 1.0]) / 3
    assert conf == pytest.approx(odds / (1 + odds.sum()))
    assert none == pytest.approx(1 / (1 + odds.sum()))
    assert conf.sum() + none == pytest.approx(1.0)


def test_posterior_fault_factor_counts_every_candidate_against_a_quiet_period():
    table = {"a": Likelihood(0.9, 0.2)}
    quiet = {"a": 0.05}
    calm = posterior({"a": np.zeros(5)}, np.ones(5), 0.5, table, quiet_rates=quiet)
    busy = posterior({"a": np.array([1.0, 1, 1, 0, 0])}, np.ones(5), 0.5, table, quiet_rates=quiet)
    assert calm[1] > 0.9  # nothing moved: "none of these"
    assert busy[1] < 0.01  # three candidates moved: some fault
    # the incident-level symptom multiplies every candidate's odds alike
    base = posterior({"a": np.array([1.0, 0])}, np.ones(2), 0.5, table, quiet_rates={})
    sym = posterior(
        {"a": np.array([1.0, 0])}, np.ones(2), 0.5, table, quiet_rates={},
        incident_evidence={"symptom": 1.0},
    )
    ratio = INCIDENT_LIKELIHOODS["symptom"].cause / INCIDENT_LIKELIHOODS["symptom"].other
    assert (sym[0] / sym[1]) == pytest.approx(ratio * base[0] / base[1])


def test_posterior_averages_a_group_of_dependent_kinds():
    table = {"a": Likelihood(0.8, 0.2), "b": Likelihood(0.8, 0.2)}
    ev = {"a": np.array([1.0]), "b": np.array([1.0])}
    _, _, summed = posterior(ev, np.ones(1), 0.5, table, quiet_rates={}, dependent=())
    _, _, averaged = posterior(ev, np.ones(1), 0.5, table, quiet_rates={}, dependent=[("a", "b")])
    assert summed == pytest.approx([2 * math.log(4)])
    assert averaged == pytest.approx([math.log(4)])


def test_posterior_of_no_candidate_is_none():
    conf, none, _ = posterior({}, np.zeros(0), 0.5, LIKELIHOODS)
    assert len(conf) == 0 and none == 1.0


def test_candidate_prior_weighs_down_candidates_outside_the_target_call_tree():
    graph = {"web": ["api"], "api": ["db"], "db": [], "batch": ["db"]}
    names = ["web", "api", "db", "batch"]
    assert list(candidate_prior(names, graph, "api", 0.1)) == [0.1, 1.0, 1.0, 0.1]
    assert list(candidate_prior(names, graph, None, 0.1)) == [1.0] * 4
    assert list(candidate_prior(names, None, "api", 0.1)) == [1.0] * 4


def test_rank_candidates_reports_prior_and_log_ratio_and_sums_to_one(rng):
    keys = [("a", "latency"), ("b", "latency"), ("c", "cpu")]
    incident = rng.normal(size=(10, 3))
    incident[2:, 1] += 40
    ranking = rank_candidates(rng.normal(size=(300, 3)), incident, keys, onset_row=2)
    top = ranking.candidates[0]
    assert top.service == "b" and top.evidence["prior"] == 1.0
    assert top.evidence["log_lr"] > 0 > ranking.candidates[1].evidence["log_lr"]
    total = sum(c.confidence for c in ranking.candidates) + ranking.confidence_none
    assert total == pytest.approx(1.0)
    # the table can be replaced: with no kind telling the candidates apart,
    # the (uniform) prior rules
    flat = {k: Likelihood(0.5, 0.5) for k in LIKELIHOODS}
    even = rank_candidates(
        rng.normal(size=(300, 3)), incident, keys, onset_row=2,
        config=RankConfig(likelihoods=flat),
    )
    conf = [c.confidence for c in even.candidates]
    assert conf == pytest.approx([conf[0]] * 3)


def test_documented_numbers_are_the_module_constants():
    text = (Path(__file__).parents[2] / "docs" / "diagnosis.md").read_text()
    cfg = RankConfig()
    assert f"prior_none` = **{cfg.prior_none:g}**" in text
    assert f"prior_unreachable` = **{cfg.prior_unreachable:g}**" in text
    for kind, lik in LIKELIHOODS.items():
        assert f"| {kind} | {lik.cause:g} | {lik.other:g} |" in text, kind
    for kind, rate in QUIET_RATES.items():
        assert f"| {kind} | {LIKELIHOODS[kind].other:g} | {rate:g} |" in text, kind
    for kind, lik in INCIDENT_LIKELIHOODS.items():
        assert f"| {kind} | {lik.cause:g} | {lik.other:g} |" in text, kind
    for group in DEPENDENT_KINDS:
        assert ", ".join(group) in text
