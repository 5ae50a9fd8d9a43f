"""The confidence is a posterior: documented priors and likelihoods, a "none" hypothesis."""

from __future__ import annotations

import math

import pytest

from obscore.diagnose.rca import (
    FAULT_LIKELIHOODS,
    LIKELIHOODS,
    PRIOR_NONE,
    Candidate,
    Likelihood,
    fault_evidence,
    posterior,
)


def _cand(service, metric="cpu_usage", **ev):
    base = dict.fromkeys(("anomalous", "strength", "magnitude", "onset", "granger", "correlation", "pattern", "change", "history"), 0.0)
    base.update(ev)
    return Candidate(service, metric, 0.0, base)


def _cause(service="db"):
    return _cand(service, anomalous=1, strength=1, magnitude=1, onset=1, granger=1, correlation=1, pattern=1)


def _victim(service):
    return _cand(service, "request_latency", anomalous=1, strength=0.3, magnitude=0.6, onset=0.2, correlation=1)


def test_likelihood_log_ratio_mixes_present_and_absent():
    lik = Likelihood(0.8, 0.2)
    assert lik.log_ratio(1.0) == pytest.approx(math.log(4))
    assert lik.log_ratio(0.0) == pytest.approx(math.log(0.25))
    assert lik.log_ratio(0.5) == pytest.approx(0.0)
    assert lik.log_ratio(7.0) == lik.log_ratio(1.0)  # clipped to [0, 1]


@pytest.mark.parametrize("cause, other", [(0.0, 0.5), (1.0, 0.5), (0.5, 0.0), (0.5, 1.2)])
def test_likelihood_outside_the_open_unit_interval_is_refused(cause, other):
    with pytest.raises(ValueError, match="likelihood (cause|other) must be in \\(0, 1\\)"):
        Likelihood(cause, other)


def test_documented_numbers_are_the_module_constants():
    text = (__import__("pathlib").Path(__file__).parents[2] / "docs" / "diagnosis.md").read_text()
    assert f"`PRIOR_NONE` = **{PRIOR_NONE:g}**" in text
    for kind, lik in LIKELIHOODS.items():
        slope = lik.log_ratio(1) - lik.log_ratio(0)
        assert f"| {kind} | {lik.cause:g} | {lik.other:g} | {slope:.1f} |" in text, kind
    for kind, lik in FAULT_LIKELIHOODS.items():
        assert f"| {lik.cause:g} | {lik.other:g} |" in text, kind


def test_posterior_sums_to_one_with_none_and_ranks_the_cause_first():
    cands = [_victim("gateway"), _cause("db"), _victim("auth"), _cand("feed")]
    none = posterior(cands)
    assert sum(c.confidence for c in cands) + none == pytest.approx(1.0)
    assert max(cands, key=lambda c: c.confidence).service == "db"
    assert cands[1].confidence >= 0.8  # corroborated, large, first, matching a pattern


def test_a_lone_small_anomaly_gives_no_confident_cause():
    # a false alarm: one signal, modest change, nothing else moved with it
    cands = [_cand("db", anomalous=1, strength=1, magnitude=0.2, onset=1, pattern=0.3), _cand("auth"), _cand("feed")]
    none = posterior(cands)
    assert max(c.confidence for c in cands) < 0.5
    assert none > 0.5
    assert fault_evidence(cands)["corroboration"] == 0.0


def test_quiet_candidates_leave_everything_to_none():
    cands = [_cand("db"), _cand("auth")]
    none = posterior(cands)
    assert none > 0.99
    assert posterior([]) == 1.0


def test_history_evidence_raises_the_remembered_cause():
    a, b = _victim("db"), _victim("auth")
    posterior([a, b])
    assert a.confidence == pytest.approx(b.confidence)
    a2, b2 = _victim("db"), _victim("auth")
    a2.evidence["history"] = 0.9
    posterior([a2, b2])
    assert a2.confidence > 3 * b2.confidence


def test_prior_none_moves_mass_to_none():
    low = [_cause()]
    high = [_cause()]
    assert posterior(high, prior_none=0.99) > posterior(low, prior_none=0.01)
