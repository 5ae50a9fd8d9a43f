"""rollup_fold and rollup_downsample against pandas and tests/reference.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from obscore._native import rollup
from obscore._native.rollup import COLUMNS, rollup_downsample, rollup_fold

I64 = np.int64


def fold(groups, ts, values, step_ms, is_counter=False):
    return rollup_fold(
        np.asarray(groups, dtype=I64),
        np.asarray(ts, dtype=I64),
        np.asarray(values, dtype=np.float64),
        step_ms,
        is_counter,
    )


def downsample(rows, step_ms):
    return rollup_downsample(
        rows["group"],
        rows["ts"],
        rows["count"],
        rows["sum"],
        rows["min"],
        rows["max"],
        rows["last"],
        rows["increase"],
        step_ms,
    )


def assert_rows_equal(got, expected, exact=COLUMNS, close=()):
    assert set(got) == set(COLUMNS)
    for name in exact:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    for name in close:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, err_msg=name)


def random_samples(rng, n_groups=20, n_per_group=300, nan_share=0.1):
    groups, ts, values = [], [], []
    for g in range(n_groups):
        t = np.sort(rng.integers(-600_000, 3_600_000, size=n_per_group))
        v = rng.normal(100.0, 30.0, size=n_per_group)
        v[rng.random(n_per_group) < nan_share] = np.nan
        groups.append(np.full(n_per_group, g * 7 - 30))  # negative ids too
        ts.append(t)
        values.append(v)
    return np.concatenate(groups), np.concatenate(ts), np.concatenate(values)


def test_rollup_fold_matches_pandas_groupby(rng):
    groups, ts, values = random_samples(rng)
    got = fold(groups, ts, values, 60_000)

    df = pd.DataFrame({"group": groups, "step": (ts // 60_000) * 60_000, "v": values})
    g = df.groupby(["group", "step"], sort=True)["v"]
    expected = g.agg(["count", "sum", "min", "max", "last"]).reset_index()
    # count, min, max and last select or count values: exact. pandas sums
    # with Kahan compensation, so sums agree to rounding only (1e-12 rel).
    np.testing.assert_array_equal(got["group"], expected["group"])
    np.testing.assert_array_equal(got["ts"], expected["step"])
    for name in ("count", "min", "max", "last"):
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    np.testing.assert_allclose(got["sum"], expected["sum"], rtol=1e-12)
    assert np.isnan(got["increase"]).all()


def test_rollup_fold_counter_increase_matches_reference_loop(rng):
    groups, ts, _ = random_samples(rng, n_groups=5, n_per_group=500, nan_share=0.05)
    # A counter with resets: climbs, then drops to a small value now and then.
    steps = rng.exponential(3.0, size=len(ts))
    values = np.cumsum(steps)
    values[rng.random(len(ts)) < 0.02] = 1.0
    values[rng.random(len(ts)) < 0.05] = np.nan
    got = fold(groups, ts, values, 60_000, is_counter=True)
    expected = reference.fold(
        groups.tolist(), ts.tolist(), values.tolist(), 60_000, True
    )
    # The reference adds the same deltas in the same order: exact.
    assert_rows_equal(got, expected)
    # Per group, the step increases add up to the whole-series increase.
    for g in np.unique(groups):
        total = reference.counter_increase(values[groups == g].tolist())
        np.testing.assert_allclose(
            got["increase"][got["group"] == g].sum(), total, rtol=1e-12
        )


def test_rollup_fold_counter_reset_counts_new_value():
    got = fold([1] * 5, [0, 10, 20, 30, 40], [5.0, 8.0, 2.0, 2.0, 7.0], 100, True)
    # 8-5 = 3, reset to 2 counts 2, 2-2 = 0, 7-2 = 5
    assert got["increase"].tolist() == [10.0]
    per_step = fold([1] * 3, [0, 100, 200], [5.0, 3.0, 4.0], 100, True)
    assert per_step["increase"].tolist() == [0.0, 3.0, 1.0]


def test_rollup_fold_first_sample_of_each_group_adds_no_increase():
    got = fold([1, 1, 2, 2], [0, 10, 0, 10], [100.0, 101.0, 500.0, 502.0], 1000, True)
    assert got["increase"].tolist() == [1.0, 2.0]


def test_rollup_fold_all_nan_step_still_gives_a_row():
    got = fold([0, 0, 0], [0, 1000, 1001], [1.0, np.nan, np.nan], 1000, True)
    assert got["ts"].tolist() == [0, 1000]
    assert got["count"].tolist() == [1, 0]
    assert got["sum"].tolist() == [1.0, 0.0]
    assert (
        np.isnan(got["min"][1]) and np.isnan(got["max"][1]) and np.isnan(got["last"][1])
    )
    assert got["increase"].tolist() == [0.0, 0.0]


def test_rollup_fold_skips_nan_in_every_aggregate():
    got = fold([0] * 4, [0, 1, 2, 3], [np.nan, 2.0, np.nan, 1.0], 10)
    assert got["count"].tolist() == [2]
    assert (got["sum"][0], got["min"][0], got["max"][0], got["last"][0]) == (
        3.0,
        1.0,
        2.0,
        1.0,
    )


def test_rollup_fold_floors_negative_ts():
    got = fold([0] * 4, [-60_001, -60_000, -1, 0], [1.0, 2.0, 3.0, 4.0], 60_000)
    assert got["ts"].tolist() == [-120_000, -60_000, 0]
    assert got["count"].tolist() == [1, 2, 1]


def test_rollup_fold_accepts_equal_ts_within_a_group():
    got = fold([3, 3, 3], [5, 5, 5], [1.0, 2.0, 0.5], 10)
    assert (got["count"][0], got["last"][0], got["min"][0]) == (3, 0.5, 0.5)


def test_rollup_fold_empty_input_gives_empty_columns():
    got = fold([], [], [], 1000, True)
    assert set(got) == set(COLUMNS)
    assert all(len(a) == 0 for a in got.values())
    assert got["group"].dtype == I64 and got["sum"].dtype == np.float64


def test_rollup_fold_rejects_out_of_order_rows():
    with pytest.raises(
        ValueError,
        match=r"sorted by \(group, ts\): row 2 \(group 1, ts 5\) follows row 1 "
        r"\(group 1, ts 9\)",
    ):
        fold([1, 1, 1], [3, 9, 5], [1.0, 1.0, 1.0], 10)
    with pytest.raises(
        ValueError, match=r"row 2 \(group 0, ts 0\) follows row 1 \(group 2"
    ):
        fold([1, 2, 0], [0, 0, 0], [1.0, 1.0, 1.0], 10)


def test_rollup_fold_rejects_bad_step_and_lengths():
    with pytest.raises(ValueError, match="step_ms must be positive, got 0"):
        fold([0], [0], [1.0], 0)
    with pytest.raises(ValueError, match=r"one length, got \[2, 2, 1\]"):
        fold([0, 0], [0, 1], [1.0], 10)


def test_rollup_fold_accepts_readonly_arrow_buffers():
    col = lambda values, t: pa.array(values, t).to_numpy(zero_copy_only=True)  # noqa: E731
    got = rollup_fold(
        col([1, 1], pa.int64()),
        col([0, 5], pa.int64()),
        col([1.0, 2.0], pa.float64()),
        10,
        False,
    )
    assert got["sum"].tolist() == [3.0]


def test_rollup_downsample_equals_direct_fold(rng):
    groups, ts, values = random_samples(rng)
    values = np.where(np.isnan(values), np.nan, np.abs(np.cumsum(values)))
    for is_counter in (False, True):
        fine = fold(groups, ts, values, 60_000, is_counter)
        got = downsample(fine, 300_000)
        direct = fold(groups, ts, values, 300_000, is_counter)
        # Regrouping the additions changes rounding only (1e-12 rel).
        assert_rows_equal(
            got,
            direct,
            exact=("group", "ts", "count", "min", "max", "last"),
            close=("sum", "increase"),
        )


def test_rollup_downsample_keeps_last_non_nan_last():
    rows = fold([0, 0, 0], [0, 60_000, 120_000], [1.0, 2.0, np.nan], 60_000)
    got = downsample(rows, 300_000)
    assert got["count"].tolist() == [2]
    assert got["last"].tolist() == [2.0]
    assert got["min"].tolist() == [1.0] and got["max"].tolist() == [2.0]


def test_rollup_downsample_empty_and_unsorted():
    empty = fold([], [], [], 60_000)
    assert all(len(a) == 0 for a in downsample(empty, 300_000).values())
    rows = fold([0, 0], [0, 60_000], [1.0, 2.0], 60_000)
    rows = {k: v[::-1].copy() for k, v in rows.items()}
    with pytest.raises(ValueError, match=r"row 1 \(group 0, ts 0\) follows row 0"):
        downsample(rows, 300_000)


adversarial_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 1.0]),
)


@st.composite
def sorted_samples(draw, values=adversarial_values):
    n = draw(st.integers(0, 40))
    rows = sorted(
        draw(
            st.lists(
                st.tuples(st.integers(-2, 2), st.integers(-(10**12), 10**12)),
                min_size=n,
                max_size=n,
            )
        )
    )
    vals = draw(st.lists(values, min_size=n, max_size=n))
    return [g for g, _ in rows], [t for _, t in rows], vals


@settings(max_examples=100, deadline=None)
@given(
    data=sorted_samples(),
    step_ms=st.sampled_from([1, 7, 1000, 60_000, 10**11]),
    is_counter=st.booleans(),
)
def test_rollup_fold_matches_reference_on_adversarial_input(data, step_ms, is_counter):
    groups, ts, values = data
    got = fold(groups, ts, values, step_ms, is_counter)
    expected = reference.fold(groups, ts, values, step_ms, is_counter)
    # Same operations in the same order as the loop: exact, NaN and Inf too.
    assert_rows_equal(got, expected)


@settings(max_examples=60, deadline=None)
@given(
    data=sorted_samples(
        values=st.one_of(st.integers(-1000, 1000).map(float), st.just(float("nan")))
    ),
    is_counter=st.booleans(),
)
def test_rollup_downsample_of_fold_equals_coarse_fold(data, is_counter):
    groups, ts, values = data
    fine = fold(groups, ts, values, 1000, is_counter)
    # Integer values keep every sum exact, so regrouping changes nothing.
    assert_rows_equal(
        downsample(fine, 5000), fold(groups, ts, values, 5000, is_counter)
    )


def test_rollup_docstring_examples_run(run_doctests):
    failed, attempted = run_doctests(rollup)
    assert attempted > 0 and failed == 0
