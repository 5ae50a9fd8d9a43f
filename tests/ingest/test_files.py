from __future__ import annotations

import math

import numpy as np

from obscore.ingest.files import read_csv, walk_csv


def test_read_csv_keeps_good_rows_and_names_each_bad_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "timestamp,value\n"
        "2014-04-01 00:00:00,1.5\n"
        "2014-04-01 00:05:00,2.5\n"
        "2014-04-01 00:10:00;3.5\n"  # line 4: malformed
        "2014-04-01 00:15:00,nan\n"  # line 5: NaN kept
        "2014-04-01 00:15:00,4.0\n"  # line 6: repeated timestamp kept
        "2014-04-01 00:20:00,abc\n"  # line 7: not a number
        "2014-04-01 00:25:00,5.0\n"
    )
    s = read_csv(path)
    assert s.lines.tolist() == [2, 3, 5, 6, 8]
    assert s.values[[0, 1, 3, 4]].tolist() == [1.5, 2.5, 4.0, 5.0]
    assert math.isnan(s.values[2])
    assert s.ts[0] == np.datetime64("2014-04-01T00:00:00", "ms").astype(np.int64)
    messages = [str(p) for p in s.problems]
    assert messages == [
        f"{path} line 4: expected 2 fields, found 1: '2014-04-01 00:10:00;3.5'; row skipped",
        f"{path} line 5: value is NaN; row kept",
        f"{path} line 6: timestamp '2014-04-01 00:15:00' repeats an earlier row; row kept",
        f"{path} line 7: value 'abc' is not a number; row skipped",
    ]


def test_read_csv_accepts_epoch_seconds_and_ms(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("1396310400,1\n1396310400500,2\n")
    s = read_csv(path)
    assert s.ts.tolist() == [1_396_310_400_000, 1_396_310_400_500]


def test_walk_csv_keeps_relative_names(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.csv").write_text("timestamp,value\n")
    (tmp_path / "a" / "y.csv").write_text("timestamp,value\n")
    found = [str(rel) for _, rel in walk_csv([tmp_path / "a"])]
    assert found == ["b/x.csv", "y.csv"]


def test_read_csv_skips_a_timestamp_past_int64(tmp_path):
    # once an OverflowError out of np.array(ts, int64): the whole file lost
    path = tmp_path / "big.csv"
    path.write_text("2014-04-01 00:00:00,1\n99999999999999999999,2\n")
    s = read_csv(path)
    assert s.lines.tolist() == [1]
    assert [str(p) for p in s.problems] == [
        f"{path} line 2: timestamp '99999999999999999999' does not fit int64 "
        "milliseconds; row skipped"
    ]
