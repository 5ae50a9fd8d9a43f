"""Detector speed on the whole NAB corpus and on SMD, against named references.

Run with ``taskset -c 0 pytest benchmarks/test_detect_speed.py`` (one core).
Each group pairs one of our paths with a reference on the same data, and the
reference row's ``extra_info`` holds the throughput ratio (ours / reference,
rows per second; above 1 means ours is faster):

- ``detect-nab``: the default detector (``create("default")``, a new one per
  file) over the 58 NAB series (365,558 rows); the target is under 10 s.
  Reference: pandas ``rolling(300).mean()`` and ``.std()``, the cheapest
  per-point statistic a streaming detector could be.
- ``zscore-nab``: the built-in ``zscore`` detector over the same series
  against pandas ``rolling(30).mean()`` and ``.std()`` (its 5m window holds
  30 samples at NAB's usual 5-minute step).
- ``iforest-smd``: the isolation forest's scoring of the SMD test rows of
  machines 1-2 to 1-8 (fitted on their training rows, 100 trees, one thread),
  against scikit-learn ``score_samples`` of the same fitted forest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from obscore.detect import IsolationForestDetector, create
from obscore.ingest.files import read_csv
from obscore.model import sample_table

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NAB_DATA = SHARED / "nab" / "data"
SMD_DATA = SHARED / "smd"
NAB_ROWS = 365_558
TARGET_S = 10.0
_MEANS: dict[str, float] = {}


@pytest.fixture(scope="module")
def corpus() -> list[tuple[object, np.ndarray]]:
    """Every NAB file read once: its sample table and its values."""
    files = sorted(NAB_DATA.glob("*/*.csv"))
    if not files:
        pytest.skip(f"NAB data not found under {NAB_DATA}")
    out = []
    for path in files:
        series = read_csv(path)
        ids = np.zeros(len(series.ts), np.uint64)
        out.append((sample_table(ids, series.ts, series.values), series.values))
    # compile (or load from the Numba cache) outside the timed rounds
    create("default").score(out[0][0].slice(0, 64))
    return out


@pytest.fixture(scope="module")
def smd() -> list[tuple[IsolationForestDetector, np.ndarray]]:
    """Per SMD machine: the forest fitted on its training rows, its test matrix."""
    machines = sorted(p.stem for p in (SMD_DATA / "test").glob("*.txt"))
    if not machines:
        pytest.skip(f"SMD data not found under {SMD_DATA}")
    out = []
    for machine in machines:
        train, test = (
            np.loadtxt(SMD_DATA / part / f"{machine}.txt", delimiter=",", ndmin=2)
            for part in ("train", "test")
        )
        det = IsolationForestDetector(n_threads=1)
        det.fit_matrix(train.T)
        out.append((det, np.ascontiguousarray(test.T)))
    return out


def _rows(corpus) -> int:
    return sum(len(values) for _, values in corpus)


def _score_all(corpus, name: str) -> int:
    scored = 0
    for batch, _ in corpus:
        scored += len(create(name).score(batch))
    return scored


def _rolling_all(corpus, window: int) -> int:
    scored = 0
    for _, values in corpus:
        roll = pd.Series(values).rolling(window)
        scored += len(roll.mean()) + len(roll.std()) - len(values)
    return scored


def _record(benchmark, key: str, rows: int, reference_of: str | None = None) -> None:
    mean = benchmark.stats.stats.mean
    _MEANS[key] = mean
    benchmark.extra_info["rows_per_s"] = round(rows / mean)
    if reference_of is not None and reference_of in _MEANS:
        # throughput ratio: ours / reference, in rows per second
        benchmark.extra_info[f"throughput_{reference_of}_over_reference"] = round(
            mean / _MEANS[reference_of], 3
        )


@pytest.mark.benchmark(group="detect-nab")
def test_default_detector_scores_the_nab_corpus(benchmark, corpus):
    """create("default"): a new detector per file, all 365,558 rows."""
    rows = benchmark.pedantic(_score_all, args=(corpus, "default"), rounds=3, iterations=1)
    assert rows == _rows(corpus) == NAB_ROWS
    _record(benchmark, "default", rows)
    benchmark.extra_info["seconds"] = round(benchmark.stats.stats.mean, 3)
    assert benchmark.stats.stats.mean < TARGET_S, "the default detector misses 10 s on NAB"


@pytest.mark.benchmark(group="detect-nab")
def test_pandas_rolling_300_over_the_nab_corpus(benchmark, corpus):
    """pandas rolling(300).mean() and .std() per file, all 365,558 rows."""
    rows = benchmark.pedantic(_rolling_all, args=(corpus, 300), rounds=5, iterations=1)
    assert rows == _rows(corpus)
    _record(benchmark, "pandas_300", rows, reference_of="default")


@pytest.mark.benchmark(group="zscore-nab")
def test_zscore_detector_scores_the_nab_corpus(benchmark, corpus):
    """The built-in zscore detector, a new one per file, all 365,558 rows."""
    rows = benchmark.pedantic(_score_all, args=(corpus, "zscore"), rounds=5, iterations=1)
    assert rows == NAB_ROWS
    _record(benchmark, "zscore", rows)


@pytest.mark.benchmark(group="zscore-nab")
def test_pandas_rolling_30_over_the_nab_corpus(benchmark, corpus):
    """pandas rolling(30).mean() and .std() per file: the z-score's moments."""
    rows = benchmark.pedantic(_rolling_all, args=(corpus, 30), rounds=5, iterations=1)
    assert rows == NAB_ROWS
    _record(benchmark, "pandas_30", rows, reference_of="zscore")


def _forest_ours(smd) -> int:
    return sum(len(det.score_matrix(test)) for det, test in smd)


def _forest_sklearn(smd) -> int:
    # the same fitted forest; scikit-learn sees the features the forest has
    return sum(len(det.model.score_samples(test[det._varying].T)) for det, test in smd)


@pytest.mark.benchmark(group="iforest-smd")
def test_iforest_scores_the_smd_test_rows(benchmark, smd):
    """IsolationForestDetector.score_matrix (native kernel + calibration)."""
    rows = benchmark.pedantic(_forest_ours, args=(smd,), rounds=3, iterations=1)
    det, test = smd[0]
    raw = det.raw_scores(test)
    np.testing.assert_allclose(raw, -det.model.score_samples(test[det._varying].T), atol=1e-12)
    _record(benchmark, "iforest", rows)


@pytest.mark.benchmark(group="iforest-smd")
def test_sklearn_score_samples_on_the_smd_test_rows(benchmark, smd):
    """scikit-learn IsolationForest.score_samples on the same rows."""
    rows = benchmark.pedantic(_forest_sklearn, args=(smd,), rounds=3, iterations=1)
    _record(benchmark, "sklearn", rows, reference_of="iforest")
