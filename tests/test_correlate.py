"""Granger and correlation checked against statsmodels and numpy."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.tsa.stattools import grangercausalitytests

from obscore.correlate import granger, lagged_correlation, pearson


@pytest.mark.parametrize("lag", [1, 2, 3, 5])
def test_granger_matches_statsmodels_ssr_ftest(rng, lag):
    n = 400
    x = rng.normal(size=n)
    y = np.zeros(n)
    for t in range(2, n):
        y[t] = 0.4 * y[t - 1] + 0.5 * x[t - 2] + rng.normal()
    ours = granger(x, y, lag)
    # statsmodels tests whether the 2nd column Granger-causes the 1st
    ref = grangercausalitytests(np.column_stack([y, x]), [lag])[lag][0]["ssr_ftest"]
    # both solve the same least squares problem; 1e-8 leaves room for LAPACK paths
    assert ours.f_stat == pytest.approx(ref[0], rel=1e-8)
    assert ours.p_value == pytest.approx(ref[1], rel=1e-8, abs=1e-300)


def test_granger_on_constant_series_says_why(rng):
    res = granger(np.ones(100), rng.normal(size=100), 2)
    assert res.p_value == 1.0 and res.reason == "constant series"


def test_granger_on_short_window_says_why():
    res = granger(np.arange(5.0), np.arange(5.0) ** 2, 3)
    assert res.p_value == 1.0 and res.reason.startswith("too short")


def test_granger_drops_non_finite_rows(rng):
    x = rng.normal(size=200)
    y = np.roll(x, 1) + 0.1 * rng.normal(size=200)
    x[10], y[20], x[30] = np.nan, np.inf, -np.inf
    res = granger(x, y, 1)
    assert np.isfinite(res.f_stat) and res.p_value < 1e-6


def test_pearson_matches_numpy(rng):
    x, y = rng.normal(size=50), rng.normal(size=50)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert pearson(np.ones(10), y[:10]) == 0.0


def test_lagged_correlation_finds_the_lead(rng):
    x = rng.normal(size=300)
    y = np.concatenate([[0, 0], x[:-2]]) + 0.05 * rng.normal(size=300)
    r, lag = lagged_correlation(x, y, 5)
    assert lag == 2 and r > 0.95
