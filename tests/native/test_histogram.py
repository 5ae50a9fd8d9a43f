"""Histogram kernels against numpy and Prometheus' own histogram_quantile tests."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from obscore._native import histogram
from obscore._native.histogram import (
    hist_bucketize,
    hist_cumulative,
    hist_quantile,
    hist_quantile_many,
)

LATENCY_BOUNDS = np.array([10.0, 50.0, 100.0, 200.0, 500.0, 1000.0])
INF = math.inf


def numpy_counts(values, bounds, weights=None):
    """Bucket counts the numpy way: first bound >= v is searchsorted 'left'."""
    ok = ~np.isnan(values)
    idx = np.searchsorted(bounds, values[ok], side="left")
    w = None if weights is None else weights[ok]
    return np.bincount(idx, weights=w, minlength=len(bounds) + 1).astype(np.float64)


# --- hist_bucketize ---


@pytest.mark.parametrize("n_bounds", [1, 6, 8, 9, 16, 17, 40])
def test_hist_bucketize_matches_numpy_searchsorted(rng, n_bounds):
    # Sizes cover each code path: up to 8, up to 16, and binary search.
    bounds = np.sort(rng.choice(np.arange(-500, 1500), size=n_bounds, replace=False))
    bounds = bounds.astype(np.float64)
    values = np.concatenate(
        [
            rng.lognormal(5, 1.5, 20_000),
            -rng.lognormal(3, 1, 1000),
            bounds,
            [np.inf, -np.inf, np.nan, 0.0, -0.0],
        ]
    )
    counts = np.zeros(n_bounds + 1)
    n_nan = hist_bucketize(values, bounds, counts)
    # Counts of whole observations are integers: exact.
    np.testing.assert_array_equal(counts, numpy_counts(values, bounds))
    assert n_nan == 1


def test_hist_bucketize_value_on_bound_goes_to_that_bucket():
    counts = np.zeros(7)
    hist_bucketize(np.array([10.0, 10.000001, 1000.0, 1000.5]), LATENCY_BOUNDS, counts)
    assert counts.tolist() == [1, 1, 0, 0, 0, 1, 1]


def test_hist_bucketize_adds_to_existing_counts():
    counts = np.arange(7.0)
    hist_bucketize(np.array([5.0, 5000.0]), LATENCY_BOUNDS, counts)
    assert counts.tolist() == [1, 1, 2, 3, 4, 5, 7]


def test_hist_bucketize_sends_infinities_to_the_end_buckets():
    counts = np.zeros(7)
    hist_bucketize(np.array([np.inf, -np.inf, 1e308]), LATENCY_BOUNDS, counts)
    assert counts.tolist() == [1, 0, 0, 0, 0, 0, 2]


def test_hist_bucketize_skips_and_counts_nan():
    counts = np.zeros(7)
    assert hist_bucketize(np.array([np.nan, 20.0, np.nan]), LATENCY_BOUNDS, counts) == 2
    assert counts.sum() == 1


def test_hist_bucketize_empty_input_adds_nothing():
    counts = np.ones(7)
    assert hist_bucketize(np.array([]), LATENCY_BOUNDS, counts) == 0
    assert counts.tolist() == [1.0] * 7


def test_hist_bucketize_with_weights_matches_bincount(rng):
    values = rng.lognormal(5, 1.5, 5000)
    values[::17] = np.nan
    weights = rng.random(5000)
    counts = np.zeros(7)
    hist_bucketize(values, LATENCY_BOUNDS, counts, weights)
    # Both add weights in input order per bucket; rounding may differ only
    # if summation orders differed, so 1e-12 rel is ample.
    np.testing.assert_allclose(
        counts, numpy_counts(values, LATENCY_BOUNDS, weights), rtol=1e-12
    )


def test_hist_bucketize_accepts_readonly_arrow_buffers():
    values = pa.array([1.0, 75.0]).to_numpy(zero_copy_only=True)
    bounds = pa.array(LATENCY_BOUNDS).to_numpy(zero_copy_only=True)
    counts = np.zeros(7)
    hist_bucketize(values, bounds, counts)
    assert counts.tolist() == [1, 0, 1, 0, 0, 0, 0]


def test_hist_bucketize_rejects_bad_shapes_and_bounds():
    with pytest.raises(ValueError, match=r"len\(bounds\) \+ 1 = 7 entries, got 6"):
        hist_bucketize(np.array([1.0]), LATENCY_BOUNDS, np.zeros(6))
    with pytest.raises(ValueError, match=r"bounds\[2\] = 5.0 breaks that"):
        hist_bucketize(np.array([1.0]), np.array([1.0, 6.0, 5.0]), np.zeros(4))
    with pytest.raises(ValueError, match=r"bounds\[1\] = inf"):
        hist_bucketize(np.array([1.0]), np.array([1.0, np.inf]), np.zeros(3))
    with pytest.raises(
        ValueError, match="weights must match values in length, got 1 and 2"
    ):
        hist_bucketize(np.array([1.0, 2.0]), LATENCY_BOUNDS, np.zeros(7), np.ones(1))


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=50),
    bounds=st.sets(
        st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20
    ),
)
def test_hist_bucketize_property_matches_numpy(values, bounds):
    values = np.array(values, dtype=np.float64)
    bounds = np.array(sorted(bounds), dtype=np.float64)
    # -0.0 and 0.0 are one bound; keep a strictly increasing set.
    bounds = bounds[np.concatenate([[True], np.diff(bounds) > 0])]
    counts = np.zeros(len(bounds) + 1)
    n_nan = hist_bucketize(values, bounds, counts)
    np.testing.assert_array_equal(counts, numpy_counts(values, bounds))
    assert n_nan == int(np.isnan(values).sum())


# --- hist_cumulative ---


def test_hist_cumulative_is_running_sum():
    out = hist_cumulative(np.array([1.0, 0.0, 2.5, 3.0]))
    assert out.tolist() == [1.0, 1.0, 3.5, 6.5]
    assert hist_cumulative(np.array([])).shape == (0,)
    assert np.isnan(hist_cumulative(np.array([1.0, np.nan, 2.0]))[1:]).all()


# --- hist_quantile: cases transcribed from Prometheus ---

# Transcribed from /work/shared/data/promql/v2.42.0/histograms.test (Prometheus
# v2.42.0, promql/testdata). Counts are the series values at the eval time
# (the file's "0+Nx10" at 50m is 10*N; rate() only rescales all buckets alike,
# which quantiles ignore). Each row: (line, q, bounds, cumulative, expected).
POS = ([0.1, 0.2, 1.0, INF], [50.0, 70.0, 110.0, 120.0])  # start="positive"
NEG = ([-0.2, -0.1, 0.3, INF], [10.0, 20.0, 20.0, 30.0])  # start="negative"
H2 = ([0.0, 2.0, 4.0, 6.0, INF], [0.0, 1.0, 2.0, 3.0, 3.0])  # testhistogram2 at 7m
NONMONO = ([0.1, 1.0, 10.0, 100.0, 1000.0, INF], [20.0, 10.0, 50.0, 40.0, 90.0, 80.0])
TRANSCRIBED = [
    (55, -0.1, *POS, -INF),
    (60, 1.01, *NEG, INF),
    (65, math.nan, *POS, math.nan),
    (70, 0.0, *POS, 0.0),
    (74, 0.0, *NEG, -0.2),
    (78, 1.0, *POS, 1.0),
    (79, 1.0, *NEG, 0.3),
    (83, 0.2, *POS, 0.048),
    (84, 0.2, *NEG, -0.2),
    (88, 0.5, *POS, 0.15),
    (89, 0.5, *NEG, -0.15),
    (92, 0.8, *POS, 0.72),
    (93, 0.8, *NEG, 0.3),
    (110, 1 / 6, *H2, 1.0),
    (113, 0.5, *H2, 3.0),
    (116, 5 / 6, *H2, 5.0),
    (199, 0.01, *NONMONO, 0.0045),
    (202, 0.5, *NONMONO, 8.5),
    (205, 0.99, *NONMONO, 979.75),
    (226, 0.2, [0.1, 0.2, INF], [0.0, 0.0, 0.0], math.nan),  # empty_bucket
]


def assert_prom_equal(got, expected):
    # promql's test runner compares with a relative epsilon of 1e-6.
    if math.isnan(expected):
        assert math.isnan(got)
    elif math.isinf(expected):
        assert got == expected
    else:
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(
    ("line", "q", "bounds", "cumulative", "expected"),
    TRANSCRIBED,
    ids=[f"histograms.test:{case[0]}" for case in TRANSCRIBED],
)
def test_hist_quantile_matches_transcribed_prometheus_cases(
    line, q, bounds, cumulative, expected
):
    got = hist_quantile(q, np.array(bounds), np.array(cumulative))
    assert_prom_equal(got, expected)
    assert_prom_equal(reference.bucket_quantile(q, bounds, cumulative), expected)


# --- hist_quantile: every classic histogram_quantile eval in the file ---

# ../shared/data beside the checkout, as tests/conftest.py finds it; needed
# at collection time to turn each eval of the file into its own test.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
PROMQL_FILE = Path("promql") / "v2.42.0" / "histograms.test"
_NUMBER = r"[\d.]+(?:e[+-]?\d+)?"
_POINTS = re.compile(rf"^(-?{_NUMBER})(?:([+-]{_NUMBER})x(\d+)|x(\d+))$")
_SERIES = re.compile(r"^(\w+)(?:\{(.*)\})?$")
_LABEL = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_EVAL = re.compile(r"^eval instant at (\d+)m histogram_quantile\(([^,]+),\s*(.*)\)$")
_DURATION_MIN = {"5m": 5, "15m": 15}


def _expand(points: str) -> list[float]:
    # promql test notation: "a+bxN" is a, a+b, ..., a+N*b; "axN" repeats a.
    m = _POINTS.match(points)
    if m is None:
        raise ValueError(f"unsupported series notation {points!r}")
    start = float(m.group(1))
    if m.group(4) is not None:
        return [start] * (int(m.group(4)) + 1)
    step = float(m.group(2))
    return [start + i * step for i in range(int(m.group(3)) + 1)]


def _load_series(lines: list[str]) -> dict[tuple, list[tuple[int, float]]]:
    """Every series loaded by the file: (name, labels) -> [(minute, value)]."""
    series = {}
    interval = None  # minutes between points while inside a load block
    for raw in lines:
        line = raw.strip()
        if line.startswith("load "):
            interval = int(line.split()[1].rstrip("m"))
        elif interval is not None and raw[:1] in ("\t", " ") and line:
            name_labels, points = line.rsplit(None, 1)
            m = _SERIES.match(name_labels.replace(" ", ""))
            labels = dict(_LABEL.findall(m.group(2) or ""))
            series[(m.group(1), tuple(sorted(labels.items())))] = [
                (i * interval, v) for i, v in enumerate(_expand(points))
            ]
        else:
            interval = None
    return series


def _parse_le(text: str) -> float:
    return INF if text.lower() == "+inf" else float(text)


def _parse_q(text: str) -> float:
    # The file writes quantiles as numbers, NaN, or fractions like "1./6.".
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


def _instant(points, at_min):
    # The newest sample at or before the eval time (lookback is 5m).
    older = [v for t, v in points if at_min - 5 <= t <= at_min]
    return older[-1] if older else None


def _increase(points, at_min, range_min):
    # Samples in [t - range, t]; rate() scales every bucket of a histogram by
    # the same factor, which quantiles ignore, so the plain delta serves.
    inside = [v for t, v in points if at_min - range_min <= t <= at_min]
    return inside[-1] - inside[0] if len(inside) >= 2 else None


def _evaluate(series, at_min: int, expr: str) -> dict[tuple, list[tuple[float, float]]]:
    """Bucket lists per output label set for the expression forms in the file."""
    agg = None
    m = re.match(r"^(sum|avg)\((.*)\) by \(([\w, ]+)\)$", expr)
    if m:
        agg, expr = m.group(1), m.group(2)
        keep = [x.strip() for x in m.group(3).split(",") if x.strip() != "le"]
    m = re.match(r"^rate\((.*)\[(\d+m)\]\)$", expr)
    range_min = None
    if m:
        expr, range_min = m.group(1), _DURATION_MIN[m.group(2)]
    m = _SERIES.match(expr.replace(" ", ""))
    name, matchers = m.group(1), dict(_LABEL.findall(m.group(2) or ""))

    groups: dict[tuple, dict[float, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for (sname, labels), points in series.items():
        labels = dict(labels)
        if sname != name or any(labels.get(k) != v for k, v in matchers.items()):
            continue
        value = (
            _instant(points, at_min)
            if range_min is None
            else _increase(points, at_min, range_min)
        )
        if value is None:
            continue
        le = _parse_le(labels.pop("le"))
        key_labels = {k: v for k, v in labels.items() if agg is None or k in keep}
        groups[tuple(sorted(key_labels.items()))][le].append(value)

    out = {}
    for key, by_le in groups.items():
        combine = (lambda xs: sum(xs) / len(xs)) if agg == "avg" else sum
        out[key] = sorted((le, combine(vs)) for le, vs in by_le.items())
    return out


def _promql_cases() -> list:
    path = SHARED_DATA / PROMQL_FILE
    if not path.is_file():
        return [
            pytest.param(None, None, None, marks=pytest.mark.skip(reason=f"{path} not found"))
        ]
    lines = path.read_text().splitlines()
    series = _load_series(lines)
    cases = []
    for i, raw in enumerate(lines):
        m = _EVAL.match(raw.strip())
        if m is None:
            continue
        at_min, q = int(m.group(1)), _parse_q(m.group(2))
        buckets = _evaluate(series, at_min, m.group(3).strip())
        j = i + 1
        while j < len(lines) and lines[j].startswith(("\t", " ")) and lines[j].strip():
            labels_text, value = lines[j].strip().rsplit(None, 1)
            want = dict(_LABEL.findall(labels_text))
            key = tuple(sorted(want.items()))
            cases.append(
                pytest.param(
                    q, buckets.get(key), float(value), id=f"histograms.test:{j + 1}"
                )
            )
            j += 1
    return cases


@pytest.mark.parametrize(("q", "buckets", "expected"), _promql_cases())
def test_hist_quantile_matches_prometheus_test_file(q, buckets, expected):
    assert buckets is not None, "the expected label set was not produced"
    # Buckets with equal bounds (le="0.2", "2e-1", "2.0e-1") were merged by
    # adding their counts, as Prometheus does before computing.
    bounds = np.array([le for le, _ in buckets])
    cumulative = np.array([c for _, c in buckets])
    assert_prom_equal(hist_quantile(q, bounds, cumulative), expected)


def test_hist_quantile_parser_finds_the_classic_evals(shared_data):
    # 37 evals of histogram_quantile in the v2.42.0 file (one more is an
    # eval_fail), with 66 expected result lines; all must be parsed.
    assert len(_promql_cases()) == 66


# --- hist_quantile: edge cases and properties ---


def test_hist_quantile_edge_cases():
    bounds = np.array([1.0, 2.0, INF])
    cum = np.array([1.0, 2.0, 4.0])
    assert (
        hist_quantile(0.9, bounds, cum) == 2.0
    )  # rank in +Inf bucket: last finite bound
    assert math.isnan(
        hist_quantile(0.5, np.array([INF]), np.array([3.0]))
    )  # one bucket
    assert math.isnan(hist_quantile(0.5, np.array([1.0, 2.0]), np.array([1.0, 2.0])))
    assert math.isnan(hist_quantile(0.5, bounds, np.array([1.0, np.nan, 4.0])))
    assert math.isnan(hist_quantile(0.5, np.array([]), np.array([])))
    assert hist_quantile(-1.0, np.array([]), np.array([])) == -INF
    with pytest.raises(ValueError, match="one length, got 3 and 2"):
        hist_quantile(0.5, bounds, cum[:2])


def test_hist_quantile_many_matches_one_at_a_time(rng):
    bounds = np.append(LATENCY_BOUNDS, INF)
    rows = np.cumsum(rng.integers(0, 20, size=(50, 7)), axis=1).astype(np.float64)
    rows[3] = 0.0
    rows[4, 2] = np.nan
    got = hist_quantile_many(0.9, bounds, rows)
    expected = [hist_quantile(0.9, bounds, row) for row in rows]
    np.testing.assert_array_equal(got, expected)
    assert hist_quantile_many(0.5, bounds, np.zeros((0, 7))).shape == (0,)
    with pytest.raises(ValueError, match="one length, got 7 and 6"):
        hist_quantile_many(0.5, bounds, np.zeros((2, 6)))


@st.composite
def histograms(draw):
    n = draw(st.integers(1, 12))
    finite = sorted(draw(st.sets(st.floats(-1e6, 1e6), min_size=n, max_size=n)))
    finite = [b for i, b in enumerate(finite) if i == 0 or b > finite[i - 1]]
    bounds = [*finite, INF]
    counts = draw(
        st.lists(
            st.one_of(st.floats(0, 1e9), st.sampled_from([0.0, 1.0, 1e-300])),
            min_size=len(bounds),
            max_size=len(bounds),
        )
    )
    return bounds, counts


@settings(max_examples=100, deadline=None)
@given(
    hist=histograms(),
    q=st.one_of(st.floats(-0.5, 1.5), st.sampled_from([0.0, 1.0, math.nan])),
)
def test_hist_quantile_property_matches_reference(hist, q):
    bounds, cumulative = hist  # counts in any order: non-monotonic on purpose
    got = hist_quantile(q, np.array(bounds), np.array(cumulative))
    expected = reference.bucket_quantile(q, bounds, cumulative)
    # Same formula, same operation order: exact (NaN equal to NaN).
    assert got == expected or (math.isnan(got) and math.isnan(expected))


@settings(max_examples=60, deadline=None)
@given(hist=histograms(), q1=st.floats(0, 1), q2=st.floats(0, 1))
def test_hist_quantile_is_monotonic_in_q_and_within_bounds(hist, q1, q2):
    bounds, counts = hist
    cumulative = np.cumsum(counts)
    lo, hi = sorted((q1, q2))
    a = hist_quantile(lo, np.array(bounds), cumulative)
    b = hist_quantile(hi, np.array(bounds), cumulative)
    if math.isnan(a) or math.isnan(b):
        # No observations, or q = 0 on an empty first bucket (0/0, as in PromQL).
        assert cumulative[-1] == 0 or (lo == 0 and cumulative[0] == 0)
        return
    # Interpolation may round one ulp past a bucket bound: allow 1e-12 rel.
    slack = 1e-12 * max(abs(a), abs(b), 1e-300)
    assert a <= b + slack
    assert min(bounds[0], 0.0) - slack <= a and b <= bounds[-2] + slack


def test_hist_docstring_examples_run(run_doctests):
    failed, attempted = run_doctests(histogram)
    assert attempted > 0 and failed == 0
