"""ZScoreState and zscore_rolling against pandas rolling and tests/reference.py."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import reference
from hypothesis import example, given, settings
from hypothesis import strategies as st

from obscore._native import zscore
from obscore._native.zscore import ZScoreState, zscore_rolling

I64 = np.int64


def update(state: ZScoreState, ts, values) -> tuple[int, np.ndarray]:
    values = np.asarray(values, dtype=np.float64)
    scores = np.full(len(values), -123.0)
    n = state.update(np.asarray(ts, dtype=I64), values, scores)
    return n, scores


def pandas_time_window(ts, values, window_ms):
    """Mean, std and count of the earlier samples with ts > t - window_ms.

    On integer-ms ts that is pandas' left-closed window of window_ms - 1 ms:
    [t - (window_ms - 1), t) excludes the current row and everything at
    t - window_ms or before.
    """
    s = pd.Series(values, index=pd.to_datetime(ts, unit="ms"))
    r = s.rolling(f"{window_ms - 1}ms", closed="left", min_periods=1)
    return r.mean().to_numpy(), r.std().to_numpy(), r.count().to_numpy()


def irregular_series(rng, n, offset=10.0, nan_share=0.02):
    ts = np.cumsum(rng.integers(1, 3000, size=n)).astype(I64) - 10**6
    values = offset + rng.normal(0.0, 2.0, size=n)
    values[rng.random(n) < nan_share] = np.nan
    return ts, values


def test_zscore_matches_pandas_rolling(rng):
    ts, values = irregular_series(rng, 20_000)
    window_ms = 60_000
    n, scores = update(ZScoreState(window_ms, min_count=2), ts, values)

    mean, std, count = pandas_time_window(ts, values, window_ms)
    warm = (count >= 2) & ~np.isnan(values)
    assert warm.sum() > 15_000
    # Both compute the same moments in float64 by different sums; on data
    # with std ~2 around 10, 1e-9 relative is far above their rounding.
    np.testing.assert_allclose(
        scores[warm], (values[warm] - mean[warm]) / std[warm], rtol=1e-9
    )
    cold = (count < 2) & ~np.isnan(values)
    assert (scores[cold] == 0.0).all()
    assert np.isnan(scores[np.isnan(values)]).all()
    assert n == int((~np.isnan(values)).sum())


def test_zscore_matches_pandas_closed_neither_too(rng):
    # Same window written the other way: (t - window_ms, t) on distinct ts.
    ts, values = irregular_series(rng, 3000, nan_share=0.0)
    _, scores = update(ZScoreState(20_000), ts, values)
    s = pd.Series(values, index=pd.to_datetime(ts, unit="ms"))
    r = s.rolling("20000ms", closed="neither", min_periods=2)
    expected = (values - r.mean().to_numpy()) / r.std().to_numpy()
    warm = ~np.isnan(expected)
    np.testing.assert_allclose(scores[warm], expected[warm], rtol=1e-9)


def test_zscore_chunked_updates_equal_one_update(rng):
    ts, values = irregular_series(rng, 5000)
    _, whole = update(ZScoreState(30_000), ts, values)
    state = ZScoreState(30_000, capacity_hint=4)
    cuts = np.sort(rng.choice(np.arange(1, 5000), size=40, replace=False))
    parts = [
        update(state, t, v)[1]
        for t, v in zip(np.split(ts, cuts), np.split(values, cuts))
    ]
    # State carried across calls: bit-identical scores.
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_zscore_counts_earlier_samples_with_equal_ts():
    _, scores = update(ZScoreState(1000), [0, 0, 0, 0], [1.0, 3.0, 2.0, 5.0])
    # At the 3rd sample the window holds 1 and 3 (same ts, but earlier).
    assert scores[:2].tolist() == [0.0, 0.0]
    assert scores[2] == pytest.approx((2.0 - 2.0) / math.sqrt(2.0))
    assert scores[3] == pytest.approx((5.0 - 2.0) / 1.0)


def test_zscore_window_excludes_sample_exactly_window_ms_old():
    state = ZScoreState(1000)
    _, scores = update(state, [0, 500, 999, 1000], [1.0, 2.0, 3.0, 100.0])
    # At ts 1000 the sample at ts 0 has left (0 <= 1000 - 1000): window [2, 3].
    assert scores[3] == pytest.approx((100.0 - 2.5) / math.sqrt(0.5))
    assert state.count == 3


def test_zscore_out_of_order_sample_arrives_at_last_ts():
    state = ZScoreState(1000)
    _, scores = update(state, [0, 100, 900, 50, 1050], [1.0, 2.0, 3.0, 4.0, 10.0])
    # ts 50 after 900 counts as 900, so at 1050 only the sample of ts 0 has
    # left: the window is 2, 3, 4 (not 2, 3 with 4 dropped as "old").
    expected = reference.zscores(
        [0, 100, 900, 50, 1050], [1.0, 2.0, 3.0, 4.0, 10.0], 1000
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    assert scores[3] == pytest.approx((4.0 - 2.0) / 1.0)  # window 1, 2, 3
    assert scores[4] == pytest.approx((10.0 - 3.0) / 1.0)


def test_zscore_nan_scores_nan_and_stays_out_of_the_window():
    state = ZScoreState(10_000)
    n, scores = update(state, [0, 1, 2, 3], [1.0, np.nan, 3.0, 2.0])
    assert n == 3
    assert np.isnan(scores[1])
    assert scores[3] == pytest.approx(0.0)
    assert state.count == 3


def test_zscore_infinity_is_scored_but_never_joins():
    state = ZScoreState(10_000)
    n, scores = update(state, [0, 1, 2, 3, 4], [1.0, 3.0, np.inf, -np.inf, 2.0])
    assert n == 5
    assert scores[2] == np.inf and scores[3] == -np.inf
    assert scores[4] == pytest.approx(0.0)
    assert state.count == 3 and state.mean == pytest.approx(2.0)


def test_zscore_constant_window_gives_zero_or_large_finite_score():
    state = ZScoreState(10_000)
    _, scores = update(state, range(6), [0.1, 0.1, 0.1, 0.1, 0.1, 0.2])
    assert scores[2:5].tolist() == [0.0, 0.0, 0.0]
    assert math.isfinite(scores[5]) and scores[5] > 1e6
    # Floor at 1e-9 * |mean|: (0.2 - 0.1) / 1e-10.
    assert scores[5] == pytest.approx(0.1 / (1e-9 * 0.1))
    _, zeros = update(ZScoreState(10_000), range(4), [0.0, 0.0, 0.0, 1.0])
    assert zeros[3] == pytest.approx(1e12)  # absolute floor 1e-12 at mean 0


def test_zscore_constant_after_other_values_left_the_window():
    state = ZScoreState(100)
    _, scores = update(
        state, [0, 10, 200, 210, 220, 230], [5.0, 9.0, 7.0, 7.0, 7.0, 7.0]
    )
    # The window of the last two samples holds only 7.0s: exactly 0.
    assert scores[4:].tolist() == [0.0, 0.0]


def test_zscore_below_min_count_scores_zero():
    _, scores = update(
        ZScoreState(10_000, min_count=4), range(6), [1.0, 5.0, 2.0, 8.0, 3.0, 9.0]
    )
    assert scores[:4].tolist() == [0.0] * 4
    assert scores[4] != 0.0


def test_zscore_empty_input_writes_nothing():
    state = ZScoreState(1000)
    scores = np.empty(0)
    assert state.update(np.empty(0, I64), np.empty(0), scores) == 0
    assert state.count == 0 and math.isnan(state.mean) and math.isnan(state.std)


def test_zscore_properties_describe_the_window():
    state = ZScoreState(5000, min_count=3)
    update(state, [0, 1000, 2000], [2.0, 4.0, 9.0])
    assert (state.window_ms, state.min_count, state.count) == (5000, 3, 3)
    assert state.mean == pytest.approx(5.0)
    assert state.std == pytest.approx(np.std([2.0, 4.0, 9.0], ddof=1))


def test_zscore_reset_empties_the_window():
    state = ZScoreState(5000)
    update(state, [0, 1, 2], [1.0, 2.0, 3.0])
    state.reset()
    assert state.count == 0
    _, scores = update(state, [0, 1], [10.0, 20.0])  # ts 0 is no longer "old"
    assert scores.tolist() == [0.0, 0.0]


def test_zscore_pickle_round_trip_continues_bit_for_bit(rng):
    ts, values = irregular_series(rng, 3000)
    state = ZScoreState(40_000, min_count=3, capacity_hint=8)
    update(state, ts[:2000], values[:2000])
    copy = pickle.loads(pickle.dumps(state))
    assert (copy.window_ms, copy.min_count, copy.count) == (40_000, 3, state.count)
    _, a = update(state, ts[2000:], values[2000:])
    _, b = update(copy, ts[2000:], values[2000:])
    np.testing.assert_array_equal(a, b)
    assert (state.mean, state.std) == (copy.mean, copy.std)


def test_zscore_window_grows_past_capacity_hint(rng):
    ts = np.arange(1500, dtype=I64)
    values = rng.integers(-50, 50, size=1500).astype(np.float64)
    _, scores = update(ZScoreState(1000, capacity_hint=1), ts, values)
    expected = reference.zscores(ts.tolist(), values.tolist(), 1000)
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-12)


def test_zscore_no_drift_over_ten_million_points():
    # Stands in for 10^8 points: sums are recomputed exactly every few
    # thousand updates, so error cannot grow with the length of the run.
    n, window_ms = 10_000_000, 1000
    rng = np.random.default_rng(5)
    values = 1e6 + rng.normal(0.0, 1.0, size=n)
    ts = np.arange(n, dtype=I64)
    state = ZScoreState(window_ms)
    scores = np.empty(n)
    state.update(ts, values, scores)

    window = values[n - window_ms :]  # the last sample has joined too
    assert state.count == window.size
    # Against a fresh two-pass recompute; at an offset of 1e6 the mean is
    # known to about 1e-16 * 1e6, so 1e-9 absolute is a loose bound.
    assert abs(state.mean - window.mean()) < 1e-9
    assert state.std == pytest.approx(window.std(ddof=1), rel=1e-9)
    prev = values[n - window_ms : n - 1]
    expected = (values[n - 1] - prev.mean()) / prev.std(ddof=1)
    assert scores[n - 1] == pytest.approx(expected, rel=1e-8)


@pytest.mark.slow
def test_zscore_no_drift_over_a_hundred_million_points():
    # 10^8 points in chunks of 10^6 (memory stays small); at the end the
    # window's moments equal a fresh two-pass computation.
    n_chunks, chunk, window_ms = 100, 1_000_000, 1000
    rng = np.random.default_rng(8)
    state = ZScoreState(window_ms)
    scores = np.empty(chunk)
    for k in range(n_chunks):
        values = 1e6 + rng.normal(0.0, 1.0, size=chunk)
        ts = np.arange(k * chunk, (k + 1) * chunk, dtype=I64)
        state.update(ts, values, scores)
    window = values[chunk - window_ms :]
    assert state.count == window.size
    assert abs(state.mean - window.mean()) < 1e-9
    assert state.std == pytest.approx(window.std(ddof=1), rel=1e-9)
    prev = values[chunk - window_ms : chunk - 1]
    expected = (values[-1] - prev.mean()) / prev.std(ddof=1)
    assert scores[-1] == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("spike", [2e5, 5e7, 1.23456e9, 1e12])
def test_zscore_spike_leaving_the_window_leaves_no_trace(rng, spike):
    # A spike's square dominates the sums; its rounding would swamp the
    # variance of the values around it once it leaves. With the recompute on
    # departure disabled, two of these cases missed by 1.6e-7 and 1.2e-3.
    values = rng.normal(0.0, 1.0, size=1200)
    values[300] = spike
    ts = np.arange(1200, dtype=I64)
    _, scores = update(ZScoreState(100), ts, values)
    expected = reference.zscores(ts.tolist(), values.tolist(), 100)
    np.testing.assert_allclose(scores[401:], expected[401:], rtol=1e-9)
    rolled = np.empty_like(values)
    zscore_rolling(values, 100, rolled)
    expected = reference.rolling_zscores(values.tolist(), 100)
    np.testing.assert_allclose(rolled[401:], expected[401:], rtol=1e-9)


def test_zscore_huge_values_are_scored_but_never_join():
    state = ZScoreState(10_000)
    _, scores = update(state, range(5), [1.0, 2.0, 9e307, 1.0, 2.0])
    assert scores[2] > 1e300 and np.isfinite(scores[3:]).all()
    assert state.count == 4  # 9e307 is beyond 1e100: scored, kept out
    assert scores[4] == pytest.approx((2.0 - 4.0 / 3.0) / np.std([1, 2, 1], ddof=1))


def test_zscore_accepts_readonly_arrow_buffers():
    ts = pa.array([0, 1, 2], pa.int64()).to_numpy(zero_copy_only=True)
    values = pa.array([1.0, 2.0, 6.0]).to_numpy(zero_copy_only=True)
    scores = np.empty(3)
    assert ZScoreState(1000).update(ts, values, scores) == 3


def test_zscore_rejects_bad_arguments():
    with pytest.raises(ValueError, match="window_ms must be positive, got 0"):
        ZScoreState(0)
    with pytest.raises(ValueError, match="min_count must be at least 2, got 1"):
        ZScoreState(1000, min_count=1)
    with pytest.raises(ValueError, match="capacity_hint must be positive, got 0"):
        ZScoreState(1000, capacity_hint=0)
    with pytest.raises(ValueError, match="one length, got 2, 2 and 1"):
        ZScoreState(1000).update(np.zeros(2, I64), np.zeros(2), np.zeros(1))
    with pytest.raises(ValueError, match="window must be at least 2, got 1"):
        zscore_rolling(np.zeros(3), 1, np.zeros(3))
    with pytest.raises(ValueError, match="one length, got 3 and 2"):
        zscore_rolling(np.zeros(3), 5, np.zeros(2))


# --- zscore_rolling ---


def test_zscore_rolling_matches_pandas_rolling(rng):
    values = 50.0 + rng.normal(0.0, 5.0, size=50_000)
    scores = np.empty_like(values)
    assert zscore_rolling(values, 300, scores) == values.size
    r = pd.Series(values).rolling(300, min_periods=2)
    expected = (values - r.mean().shift().to_numpy()) / r.std().shift().to_numpy()
    # Different summation schemes in float64; 1e-9 rel is far above both.
    np.testing.assert_allclose(scores[2:], expected[2:], rtol=1e-9)
    assert scores[:2].tolist() == [0.0, 0.0]


def test_zscore_rolling_skips_nan_and_infinity_in_the_window():
    values = np.array([1.0, np.nan, 3.0, np.inf, 5.0, 100.0])
    scores = np.empty_like(values)
    assert zscore_rolling(values, 3, scores) == 5
    np.testing.assert_allclose(
        scores, reference.rolling_zscores(values.tolist(), 3), rtol=1e-12
    )
    assert np.isnan(scores[1]) and scores[3] == np.inf
    assert scores[5] == pytest.approx((100.0 - 3.0) / 2.0)


def _rolling_patterns() -> dict[str, np.ndarray]:
    # 3000 values, so that several of zscore_rolling's 512-value blocks run
    # with a full window; each pattern puts its trouble across the edges of
    # those blocks.
    rng = np.random.default_rng(17)
    base = rng.normal(0.0, 1.0, size=3000)
    spikes = base.copy()
    spikes[[511, 512, 1023, 1100, 1101, 2047]] = [1e9, -3e8, 5e12, 2e5, 2e5, 7e7]
    constant = base.copy()
    constant[400:1300] = 7.25  # longer than the window, across two block edges
    constant[2000:2100] = 0.0
    outcasts = base.copy()
    outcasts[[600, 1500, 1501, 2600]] = [np.nan, np.inf, -np.inf, 1e120]
    ramp = np.linspace(0.0, 1e9, 3000) + base
    steps = 1e3 * (np.arange(3000) // 700) + base  # the mean moves by 1000 std
    integers = np.round(rng.normal(0.0, 1.5, size=3000))
    return {
        "spikes": spikes,
        "constant": constant,
        "outcasts": outcasts,
        "ramp": ramp,
        "steps": steps,
        "integers": integers,
    }


@pytest.mark.parametrize("name", list(_rolling_patterns()))
@pytest.mark.parametrize("window", [2, 50, 511])
def test_zscore_rolling_across_blocks_matches_reference(name, window):
    values = _rolling_patterns()[name]
    scores = np.empty_like(values)
    n = zscore_rolling(values, window, scores)
    expected = reference.rolling_zscores(values.tolist(), window)
    assert n == int((~np.isnan(expected)).sum())
    # The reference takes np.mean and np.std of each window (pairwise sums);
    # ours keeps running sums recomputed exactly when they could lose
    # digits: 1e-9 relative is the contract and far above both. The 1e-12
    # absolute is for scores of 0, where x equals the mean: the reference
    # finds exactly 0, a sum divided by the count may be off by an ulp.
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-12)


def test_zscore_rolling_no_drift_over_ten_million_points():
    # At an offset of 1e6 the running sums would lose digits over a long run
    # if they were never recomputed; the last scores match a fresh two-pass
    # computation of their windows.
    n, window = 10_000_000, 300
    values = 1e6 + np.random.default_rng(5).normal(0.0, 1.0, size=n)
    scores = np.empty(n)
    assert zscore_rolling(values, window, scores) == n
    tail = np.lib.stride_tricks.sliding_window_view(values[n - 2000 - window : n - 1], window)
    expected = (values[n - 2000 :] - tail.mean(axis=1)) / tail.std(axis=1, ddof=1)
    # Any float64 mean of values near 1e6 is off by up to half an ulp of 1e6
    # (5.8e-11), so x - mean and a score over a std of 1 carry about 1e-10
    # absolute in every method: relative error alone would fail near 0.
    np.testing.assert_allclose(scores[n - 2000 :], expected, rtol=1e-9, atol=1e-9)


def test_zscore_rolling_empty_and_constant():
    assert zscore_rolling(np.empty(0), 5, np.empty(0)) == 0
    scores = np.empty(5)
    zscore_rolling(np.full(5, 3.0), 3, scores)
    assert scores.tolist() == [0.0] * 5


# --- properties over adversarial input ---

adversarial = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([0.0, -0.0, 1.0, 1e150, -1e-300, 7.0]),
)


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(-50, 400), adversarial), max_size=60),
    window_ms=st.integers(1, 2000),
    cuts=st.lists(st.integers(0, 60), max_size=5),
)
def test_zscore_chunking_never_changes_scores(steps, window_ms, cuts):
    ts = np.cumsum([d for d, _ in steps]).astype(I64)  # includes out-of-order
    values = np.array([v for _, v in steps], dtype=np.float64)
    _, whole = update(ZScoreState(window_ms), ts, values)
    state = ZScoreState(window_ms, capacity_hint=1)
    bounds = sorted({min(c, len(values)) for c in cuts})
    parts = [
        update(state, t, v)[1]
        for t, v in zip(np.split(ts, bounds), np.split(values, bounds))
    ]
    np.testing.assert_array_equal(np.concatenate(parts) if parts else whole, whole)
    # NaN scores exactly where values are NaN, +-Inf only for +-Inf values.
    assert (np.isnan(whole) == np.isnan(values)).all()
    finite = np.isfinite(values) & (np.abs(values) < 1e150)
    assert np.isfinite(whole[finite]).all()


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(-20, 300),
            st.one_of(st.integers(-1000, 1000).map(float), st.just(math.nan)),
        ),
        max_size=80,
    ),
    window_ms=st.integers(1, 1500),
    min_count=st.integers(2, 5),
)
def test_zscore_matches_reference_on_integer_values(steps, window_ms, min_count):
    ts = np.cumsum([d for d, _ in steps]).astype(I64)
    values = np.array([v for _, v in steps], dtype=np.float64)
    _, scores = update(ZScoreState(window_ms, min_count=min_count), ts, values)
    expected = reference.zscores(ts.tolist(), values.tolist(), window_ms, min_count)
    # Integers keep the window's variance well above the std floor, so the
    # shifted sums and numpy's two passes agree to rounding.
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(adversarial, max_size=60),
    window=st.integers(2, 10),
)
@example(values=[8.98846567431158e307, 0.0, 1.0, 0.0], window=2)  # once gave NaN
def test_zscore_rolling_nan_and_finite_pattern(values, window):
    values = np.array(values, dtype=np.float64)
    scores = np.empty_like(values)
    n = zscore_rolling(values, window, scores)
    assert n == int((~np.isnan(scores)).sum())
    assert (np.isnan(scores) == np.isnan(values)).all()
    finite = np.isfinite(values) & (np.abs(values) < 1e150)
    assert np.isfinite(scores[finite]).all()


def test_zscore_docstring_examples_run(run_doctests):
    failed, attempted = run_doctests(zscore)
    assert attempted > 0 and failed == 0
