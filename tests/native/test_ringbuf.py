"""RingBuffers against a deque-per-series model (tests/reference.py).

Ring buffers only move samples, never compute with them, so every comparison
here is exact (NaN compares equal to NaN).
"""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import INT64_MIN, RingModel

from obscore._native import ringbuf
from obscore._native.ringbuf import DUPLICATE, OUT_OF_ORDER, STORED, RingBuffers


def push(rb: RingBuffers, slots, ts, values) -> tuple[int, np.ndarray]:
    status = np.empty(len(slots), dtype=np.uint8)
    n = rb.push(
        np.asarray(slots, dtype=np.int64),
        np.asarray(ts, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
        status,
    )
    return n, status


def assert_same_as_model(rb: RingBuffers, model: RingModel) -> None:
    assert rb.n_series == len(model.series)
    for slot in range(rb.n_series):
        ts, values = rb.read(slot)
        expected = list(model.series[slot])
        np.testing.assert_array_equal(ts, [t for t, _ in expected])
        np.testing.assert_array_equal(values, [v for _, v in expected])
        assert rb.count(slot) == len(expected)
        assert rb.last_ts(slot) == model.last_ts(slot)


def test_ringbuf_push_stores_in_order_and_reads_oldest_first():
    rb = RingBuffers(capacity=4, n_series=2)
    n, status = push(rb, [0, 1, 0, 1], [10, 20, 11, 21], [1.0, 2.0, 3.0, 4.0])
    assert n == 4
    assert status.tolist() == [STORED] * 4
    ts, values = rb.read(0)
    assert ts.tolist() == [10, 11]
    assert values.tolist() == [1.0, 3.0]
    assert rb.last_ts(1) == 21


def test_ringbuf_push_wraps_at_capacity():
    rb = RingBuffers(capacity=3, n_series=1)
    push(rb, [0] * 7, range(7), np.arange(7.0))
    ts, values = rb.read(0)
    assert ts.tolist() == [4, 5, 6]
    assert values.tolist() == [4.0, 5.0, 6.0]
    assert rb.count(0) == 3


def test_ringbuf_push_reports_out_of_order_and_duplicate():
    rb = RingBuffers(capacity=8, n_series=1)
    n, status = push(rb, [0] * 5, [100, 100, 99, 101, 50], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert n == 2
    assert status.tolist() == [STORED, DUPLICATE, OUT_OF_ORDER, STORED, OUT_OF_ORDER]
    assert rb.read(0)[1].tolist() == [1.0, 4.0]


def test_ringbuf_push_out_of_order_compares_with_overwritten_ring():
    # The last ts survives wrap-around: after overwriting, older ts still reject.
    rb = RingBuffers(capacity=2, n_series=1)
    push(rb, [0] * 4, [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0])
    _, status = push(rb, [0, 0], [3, 4], [9.0, 9.0])
    assert status.tolist() == [OUT_OF_ORDER, DUPLICATE]


def test_ringbuf_push_first_sample_may_be_int64_min():
    rb = RingBuffers(capacity=2, n_series=1)
    _, status = push(rb, [0], [INT64_MIN], [1.0])
    assert status.tolist() == [STORED]
    assert rb.count(0) == 1


def test_ringbuf_push_keeps_nan_and_inf_values():
    rb = RingBuffers(capacity=4, n_series=1)
    push(rb, [0, 0, 0], [1, 2, 3], [np.nan, np.inf, -np.inf])
    values = rb.read(0)[1]
    assert np.isnan(values[0]) and values[1] == np.inf and values[2] == -np.inf


def test_ringbuf_push_empty_batch_stores_nothing():
    rb = RingBuffers(capacity=4, n_series=1)
    n, status = push(rb, [], [], [])
    assert n == 0 and status.shape == (0,)
    assert rb.count(0) == 0
    assert rb.last_ts(0) == INT64_MIN


def test_ringbuf_push_rejects_slot_out_of_range_and_stores_nothing():
    rb = RingBuffers(capacity=4, n_series=3)
    with pytest.raises(IndexError, match=r"row 2: slot 7 is outside \[0, 3\)"):
        push(rb, [0, 1, 7, -1], [1, 1, 1, 1], [1.0, 1.0, 1.0, 1.0])
    assert [rb.count(s) for s in range(3)] == [0, 0, 0]
    with pytest.raises(IndexError, match=r"row 0: slot -1"):
        push(rb, [-1], [1], [1.0])


@pytest.mark.parametrize("bad_slot", [1000, -1, 2**63 - 1, -(2**63)])
@pytest.mark.parametrize("row", [0, 5, 997, 999])
def test_ringbuf_push_finds_a_bad_slot_anywhere_in_a_long_batch(bad_slot, row):
    # The range check runs in vector lanes over the whole batch first.
    rb = RingBuffers(capacity=4, n_series=1000)
    slots = np.arange(1000, dtype=np.int64)
    slots[row] = bad_slot
    with pytest.raises(IndexError, match=rf"row {row}: slot {bad_slot} is outside"):
        push(rb, slots, np.ones(1000), np.ones(1000))
    assert sum(rb.count(s) for s in range(1000)) == 0


def test_ringbuf_push_rejects_length_mismatch():
    rb = RingBuffers(capacity=4, n_series=1)
    status = np.empty(2, dtype=np.uint8)
    with pytest.raises(ValueError, match="one length, got 2, 2, 1 and 2"):
        rb.push(np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(1), status)


def test_ringbuf_push_accepts_readonly_arrow_buffers():
    rb = RingBuffers(capacity=4, n_series=1)
    slots = pa.array([0, 0], pa.int64()).to_numpy(zero_copy_only=True)
    ts = pa.array([5, 6], pa.int64()).to_numpy(zero_copy_only=True)
    values = pa.array([1.5, 2.5], pa.float64()).to_numpy(zero_copy_only=True)
    assert not values.flags.writeable
    assert rb.push(slots, ts, values, np.empty(2, np.uint8)) == 2


def test_ringbuf_push_takes_other_buffers_like_ndarrays():
    # ndarrays take a fast path; any other buffer goes through memoryviews
    # and must store the same
    fast, other = RingBuffers(capacity=4, n_series=2), RingBuffers(capacity=4, n_series=2)
    slots, ts, values = [0, 1, 0, 0], [1, 1, 2, 2], [1.0, 2.0, 3.0, 4.0]
    n_fast, status_fast = push(fast, slots, ts, values)
    status = bytearray(4)
    n_other = other.push(
        memoryview(np.array(slots, np.int64)),
        memoryview(np.array(ts, np.int64)),
        memoryview(np.array(values)),
        memoryview(status),
    )
    assert n_fast == n_other == 3
    assert list(status) == status_fast.tolist() == [STORED, STORED, STORED, DUPLICATE]
    for slot in range(2):
        for a, b in zip(fast.read(slot), other.read(slot)):
            np.testing.assert_array_equal(a, b)


def test_ringbuf_push_rejects_wrong_dtype_and_readonly_status():
    rb = RingBuffers(capacity=4, n_series=1)
    status = np.empty(1, dtype=np.uint8)
    with pytest.raises(ValueError, match="dtype mismatch"):
        rb.push(np.zeros(1), np.zeros(1, np.int64), np.zeros(1), status)
    status.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        rb.push(np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1), status)
    assert rb.count(0) == 0


def test_ringbuf_rejects_bad_capacity_and_counts():
    with pytest.raises(ValueError, match="capacity must be positive, got 0"):
        RingBuffers(0)
    with pytest.raises(ValueError, match="n_series must be >= 0, got -1"):
        RingBuffers(4, -1)
    with pytest.raises(ValueError, match="n must be >= 0, got -2"):
        RingBuffers(4).add_series(-2)


def test_ringbuf_count_and_read_reject_unknown_slot():
    rb = RingBuffers(capacity=4, n_series=2)
    with pytest.raises(IndexError, match=r"slot 2 is outside \[0, 2\)"):
        rb.count(2)
    with pytest.raises(IndexError, match=r"slot -1 is outside"):
        rb.read(-1)


def test_ringbuf_last_ts_is_int64_min_when_empty():
    rb = RingBuffers(capacity=4, n_series=1)
    assert rb.last_ts(0) == INT64_MIN == np.iinfo(np.int64).min


def test_ringbuf_add_series_grows_and_keeps_data():
    rb = RingBuffers(capacity=5, n_series=1)
    model = RingModel(5, 1)
    rng = np.random.default_rng(7)
    next_ts = [0]
    for _ in range(40):
        # Interleave growth (crossing several doublings) with pushes to
        # every existing series.
        first = rb.add_series(3)
        assert first == model.add_series(3)
        next_ts.extend([0, 0, 0])
        slots = rng.integers(0, rb.n_series, size=20)
        ts = []
        for s in slots:
            next_ts[s] += int(rng.integers(1, 3))
            ts.append(next_ts[s])
        values = rng.normal(size=20)
        push(rb, slots, ts, values)
        for s, t, v in zip(slots, ts, values):
            model.push(int(s), t, v)
    assert rb.n_series == 121
    assert_same_as_model(rb, model)


def test_ringbuf_read_range_is_half_open():
    rb = RingBuffers(capacity=10, n_series=1)
    push(rb, [0] * 5, [10, 20, 30, 40, 50], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert rb.read(0, 20, 40)[0].tolist() == [20, 30]
    assert rb.read(0, 21, 41)[0].tolist() == [30, 40]
    assert rb.read(0, 40, 20)[0].tolist() == []
    assert rb.read(0, 60)[0].tolist() == []


def test_ringbuf_read_gives_readonly_view_unless_wrapped():
    rb = RingBuffers(capacity=4, n_series=1)
    push(rb, [0] * 3, [1, 2, 3], [1.0, 2.0, 3.0])
    ts, values = rb.read(0)
    assert not ts.flags.writeable and not values.flags.writeable
    assert not ts.flags.owndata  # a view into the ring, not a copy
    push(rb, [0] * 3, [4, 5, 6], [4.0, 5.0, 6.0])  # ring now starts mid-row
    ts, values = rb.read(0)
    assert ts.tolist() == [3, 4, 5, 6]
    assert ts.flags.writeable and ts.flags.owndata  # wrapped: a fresh copy
    ts_tail, _ = rb.read(0, 5)  # the tail alone is contiguous again
    assert not ts_tail.flags.writeable


def test_ringbuf_read_many_concatenates_in_given_order():
    rb = RingBuffers(capacity=3, n_series=3)
    push(rb, [0, 1, 2, 0, 1, 0, 0], [1, 1, 1, 2, 2, 3, 4], np.arange(7.0))
    slots = np.array([2, 0, 1, 0], dtype=np.int64)  # slot 0 asked twice
    index, ts, values = rb.read_many(slots, 2)
    assert index.tolist() == [1, 1, 1, 2, 3, 3, 3]  # positions in `slots`
    assert slots[index].tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert ts.tolist() == [2, 3, 4, 2, 2, 3, 4]
    assert values.tolist() == [3.0, 5.0, 6.0, 4.0, 3.0, 5.0, 6.0]


def test_ringbuf_read_many_matches_read_per_slot(rng):
    rb = RingBuffers(capacity=16, n_series=50)
    slots = rng.integers(0, 50, size=2000)
    ts = np.arange(2000)  # one clock: every slot sees increasing ts
    push(rb, slots, ts, rng.normal(size=2000))
    wanted = rng.permutation(50)[:20].astype(np.int64)
    index, got_ts, got_values = rb.read_many(wanted, 1000, 1900)
    for k, slot in enumerate(wanted):
        ts_k, values_k = rb.read(int(slot), 1000, 1900)
        np.testing.assert_array_equal(got_ts[index == k], ts_k)
        np.testing.assert_array_equal(got_values[index == k], values_k)
    assert np.all(np.diff(index) >= 0)


def test_ringbuf_read_many_empty_and_bad_slots():
    rb = RingBuffers(capacity=3, n_series=3)
    empty = rb.read_many(np.array([], dtype=np.int64))
    assert [len(a) for a in empty] == [0, 0, 0]
    assert [len(a) for a in rb.read_many(np.array([0, 1], dtype=np.int64))] == [0, 0, 0]
    with pytest.raises(IndexError, match=r"slots\[1\]: slot 3 is outside"):
        rb.read_many(np.array([0, 3], dtype=np.int64))


def test_ringbuf_pickle_round_trip_continues_identically():
    rb = RingBuffers(capacity=4, n_series=3)
    push(rb, [0, 0, 0, 0, 0, 1], [1, 2, 3, 4, 5, 9], [1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    copy = pickle.loads(pickle.dumps(rb))
    assert (copy.capacity, copy.n_series) == (4, 3)
    for target in (rb, copy):
        n, status = push(target, [0, 1, 2, 1], [6, 9, 1, 8], [7.0, 8.0, 9.0, 1.0])
        assert n == 2 and status.tolist() == [STORED, DUPLICATE, STORED, OUT_OF_ORDER]
    for slot in range(3):
        for a, b in zip(rb.read(slot), copy.read(slot)):
            np.testing.assert_array_equal(a, b)
        assert rb.last_ts(slot) == copy.last_ts(slot)


ops = st.lists(
    st.tuples(
        st.integers(0, 3),  # slot
        st.integers(-5, 40),  # ts: small range forces duplicates and disorder
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, -0.0, 1e308, -1e-308]),
        ),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 6), batches=st.lists(ops, max_size=4))
def test_ringbuf_matches_deque_model_on_any_push_sequence(capacity, batches):
    rb = RingBuffers(capacity=capacity, n_series=4)
    model = RingModel(capacity, 4)
    for batch in batches:
        slots = [s for s, _, _ in batch]
        ts = [t for _, t, _ in batch]
        values = [v for _, _, v in batch]
        n, status = push(rb, slots, ts, values)
        expected = [model.push(s, t, v) for s, t, v in batch]
        assert status.tolist() == expected
        assert n == expected.count(0)
    assert_same_as_model(rb, model)


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 8),
    n_pushed=st.integers(0, 30),
    start=st.integers(-3, 35),
    end=st.integers(-3, 35),
)
def test_ringbuf_read_range_matches_filter(capacity, n_pushed, start, end):
    rb = RingBuffers(capacity=capacity, n_series=1)
    model = RingModel(capacity, 1)
    ts = list(range(0, 2 * n_pushed, 2))
    push(rb, [0] * n_pushed, ts, [float(t) for t in ts])
    for t in ts:
        model.push(0, t, float(t))
    got_ts, got_values = rb.read(0, start, end)
    expected = model.read(0, start, end)
    assert got_ts.tolist() == [t for t, _ in expected]
    assert got_values.tolist() == [v for _, v in expected]


def test_ringbuf_docstring_examples_run(run_doctests):
    failed, attempted = run_doctests(ringbuf)
    assert attempted > 0 and failed == 0


@settings(max_examples=40, deadline=None)
@given(
    capacity=st.integers(1, 40),
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 50), st.booleans()), max_size=12
    ),
)
def test_ringbuf_long_runs_cross_staging_like_model(capacity, steps):
    # Runs of up to 50 samples per series, with reads (which move staged
    # samples into the rows) between some of them, across the 16-deep staging
    rb = RingBuffers(capacity=capacity, n_series=3)
    model = RingModel(capacity, 3)
    next_ts = [0, 0, 0]
    for slot, length, read_after in steps:
        ts = list(range(next_ts[slot], next_ts[slot] + length))
        next_ts[slot] += length
        push(rb, [slot] * length, ts, [float(t) for t in ts])
        for t in ts:
            model.push(slot, t, float(t))
        if read_after:
            assert rb.read(slot)[0].tolist() == [t for t, _ in model.series[slot]]
    assert_same_as_model(rb, model)


@pytest.mark.parametrize("capacity", [45, 48, 100])
def test_ringbuf_scrapes_over_many_laps_like_model(capacity):
    # Scrapes of every series in shuffled order for several laps of the ring,
    # with a read of one series now and then: a capacity that is not a
    # multiple of 8 leaves heads off the 64-byte lines after each wrap, a read
    # moves a partial stage, and the push realigns with a shorter stage.
    rng = np.random.default_rng(7)
    n_series = 5
    rb = RingBuffers(capacity=capacity, n_series=n_series)
    model = RingModel(capacity, n_series)
    for scrape in range(5 * capacity):
        slots = rng.permutation(n_series)
        ts = np.full(n_series, 10 * scrape)
        values = rng.normal(size=n_series)
        n, status = push(rb, slots, ts, values)
        assert n == n_series and not status.any()
        for s, t, v in zip(slots, ts, values):
            model.push(int(s), int(t), float(v))
        if scrape % 37 == 0:
            slot = scrape % n_series
            assert rb.read(slot)[0].tolist() == [t for t, _ in model.series[slot]]
    assert_same_as_model(rb, model)
