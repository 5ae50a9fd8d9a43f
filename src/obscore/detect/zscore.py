"""The streaming z-score detector (window 5m, threshold 3 by default)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from obscore._native.zscore import ZScoreState
from obscore.detect.base import register, split_series, z_to_score


@register("zscore")
class ZScoreDetector:
    """Scores each sample by its distance from the mean of the window before it.

    Parameters
    ----------
    window_ms : int
        Look-back window; the mean and standard deviation are those of the
        samples of the same series in the window before the scored one.
    threshold : float
        ``|z|`` at which a sample is an anomaly; it maps to score 0.5.
    min_samples : int
        The window is widened, once per series on its first batch, so that it
        holds at least this many samples at the series' median interval: a 5m
        window means little on a series sampled every 5 minutes.

    Notes
    -----
    NaN values score NaN and do not enter the window.  A constant window
    followed by a different value gives a large but finite score.
    """

    name = "zscore"

    def __init__(
        self, window_ms: int = 300_000, threshold: float = 3.0, min_samples: int = 30
    ) -> None:
        if window_ms <= 0:
            raise ValueError(f"window_ms must be positive, got {window_ms!r}")
        if threshold <= 0:
            raise ValueError(f"threshold must be positive, got {threshold!r}")
        self.window_ms = int(window_ms)
        self.threshold = float(threshold)
        self.min_samples = int(min_samples)
        self._states: dict[int, ZScoreState] = {}

    def _state(self, sid: int, ts: np.ndarray) -> ZScoreState:
        state = self._states.get(sid)
        if state is None:
            window = self.window_ms
            if len(ts) > 1:
                gap = float(np.median(np.diff(ts)))
                if gap > 0:
                    window = max(window, int(gap * self.min_samples))
            state = self._states[sid] = ZScoreState(window, 2, 1024)
        return state

    def zscores(self, batch: Any) -> np.ndarray:
        """Signed z-scores per row (NaN for NaN values), learning as it goes."""
        out = np.full(_num_rows(batch), np.nan)
        for sid, rows, ts, values in split_series(batch):
            z = np.empty(len(ts))
            self._state(sid, ts).update(ts, values, z)
            out[rows] = z
        return out

    def update(self, batch: Any) -> None:
        self.zscores(batch)

    def score(self, batch: Any) -> pa.Array:
        return pa.array(z_to_score(self.zscores(batch), self.threshold))


def _num_rows(batch: Any) -> int:
    return batch.num_rows if hasattr(batch, "num_rows") else len(batch)
