"""Every registered detector keeps the same promises."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from obscore.detect import create, registered
from obscore.model import sample_table

# Detectors that must be fitted before they score (the rest learn as they go).
FITTED = {"iforest"}


def _batch(values, sid=7, step=10_000):
    values = np.asarray(values, dtype=np.float64)
    ts = np.arange(len(values), dtype=np.int64) * step
    return sample_table(np.full(len(values), sid, np.uint64), ts, values)


def _fit_if_needed(det, rng, train=None):
    """Fit a detector of FITTED on ``train`` (500 normal values by default)."""
    if det.name in FITTED:
        det.update(_batch(rng.normal(size=500) if train is None else train))
    return det


def _new(name, rng, train=None):
    return _fit_if_needed(create(name), rng, train)


@pytest.mark.parametrize("name", registered())
def test_detector_gives_one_score_per_row_in_unit_interval(name, rng):
    det = create(name)
    _fit_if_needed(det, rng)
    batch = _batch(rng.normal(size=400))
    scores = det.score(batch)
    assert isinstance(scores, pa.Array) and scores.type == pa.float64()
    s = scores.to_numpy(zero_copy_only=False)
    assert len(s) == batch.num_rows
    assert np.all((s >= 0) & (s <= 1))


@pytest.mark.parametrize("name", registered())
def test_detector_does_not_look_ahead(name, rng):
    values = rng.normal(size=600)
    values[450] = 40.0
    train = rng.normal(size=500)
    full = _new(name, rng, train).score(_batch(values)).to_numpy(zero_copy_only=False)
    head = _new(name, rng, train).score(_batch(values[:400])).to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(full[:400], head)


@pytest.mark.parametrize("name", registered())
def test_detector_scores_in_chunks_as_at_once(name, rng):
    values = rng.normal(size=600)
    train = rng.normal(size=500)
    whole = _new(name, rng, train).score(_batch(values)).to_numpy(zero_copy_only=False)
    det = _new(name, rng, train)
    b = _batch(values)
    parts = [det.score(b.slice(i, 100)).to_numpy(zero_copy_only=False) for i in range(0, 600, 100)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", registered())
def test_detector_on_nan_gives_nan_and_keeps_going(name, rng):
    values = rng.normal(size=300)
    values[100:105] = np.nan
    s = _new(name, rng).score(_batch(values)).to_numpy(zero_copy_only=False)
    assert np.all(np.isnan(s[100:105]))
    assert np.all(np.isfinite(s[105:]))


@pytest.mark.parametrize("name", registered())
def test_detector_on_constant_then_step_is_finite_and_high(name, rng):
    values = np.full(300, 5.0)
    values[-1] = 6.0
    # a fitted detector is trained on the constant part
    s = _new(name, rng, values[:-1]).score(_batch(values)).to_numpy(zero_copy_only=False)
    assert np.all(np.isfinite(s))
    assert np.all(s[:-1] < 0.5)
    assert s[-1] > 0.5


@pytest.mark.parametrize("name", registered())
def test_detector_on_empty_batch_gives_empty_scores(name, rng):
    det = create(name)
    _fit_if_needed(det, rng)
    assert len(det.score(_batch([]))) == 0


@pytest.mark.parametrize("name", registered())
def test_detector_state_survives_pickling(name, rng):
    det = create(name)
    _fit_if_needed(det, rng)
    first = rng.normal(size=300)
    det.score(_batch(first))
    clone = pickle.loads(pickle.dumps(det))
    later = _batch(rng.normal(size=100), step=10_000).set_column(
        1, "ts", pa.array(np.arange(300, 400, dtype=np.int64) * 10_000)
    )
    np.testing.assert_array_equal(
        det.score(later).to_numpy(zero_copy_only=False),
        clone.score(later).to_numpy(zero_copy_only=False),
    )


def test_unknown_detector_name_lists_the_registered_ones():
    with pytest.raises(KeyError, match="no detector named 'nope'; registered: default"):
        create("nope")
