"""Correlation, lagged correlation and Granger causality between series.

Everything here takes plain NumPy arrays of equal length on a common time
grid and never raises on constant, short or non-finite input: such a pair
gets a defined "no evidence" result (r = 0, p = 1) and a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True, slots=True)
class GrangerResult:
    """Outcome of one Granger test "x helps predict y" at one lag order."""

    f_stat: float
    p_value: float
    lag: int
    nobs: int
    reason: str = ""


def _finite_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r over the rows where both are finite; 0.0 when undefined."""
    x, y = _finite_pair(np.asarray(x, float), np.asarray(y, float))
    if len(x) < 3:
        return 0.0
    xs, ys = x - x.mean(), y - y.mean()
    den = np.sqrt((xs * xs).sum() * (ys * ys).sum())
    if not np.isfinite(den) or den <= 1e-300:
        return 0.0
    return float((xs * ys).sum() / den)


def lagged_correlation(x: np.ndarray, y: np.ndarray, max_lag: int) -> tuple[float, int]:
    """The r of largest magnitude over lags ``0..max_lag`` of x leading y.

    Returns ``(r, lag)``; lag k pairs ``x[t]`` with ``y[t + k]``.
    """
    best, best_lag = 0.0, 0
    n = len(x)
    for k in range(0, max(0, min(max_lag, n - 3)) + 1):
        r = pearson(x[: n - k], y[k:])
        if abs(r) > abs(best):
            best, best_lag = r, k
    return best, best_lag


def _lags(v: np.ndarray, p: int) -> np.ndarray:
    n = len(v)
    return np.column_stack([v[p - k : n - k] for k in range(1, p + 1)])


def granger(x: np.ndarray, y: np.ndarray, lag: int) -> GrangerResult:
    """F test that the past of ``x`` improves a linear prediction of ``y``.

    The same test as the ``ssr_ftest`` of statsmodels'
    ``grangercausalitytests`` (restricted: y on a constant and its own ``lag``
    past values; unrestricted: also x's ``lag`` past values).

    Parameters
    ----------
    x, y : ndarray
        Equal-length float series on one grid.  Non-finite rows are dropped
        from both first (which joins the series around the gap).
    lag : int
        Lag order, positive.

    Returns
    -------
    GrangerResult
        ``p_value`` 1.0 and a ``reason`` when the test is undefined (too
        short, constant, or a perfect fit).
    """
    if lag < 1:
        raise ValueError(f"lag must be at least 1, got {lag!r}")
    x, y = _finite_pair(np.asarray(x, float), np.asarray(y, float))
    n = len(y) - lag
    dof = n - 2 * lag - 1
    if dof < 1:
        return GrangerResult(0.0, 1.0, lag, max(n, 0), f"too short: {len(y)} points for lag {lag}")
    if np.ptp(y) == 0 or np.ptp(x) == 0:
        return GrangerResult(0.0, 1.0, lag, n, "constant series")
    target = y[lag:]
    ones = np.ones((n, 1))
    restricted = np.hstack([ones, _lags(y, lag)])
    full = np.hstack([restricted, _lags(x, lag)])
    rss_r = _rss(restricted, target)
    rss_u = _rss(full, target)
    if rss_u <= 1e-300 * max(1.0, rss_r):
        return GrangerResult(0.0, 1.0, lag, n, "perfect fit")
    f_stat = ((rss_r - rss_u) / lag) / (rss_u / dof)
    p_value = float(stats.f.sf(f_stat, lag, dof))
    return GrangerResult(float(f_stat), p_value, lag, n)


def _rss(a: np.ndarray, b: np.ndarray) -> float:
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    r = b - a @ coef
    return float(r @ r)


def granger_best(x: np.ndarray, y: np.ndarray, max_lag: int) -> GrangerResult:
    """The smallest p-value over lag orders ``1..max_lag`` (Bonferroni-corrected)."""
    best = None
    for lag in range(1, max_lag + 1):
        res = granger(x, y, lag)
        if best is None or res.p_value < best.p_value:
            best = res
    assert best is not None
    p = min(1.0, best.p_value * max_lag)
    return GrangerResult(best.f_stat, p, best.lag, best.nobs, best.reason)
