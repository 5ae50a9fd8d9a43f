"""NAB scoring rules, the reproduction of NAB's published scores, and SMD metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from obscore.detect.evaluate import (
    NAB_PROFILES,
    NabCorpus,
    Profile,
    best_f1,
    evaluate_nab,
    evaluate_smd,
    load_nab,
    locate_windows,
    point_adjust,
    precision_recall_f1,
    probationary_length,
    read_detector_outputs,
    scaled_sigmoid,
    score_corpus,
    score_detector_outputs,
    score_file,
    sweep_thresholds,
)

MINUTE_MS = 60_000
STANDARD = NAB_PROFILES["standard"]

# The detectors whose per-row outputs are published in shared/data/nab/results.
PUBLISHED = [
    "ARTime",
    "contextOSE",
    "numenta",
    "knncad",
    "twitterADVec",
    "windowedGaussian",
    "expose",
    "null",
]


def _reward(position: float) -> float:
    """An independent form of NAB's curve: 2 / (1 + exp(5 y)) - 1 == tanh(-2.5 y)."""
    return math.tanh(-2.5 * position)


def _one_file(alert_rows, n=100, window=(40, 49)):
    """A 100-row file at 1-minute steps with one window over rows 40..49."""
    ts = np.arange(n, dtype=np.int64) * MINUTE_MS
    alerts = np.zeros(n, dtype=bool)
    alerts[list(alert_rows)] = True
    windows = {"f.csv": [(int(ts[window[0]]), int(ts[window[1]]))]}
    return {"f.csv": (ts, alerts)}, windows


# --- the rules, on data small enough to work out by hand ---


@pytest.mark.parametrize(
    ("rows", "expected"), [(100, 15), (4032, 604), (5000, 750), (22695, 750), (0, 0)]
)
def test_probationary_length_is_15_percent_capped_at_750_rows(rows, expected):
    assert probationary_length(rows) == expected


def test_scaled_sigmoid_matches_tanh_form_and_is_minus_one_from_3_on():
    y = np.array([-1.0, -0.5, -0.1, 0.0, 0.5, 2.999, 3.0, 10.0, np.inf])
    expected = [_reward(v) for v in y[:6]] + [-1.0, -1.0, -1.0]
    # tanh and the exp form differ by rounding only
    np.testing.assert_allclose(scaled_sigmoid(y), expected, rtol=0, atol=1e-12)


def test_alert_on_first_window_row_earns_the_full_tp_weight():
    detections, windows = _one_file([40])
    result = score_corpus(detections, windows, STANDARD)
    assert result.raw == pytest.approx(1.0, abs=1e-12)
    assert result.score == pytest.approx(100.0)
    assert result.files["f.csv"].detected_windows == 1


def test_only_the_earliest_alert_in_a_window_counts():
    one, windows = _one_file([43])
    many, _ = _one_file([43, 44, 47, 49])
    expected = _reward(-(49 - 43 + 1) / 10) / _reward(-1.0)
    assert score_corpus(one, windows).raw == pytest.approx(expected, abs=1e-12)
    assert score_corpus(many, windows).raw == pytest.approx(expected, abs=1e-12)


def test_alert_on_last_window_row_is_scored_relative_to_window_end():
    detections, windows = _one_file([49])
    expected = _reward(-1 / 10) / _reward(-1.0)
    assert score_corpus(detections, windows).raw == pytest.approx(expected, abs=1e-12)


def test_false_positive_before_first_window_costs_full_fp_weight():
    detections, windows = _one_file([20, 40])
    result = score_corpus(detections, windows, "reward_low_FP_rate")
    assert result.raw == pytest.approx(1.0 - 0.22, abs=1e-12)
    assert (result.files["f.csv"].fp, result.files["f.csv"].tp) == (1, 1)


@pytest.mark.parametrize("row", [50, 55, 60, 75, 76, 99])
def test_false_positive_after_window_is_weighted_by_distance_past_its_end(row):
    detections, windows = _one_file([40, row])
    distance = (row - 49) / (10 - 1)
    cost = -1.0 if distance >= 3 else _reward(distance)
    result = score_corpus(detections, windows, STANDARD)
    assert result.raw == pytest.approx(1.0 + 0.11 * cost, abs=1e-12)


def test_missed_window_costs_fn_weight_and_null_detector_scores_zero():
    detections, windows = _one_file([])
    for name, profile in NAB_PROFILES.items():
        result = score_corpus(detections, windows, name)
        assert result.raw == -profile.fn_weight
        assert result.null == -profile.fn_weight
        assert result.score == 0.0


def test_probationary_rows_are_not_scored():
    detections, windows = _one_file([3, 14])
    result = score_corpus(detections, windows)
    assert result.raw == -1.0
    assert result.files["f.csv"].fp == 0
    assert result.files["f.csv"].tn + result.files["f.csv"].fn == 100 - 15


def test_window_inside_probationary_period_is_neither_missed_nor_perfect_credit():
    # NAB counts the window in the perfect score but not in the null score
    detections, windows = _one_file([], window=(2, 8))
    result = score_corpus(detections, windows)
    assert (result.raw, result.null, result.perfect) == (0.0, 0.0, 1.0)


def test_windows_are_located_by_timestamp_not_by_row():
    # a repeated timestamp shifts the rows: the window starts at the first row
    # holding its start time
    ts = np.arange(100, dtype=np.int64) * MINUTE_MS
    ts = np.concatenate([ts[:30], ts[29:99]])
    layout = locate_windows(ts, [(40 * MINUTE_MS, 49 * MINUTE_MS)], "dup.csv")
    np.testing.assert_array_equal(np.flatnonzero(layout.window == 0), np.arange(41, 51))


def test_score_corpus_accepts_date_strings_for_rows_and_windows():
    ts = pd.date_range("2014-04-01", periods=100, freq="5min")
    alerts = np.zeros(100, dtype=bool)
    alerts[40] = True
    stamps = ts.strftime("%Y-%m-%d %H:%M:%S").to_numpy()
    windows = {"f.csv": [(f"{stamps[40]}.000000", f"{stamps[49]}.000000")]}
    result = score_corpus({"f.csv": (stamps, alerts)}, windows)
    assert result.raw == pytest.approx(1.0, abs=1e-12)


def test_window_limit_that_is_not_a_row_timestamp_is_rejected():
    detections, _ = _one_file([40])
    windows = {"f.csv": [(40 * MINUTE_MS + 1, 49 * MINUTE_MS)]}
    message = r"f\.csv: the start of window 0, .* is not the timestamp"
    with pytest.raises(ValueError, match=message):
        score_corpus(detections, windows)


def test_overlapping_windows_are_rejected():
    ts = np.arange(100, dtype=np.int64) * MINUTE_MS
    windows = [(40 * MINUTE_MS, 49 * MINUTE_MS), (45 * MINUTE_MS, 60 * MINUTE_MS)]
    message = r"o\.csv: window 1 .* must .* start after the previous"
    with pytest.raises(ValueError, match=message):
        locate_windows(ts, windows, "o.csv")


def test_alerts_of_the_wrong_length_are_rejected():
    detections, windows = _one_file([40])
    layout = locate_windows(detections["f.csv"][0], windows["f.csv"], "f.csv")
    message = r"f\.csv: expected 100 alert flags .* got shape \(99,\)"
    with pytest.raises(ValueError, match=message):
        score_file(layout, np.zeros(99, dtype=bool), STANDARD)
    ts, _ = detections["f.csv"]
    with pytest.raises(ValueError, match="f.csv: 100 timestamps but 3 alert flags"):
        score_corpus({"f.csv": (ts, [0, 1, 0])}, windows)


def test_unknown_profile_and_unlabelled_file_are_rejected():
    detections, windows = _one_file([40])
    with pytest.raises(KeyError, match="no NAB profile named 'strict'"):
        score_corpus(detections, windows, "strict")
    with pytest.raises(KeyError, match="no labelled windows for 'f.csv'"):
        score_corpus(detections, {})


def test_sweep_equals_scoring_each_threshold(rng):
    profile = Profile("custom", 1.0, 0.3, 1.5)
    layouts, scores = {}, {}
    for k in range(4):
        n = 300 + 50 * k
        ts = np.arange(n, dtype=np.int64) * MINUTE_MS
        limits = [(ts[100 + k], ts[130 + k]), (ts[200], ts[215])][: k % 3]
        layouts[f"f{k}.csv"] = locate_windows(ts, limits, f"f{k}.csv")
        # rounding makes ties, which must enter together
        scores[f"f{k}.csv"] = np.round(rng.random(n), 2)
    sweep = sweep_thresholds(layouts, scores, profile)
    assert sweep.thresholds[0] == np.inf and sweep.raw[0] == sweep.null
    for t, raw in zip(sweep.thresholds[1:], sweep.raw[1:]):
        direct = sum(
            score_file(layouts[n], scores[n] >= t, profile).score for n in layouts
        )
        # cumulative sums of a few hundred terms: rounding only
        assert raw == pytest.approx(direct, abs=1e-9)


# --- NAB's published scores ---


_CORPORA: dict[object, NabCorpus] = {}


@pytest.fixture
def nab(shared_data) -> NabCorpus:
    """The NAB corpus, read once per test session (``shared_data`` is per test)."""
    root = shared_data / "nab"
    if root not in _CORPORA:
        _CORPORA[root] = load_nab(root)
    return _CORPORA[root]


@pytest.mark.parametrize("detector", PUBLISHED)
def test_published_nab_scores_are_reproduced(nab, detector):
    # Source: NAB v1.1 (numenta/NAB @ ea702d7), final_results.json and
    # results/<detector>/<detector>_<profile>_scores.csv, at config/thresholds.json.
    final = json.loads((nab.root / "final_results.json").read_text())
    results = score_detector_outputs(nab.root / "results", detector, nab=nab)
    assert set(results) == set(NAB_PROFILES)
    for profile, result in results.items():
        # the published scores are printed to 12 significant digits
        assert result.score == pytest.approx(final[detector][profile], abs=0.01)
        published = pd.read_csv(
            nab.root / "results" / detector / f"{detector}_{profile}_scores.csv"
        )
        totals = published[published["Detector"] == "Totals"]
        per_file = published[published["Detector"] != "Totals"].set_index("File")
        assert result.raw == pytest.approx(float(totals["Score"].iloc[0]), abs=1e-6)
        assert set(per_file.index) == set(result.files)
        for name, mine in result.files.items():
            row = per_file.loc[name]
            assert mine.score == pytest.approx(row["Score"], abs=1e-6), name
            assert (mine.tp, mine.tn, mine.fp, mine.fn) == (
                row["TP"],
                row["TN"],
                row["FP"],
                row["FN"],
            ), name
            # older NAB runs count every row, newer ones the scored rows only
            scored = mine.tp + mine.tn + mine.fp + mine.fn
            assert row["Total_Count"] in (mine.rows, scored), name


def test_nab_null_and_perfect_scores_come_from_the_windows(nab):
    assert len(nab.names) == 58 and nab.n_rows == 365_558
    results = score_detector_outputs(nab.root / "results", "null", nab=nab)
    assert {p: (r.null, r.perfect) for p, r in results.items()} == {
        "standard": (-116.0, 116.0),
        "reward_low_FP_rate": (-116.0, 116.0),
        "reward_low_FN_rate": (-232.0, 116.0),
    }


def test_nab_sweep_finds_at_least_the_published_optimum(nab):
    # NAB's optimiser is a local search over thresholds; the sweep is exhaustive
    scores = read_detector_outputs(nab.root / "results", "numenta", nab.names)
    final = json.loads((nab.root / "final_results.json").read_text())["numenta"]
    for profile in NAB_PROFILES:
        sweep = sweep_thresholds(nab.layouts, scores, profile)
        threshold, best = sweep.best
        assert best >= final[profile] - 1e-6
        at = sweep.scores[np.searchsorted(-sweep.thresholds, -threshold)]
        assert at == pytest.approx(best)


def test_missing_detector_outputs_are_reported(nab, tmp_path):
    message = "no outputs of detector 'nope' for 'artificial"
    with pytest.raises(FileNotFoundError, match=message):
        read_detector_outputs(tmp_path, "nope", nab.names)
    with pytest.raises(KeyError, match="no thresholds for detector 'nope'"):
        score_detector_outputs(tmp_path, "nope", nab=nab)


def test_evaluate_nab_runs_a_detector_over_files_as_streams(nab):
    names = [n for n in nab.names if n.startswith("realKnownCause/")][:3]
    subset = NabCorpus(
        nab.root,
        names,
        {n: nab.ts[n] for n in names},
        {n: nab.layouts[n] for n in names},
        nab.profiles,
        nab.thresholds,
    )
    seen = []
    result = evaluate_nab(
        subset, "default", 0.5, progress=seen.append, alert_thresholds=(0.5, 0.9)
    )
    assert seen == names
    json.dumps(result, allow_nan=False)
    assert result["files"] == 3 and result["rows"] == subset.n_rows
    for profile in NAB_PROFILES:
        entry = result["profiles"][profile]
        assert set(entry["files"]) == set(names)
        # the sweep includes the declared threshold on the scores
        assert entry["best"]["score"] >= entry["rows_above"]["score"] - 1e-9
        assert entry["best_alerts"]["threshold"] in (0.5, 0.9)


def test_evaluate_nab_rejects_unknown_detector_and_non_nab_folder(nab, tmp_path):
    message = "no detector named 'nope'; registered: .*default"
    with pytest.raises(KeyError, match=message):
        evaluate_nab(nab, "nope")
    with pytest.raises(FileNotFoundError, match="is not a NAB folder"):
        evaluate_nab(tmp_path)


# --- SMD metrics ---


def test_point_adjust_fills_segments_with_a_detection():
    labels = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 1], dtype=bool)
    # row 8 is a false alarm between two segments: it must not fill either
    predicted = np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 1], dtype=bool)
    adjusted = point_adjust(predicted, labels)
    assert adjusted.astype(int).tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]
    m = precision_recall_f1(adjusted, labels)
    assert (m["tp"], m["fp"], m["fn"]) == (4, 2, 2)
    assert m["f1"] == pytest.approx(2 * (4 / 6) * (4 / 6) / (4 / 6 + 4 / 6))


@pytest.mark.parametrize("adjusted", [False, True])
def test_best_f1_matches_trying_every_threshold(rng, adjusted):
    labels = np.zeros(400, dtype=bool)
    for start in (30, 120, 250, 390):
        labels[start : start + rng.integers(1, 12)] = True
    scores = np.round(rng.random(400), 2)
    # the highest scores sit between segments, where they must not help one
    scores[[60, 200]] = 1.5
    best = 0.0
    for t in np.unique(scores):
        predicted = scores >= t
        if adjusted:
            predicted = point_adjust(predicted, labels)
        best = max(best, precision_recall_f1(predicted, labels)["f1"])
    assert best_f1(scores, labels, adjusted)["f1"] == pytest.approx(best, abs=1e-12)


def test_evaluate_smd_on_one_machine(shared_data):
    result = evaluate_smd(
        shared_data / "smd", ["machine-1-1", "machine-1-5"], params={"n_trees": 20}
    )
    json.dumps(result, allow_nan=False)
    assert result["missing"] == ["machine-1-1"]
    machine = result["machines"]["machine-1-5"]
    assert machine["rows"] == 23_706
    for key in ("point", "adjusted", "best_point", "best_adjusted"):
        assert 0.0 <= machine[key]["f1"] <= 1.0
    # point adjustment can only add true positives
    assert machine["adjusted"]["recall"] >= machine["point"]["recall"]
