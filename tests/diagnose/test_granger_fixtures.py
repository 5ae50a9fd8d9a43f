"""Granger tests on the seeded fixtures, checked against statsmodels.

Reference: statsmodels 0.15 ``grangercausalitytests(data[["y", "x"]],
maxlag=5)`` as ``granger_fixtures/SOURCE.txt`` prescribes: lag order p uses
rows p..n-1 only, both regressions have a constant, and the ssr F test has
(p, n - 3p - 1) degrees of freedom.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.stattools import grangercausalitytests

from obscore.correlate import granger, granger_matrix, granger_tests

FIXTURES = ("independent", "lag2_strong", "lag2_weak")
TESTS = ("ssr_ftest", "ssr_chi2test", "lrtest", "params_ftest")
MAXLAG = 5
# both sides solve the same least squares problems in float64; what is left
# is rounding (measured <= 3e-12), so 1e-8 only guards against a wrong formula
REL = 1e-8


def _load(shared_data: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(shared_data / "granger_fixtures" / f"{name}.csv")


def _reference(frame: pd.DataFrame) -> dict:
    # statsmodels tests whether the second column Granger-causes the first
    return grangercausalitytests(frame[["y", "x"]], maxlag=MAXLAG)


@pytest.mark.parametrize("name", FIXTURES)
def test_granger_tests_match_statsmodels_all_four_tests(shared_data, name):
    frame = _load(shared_data, name)
    ref = _reference(frame)
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    for lag in range(1, MAXLAG + 1):
        ours = granger_tests(x, y, lag)
        assert ours.reason == ""
        assert ours.nobs == len(frame) - lag
        assert ours.df_resid == len(frame) - 3 * lag - 1
        for key in TESTS:
            stat, p_value = getattr(ours, key)
            assert stat == pytest.approx(ref[lag][0][key][0], rel=REL), (key, lag)
            assert p_value == pytest.approx(ref[lag][0][key][1], rel=REL), (key, lag)


@pytest.mark.parametrize("name", FIXTURES)
def test_granger_and_granger_matrix_match_statsmodels_ssr_ftest(shared_data, name):
    frame = _load(shared_data, name)
    ref = _reference(frame)
    x, y = frame["x"].to_numpy(), frame["y"].to_numpy()
    matrix = granger_matrix(np.vstack([x, y]), MAXLAG)
    for lag in range(1, MAXLAG + 1):
        f_ref, p_ref, df_ref, _ = ref[lag][0]["ssr_ftest"]
        pair = granger(x, y, lag)
        assert pair.f_stat == pytest.approx(f_ref, rel=REL)
        assert pair.p_value == pytest.approx(p_ref, rel=REL)
        assert matrix.f_stat[lag - 1, 0, 1] == pytest.approx(f_ref, rel=REL)
        assert matrix.p_value[lag - 1, 0, 1] == pytest.approx(p_ref, rel=REL)
        assert matrix.df_resid[lag - 1] == df_ref


def test_fixture_relations_are_found(shared_data):
    def p_at(name: str, lag: int) -> float:
        frame = _load(shared_data, name)
        return granger(frame["x"].to_numpy(), frame["y"].to_numpy(), lag).p_value

    # SOURCE.txt: x drives y at lag 2 (strong), barely (weak, p ~ 0.07), or not
    assert p_at("lag2_strong", 2) < 1e-100
    assert 0.05 < p_at("lag2_weak", 2) < 0.1
    assert all(p_at("independent", lag) > 0.05 for lag in range(1, MAXLAG + 1))
