"""The default detector over the whole NAB corpus vs pandas rolling statistics.

Run with ``pytest benchmarks/test_detect_speed.py``.  Both benchmarks of the
``detect-nab`` group score the same 58 series (365,558 rows, 2.9 MB of
float64 values, more than the L2 cache): ours with the detector that
``obscore detect`` uses, the reference with pandas ``rolling(300).mean()``
and ``.std()``, the cheapest per-point statistic a streaming detector could
be.  Each row reports ``rows_per_s`` in ``extra_info``; the reference row
also reports the ratio of the two means.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from obscore.detect.stream import default_detector
from obscore.ingest.files import read_csv
from obscore.model import sample_table

NAB_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab" / "data"
NAB_ROWS = 365_558
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
    default_detector().score(out[0][0].slice(0, 64))
    return out


def _rows(corpus) -> int:
    return sum(len(values) for _, values in corpus)


def _score_all(corpus) -> int:
    scored = 0
    for batch, _ in corpus:
        scored += len(default_detector().score(batch))
    return scored


def _rolling_all(corpus) -> int:
    scored = 0
    for _, values in corpus:
        roll = pd.Series(values).rolling(300)
        scored += len(roll.mean()) + len(roll.std()) - len(values)
    return scored


@pytest.mark.benchmark(group="detect-nab")
def test_default_detector_scores_the_nab_corpus(benchmark, corpus):
    """default_detector(): a fresh detector per file, all 365,558 rows."""
    rows = benchmark.pedantic(_score_all, args=(corpus,), rounds=3, iterations=1)
    assert rows == _rows(corpus) == NAB_ROWS
    _MEANS["obscore"] = benchmark.stats.stats.mean
    benchmark.extra_info["rows_per_s"] = round(rows / benchmark.stats.stats.mean)


@pytest.mark.benchmark(group="detect-nab")
def test_pandas_rolling_mean_std_over_the_nab_corpus(benchmark, corpus):
    """pandas rolling(300).mean() and .std() per file, all 365,558 rows."""
    rows = benchmark.pedantic(_rolling_all, args=(corpus,), rounds=5, iterations=1)
    assert rows == _rows(corpus)
    benchmark.extra_info["rows_per_s"] = round(rows / benchmark.stats.stats.mean)
    if "obscore" in _MEANS:
        ratio = _MEANS["obscore"] / benchmark.stats.stats.mean
        benchmark.extra_info["ratio_obscore_over_pandas"] = round(ratio, 1)
