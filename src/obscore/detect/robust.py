"""A robust z-score: distance from the rolling median in units of the rolling
inter-quartile range, over a long window (1h by default).

Where the streaming z-score (5m) reacts to any fast wiggle of an
autocorrelated signal, the robust score asks whether the value is unusual
for the whole last hour, and ignores the outliers inside that hour.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from obscore.detect.base import register, split_series, z_to_score

# NOTE: the IQR of a normal distribution is 1.349 standard deviations.
_IQR_TO_STD = 1.349


def _robust_z(
    values: np.ndarray,
    med: np.ndarray,
    iqr: np.ndarray,
    rel_floor: float | np.ndarray,
    count_window_s: float | np.ndarray | None,
) -> np.ndarray:
    """``(values - med) / scale`` with the detector's scale floors; 0 where ``med`` is NaN.

    The scale is the IQR as a standard deviation, at least ``rel_floor`` of
    ``|med|``, and with ``count_window_s`` at least the Poisson spread of a
    rate counted over that window; never below 1e-12.  ``rel_floor`` and
    ``count_window_s`` may be arrays, one value per row (0: no window).
    """
    scale = np.maximum(iqr / _IQR_TO_STD, rel_floor * np.abs(med))
    cw = np.asarray(0.0 if count_window_s is None else count_window_s, dtype=float)
    if (cw > 0).any():  # per value when arrays: 0 means no count window
        w = np.where(cw > 0, cw, 1.0)
        counted = np.maximum(scale, np.sqrt(np.maximum(np.abs(med), 1.0 / w) / w))
        scale = np.where(cw > 0, counted, scale)
    scale = np.maximum(scale, 1e-12)
    z = (values - med) / scale
    return np.where(np.isnan(med), 0.0, z)


@register("robust_zscore")
class RobustZScoreDetector:
    """Scores by ``(x - median) / max(IQR / 1.349, rel_floor * |median|)``.

    Parameters
    ----------
    window_ms : int
        Look-back window of the median and quartiles (the scored sample is
        not in it).
    threshold : float
        ``|z|`` mapped to score 0.5.
    min_samples : int
        Fewer samples in the window give score 0.
    rel_floor : float
        The scale is at least this fraction of the median's magnitude, so a
        flat window does not turn noise into alarms.
    count_window_s : float, optional
        For a rate of counted events (errors per second measured over this
        many seconds), the scale is at least the Poisson noise of such a
        rate, ``sqrt(max(median, 1 / w) / w)``: a handful of rare events is
        not an anomaly.
    lag_ms : int
        The baseline window ends this long before the scored sample, so a
        slow ramp does not drag its own baseline along (0: it ends right
        before the sample).

    Notes
    -----
    Rolling quantiles come from pandas; the detector keeps the last
    ``window_ms`` of each series between calls, so scoring in batches gives
    the same scores as scoring at once.  NaN values score NaN and are not
    added to the window.
    """

    name = "robust_zscore"

    def __init__(
        self,
        window_ms: int = 3_600_000,
        threshold: float = 5.0,
        min_samples: int = 30,
        rel_floor: float = 0.01,
        count_window_s: float | None = None,
        lag_ms: int = 0,
    ) -> None:
        self.window_ms = int(window_ms)
        self.threshold = float(threshold)
        self.min_samples = int(min_samples)
        self.rel_floor = float(rel_floor)
        self.count_window_s = count_window_s
        self.lag_ms = int(lag_ms)
        self._tails: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def zscores(self, batch: Any) -> np.ndarray:
        n = batch.num_rows if hasattr(batch, "num_rows") else len(batch)
        out = np.full(n, np.nan)
        for sid, rows, ts, values in split_series(batch):
            tail_ts, tail_v = self._tails.get(sid, (np.empty(0, np.int64), np.empty(0)))
            keep = ~np.isnan(values)
            all_ts = np.concatenate([tail_ts, ts[keep]])
            all_v = np.concatenate([tail_v, values[keep]])
            z = self._robust(all_ts, all_v)[len(tail_ts):]
            scored = np.full(len(ts), np.nan)
            scored[keep] = z
            out[rows] = scored
            if len(all_ts):
                keep_ms = self.window_ms + self.lag_ms
                cut = np.searchsorted(all_ts, all_ts[-1] - keep_ms, side="right")
                self._tails[sid] = (all_ts[cut:].copy(), all_v[cut:].copy())
        return out

    def _robust(self, ts: np.ndarray, values: np.ndarray) -> np.ndarray:
        if len(ts) == 0:
            return np.empty(0)
        import pandas as pd  # imported on first use: it is slow to import

        # out-of-order arrivals are treated as arriving at the newest ts
        ts = np.maximum.accumulate(ts)
        x = pd.Series(values, index=pd.to_datetime(ts, unit="ms"))
        if self.lag_ms == 0:
            roll = x.rolling(f"{self.window_ms}ms", closed="left", min_periods=self.min_samples)
            med = roll.median().to_numpy()
            iqr = (roll.quantile(0.75) - roll.quantile(0.25)).to_numpy()
        else:
            # the baseline of the sample at t is the window ending at t - lag
            roll = x.rolling(f"{self.window_ms}ms", closed="right", min_periods=self.min_samples)
            med_at = roll.median().to_numpy()
            iqr_at = (roll.quantile(0.75) - roll.quantile(0.25)).to_numpy()
            j = np.searchsorted(ts, ts - self.lag_ms, side="right") - 1
            ok = j >= 0
            med = np.full(len(ts), np.nan)
            iqr = np.full(len(ts), np.nan)
            med[ok], iqr[ok] = med_at[j[ok]], iqr_at[j[ok]]
        return _robust_z(values, med, iqr, self.rel_floor, self.count_window_s)

    def update(self, batch: Any) -> None:
        self.zscores(batch)

    def score(self, batch: Any) -> pa.Array:
        return pa.array(z_to_score(self.zscores(batch), self.threshold))
