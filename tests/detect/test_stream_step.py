"""step_ensemble: the incremental path gives the ensemble's own scores, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from obscore.detect.ensemble import ZScoreEnsembleDetector
from obscore.detect.stream import step_ensemble, step_ensembles
from obscore.model import sample_table


def _values(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    v = 50 + rng.normal(0, 5, n)
    if kind == "ties":
        v = np.round(v / 3)
    elif kind == "nan":
        v[rng.random(n) < 0.05] = np.nan
    elif kind == "inf":
        v[200:260] += 80
        v[rng.random(n) < 0.01] = np.inf
        v[rng.random(n) < 0.01] = -np.inf
    elif kind == "constant":
        v[:] = 7.0
        v[300:320] = 9.0
    return v


@pytest.mark.parametrize("kind", ["normal", "ties", "nan", "inf", "constant"])
@pytest.mark.parametrize(("lag_ms", "count_window_s"), [(0, 60.0), (600_000, None)])
def test_step_ensemble_equals_components_in_the_same_pieces(
    kind, lag_ms, count_window_s, rng
):
    # exact equality: both paths must give the same bits, or replay and live
    # runs (which cut a signal into different pieces) could part ways
    n = 450
    ts = np.cumsum(rng.integers(1, 4, n) * 10_000) + 1_700_000_000_000
    v = _values(kind, n, rng)
    args = dict(
        baseline_ms=600_000, min_samples=2, count_window_s=count_window_s, lag_ms=lag_ms
    )
    ours, ref = ZScoreEnsembleDetector(**args), ZScoreEnsembleDetector(**args)
    cuts = [0, 150]
    while cuts[-1] < n:
        cuts.append(min(n, cuts[-1] + int(rng.integers(1, 12))))
    got, want = [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        got.append(np.stack(step_ensemble(ours, ts[a:b], v[a:b])))
        batch = sample_table(np.zeros(b - a, np.uint64), ts[a:b], v[a:b])
        want.append(np.stack(ref.components(batch)[1:]))
    got, want = np.concatenate(got, axis=1), np.concatenate(want, axis=1)
    np.testing.assert_array_equal(got, want)


def test_step_ensemble_one_point_at_a_time_equals_one_batch(rng):
    n = 300
    ts = np.arange(n, dtype=np.int64) * 10_000 + 1_700_000_000_000
    v = 50 + rng.normal(0, 5, n)
    v[250:280] += 60
    ours = ZScoreEnsembleDetector(baseline_ms=600_000, min_samples=2, lag_ms=300_000)
    first = step_ensemble(ours, ts[:100], v[:100])  # long: through components
    rest = [step_ensemble(ours, ts[i : i + 1], v[i : i + 1]) for i in range(100, n)]
    got = np.concatenate([np.stack(first)] + [np.stack(r) for r in rest], axis=1)
    ref = ZScoreEnsembleDetector(baseline_ms=600_000, min_samples=2, lag_ms=300_000)
    want = np.stack(ref.components(sample_table(np.zeros(n, np.uint64), ts, v))[1:])
    np.testing.assert_array_equal(got, want)
    assert (got[1] > 0.5).any()  # the jump is scored as an anomaly


def test_step_ensemble_of_an_empty_batch_is_empty():
    det = ZScoreEnsembleDetector(min_samples=2)
    zr, score = step_ensemble(det, np.empty(0, np.int64), np.empty(0))
    assert len(zr) == 0 and len(score) == 0


def test_step_ensembles_scores_many_signals_together_as_each_alone(rng):
    n, k = 400, 12
    signals = []
    for j in range(k):
        ts = np.cumsum(rng.integers(1, 4, n) * 10_000) + 1_700_000_000_000 + j * 1_000
        kind = ["normal", "ties", "nan", "inf", "constant"][j % 5]
        args = dict(
            baseline_ms=600_000,
            min_samples=2,
            count_window_s=None if j % 3 else 60.0,
            lag_ms=0 if j % 2 else 300_000,
        )
        signals.append((ts, _values(kind, n, rng), args))
    together = [ZScoreEnsembleDetector(**a) for _, _, a in signals]
    alone = [ZScoreEnsembleDetector(**a) for _, _, a in signals]
    pos = [0] * k
    got: list[list[np.ndarray]] = [[] for _ in range(k)]
    want: list[list[np.ndarray]] = [[] for _ in range(k)]
    while min(pos) < n:
        # a long first piece, then 0-4 points per signal per round
        cuts = [(p, min(n, p + int(rng.integers(0, 5) if p else 150))) for p in pos]
        live = [j for j, (a, b) in enumerate(cuts) if b > a]
        scored = step_ensembles(
            [together[j] for j in live],
            [signals[j][0][slice(*cuts[j])] for j in live],
            [signals[j][1][slice(*cuts[j])] for j in live],
        )
        for j, res in zip(live, scored):
            a, b = cuts[j]
            got[j].append(np.stack(res))
            alone_res = step_ensemble(alone[j], signals[j][0][a:b], signals[j][1][a:b])
            want[j].append(np.stack(alone_res))
            pos[j] = b
    for j in range(k):
        np.testing.assert_array_equal(
            np.concatenate(got[j], axis=1), np.concatenate(want[j], axis=1)
        )
