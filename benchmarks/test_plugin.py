"""A Numba-compiled user detector against the built-in z-score, on all of NAB.

Run with ``taskset -c 0 pytest benchmarks/test_plugin.py`` (one core).  Both
score the 58 NAB series (365,558 rows) with a new detector per file: the
plug-in is the docs example (:func:`obscore.detect.plugin.example_window_zscore`,
a z-score over the last 30 samples, registered with
:func:`~obscore.detect.plugin.register_numba`), the reference the built-in
``zscore`` detector (native kernel, 5m window holding 30 samples).  The
plug-in row reports ``time_ratio_plugin_over_builtin`` on the fastest round
of each (the cores are shared, so the mean carries other people's work) and
``mean_time_ratio_plugin_over_builtin``; the target is at most 2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from obscore.detect import create
from obscore.detect.plugin import EXAMPLE_WINDOW, example_window_zscore, register_numba
from obscore.ingest.files import read_csv
from obscore.model import sample_table

pytest.importorskip("numba")

NAB_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab" / "data"
NAB_ROWS = 365_558
TARGET_RATIO = 2.0
_MEANS: dict[str, float] = {}


@pytest.fixture(scope="module")
def corpus() -> list[object]:
    files = sorted(NAB_DATA.glob("*/*.csv"))
    if not files:
        pytest.skip(f"NAB data not found under {NAB_DATA}")
    batches = []
    for path in files:
        series = read_csv(path)
        batches.append(sample_table(np.zeros(len(series.ts), np.uint64), series.ts, series.values))
    register_numba(
        "bench_user_zscore", example_window_zscore, np.zeros(4 + EXAMPLE_WINDOW), threshold=3.0
    )
    # compile, and warm both paths, outside the timed rounds
    for name in ("bench_user_zscore", "zscore"):
        _score_all(batches, name)
    return batches


def _score_all(corpus, name: str) -> int:
    return sum(len(create(name).score(batch)) for batch in corpus)


@pytest.mark.benchmark(group="plugin-nab")
def test_builtin_zscore_over_the_nab_corpus(benchmark, corpus):
    rows = benchmark.pedantic(_score_all, args=(corpus, "zscore"), rounds=20, iterations=1)
    assert rows == NAB_ROWS
    _MEANS["builtin"] = benchmark.stats.stats.mean
    _MEANS["builtin_min"] = benchmark.stats.stats.min
    benchmark.extra_info["rows_per_s"] = round(rows / benchmark.stats.stats.mean)


@pytest.mark.benchmark(group="plugin-nab")
def test_numba_user_zscore_over_the_nab_corpus(benchmark, corpus):
    rows = benchmark.pedantic(
        _score_all, args=(corpus, "bench_user_zscore"), rounds=20, iterations=1
    )
    assert rows == NAB_ROWS
    mean = benchmark.stats.stats.mean
    benchmark.extra_info["rows_per_s"] = round(rows / mean)
    if "builtin" in _MEANS:
        ratio = benchmark.stats.stats.min / _MEANS["builtin_min"]
        benchmark.extra_info["time_ratio_plugin_over_builtin"] = round(ratio, 3)
        benchmark.extra_info["mean_time_ratio_plugin_over_builtin"] = round(
            mean / _MEANS["builtin"], 3
        )
        assert ratio <= TARGET_RATIO, f"the plug-in takes {ratio:.2f}x the built-in z-score"
