"""The z-score ensemble: a fast z-score confirmed by a robust baseline.

It is the detector of the engine's pipeline (:mod:`obscore.pipeline`), whose
anomaly runs need its robust z-score as well as its score; it is *not* the
registry's ``default`` (see :data:`obscore.detect.base.DEFAULT_DETECTOR`),
which scores far better on NAB.

A sample is anomalous when the streaming z-score (5m window) crossed its
threshold within the last window *and* the robust z-score over the last
hour (median and IQR) agrees in direction and exceeds ``confirm``: the value
moved fast, and where it moved to is unusual for the hour.  A slow drift
that never moves fast is caught once the robust score exceeds ``drift``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from obscore.detect.base import register, split_series
from obscore.detect.robust import RobustZScoreDetector
from obscore.detect.zscore import ZScoreDetector
from obscore.model import sample_table


def armed_score(
    ts: np.ndarray, z: np.ndarray, zr: np.ndarray, window_ms: int, threshold: float,
    confirm: float, drift: float,
) -> np.ndarray:
    """Combine fast and robust z-scores into a score in [0, 1] (0.5 = alert).

    The score is the robust score mapped so that ``confirm`` gives 0.5, where a
    fast move of the same sign happened in the last ``window_ms``; elsewhere
    the robust score mapped so that ``drift`` gives 0.5.
    """
    n = len(ts)
    z = np.nan_to_num(z, nan=0.0)
    zr_f = np.nan_to_num(zr, nan=0.0)
    lo = np.searchsorted(ts, ts - window_ms, side="left")
    score = np.abs(zr_f) / (np.abs(zr_f) + drift)
    for sign in (1.0, -1.0):
        hits = np.concatenate([[0], np.cumsum(sign * z > threshold)])
        recent = (hits[1:] - hits[lo]) > 0
        pos = np.maximum(sign * zr_f, 0.0)
        score = np.where(recent, np.maximum(score, pos / (pos + confirm)), score)
    score[np.isnan(zr)] = np.nan
    return score


@register("zscore_ensemble")
class ZScoreEnsembleDetector:
    """Fast z-score armed, robust z-score confirmed; see the module docstring.

    Parameters
    ----------
    window_ms, threshold : the streaming z-score (5m, 3).
    baseline_ms : the robust window (1h).
    confirm : robust |z| that confirms a fast move.
    drift : robust |z| that alone is an anomaly.
    min_samples : each window is widened to hold at least this many samples
        at the series' median interval.
    count_window_s, lag_ms : for rates of counted events, and a baseline
        that ends before the sample; see
        :class:`~obscore.detect.robust.RobustZScoreDetector`.
    """

    name = "zscore_ensemble"

    def __init__(
        self,
        window_ms: int = 300_000,
        threshold: float = 3.0,
        baseline_ms: int = 3_600_000,
        confirm: float = 5.0,
        drift: float = 10.0,
        min_samples: int = 30,
        count_window_s: float | None = None,
        lag_ms: int = 0,
    ) -> None:
        self.count_window_s = count_window_s
        self.lag_ms = int(lag_ms)
        self.window_ms = int(window_ms)
        self.threshold = float(threshold)
        self.baseline_ms = int(baseline_ms)
        self.confirm = float(confirm)
        self.drift = float(drift)
        self.min_samples = int(min_samples)
        self._fast = ZScoreDetector(window_ms, threshold, min_samples)
        self._robust: dict[int, RobustZScoreDetector] = {}
        self._recent: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def components(self, batch: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(z, robust_z, score)`` per row, learning as it goes."""
        n = batch.num_rows if hasattr(batch, "num_rows") else len(batch)
        z_all, zr_all, s_all = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        for sid, rows, ts, values in split_series(batch):
            one = sample_table(np.full(len(ts), sid, np.uint64), ts, values)
            z = self._fast.zscores(one)
            robust = self._robust.get(sid)
            if robust is None:
                base = self.baseline_ms
                if len(ts) > 1:
                    gap = float(np.median(np.diff(ts)))
                    base = max(base, int(gap * self.min_samples * 2))
                robust = self._robust[sid] = RobustZScoreDetector(
                    base, self.confirm, count_window_s=self.count_window_s, lag_ms=self.lag_ms
                )
            zr = robust.zscores(one)
            # the fast scores of the last window carry over between batches
            prev_ts, prev_z = self._recent.get(sid, (np.empty(0, np.int64), np.empty(0)))
            window = self._fast._states[sid].window_ms
            all_ts = np.concatenate([prev_ts, ts])
            all_z = np.concatenate([prev_z, z])
            all_zr = np.concatenate([np.zeros(len(prev_ts)), zr])
            s = armed_score(np.maximum.accumulate(all_ts), all_z, all_zr, window,
                            self.threshold, self.confirm, self.drift)[len(prev_ts):]
            cut = np.searchsorted(all_ts, all_ts[-1] - window, side="left") if len(all_ts) else 0
            self._recent[sid] = (all_ts[cut:].copy(), all_z[cut:].copy())
            z_all[rows], zr_all[rows], s_all[rows] = z, zr, s
        return z_all, zr_all, s_all

    def update(self, batch: Any) -> None:
        self.components(batch)

    def score(self, batch: Any) -> pa.Array:
        return pa.array(self.components(batch)[2])
