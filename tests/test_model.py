"""Series ids, label sets and the sample tables of ``obscore.model``."""

from __future__ import annotations

import re

import numpy as np
import pytest

from obscore.model import sample_table


def test_sample_table_keeps_integer_ids_and_ts_and_widens_values():
    t = sample_table(np.array([3, 2**64 - 1], np.uint64), np.array([-5, 2**63 - 1]), [1, 2])
    assert t["series_id"].to_pylist() == [3, 2**64 - 1]
    assert t["ts"].to_pylist() == [-5, 2**63 - 1]
    assert t["value"].to_pylist() == [1.0, 2.0]
    assert sample_table([], [], []).num_rows == 0  # an empty list is float64 to NumPy


@pytest.mark.parametrize(
    ("ids", "ts", "message"),
    [
        # a float ts was truncated (1.7 -> 1) before
        ([1], np.array([1.7]), "ts must be an integer array (int64), got float64"),
        ([1], np.array([2.0]), "ts must be an integer array (int64), got float64"),
        (np.array([1.0]), [1], "series_ids must be an integer array (uint64), got float64"),
        # -1 was wrapped to 18446744073709551615 before
        (np.array([5, -1]), [1, 2], "series_ids must be at least 0 (uint64), got -1 at position 1 (1 such)"),
        ([1], np.array([2**63], np.uint64), "ts must be at most 9223372036854775807 (int64), got 9223372036854775808 at position 0 (1 such)"),
    ],
)
def test_sample_table_refuses_what_a_cast_would_truncate_or_wrap(ids, ts, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        sample_table(ids, ts, np.ones(len(ts)))
