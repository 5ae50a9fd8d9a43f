"""The default stream detector on NAB's realKnownCause files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from obscore.detect.stream import detect_stream
from obscore.ingest.files import read_csv


def _windows(labels, key):
    return [
        (np.datetime64(a.replace(" ", "T"), "ms").astype(np.int64), np.datetime64(b.replace(" ", "T"), "ms").astype(np.int64))
        for a, b in labels[key]
    ]


def test_alerts_fall_inside_labelled_windows_in_5_of_7_files(shared_data):
    folder = shared_data / "nab" / "data" / "realKnownCause"
    labels = json.loads((shared_data / "nab" / "labels" / "combined_windows.json").read_text())
    files = sorted(folder.glob("*.csv"))
    assert len(files) == 7
    hits, report = 0, []
    for path in files:
        series = read_csv(path)
        res = detect_stream(series.ts, series.values)
        assert len(res.scores) == len(series.ts)
        assert np.all((res.scores >= 0) & (res.scores <= 1))
        alert_ts = series.ts[res.alerts]
        wins = _windows(labels, f"realKnownCause/{path.name}")
        inside = np.zeros(len(alert_ts), dtype=bool)
        for a, b in wins:
            inside |= (alert_ts >= a) & (alert_ts <= b)
        true, false = int(inside.sum()), int((~inside).sum())
        report.append(f"{path.name}: {true} true, {false} false alerts, {len(wins)} windows")
        hits += true > 0
    print("\n".join(report))
    assert hits >= 5, report


def test_stream_scores_do_not_look_ahead(rng):
    ts = np.arange(2000, dtype=np.int64) * 300_000
    values = rng.normal(size=2000)
    full = detect_stream(ts, values).scores
    head = detect_stream(ts[:1200], values[:1200]).scores
    np.testing.assert_array_equal(full[:1200], head)
