"""The novelty detector: failure modes, a reference oracle, and its wiring."""

from __future__ import annotations

import importlib.util
import math
import pickle
import sys

import numpy as np
import pytest

from obscore.config import load_config
from obscore.detect import create
from obscore.detect import novelty as novelty_module
from obscore.detect.novelty import NoveltyDetector
from obscore.detect.stream import alert_decisions, default_detector
from obscore.errors import ConfigError, ObscoreWarning
from obscore.model import sample_table

pytestmark = pytest.mark.numba
pytest.importorskip("numba")

STEP_MS = 60_000


def _scores(values, det=None, sid=3):
    values = np.asarray(values, dtype=np.float64)
    ts = np.arange(len(values), dtype=np.int64) * STEP_MS
    det = det or NoveltyDetector()
    batch = sample_table(np.full(len(values), sid, np.uint64), ts, values)
    return det.score(batch).to_numpy(zero_copy_only=False), ts


# --- failure modes ---


@pytest.mark.parametrize("step", [1e-6, 1.0, 1e9])
def test_novelty_identical_values_then_one_different_is_finite_and_high(step):
    values = np.full(500, 42.0)
    values[-1] += step
    s, _ = _scores(values)
    assert np.all(np.isfinite(s))
    assert np.all(s[:-1] == 0.0)
    assert 0.9 < s[-1] <= 1.0


def test_novelty_level_shift_fires_once_then_relearns(rng):
    values = rng.normal(size=4000)
    values[2000:] += 20.0
    s, ts = _scores(values)
    alerts = np.flatnonzero(alert_decisions(ts, s))
    after = alerts[alerts >= 2000]
    # one alert on the shift itself ...
    assert after[0] == 2000
    assert not np.any((after > 2000) & (after < 2500))
    # ... and the new level is learnt within a bounded time: tail * history
    # = 60 samples fill the upper tail, after which the level is ordinary
    assert np.all(s[2060:2500] < 0.5)


def test_novelty_level_shift_is_learnt_within_tail_times_history(rng):
    det = NoveltyDetector(history=1000)
    values = rng.normal(size=3000)
    values[1500:] -= 50.0
    s, _ = _scores(values, det)
    bound = 1500 + math.ceil(det.tail * det.history)
    assert s[1500] > 0.5
    # below the threshold from the bound on (for 500 rows: later on, white
    # noise has its own rare alarms, see the clean-series test)
    assert np.all(s[bound : bound + 500] < 0.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng, n: rng.normal(size=n),
        lambda rng, n: rng.exponential(size=n),
        lambda rng, n: rng.standard_t(5, size=n),
        lambda rng, n: (
            np.sin(np.arange(n) * 2 * np.pi / 288) + 0.1 * rng.normal(size=n)
        ),
    ],
    ids=["gaussian", "exponential", "student-t5", "daily-sine"],
)
def test_novelty_clean_series_gives_rare_alerts(rng, make):
    n = 20_000
    s, ts = _scores(make(rng, n))
    alerts = alert_decisions(ts, s)
    # a fixed-fraction detector would flag 1% (200 rows); calibrated tails at
    # 8 nats give about one alert per thousand rows over the four measures
    assert alerts.sum() <= 40
    assert np.mean(s > 0.5) < 0.005


def test_novelty_alerts_get_rarer_as_the_threshold_rises(rng):
    s, _ = _scores(rng.normal(size=10_000))
    above = [np.mean(s > t) for t in (0.3, 0.5, 0.7)]
    assert above[0] > above[1] > above[2]


def test_novelty_spike_in_noise_scores_high(rng):
    values = rng.normal(size=3000)
    values[2500] = 12.0
    s, _ = _scores(values)
    assert s[2500] > 0.5
    assert s[2500] == s[2400:2600].max()


def test_novelty_warmup_scores_zero(rng):
    values = rng.normal(size=300)
    values[50] = 1e6
    s, _ = _scores(values, NoveltyDetector(warmup=100))
    assert np.all(s[:100] == 0.0)


# --- a slow, obvious oracle ---


def _ref_tail_nats(sample, v, tail, upper):
    ordered = np.sort(sample)
    n = len(ordered)
    k = min(max(int(tail * n), 5), n - 1)
    floor = (ordered[-1] - ordered[0]) * 1e-3 + 1e-12
    if upper:
        outer = ordered[n - k :]
        edge = ordered[n - 1 - k]
        excess = v - edge
        reached = int(np.sum(outer >= v))
    else:
        outer = ordered[:k]
        edge = ordered[k]
        excess = edge - v
        reached = int(np.sum(outer <= v))
    if excess <= 0:
        return 0.0
    scale = max(float(np.mean(np.abs(outer - edge))), floor)
    nats = -math.log(k / n) + excess / scale
    if reached:
        nats = min(nats, -math.log(reached / n))
    return min(nats, 700.0)


def _ref_nearest(x, t, m, history):
    lo = max(m - 1, t - history)
    ends = np.arange(lo, t - m + 1)
    if t < m - 1 or len(ends) == 0:
        return None
    windows = np.stack([x[e - m + 1 : e + 1] for e in ends])
    return float(np.min(np.sum((windows - x[t - m + 1 : t + 1]) ** 2, axis=1)))


def _reference(x, det):
    out, distances = np.zeros(len(x)), []
    for t in range(len(x)):
        hist = x[max(0, t - det.history) : t]
        value_nats = 0.0
        if len(hist) >= 50:
            value_nats = max(
                _ref_tail_nats(hist, x[t], det.tail, True),
                _ref_tail_nats(hist, x[t], det.tail, False),
            )
        spread = float(hist.max() - hist.min()) if len(hist) else 0.0
        pattern_nats = 0.0
        best = _ref_nearest(x, t, det.pattern, det.history)
        if best is not None:
            dist = math.sqrt(best)
            recent = np.array(distances[-det.novelty_history :])
            if len(recent) >= 50:
                pattern_nats = _ref_tail_nats(recent, dist, det.tail, True)
            distances.append(dist)
        change = 0.0
        best = _ref_nearest(x, t, det.short_pattern, det.history)
        if best is not None:
            rms = math.sqrt(best / det.short_pattern)
            change = rms / spread if spread > 0 else (700.0 if rms > 0 else 0.0)
        s = max(
            value_nats / det.surprise,
            pattern_nats / det.surprise,
            change / det.materiality,
        )
        out[t] = s / (1 + s) if t >= det.warmup else 0.0
    return out


@pytest.mark.parametrize("kind", ["noise", "walk", "spiky"])
def test_novelty_matches_the_reference_implementation(rng, kind):
    n = 700
    if kind == "noise":
        x = rng.normal(size=n)
    elif kind == "walk":
        x = np.cumsum(rng.normal(size=n))
    else:
        x = rng.exponential(size=n) ** 3
        x[400:420] += 50
    det = NoveltyDetector(history=200, novelty_history=100, warmup=0)
    got, _ = _scores(x, det)
    # the kernel and numpy add the squared differences in other orders, so
    # distances agree to a few ulps, not bit for bit
    np.testing.assert_allclose(got, _reference(x, det), rtol=1e-9, atol=1e-12)


# --- series, state and wiring ---


def test_novelty_series_are_independent(rng):
    a, b = rng.normal(size=600), 100 + 5 * rng.normal(size=600)
    ts = np.repeat(np.arange(600, dtype=np.int64) * STEP_MS, 2)
    ids = np.tile(np.array([1, 2], np.uint64), 600)
    values = np.column_stack([a, b]).ravel()
    mixed = NoveltyDetector().score(sample_table(ids, ts, values)).to_numpy()
    np.testing.assert_array_equal(mixed[0::2], _scores(a, sid=1)[0])
    np.testing.assert_array_equal(mixed[1::2], _scores(b, sid=2)[0])


def test_novelty_update_learns_like_score(rng):
    values = rng.normal(size=800)
    ts = np.arange(800, dtype=np.int64) * STEP_MS
    batch = sample_table(np.zeros(800, np.uint64), ts, values)
    learnt = NoveltyDetector()
    learnt.update(batch.slice(0, 500))
    np.testing.assert_array_equal(
        learnt.score(batch.slice(500)).to_numpy(),
        NoveltyDetector().score(batch).to_numpy()[500:],
    )


def test_novelty_pickled_mid_stream_continues_identically(rng):
    values = rng.normal(size=1000)
    det = NoveltyDetector()
    _scores(values[:600], det)
    clone = pickle.loads(pickle.dumps(det))
    ts = np.arange(600, 1000, dtype=np.int64) * STEP_MS
    batch = sample_table(np.full(400, 3, np.uint64), ts, values[600:])
    np.testing.assert_array_equal(
        det.score(batch).to_numpy(), clone.score(batch).to_numpy()
    )


def test_novelty_is_registered():
    assert isinstance(create("novelty"), NoveltyDetector)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"history": 10}, "history=10 is out of range"),
        ({"tail": 0.5}, "tail=0.5 is out of range"),
        ({"pattern": 1}, "pattern=1 is out of range"),
        ({"surprise": 0}, "surprise=0 is out of range"),
        ({"materiality": -1.0}, "materiality=-1.0 is out of range"),
    ],
)
def test_novelty_rejects_bad_parameters(params, match):
    with pytest.raises(ConfigError, match=match):
        NoveltyDetector(**params)


def test_novelty_without_numba_names_the_extra(monkeypatch, rng):
    monkeypatch.setattr(novelty_module, "_kernel", None)
    monkeypatch.setitem(sys.modules, "numba", None)
    with pytest.raises(ImportError, match=r"install the numba extra"):
        _scores(rng.normal(size=10))


def test_default_detector_is_novelty():
    assert isinstance(default_detector(), NoveltyDetector)
    assert isinstance(create("default"), NoveltyDetector)
    assert load_config().detector == "novelty"


def test_default_detector_falls_back_without_numba(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "numba" else real(name, *a),
    )
    with pytest.warns(ObscoreWarning, match="numba is not installed"):
        det = default_detector()
    assert det.name == "zscore_ensemble"
