"""The diagnosis tests Granger causality in one batch, corrected across pairs."""

from __future__ import annotations

import numpy as np

from obscore.correlate import granger_best
from obscore.diagnose.rca import _granger_shares


def _per_pair(series, maxlag=3, alpha=0.05):
    """What the diagnosis did before: a loop over pairs, Bonferroni over lags only."""
    keys = list(series)
    out = {}
    for k in keys:
        hits = sum(
            granger_best(np.diff(series[k]), np.diff(series[o]), maxlag).p_value < alpha
            for o in keys if o != k
        )
        out[k] = hits / (len(keys) - 1)
    return out


def _planted(rng, n_series, n_points=200):
    walk = np.cumsum(rng.normal(size=(n_series, n_points)), axis=1)
    # series 0 drives 1 and 2 with a lag of one step (on first differences)
    d = np.diff(walk, axis=1)
    for j in (1, 2):
        d[j, 1:] += 1.5 * d[0, :-1]
    walk = np.concatenate([walk[:, :1], walk[:, :1] + np.cumsum(d, axis=1)], axis=1)
    return {(f"s{i}", "cpu_usage"): walk[i] for i in range(n_series)}


def test_batched_granger_finds_the_planted_links_as_the_pair_loop_did(rng):
    series = _planted(rng, 8)
    batched, loop = _granger_shares(series, 3, 0.05), _per_pair(series)
    assert batched[("s0", "cpu_usage")] == 2 / 7  # exactly the two planted links
    assert loop[("s0", "cpu_usage")] >= 2 / 7
    # the correction can only remove links, never add them
    assert all(batched[k] <= loop[k] + 1e-12 for k in series)


def test_batched_granger_makes_fewer_false_links_on_independent_walks():
    rng = np.random.default_rng(11)
    false_batched = false_loop = 0
    for _ in range(5):
        series = {(f"s{i}", "m"): np.cumsum(rng.normal(size=300)) for i in range(12)}
        false_batched += sum(_granger_shares(series, 3, 0.05).values())
        false_loop += sum(_per_pair(series).values())
    assert false_batched <= false_loop
    # 5 x 132 ordered pairs: after Benjamini-Hochberg almost none survive
    assert false_batched * 11 <= 3


def test_batched_granger_on_short_constant_and_unequal_series_is_zero_not_an_error():
    short = {("a", "m"): np.arange(5.0), ("b", "m"): np.arange(5.0) ** 2}
    assert _granger_shares(short, 3, 0.05) == {("a", "m"): 0.0, ("b", "m"): 0.0}
    const = {("a", "m"): np.ones(100), ("b", "m"): np.ones(100), ("c", "m"): np.ones(80)}
    assert set(_granger_shares(const, 3, 0.05).values()) == {0.0}
    assert _granger_shares({("a", "m"): np.ones(9)}, 3, 0.05) == {("a", "m"): 0.0}
