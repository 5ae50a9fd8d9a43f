"""The isolation forest: fitted with scikit-learn, scored by our kernel.

The forest sees several series at once (the metrics of one service): a sample
batch is pivoted so that each timestamp is a row and each series a feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from obscore._native.iforest import Forest
from obscore.detect.base import register
from obscore.model import as_sample_table


def pivot(batch: Any, features: list[int] | None = None):
    """Rows per distinct ts, one column per series (NaN where missing).

    Returns ``(ts, columns, features, row_of_sample)``.
    """
    table = as_sample_table(batch)
    ids = table["series_id"].to_numpy()
    ts = table["ts"].to_numpy()
    values = table["value"].to_numpy()
    if features is None:
        features = sorted(set(ids.tolist()))
    col_of = {sid: j for j, sid in enumerate(features)}
    uts, row_of = np.unique(ts, return_inverse=True)
    matrix = np.full((len(features), len(uts)), np.nan)
    cols = np.array([col_of.get(s, -1) for s in ids.tolist()], dtype=np.int64)
    known = cols >= 0
    matrix[cols[known], row_of[known]] = values[known]
    return uts, matrix, features, row_of


@register("iforest")
class IsolationForestDetector:
    """Multivariate detector over the series of one batch.

    Parameters
    ----------
    n_trees, max_samples : int
        Passed to :class:`sklearn.ensemble.IsolationForest`.
    seed : int
        Random state of the fit.
    n_threads : int
        Threads used by the scoring kernel.

    Notes
    -----
    The score of a row is ``-score_samples``, in (0, 1]; the original paper's
    0.5 is the anomaly threshold, so no contamination fraction is assumed.
    Missing values are filled with the feature's median from training.
    """

    name = "iforest"

    def __init__(
        self, n_trees: int = 100, max_samples: int = 256, seed: int = 0, n_threads: int = 1
    ) -> None:
        self.n_trees = int(n_trees)
        self.max_samples = int(max_samples)
        self.seed = int(seed)
        self.n_threads = int(n_threads)
        self.forest: Forest | None = None
        self.features: list[int] | None = None
        self._fill: np.ndarray | None = None
        self._scale: tuple[np.ndarray, np.ndarray] | None = None

    def fit_matrix(self, columns: np.ndarray) -> None:
        """Fit on a (features x rows) float matrix."""
        x = np.asarray(columns, dtype=np.float64).T
        fill = np.nanmedian(x, axis=0) if len(x) else np.zeros(x.shape[1])
        fill = np.where(np.isfinite(fill), fill, 0.0)
        x = np.where(np.isfinite(x), x, fill)
        # scikit-learn is imported on first fit: it costs ~1 s at start-up
        from sklearn.ensemble import IsolationForest

        model = IsolationForest(
            n_estimators=self.n_trees,
            max_samples=min(self.max_samples, max(len(x), 1)),
            random_state=self.seed,
        ).fit(x)
        self._fill = fill
        self.forest = Forest.from_sklearn(model)
        self.model = model

    def score_matrix(self, columns: np.ndarray) -> np.ndarray:
        if self.forest is None or self._fill is None:
            raise RuntimeError("the isolation forest is not fitted; call update() first")
        cols = [
            np.ascontiguousarray(np.where(np.isfinite(c), c, f), dtype=np.float64)
            for c, f in zip(np.asarray(columns, dtype=np.float64), self._fill)
        ]
        return -np.asarray(self.forest.score(cols, self.n_threads))

    def update(self, batch: Any) -> None:
        _, matrix, features, _ = pivot(batch)
        self.features = features
        self.fit_matrix(matrix)

    def score(self, batch: Any) -> pa.Array:
        _, matrix, _, row_of = pivot(batch, self.features)
        return pa.array(self.score_matrix(matrix)[row_of])
