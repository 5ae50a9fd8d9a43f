"""Per-call histogram cells and exponential histograms against numpy."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from obscore._native.histogram import (
    ExpHistogram,
    HistogramCell,
    hist_bucketize,
    hist_cumulative,
    hist_quantile,
)

LATENCY_BOUNDS = np.array([10.0, 50.0, 100.0, 200.0, 500.0, 1000.0])


def _order_stat(values: np.ndarray, q: float) -> float:
    """The observation of rank floor(q * (n - 1)): what ExpHistogram targets."""
    return float(np.sort(values)[int(math.floor(q * (len(values) - 1)))])


# --- HistogramCell ---


@pytest.mark.parametrize("n_bounds", [0, 1, 6, 8, 9, 16, 17, 40])
def test_cell_observe_matches_hist_bucketize(rng, n_bounds):
    bounds = np.sort(rng.choice(np.arange(1, 2000), size=n_bounds, replace=False)).astype(float)
    values = rng.lognormal(4, 1.5, size=3000)
    values[::97] = np.nan
    values[5] = np.inf
    values[6] = -np.inf
    cell = HistogramCell(bounds)
    for v in values:
        cell.observe(v)
    expected = np.zeros(n_bounds + 1)
    n_nan = hist_bucketize(values, bounds, expected)
    # Same bucket rule, counts are integers: exact.
    np.testing.assert_array_equal(cell.bucket_counts, expected)
    assert cell.n_nan == n_nan
    assert cell.count == len(values) - n_nan
    finite = values[np.isfinite(values)]
    assert math.isnan(cell.sum) or not math.isfinite(cell.sum)  # +Inf and -Inf both added
    cell2 = HistogramCell(bounds)
    cell2.observe_many(finite)
    assert cell2.sum == pytest.approx(finite.sum(), rel=1e-12)


def test_cell_weighted_and_batched_paths_agree(rng):
    values = rng.lognormal(4, 1, size=5000)
    weights = rng.choice([1.0, 10.0], size=5000)
    one = HistogramCell(LATENCY_BOUNDS)
    for v, w in zip(values, weights):
        one.observe_weighted(v, w)
    many = HistogramCell(LATENCY_BOUNDS)
    assert many.observe_many(values, weights) == 0
    np.testing.assert_array_equal(one.bucket_counts, many.bucket_counts)
    assert one.count == many.count == weights.sum()
    assert one.sum == pytest.approx((values * weights).sum(), rel=1e-12)


def test_cell_nan_is_skipped_and_counted():
    cell = HistogramCell(LATENCY_BOUNDS)
    cell.observe(math.nan)
    cell.observe(20.0)
    assert cell.n_nan == 1 and cell.count == 1.0 and cell.sum == 20.0
    assert cell.bucket_counts.tolist() == [0, 1, 0, 0, 0, 0, 0]


def test_cell_rejects_bad_bounds_and_lengths():
    with pytest.raises(ValueError, match=r"bounds\[1\] = 5.0 breaks that"):
        HistogramCell(np.array([10.0, 5.0]))
    with pytest.raises(ValueError, match="finite and strictly increasing"):
        HistogramCell(np.array([np.inf]))
    with pytest.raises(ValueError, match="weights must match values in length, got 1 and 2"):
        HistogramCell(LATENCY_BOUNDS).observe_many(np.ones(2), np.ones(1))


def test_cell_pickle_round_trip():
    cell = HistogramCell(LATENCY_BOUNDS)
    cell.observe_many(np.array([1.0, 60.0, 5000.0, np.nan]))
    back = pickle.loads(pickle.dumps(cell))
    np.testing.assert_array_equal(back.bucket_counts, cell.bucket_counts)
    assert (back.count, back.sum, back.n_nan) == (cell.count, cell.sum, cell.n_nan)
    np.testing.assert_array_equal(back.bounds, LATENCY_BOUNDS)


# --- ExpHistogram: accuracy ---


@pytest.mark.slow
@pytest.mark.parametrize("dist", ["lognormal", "pareto"])
def test_exphist_quantiles_within_1_percent_on_10m_latencies(dist):
    """p50, p99, p999 of 10M latencies within 1% of the exact quantiles.

    The fixed buckets' error on the same data is in the issue #10 note.
    """
    rng = np.random.default_rng(10)
    if dist == "lognormal":
        values = rng.lognormal(4.0, 1.0, size=10_000_000)
    else:
        values = (rng.pareto(1.5, size=10_000_000) + 1.0) * 10.0
    h = ExpHistogram()  # alpha 0.005: half the allowed error, for rounding in log()
    h.add(values)
    exact = np.quantile(values, [0.5, 0.99, 0.999])
    got = np.array(h.quantiles([0.5, 0.99, 0.999]))
    np.testing.assert_allclose(got, exact, rtol=0.01)
    assert h.count == len(values)
    assert h.sum == pytest.approx(values.sum(), rel=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False, width=64),
            st.sampled_from([0.0, -0.0, 1e-308, -1e300, 1e300, 5e-324]),
        ),
        min_size=1,
        max_size=300,
    ),
    q=st.floats(0, 1),
)
def test_exphist_quantile_is_within_alpha_of_the_right_rank(values, q):
    x = np.array(values)
    h = ExpHistogram(alpha=0.01)
    h.add(x)
    expected = _order_stat(x, q)
    got = h.quantile(q)
    if abs(expected) < h.min_value:
        # Zero bucket: 0 (or the observed extreme when 0 lies outside [min, max]).
        assert abs(got) < h.min_value or got in (x.min(), x.max())
    else:
        # Relative accuracy alpha, plus a little for rounding of log() at a bound.
        assert abs(got - expected) <= 0.0101 * abs(expected)
    assert x.min() <= got <= x.max()


def test_exphist_merge_equals_one_histogram(rng):
    a_vals = rng.lognormal(3, 2, size=20_000)
    b_vals = -rng.lognormal(1, 1, size=5_000)
    a, b, both = ExpHistogram(), ExpHistogram(), ExpHistogram()
    a.add(a_vals)
    b.add(b_vals)
    both.add(np.concatenate([a_vals, b_vals]))
    a.merge(b)
    for key in ("positive_keys", "positive_counts", "negative_keys", "negative_counts"):
        np.testing.assert_array_equal(a.buckets()[key], both.buckets()[key])
    assert a.quantiles([0.01, 0.5, 0.99]) == both.quantiles([0.01, 0.5, 0.99])
    assert (a.count, a.min, a.max) == (both.count, both.min, both.max)
    with pytest.raises(ValueError, match="cannot merge exponential histograms of alpha 0.01"):
        a.merge(ExpHistogram(alpha=0.01))


def test_exphist_weights_scale_counts(rng):
    values = rng.lognormal(4, 1, size=10_000)
    plain, weighted = ExpHistogram(), ExpHistogram()
    for _ in range(10):
        plain.add(values)
    weighted.add(values, np.full(len(values), 10.0))
    np.testing.assert_array_equal(
        plain.buckets()["positive_counts"], weighted.buckets()["positive_counts"]
    )
    assert plain.quantile(0.99) == weighted.quantile(0.99)


# --- ExpHistogram: edge cases ---


def test_exphist_empty_gives_nan_and_empty_buckets():
    h = ExpHistogram()
    assert math.isnan(h.quantile(0.5))
    assert h.count == 0 and h.n_buckets == 0
    assert h.add(np.empty(0)) == 0
    b = h.buckets()
    assert len(b["positive_keys"]) == 0 and b["min"] == math.inf


def test_exphist_nan_skipped_infinities_counted():
    h = ExpHistogram()
    assert h.add(np.array([np.nan, 1.0, 2.0, np.inf, -np.inf, np.nan])) == 2
    assert h.n_nan == 2 and h.count == 4
    assert h.quantile(0.0) == -math.inf and h.quantile(1.0) == math.inf
    assert math.isnan(h.sum)  # +Inf + -Inf


def test_exphist_constant_and_single_value():
    h = ExpHistogram()
    h.add(np.full(1000, 42.0))
    assert h.quantiles([0, 0.5, 1]) == [42.0, 42.0, 42.0]  # clamped to min and max
    one = ExpHistogram()
    one.observe(-3.5)
    assert one.quantile(0.3) == -3.5


def test_exphist_zero_bucket_and_signs():
    h = ExpHistogram(min_value=1e-6)
    h.add(np.array([-5.0, -1e-9, 0.0, 1e-9, 5.0]))
    assert h.buckets()["zero"] == 3
    assert h.quantile(0.5) == 0.0
    assert h.quantile(0.0) == -5.0 and h.quantile(1.0) == 5.0


def test_exphist_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 1.5"):
        ExpHistogram(alpha=1.5)
    with pytest.raises(ValueError, match="min_value must be positive and finite, got 0.0"):
        ExpHistogram(min_value=0.0)
    with pytest.raises(ValueError, match=r"quantile must be in \[0, 1\], got 1.2"):
        ExpHistogram().quantile(1.2)
    with pytest.raises(ValueError, match="weights must match values in length, got 3 and 1"):
        ExpHistogram().add(np.ones(1), np.ones(3))


def test_exphist_memory_follows_dynamic_range_not_count(rng):
    h = ExpHistogram(alpha=0.005)
    h.add(rng.uniform(1.0, 1000.0, size=200_000))
    # ln(1000) / ln(gamma) buckets, about 691 for alpha 0.005.
    assert h.n_buckets <= math.ceil(math.log(1000.0) / math.log(h.gamma)) + 2


def test_exphist_pickle_round_trip(rng):
    h = ExpHistogram(alpha=0.02)
    h.add(np.concatenate([rng.normal(0, 100, size=5000), [0.0, np.nan, np.inf]]))
    back = pickle.loads(pickle.dumps(h))
    assert back.quantiles([0, 0.1, 0.5, 0.9, 1]) == h.quantiles([0, 0.1, 0.5, 0.9, 1])
    assert (back.count, back.n_nan, back.alpha) == (h.count, h.n_nan, h.alpha)
    assert math.isnan(back.sum) == math.isnan(h.sum)


def test_fixed_buckets_are_far_off_where_exphist_is_not(rng):
    """The reason for the exponential histogram: p99 from 10..1000 ms buckets."""
    values = rng.lognormal(4.0, 1.0, size=200_000)
    counts = np.zeros(7)
    hist_bucketize(values, LATENCY_BOUNDS, counts)
    bounds = np.append(LATENCY_BOUNDS, np.inf)
    fixed = hist_quantile(0.99, bounds, hist_cumulative(counts))
    exact = np.quantile(values, 0.99)
    h = ExpHistogram()
    h.add(values)
    assert abs(fixed / exact - 1) > 0.1  # 14.6% at seed 0
    assert abs(h.quantile(0.99) / exact - 1) < 0.01
