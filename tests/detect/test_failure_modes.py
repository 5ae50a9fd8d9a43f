"""The failure modes of issue 5, for every registered detector they apply to.

- a window of identical values, then one different value: see
  ``test_detector_contract.py::test_detector_on_constant_then_step_is_finite_and_high``
  (every registered detector) and the multivariate forest case here;
- a permanent level shift: the detector fires, then re-learns the new level
  within a bounded number of samples instead of firing forever;
- a forest trained on constant data: no universal alarm;
- a clean series: no fixed share of false alarms from a contamination default.
"""

from __future__ import annotations

import numpy as np
import pytest

from obscore.detect import IsolationForestDetector, create, registered
from obscore.detect.stream import alert_decisions
from obscore.errors import ConfigError
from obscore.model import sample_table

STREAMING = [n for n in registered() if n != "iforest"]
STEP_MS = 10_000
# Samples after a level shift within which every streaming detector must be
# back below its threshold: a bit more than the longest built-in window
# (the robust z-score's hour, 360 samples at 10 s).
RELEARN_ROWS = 400
# Share of clean rows that may score above 0.5.  The plain z-score (|z| = 3
# over a 30-sample window) sits near 0.6% by construction: a Student t with
# 29 degrees of freedom passes 3 that often.
CLEAN_SHARE = 0.01


def _batch(values, sid=7):
    values = np.asarray(values, dtype=np.float64)
    ts = np.arange(len(values), dtype=np.int64) * STEP_MS
    return sample_table(np.full(len(values), sid, np.uint64), ts, values)


def _scores(det, values):
    return np.nan_to_num(det.score(_batch(values)).to_numpy(zero_copy_only=False))


def _multi(matrix):
    """A batch of several series (rows of ``matrix``) on one time grid."""
    k, n = matrix.shape
    ts = np.tile(np.arange(n, dtype=np.int64) * STEP_MS, k)
    ids = np.repeat(np.arange(k, dtype=np.uint64), n)
    return sample_table(ids, ts, matrix.reshape(-1))


# --- the forest on constant data ---


def test_forest_trained_on_constant_data_raises_no_universal_alarm():
    det = IsolationForestDetector()
    det.fit_matrix(np.full((5, 2000), 3.0))
    same = det.score_matrix(np.full((5, 500), 3.0))
    assert np.all(same == 0.0)
    changed = np.full((5, 10), 3.0)
    changed[2, 4] = 3.5
    s = det.score_matrix(changed)
    assert np.all(np.isfinite(s))
    assert s[4] > 0.5
    assert np.all(np.delete(s, 4) == 0.0)


def test_forest_with_some_constant_features_scores_both_kinds(rng):
    train = rng.normal(size=(5, 3000))
    train[3:] = 7.0  # two features never vary
    det = IsolationForestDetector()
    det.update(_multi(train))
    clean = rng.normal(size=(5, 5000))
    clean[3:] = 7.0
    s = det.score(_multi(clean)).to_numpy()
    assert np.mean(s > 0.5) < CLEAN_SHARE
    off = clean[:, :20].copy()
    off[4, 10] = 7.001
    s_off = det.score_matrix(off)
    assert np.isfinite(s_off[10]) and s_off[10] > 0.5


def test_forest_on_identical_rows_then_one_different_row_is_finite_and_high():
    det = IsolationForestDetector()
    det.update(_multi(np.full((3, 300), 5.0)))
    rows = np.full((3, 301), 5.0)
    rows[:, -1] = 6.0
    s = det.score(_multi(rows)).to_numpy().reshape(3, 301)
    assert np.all(np.isfinite(s))
    assert np.all(s[:, :-1] < 0.5) and np.all(s[:, -1] > 0.5)


# --- clean series ---


def _clean_cases():
    for name in STREAMING:
        for noise in ("normal", "laplace", "uniform"):
            marks = ()
            if name in ("zscore", "user_zscore") and noise == "laplace":
                # a plain z-score (built in, or the plug-in example) has no tail
                # model: 2.2% of Laplace rows pass |z| = 3; the default
                # detector and the ensemble do not
                marks = pytest.mark.xfail(strict=True, reason="plain z-score, heavy tails")
            yield pytest.param(name, noise, marks=marks, id=f"{name}-{noise}")


@pytest.mark.parametrize(("name", "noise"), list(_clean_cases()))
def test_clean_series_rarely_scores_above_the_threshold(name, noise, rng):
    values = getattr(rng, noise)(size=20_000)
    s = _scores(create(name), values)
    assert np.mean(s > 0.5) < CLEAN_SHARE


@pytest.mark.parametrize("dims", [1, 5, 20])
def test_forest_on_clean_gaussian_data_rarely_alarms_but_sees_a_real_change(dims, rng):
    # the forest's raw 0.5 alarmed on 13% of such rows; the calibrated score
    # alarms about as often as a tail probability of exp(-6.9) = 1e-3
    det = IsolationForestDetector()
    det.fit_matrix(rng.normal(size=(dims, 5000)))
    clean = det.score_matrix(rng.normal(size=(dims, 50_000)))
    assert np.mean(clean > 0.5) < 0.005
    assert np.mean(det.raw_scores(rng.normal(size=(dims, 5000))) > 0.5) > 0.0
    if dims > 1:
        shifted = rng.normal(size=(dims, 50)) + 6.0
        assert np.all(det.score_matrix(shifted) > 0.5)


# --- a permanent level shift ---


@pytest.mark.parametrize("name", STREAMING)
def test_level_shift_fires_then_is_relearnt_within_bounded_time(name, rng):
    before = rng.normal(size=3000)
    after = 20.0 + rng.normal(size=3000)
    values = np.concatenate([before, after])
    s = _scores(create(name), values)
    ts = np.arange(len(values), dtype=np.int64) * STEP_MS
    alerts = alert_decisions(ts, s)
    # it fires at the shift ...
    assert s[3000:3003].max() > 0.5
    assert alerts[3000:3031].any()
    # ... the burst ends within the bound ...
    burst = np.flatnonzero(s[3000:] <= 0.5)
    assert burst[0] < RELEARN_ROWS
    # ... and from then on the new level is as quiet as the old one was
    assert np.mean(s[3000 + RELEARN_ROWS :] > 0.5) < CLEAN_SHARE
    assert alerts[3000 + RELEARN_ROWS :].sum() <= max(2 * alerts[:3000].sum(), 3)


def test_forest_relearns_a_level_shift_when_refitted(rng):
    det = IsolationForestDetector()
    det.fit_matrix(rng.normal(size=(3, 3000)))
    shifted = rng.normal(size=(3, 3000)) + 20.0
    assert np.all(det.score_matrix(shifted[:, :100]) > 0.5)
    det.fit_matrix(shifted)  # the retraining schedule's next fit
    assert np.mean(det.score_matrix(rng.normal(size=(3, 5000)) + 20.0) > 0.5) < 0.005


def test_forest_refuses_bad_calibration_and_a_matrix_of_other_features(rng):
    with pytest.raises(ConfigError, match=r"iforest detector: tail=0.5 is out of range"):
        IsolationForestDetector(tail=0.5)
    with pytest.raises(ConfigError, match=r"iforest detector: surprise=0 is out of range"):
        IsolationForestDetector(surprise=0)
    det = IsolationForestDetector()
    with pytest.raises(RuntimeError, match=r"the isolation forest is not fitted"):
        det.score_matrix(np.zeros((3, 4)))
    det.fit_matrix(rng.normal(size=(3, 100)))
    with pytest.raises(ValueError, match=r"iforest: expected a matrix of 3 feature rows"):
        det.score_matrix(np.zeros((2, 4)))
