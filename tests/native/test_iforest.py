"""Forest (isolation forest scoring) against scikit-learn's score_samples.

scikit-learn casts X to float32, walks each tree comparing the float32 value
with a float64 threshold, and averages path lengths in float64. The kernel
reproduces each step, so scores agree to 1e-12 absolute (in practice within
one or two ulps, from the final power of two).
"""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.ensemble import IsolationForest

from obscore._native.iforest import HAVE_OPENMP, Forest, iforest_score

ATOL = 1e-12
# scikit-learn warns when casting values beyond float32 range to inf; that
# cast is the behaviour under test.
overflow_ok = pytest.mark.filterwarnings(
    "ignore:overflow encountered in cast:RuntimeWarning"
)


@functools.cache
def fitted(n_features=8, n_estimators=100, **kwargs) -> IsolationForest:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(4000, n_features)) * rng.uniform(0.1, 100.0, size=n_features)
    return IsolationForest(n_estimators=n_estimators, random_state=0, **kwargs).fit(X)


def columns(X: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(X[:, j]) for j in range(X.shape[1])]


def test_iforest_matches_sklearn_score_samples(rng):
    model = fitted(max_samples=256)
    forest = Forest.from_sklearn(model)
    X = rng.normal(size=(20_000, 8)) * 40.0
    np.testing.assert_allclose(
        forest.score(columns(X)), model.score_samples(X), rtol=0, atol=ATOL
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_features": 0.5},  # each tree reads its own feature subset
        {"max_features": 3, "max_samples": 100},
        {"bootstrap": True, "max_samples": 0.3},
        {"max_samples": 1},  # single-leaf trees: sklearn scores -0.5
        {"max_samples": 2},
    ],
    ids=str,
)
def test_iforest_matches_sklearn_across_model_options(rng, kwargs):
    model = fitted(n_features=6, n_estimators=25, **kwargs)
    forest = Forest.from_sklearn(model)
    X = rng.normal(size=(3000, 6)) * 30.0
    np.testing.assert_allclose(
        forest.score(columns(X)), model.score_samples(X), rtol=0, atol=ATOL
    )


def test_iforest_split_comparison_matches_sklearn_float32_cast():
    # Inputs right at, and one float64 ulp around, every split threshold: a
    # float64 comparison would disagree with sklearn on many of them.
    model = fitted(n_estimators=20)
    forest = Forest.from_sklearn(model)
    thresholds = np.concatenate(
        [e.tree_.threshold[e.tree_.children_left != -1] for e in model.estimators_]
    )
    probes = np.concatenate(
        [
            thresholds,
            np.nextafter(thresholds, np.inf),
            np.nextafter(thresholds, -np.inf),
            thresholds.astype(np.float32).astype(np.float64),
        ]
    )
    X = np.tile(probes[:, None], (1, 8))
    np.testing.assert_allclose(
        forest.score(columns(X)), model.score_samples(X), rtol=0, atol=ATOL
    )


@pytest.mark.parametrize("split", [0.0, -0.0])
def test_iforest_one_split_compares_like_float32(split):
    # Root tests feature 0 <= split; left leaf credits 1, right leaf 2, NaN
    # goes right. With denominator 1 the scores are -2**-1 and -2**-2.
    forest = Forest(
        feature=[0, 0, 0],
        threshold=np.array([split, np.inf, np.inf], dtype=np.float32),
        child=[1, 1, 2],
        nan_right=[1, 0, 0],
        leaf_value=[0.0, 1.0, 2.0],
        tree_offset=[0, 3],
        tree_depth=[1],
        n_features=1,
        denominator=1.0,
    )
    x = np.array([-0.0, 0.0, 1e-50, -1e-50, 1e-44, -1.0, np.inf, -np.inf, np.nan])
    expected = [-0.5, -0.5, -0.5, -0.5, -0.25, -0.5, -0.25, -0.5, -0.25]
    # 1e-50 casts to 0.0 in float32 and stays left; 1e-44 is a float32
    # subnormal above 0 and goes right.
    assert forest.score([x]).tolist() == expected


def test_iforest_nan_features_follow_sklearn(rng):
    model = fitted()
    forest = Forest.from_sklearn(model)
    X = rng.normal(size=(5000, 8)) * 40.0
    X[rng.random(X.shape) < 0.1] = np.nan
    X[7, :] = np.nan
    n_nan_rows = int(np.isnan(X).any(axis=1).sum())
    scores = np.empty(5000)
    assert iforest_score(forest, columns(X), scores) == n_nan_rows
    np.testing.assert_allclose(scores, model.score_samples(X), rtol=0, atol=ATOL)


@overflow_ok
def test_iforest_infinite_and_huge_values_follow_sklearn(rng):
    model = fitted()
    forest = Forest.from_sklearn(model)
    X = rng.normal(size=(200, 8))
    X[0::4, 0] = np.inf
    X[1::4, 1] = -np.inf
    X[2::4, 2] = 1e300  # beyond float32: inf after the cast
    X[3::4, 3] = -1e-300  # below float32: -0.0 after the cast
    np.testing.assert_allclose(
        forest.score(columns(X)), model.score_samples(X), rtol=0, atol=ATOL
    )


def test_iforest_empty_and_single_row():
    model = fitted()
    forest = Forest.from_sklearn(model)
    assert forest.score([np.empty(0)] * 8).shape == (0,)
    X = np.full((1, 8), 0.5)
    np.testing.assert_allclose(
        forest.score(columns(X)), model.score_samples(X), rtol=0, atol=ATOL
    )


def test_iforest_properties_describe_the_model():
    model = fitted()
    forest = Forest.from_sklearn(model)
    assert (forest.n_trees, forest.n_features) == (100, 8)
    assert forest.max_depth == max(e.tree_.max_depth for e in model.estimators_)
    arrays = forest.arrays
    assert arrays["tree_offset"][-1] == arrays["feature"].size
    assert not arrays["threshold"].flags.writeable


def test_iforest_pickle_round_trip_scores_identically(rng):
    forest = Forest.from_sklearn(fitted(max_features=0.5))
    copy = pickle.loads(pickle.dumps(forest))
    X = rng.normal(size=(1000, 8))
    np.testing.assert_array_equal(copy.score(columns(X)), forest.score(columns(X)))
    assert copy.max_depth == forest.max_depth


def test_iforest_threads_give_identical_scores(rng):
    # Without OpenMP in the build, n_threads > 1 runs on one thread.
    forest = Forest.from_sklearn(fitted())
    X = rng.normal(size=(3001, 8))
    one = forest.score(columns(X), n_threads=1)
    np.testing.assert_array_equal(forest.score(columns(X), n_threads=2), one)
    assert isinstance(HAVE_OPENMP, bool)


def test_iforest_accepts_readonly_arrow_buffers(rng):
    forest = Forest.from_sklearn(fitted())
    X = rng.normal(size=(10, 8))
    cols = [pa.array(c).to_numpy(zero_copy_only=True) for c in columns(X)]
    np.testing.assert_array_equal(forest.score(cols), forest.score(columns(X)))


def test_iforest_rejects_bad_input():
    forest = Forest.from_sklearn(fitted())
    with pytest.raises(ValueError, match="the forest reads 8 columns, got 2"):
        forest.score([np.zeros(3)] * 2)
    with pytest.raises(ValueError, match="column 3 has 2 rows, expected 3"):
        forest.score([np.zeros(3)] * 3 + [np.zeros(2)] + [np.zeros(3)] * 4)
    with pytest.raises(ValueError, match="n_threads must be at least 1, got 0"):
        forest.score([np.zeros(3)] * 8, n_threads=0)
    with pytest.raises(ValueError, match="not fitted"):
        Forest.from_sklearn(IsolationForest())


def test_iforest_constructor_rejects_inconsistent_arrays():
    a = Forest.from_sklearn(fitted(n_estimators=3)).arrays
    args = [
        a[k]
        for k in (
            "feature",
            "threshold",
            "child",
            "nan_right",
            "leaf_value",
            "tree_offset",
            "tree_depth",
        )
    ]
    bad_child = args.copy()
    bad_child[2] = np.full_like(a["child"], 10_000)
    with pytest.raises(
        ValueError, match="child indexes must point inside their own tree"
    ):
        Forest(*bad_child, 8, 1.0)
    with pytest.raises(ValueError, match=r"feature indexes must lie in \[0, 2\)"):
        Forest(*args, 2, 1.0)


@functools.cache
def small_model() -> tuple[IsolationForest, Forest]:
    model = fitted(n_features=3, n_estimators=10, max_samples=64)
    return model, Forest.from_sklearn(model)


@overflow_ok
@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.lists(
            st.one_of(
                st.floats(allow_nan=True, allow_infinity=True),
                st.sampled_from([0.0, -0.0, 1e-40, 3.4028235e38, 3.5e38, -1e308]),
            ),
            min_size=3,
            max_size=3,
        ),
        min_size=1,
        max_size=40,
    )
)
def test_iforest_matches_sklearn_on_adversarial_rows(rows):
    model, forest = small_model()
    X = np.array(rows, dtype=np.float64)
    np.testing.assert_allclose(
        forest.score(columns(X)), model.score_samples(X), rtol=0, atol=ATOL
    )
