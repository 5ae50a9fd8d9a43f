"""Correlation, lagged correlation and Granger causality between series.

Everything here takes plain NumPy arrays of equal length on a common time
grid and never raises on constant, short or non-finite input: such a pair
gets a defined "no evidence" result (r = 0, p = 1) and a reason.

Granger tests follow the convention of statsmodels'
``grangercausalitytests``: the test at lag order ``p`` regresses the target
on a constant and its own ``p`` past values (restricted model), then adds the
source's ``p`` past values (unrestricted model), over rows ``p..n-1`` only.
:func:`granger` tests one pair at one lag, :func:`granger_tests` gives all
four of statsmodels' statistics for one pair, and :func:`granger_matrix`
tests every ordered pair of many series at every lag up to ``maxlag`` at
once.

:func:`group_anomalies` groups anomalies into incidents by the time of their
onsets, their place (service and region) and the call graph, and records why
each one joined.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

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
    note: str = ""  # what was done to the input, e.g. non-finite rows dropped


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
    for k in range(max(0, min(max_lag, n - 3)) + 1):
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
        short, constant, or a perfect fit: the unrestricted model leaves
        less than machine epsilon of the target's variation unexplained,
        statsmodels' rule).
    """
    if lag < 1:
        raise ValueError(f"lag must be at least 1, got {lag!r}")
    n_in = min(np.size(x), np.size(y))
    x, y = _finite_pair(np.asarray(x, float), np.asarray(y, float))
    dropped = n_in - len(y)
    note = f"dropped {dropped} of {n_in} points with a non-finite value" if dropped else ""
    n = len(y) - lag
    dof = n - 2 * lag - 1
    if dof < 1:
        return GrangerResult(
            0.0, 1.0, lag, max(n, 0), f"too short: {len(y)} points for lag {lag}", note
        )
    if np.ptp(y) == 0 or np.ptp(x) == 0:
        return GrangerResult(0.0, 1.0, lag, n, "constant series", note)
    target = y[lag:]
    ones = np.ones((n, 1))
    restricted = np.hstack([ones, _lags(y, lag)])
    full = np.hstack([restricted, _lags(x, lag)])
    q, r = np.linalg.qr(full)
    if np.abs(np.diag(r)).min() > 1e-12 * np.linalg.norm(full, axis=0).max():
        # x's lags come last, so the tail of q'y is what they add to the fit;
        # summing it avoids the cancellation of rss_r - rss_u when F is small
        qty = q.T @ target
        resid = target - q @ qty
        rss_u = float(resid @ resid)
        extra = float(qty[lag + 1 :] @ qty[lag + 1 :])
    else:
        rss_u = _rss(full, target)
        extra = _rss(restricted, target) - rss_u
    if _is_perfect_fit(rss_u, target):
        return GrangerResult(0.0, 1.0, lag, n, "perfect fit", note)
    f_stat = (extra / lag) / (rss_u / dof)
    p_value = float(stats.f.sf(f_stat, lag, dof))
    return GrangerResult(float(f_stat), p_value, lag, n, "", note)


def _is_perfect_fit(rss_u: float, target: np.ndarray) -> bool:
    # statsmodels' rule: the unrestricted fit leaves less than one machine
    # epsilon of the target's variation unexplained, so F would be noise
    tss = float(np.sum((target - target.mean()) ** 2))
    return rss_u <= _EPS * tss


_EPS = float(np.finfo(float).eps)


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
    return GrangerResult(best.f_stat, p, best.lag, best.nobs, best.reason, best.note)


@dataclass(frozen=True, slots=True)
class GrangerTests:
    """The four statistics of statsmodels' ``grangercausalitytests``, one lag.

    Each test is a ``(statistic, p_value)`` pair named after the key that
    statsmodels uses for it; undefined tests are ``(0.0, 1.0)`` with a
    ``reason``.
    """

    lag: int
    nobs: int
    df_resid: int
    ssr_ftest: tuple[float, float]
    ssr_chi2test: tuple[float, float]
    lrtest: tuple[float, float]
    params_ftest: tuple[float, float]
    reason: str = ""


def granger_tests(x: np.ndarray, y: np.ndarray, lag: int) -> GrangerTests:
    """All four Granger tests that the past of ``x`` helps predict ``y``.

    Parameters
    ----------
    x, y : ndarray
        Equal-length float series on one grid.  Non-finite rows are dropped
        from both first, as in :func:`granger`.
    lag : int
        Lag order, positive.

    Returns
    -------
    GrangerTests
        With ``n = nobs`` rows (``lag..len-1``), ``k = lag`` restrictions,
        ``df = n - 2k - 1`` and the residual sums of squares ``rss_r``
        (restricted) and ``rss_u`` (unrestricted):

        - ``ssr_ftest``: ``F = (rss_r - rss_u) / k / (rss_u / df)``, F(k, df);
        - ``ssr_chi2test``: ``n (rss_r - rss_u) / rss_u``, chi2(k);
        - ``lrtest``: ``n log(rss_r / rss_u)``, chi2(k);
        - ``params_ftest``: Wald F test that the ``k`` coefficients of x's
          lags are all zero, from the coefficients and their covariance,
          F(k, df).  It equals ``ssr_ftest`` in exact arithmetic.

    Raises
    ------
    ValueError
        If ``lag`` is smaller than 1.

    Notes
    -----
    Undefined cases (too short, constant series, collinear lag columns, a
    perfect fit) give ``(0.0, 1.0)`` for every test and a ``reason``; they
    never raise, unlike statsmodels.
    """
    if lag < 1:
        raise ValueError(f"lag must be at least 1, got {lag!r}")
    x, y = _finite_pair(np.asarray(x, float), np.asarray(y, float))
    n = len(y) - lag
    dof = n - 2 * lag - 1
    if dof < 1:
        reason = f"too short: {len(y)} points for lag {lag}"
        return _undefined_tests(lag, max(n, 0), max(dof, 0), reason)
    if np.ptp(y) == 0 or np.ptp(x) == 0:
        return _undefined_tests(lag, n, dof, "constant series")

    target = y[lag:]
    design = np.hstack([np.ones((n, 1)), _lags(y, lag), _lags(x, lag)])
    q, r = np.linalg.qr(design)
    diag = np.abs(np.diag(r))
    if diag.min() <= 1e-12 * np.linalg.norm(design, axis=0).max():
        return _undefined_tests(lag, n, dof, "collinear lag columns")

    qty = q.T @ target
    resid = target - q @ qty
    rss_u = float(resid @ resid)
    if _is_perfect_fit(rss_u, target):
        return _undefined_tests(lag, n, dof, "perfect fit")
    # the source columns come last, so their share of the fit is the tail of qty
    extra = float(qty[lag + 1 :] @ qty[lag + 1 :])
    f_ssr = extra / lag / (rss_u / dof)
    chi2 = n * extra / rss_u
    lr = n * np.log1p(extra / rss_u)

    coef = np.linalg.solve(r, qty)
    r_inv = np.linalg.solve(r, np.eye(len(r)))
    cov = (rss_u / dof) * (r_inv @ r_inv.T)
    b_src = coef[lag + 1 :]
    cov_src = cov[lag + 1 :, lag + 1 :]
    f_wald = float(b_src @ np.linalg.solve(cov_src, b_src)) / lag
    return GrangerTests(
        lag=lag,
        nobs=n,
        df_resid=dof,
        ssr_ftest=(f_ssr, float(stats.f.sf(f_ssr, lag, dof))),
        ssr_chi2test=(chi2, float(stats.chi2.sf(chi2, lag))),
        lrtest=(float(lr), float(stats.chi2.sf(lr, lag))),
        params_ftest=(f_wald, float(stats.f.sf(f_wald, lag, dof))),
    )


def _undefined_tests(lag: int, nobs: int, dof: int, reason: str) -> GrangerTests:
    none = (0.0, 1.0)
    return GrangerTests(lag, nobs, dof, none, none, none, none, reason)


def adjust_pvalues(
    p_values: np.ndarray, method: Literal["bh", "bonferroni"] = "bh"
) -> np.ndarray:
    """Correct p-values for testing many hypotheses at once.

    Parameters
    ----------
    p_values : ndarray
        Any shape; NaN entries (tests not made, such as a series against
        itself) stay NaN and do not count towards the number of tests.
    method : {"bh", "bonferroni"}
        ``"bh"``: Benjamini-Hochberg step-up adjustment, which keeps the
        expected share of false discoveries among the rejections at most
        ``alpha`` (for independent or positively dependent tests).
        ``"bonferroni"``: ``min(1, m p)``, which keeps the probability of
        any false rejection at most ``alpha`` under any dependence.

    Returns
    -------
    ndarray
        Adjusted p-values, same shape; reject where ``adjusted <= alpha``.

    Raises
    ------
    ValueError
        If ``method`` is not one of the two names.
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    flat = p[tested]
    m = flat.size
    if method == "bonferroni":
        out[tested] = np.minimum(1.0, flat * m)
    elif method == "bh":
        order = np.argsort(flat, kind="stable")
        scaled = flat[order] * m / np.arange(1, m + 1)
        # the step-up rule: each adjusted value is the smallest scaled one at
        # or after its rank
        running = np.minimum.accumulate(scaled[::-1])[::-1]
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(1.0, running)
        out[tested] = adjusted
    else:
        raise ValueError(f"method must be 'bh' or 'bonferroni', got {method!r}")
    return out


_STATUS = ("", "same series", "constant series", "too short", "perfect fit")
_OK, _SAME, _CONSTANT, _SHORT, _PERFECT = range(len(_STATUS))


@dataclass(frozen=True, slots=True)
class GrangerMatrix:
    """Granger tests of every ordered pair of series at lags ``1..maxlag``.

    Attributes
    ----------
    f_stat : ndarray, shape (maxlag, n_series, n_series)
        ``f_stat[lag - 1, i, j]`` is the F statistic of "series ``i``
        Granger-causes series ``j``" at that lag order: source ``i`` on the
        second axis, target ``j`` on the third.  NaN on the diagonal.
    p_value : ndarray, shape (maxlag, n_series, n_series)
        The p-values of ``f_stat`` (F distribution), uncorrected; 1.0 where
        the test is undefined, NaN on the diagonal.
    status : ndarray of uint8, shape (maxlag, n_series, n_series)
        0 where the test was made, otherwise a code read by :meth:`reason`.
    nobs : ndarray of int64, shape (maxlag,)
        Rows used at each lag order (``n_points - lag`` after dropping).
    df_resid : ndarray of int64, shape (maxlag,)
        Residual degrees of freedom at each lag order, ``nobs - 2 lag - 1``.
    n_dropped : int
        Time points dropped because some series was non-finite there.
    """

    f_stat: np.ndarray
    p_value: np.ndarray
    status: np.ndarray
    nobs: np.ndarray
    df_resid: np.ndarray
    n_dropped: int

    @property
    def maxlag(self) -> int:
        """The largest lag order tested."""
        return int(self.f_stat.shape[0])

    @property
    def n_series(self) -> int:
        """The number of series."""
        return int(self.f_stat.shape[1])

    @property
    def note(self) -> str:
        """What was done to the input (non-finite time points dropped), or ``""``."""
        if not self.n_dropped:
            return ""
        return f"dropped {self.n_dropped} time points with a non-finite value in some series"

    def reason(self, source: int, target: int, lag: int) -> str:
        """Why the test of ``source -> target`` at ``lag`` is undefined, or ``""``."""
        return _STATUS[int(self.status[lag - 1, source, target])]

    def best(self) -> tuple[np.ndarray, np.ndarray]:
        """The smallest p-value over the lag orders of each ordered pair.

        Returns
        -------
        p_value : ndarray, shape (n_series, n_series)
            Bonferroni-corrected over the ``maxlag`` lag orders, as
            :func:`granger_best` does; NaN on the diagonal.
        lag : ndarray of int64, shape (n_series, n_series)
            The lag order that gave it (0 on the diagonal).
        """
        filled = np.where(np.isnan(self.p_value), np.inf, self.p_value)
        idx = np.argmin(filled, axis=0)
        p = np.take_along_axis(self.p_value, idx[None], axis=0)[0]
        p = np.minimum(1.0, p * self.maxlag)
        lag = np.where(np.isnan(p), 0, idx + 1).astype(np.int64)
        return p, lag

    def adjusted(
        self, method: Literal["bh", "bonferroni"] = "bh", lag: int | None = None
    ) -> np.ndarray:
        """p-values corrected across all ordered pairs (diagonal excluded).

        Parameters
        ----------
        method : {"bh", "bonferroni"}
            See :func:`adjust_pvalues`.
        lag : int, optional
            Correct the p-values of this lag order; by default those of
            :meth:`best` (already corrected over the lag orders).

        Returns
        -------
        ndarray, shape (n_series, n_series)
            NaN on the diagonal.

        Raises
        ------
        ValueError
            If ``lag`` is outside ``1..maxlag``.
        """
        if lag is None:
            p = self.best()[0]
        else:
            if not 1 <= lag <= self.maxlag:
                raise ValueError(f"lag must be in 1..{self.maxlag}, got {lag!r}")
            p = self.p_value[lag - 1]
        return adjust_pvalues(p, method)

    def significant(
        self,
        alpha: float = 0.05,
        method: Literal["bh", "bonferroni"] = "bh",
        lag: int | None = None,
    ) -> np.ndarray:
        """Boolean (n_series, n_series): ``i -> j`` holds after correction."""
        adjusted = self.adjusted(method, lag)
        return np.nan_to_num(adjusted, nan=np.inf) <= alpha


# NOTE: a target block holds at most this many floats of source-lag products
# (64 MB): 40 series at maxlag 5 fit in one block; 300 series x 1,440 points
# at maxlag 5 take a few blocks and ~2 s (benchmarks/test_granger.py times 40)
_BLOCK_FLOATS = 8_000_000
# NOTE: below these ratios the subtracted Gram matrix or residual sum of
# squares has lost more than ~6 of its 16 digits, and the pair is recomputed
# by `granger` directly (tests/test_correlate.py covers such pairs)
_ILL_GRAM = 1e-6
_ILL_RSS = 1e-6


def granger_matrix(X: np.ndarray, maxlag: int, *, difference: int = 0) -> GrangerMatrix:
    """Granger-test every ordered pair of series at every lag ``1..maxlag``.

    Gives the same F and p as :func:`granger` on each pair (to about 1e-12
    relative), without fitting each pair's regressions from scratch.

    Parameters
    ----------
    X : ndarray, shape (n_series, n_points)
        One series per row on a common time grid, float.
    maxlag : int
        Largest lag order, positive; every order ``1..maxlag`` is tested.
    difference : int, default 0
        Difference each series this many times before testing.  Use 1 for
        series with a unit root (random walks, counters, drifting gauges):
        on levels the F distribution does not hold and independent random
        walks are declared causal far more often than ``alpha``.

    Returns
    -------
    GrangerMatrix
        F statistics and p-values indexed ``[lag - 1, source, target]``.

    Raises
    ------
    ValueError
        If ``X`` is not two-dimensional, ``maxlag`` is smaller than 1 or
        ``difference`` is negative.

    Notes
    -----
    Time points where any series is non-finite (NaN, +/-Inf) are dropped
    from all series after differencing, which joins every series around the
    gap; drop mostly-missing series first, or few points will remain.  A
    pair with a constant series, a lag order for which too few points
    remain, and a perfect fit get F = 0, p = 1 and a reason; the diagonal is
    NaN.

    The restricted model of each target (a constant and its own lags) is
    factored once per lag order (QR) and shared by every source.  By the
    Frisch-Waugh-Lovell theorem, the extra sum of squares that a source's lag
    block explains equals ``b' G^-1 b``, with ``G`` the Gram matrix of the
    source lags after removing the target's restricted design and ``b``
    their product with the restricted residual.  Both come from a few
    matrix products for all pairs at once, then one small ``lag x lag``
    solve per pair.  Pairs where this loses precision (a source almost
    explained by the target's own lags, a near-perfect fit) are recomputed
    with :func:`granger`.
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_series, n_points), got {X.ndim} dimensions")
    if isinstance(maxlag, bool) or int(maxlag) != maxlag or maxlag < 1:
        raise ValueError(f"maxlag must be a positive integer, got {maxlag!r}")
    if isinstance(difference, bool) or int(difference) != difference or difference < 0:
        raise ValueError(
            f"difference must be a non-negative integer, got {difference!r}"
        )
    maxlag, difference = int(maxlag), int(difference)

    if difference:
        X = np.diff(X, n=difference, axis=1)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(X).all(axis=0)
    n_dropped = int((~keep).sum())
    X = np.ascontiguousarray(X[:, keep])
    s, n = X.shape

    shape = (maxlag, s, s)
    f_stat = np.zeros(shape)
    p_value = np.ones(shape)
    status = np.zeros(shape, dtype=np.uint8)
    nobs = np.maximum(n - np.arange(1, maxlag + 1), 0).astype(np.int64)
    df_resid = np.maximum(nobs - 2 * np.arange(1, maxlag + 1) - 1, 0).astype(np.int64)
    constant = np.ptp(X, axis=1) == 0 if n else np.ones(s, dtype=bool)
    with_constant = constant[:, None] | constant[None, :]
    for lag in range(1, maxlag + 1):
        if nobs[lag - 1] - 2 * lag - 1 < 1:
            status[lag - 1] = _SHORT
            continue
        status[lag - 1][with_constant] = _CONSTANT
        _fill_lag(X, lag, constant, f_stat[lag - 1], p_value[lag - 1], status[lag - 1])

    diag = np.arange(s)
    f_stat[:, diag, diag] = np.nan
    p_value[:, diag, diag] = np.nan
    status[:, diag, diag] = _SAME
    return GrangerMatrix(f_stat, p_value, status, nobs, df_resid, n_dropped)


def _fill_lag(
    X: np.ndarray,
    lag: int,
    constant: np.ndarray,
    f_out: np.ndarray,
    p_out: np.ndarray,
    status: np.ndarray,
) -> None:
    """Fill the (source, target) F, p and status of one lag order in place."""
    s, n = X.shape
    n_rows = n - lag
    dof = n_rows - 2 * lag - 1
    # F is scale free: standardised series keep the Gram matrices well scaled
    mu = X.mean(axis=1, keepdims=True)
    sd = X.std(axis=1, keepdims=True)
    Z = (X - mu) / np.where(sd > 0, sd, 1.0)

    # lags[i, t, k] = Z[i, lag + t - (k + 1)]: the lag block of series i
    windows = np.lib.stride_tricks.sliding_window_view(Z, lag, axis=1)
    lags = np.ascontiguousarray(windows[:, :n_rows, ::-1])
    flat = lags.transpose(1, 0, 2).reshape(n_rows, s * lag)
    gram = lags.transpose(0, 2, 1) @ lags
    gram_diag = np.einsum("ikk->ik", gram)
    y = Z[:, lag:]
    tss = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)

    block = max(1, _BLOCK_FLOATS // max(1, s * lag * (lag + 1)))
    for lo in range(0, s, block):
        hi = min(s, lo + block)
        m = hi - lo
        design = np.concatenate([np.ones((m, n_rows, 1)), lags[lo:hi]], axis=2)
        q, r = np.linalg.qr(design)
        col_norm = np.linalg.norm(design, axis=1)
        ill_target = (np.abs(np.einsum("jkk->jk", r)) <= 1e-8 * col_norm).any(axis=1)

        qty = np.einsum("jtk,jt->jk", q, y[lo:hi])
        resid = y[lo:hi] - np.einsum("jtk,jk->jt", q, qty)
        rss_r = np.einsum("jt,jt->j", resid, resid)
        # cross[j, a, i, k]: the restricted basis of target j against source i's lags
        qt = q.transpose(0, 2, 1).reshape(m * (lag + 1), n_rows)
        cross = (qt @ flat).reshape(m, lag + 1, s, lag)
        gram_t = gram[None] - np.einsum("jaik,jail->jikl", cross, cross)
        b = (resid @ flat).reshape(m, s, lag)

        ratio = np.einsum("jikk->jik", gram_t) / np.where(gram_diag > 0, gram_diag, 1.0)
        ill = ill_target[:, None] | ~(ratio.min(axis=2) > _ILL_GRAM)
        gram_t[ill] = np.eye(lag)
        z = np.linalg.solve(gram_t, b[..., None])[..., 0]
        extra = np.maximum(np.einsum("jik,jik->ji", b, z), 0.0)
        rss_u = rss_r[:, None] - extra
        ill |= ~(rss_u > _ILL_RSS * rss_r[:, None])
        perfect = rss_u <= _EPS * tss[lo:hi, None]

        with np.errstate(divide="ignore", invalid="ignore"):
            f = (extra / lag) / (rss_u / dof)
        ok = ~ill & ~perfect
        f = np.where(ok, f, 0.0)
        f_out[:, lo:hi] = f.T
        p_out[:, lo:hi] = np.where(ok, stats.f.sf(f, lag, dof), 1.0).T
        st = status[:, lo:hi]
        st[(perfect & ~ill).T & (st == _OK)] = _PERFECT

        # the few pairs the batched algebra cannot trust are refit one by one
        for jj, i in zip(*np.nonzero(ill)):
            j = lo + jj
            if i == j or constant[i] or constant[j]:
                continue
            res = granger(X[i], X[j], lag)
            f_out[i, j], p_out[i, j] = res.f_stat, res.p_value
            status[i, j] = _STATUS.index(res.reason) if res.reason else _OK


# --- grouping: anomalies into incidents by onset, place and dependency ---

# A signal that fired faintly and fires again this many times louder has a new
# onset, not the same one coming back (a database's timeouts at z 5, then 11,000
# when it slows down).
_NEW_ONSET_RATIO = 100.0



class _Located(Protocol):
    """What the grouping reads of an anomaly (``obscore.pipeline.Anomaly`` fits)."""

    @property
    def signal(self) -> str: ...
    @property
    def start_ms(self) -> int: ...
    @property
    def end_ms(self) -> int: ...
    @property
    def service(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def peak_z(self) -> float: ...


class _Topology(Protocol):
    """The call graph the grouping walks (``obscore.catalogue.Catalogue`` fits)."""

    def callers(self, name: str) -> tuple[str, ...]: ...
    def callees(self, name: str) -> tuple[str, ...]: ...


@dataclass(slots=True)
class AnomalyGroup:
    """Anomalies judged to be one problem, as indices into the grouped sequence.

    ``reasons`` holds one line per member, in the order of ``members``: the
    first says it opened the group, each other names the member it was linked
    to and why.
    """

    members: list[int]
    reasons: list[str]
    start_ms: int
    end_ms: int


@dataclass(slots=True)
class _Seen:
    """The members of one group at one place, summed up for link checks."""

    start_ms: int  # latest onset
    signal: str  # the signal with that onset, named in reasons
    end_ms: int  # latest end
    end_signal: str
    first_ms: int  # earliest onset

    def add(self, a: _Located) -> None:
        self.first_ms = min(self.first_ms, a.start_ms)
        self.start_ms, self.signal = a.start_ms, a.signal
        if a.end_ms >= self.end_ms:
            self.end_ms, self.end_signal = a.end_ms, a.signal


def _note(table: dict, key: object, gid: int, a: _Located) -> None:
    slot = table.setdefault(key, {})
    seen = slot.get(gid)
    if seen is None:
        slot[gid] = _Seen(a.start_ms, a.signal, a.end_ms, a.signal, a.start_ms)
    else:
        seen.add(a)


def _neighbours(
    topology: _Topology | None, service: str, max_hops: int
) -> dict[str, int]:
    """Services within ``max_hops`` of ``service`` in the undirected call graph."""
    if topology is None:
        return {}
    seen, frontier = {service: 0}, [service]
    for hops in range(1, max_hops + 1):
        nxt = []
        for node in frontier:
            for other in (*topology.callees(node), *topology.callers(node)):
                if other not in seen:
                    seen[other] = hops
                    nxt.append(other)
        frontier = nxt
    del seen[service]
    return seen


def group_anomalies(
    anomalies: Sequence[_Located],
    topology: _Topology | None = None,
    *,
    quiet_ms: int = 900_000,
    onset_ms: int = 120_000,
    sync_ms: int = 60_000,
    prompt_ms: int = 30_000,
    refire_ms: int = 300_000,
    max_hops: int = 1,
    max_symptoms: int = 5,
    max_places: int = 3,
    min_link_z: float = 8.0,
    max_far_z: float = 20.0,
    grace_ms: int = 30_000,
    loud_ratio: float = 10.0,
) -> list[AnomalyGroup]:
    """Group anomalies that are one problem, and say why each one joined.

    Grouping runs in two steps, each anomaly taken in order of onset.

    1. *Onsets that move together.*  An anomaly is linked to an earlier one
       ``b`` when their onsets are close and their places are related:

       - the same place (service and region; a business signal's place is its
         region) with an onset at most ``onset_ms`` after ``b``'s;
       - *dependency*: a service within ``max_hops`` of ``b``'s in the call
         graph, either way (errors and latency travel up to the callers, a
         traffic surge down to the callees), in the same region, with an onset
         at most ``onset_ms`` after ``b``'s: the lead-lag of an effect
         travelling along the edge;
       - the same service in another region with an onset at most ``sync_ms``
         after ``b``'s: one cause hitting every region at once, such as a
         global deploy.

       Linked anomalies form a cluster; an anomaly with links into several
       clusters joins one it is linked to promptly (an onset at most
       ``prompt_ms`` after the other's, as when one cause hits every region
       in the same minute), then the one with the strongest link (same place
       first), then the nearest onset.  Clusters are never merged.
    2. *Late symptoms.*  A small cluster (at most ``max_symptoms`` anomalies
       at no more than ``max_places`` places) joins an incident still open
       (its last member ended at most ``quiet_ms`` before) when its first
       anomaly, its onset, is tied to it (the others came with it by their
       links of step 1).  "Still anomalous" below allows ``grace_ms`` after
       the end, for the step of the grid between one anomaly ending and the
       next one starting.  The ties, strongest first:

       - the same signal firing again within ``refire_ms`` of its last end,
         unless it fired faintly then and a hundred times louder now (a new
         onset, such as a database's timeouts at z 5, then at z 11,000 when
         it slows down);
       - an anomaly at the place the incident opened at, still anomalous
         there (a memory leak's CPU and latency half way through);
       - the same metric at the service the incident opened at, still
         anomalous in another region (a leak or a rolling deploy reaching the
         regions minutes apart); only for an anomaly strong enough to link to;
       - an anomaly at a direct dependency of the service the incident opened
         at, still anomalous in that region, of a signal that travels along
         the edge.  Up the edge (a caller of the opening service) a callee's
         trouble arrives as the same signal: the symptom's metric and labels,
         apart from those of place (service, region, host, instance), must be
         those of a member at the opening service there (a database's
         timeouts reach its callers as timeouts; a caller's 5xx errors after
         a deploy of its own, or its memory, do not come from the database).
         Down the edge (a service the opening service calls, and which does
         not call it back) travels load, which shows in any signal of a
         metric that a member at the opening service shows (a caller's surge
         of traffic as its database's CPU and errors, not as the database's
         memory).  And a symptom more than ``loud_ratio`` times louder (peak
         ``|z|``) than anything at the opening service, minutes after the
         onset (more than ``onset_ms``), is a problem of its own: an effect
         one edge away is not ten times stronger than its cause;
       - slowness or errors (the application group) two calls from the
         opening service in one direction (its callers' callers, where
         slowness travels, or its callees' callees, where a surge of traffic
         does; services that merely share a caller or a callee are not on
         one path), while it is still
         anomalous in that region, at a peak ``|z|`` under ``max_far_z``
         unless the anomaly came within ``onset_ms`` of the incident's onset:
         an effect two edges away is weaker than its cause, and a loud move
         there minutes later is a problem of its own;
       - slowness or errors at a service that calls a dependency of the
         opening service, while a member at that shared dependency is still
         anomalous in the region, at a peak ``|z|`` under ``max_far_z``: the
         opening service's trouble reaching the other callers of what it
         loads (a surge of traffic on one caller slowing the database that
         another caller waits on).  Unlike the other ties, this one holds
         for anomalies too weak to link to only when they are of slowness or
         errors as well;
       - slowness or errors rising at another caller of a dependency of the
         opening service, at most ``prompt_ms`` after the incident's onset,
         as the same signal (apart from the labels of place) as a member at
         the opening service there, however weak: callers of one dependency
         that slow down in the same half minute share its trouble, which
         reaches them before the dependency's own signals move (a slow
         database's callers time out seconds apart, its own latency rises
         minutes later);
       - a business signal in a region where a member is anomalous.

       The signal tests of the two dependency ties spare anomalies too weak
       to link to (see ``min_link_z``), which rarely carry a problem of
       their own.
       These links are weak: the cluster joins, but nothing later can join
       through its members (except those at the service the incident opened
       at, which are the incident's cause as much as its first anomaly), so
       two problems are never chained through a shared region or a
       long-running symptom.  Symptoms at services that merely suffer from
       the incident do not pull in new onsets, so a new cause on a service
       that already suffers from another incident stays apart; so does a
       larger cluster of new onsets, unless it is a new wave where the
       incident already is: every place of the cluster has a member of the
       incident, and the cluster holds at most half as many anomalies as
       the incident (the timeouts that follow a surge of traffic minutes
       later, at the services the surge already loads).

    Anything else opens an incident of its own: unrelated anomalies at the
    same time stay apart, and so does a lone noise anomaly.

    An anomaly whose peak robust z-score stays under ``min_link_z`` joins by
    the same rules but nothing links to it, in either step: a barely
    anomalous signal is too often noise to carry a link, and noise anomalies
    near one another (traffic wobbling in a region) would otherwise make an
    incident of their own or chain into a real one.

    Parameters
    ----------
    anomalies : sequence
        Objects with ``signal``, ``start_ms``, ``end_ms``, ``service``,
        ``region`` and ``peak_z`` (``obscore.pipeline.Anomaly``); ``service``
        and ``region`` may be None.
    topology : object, optional
        With ``callers(name)`` and ``callees(name)`` (``Catalogue``); without
        one, no dependency links are made.  Unknown services have no
        neighbours; cycles are walked with a visited set.
    quiet_ms, onset_ms, sync_ms, prompt_ms, refire_ms : int
        The time limits above, in milliseconds.
    max_hops : int
        How far apart in the call graph a dependency link of step 1 may reach.
    max_symptoms, max_places : int
        The largest cluster that may join as late symptoms, in anomalies and
        in places.
    min_link_z : float
        The peak ``|z|`` an anomaly needs for others to link to it.
    max_far_z : float
        The peak ``|z|`` from which an anomaly two calls from the opening
        service, minutes after the onset, counts as a problem of its own.
    grace_ms : int
        How long after its end a member still counts as anomalous for the
        late-symptom ties.
    loud_ratio : float
        How many times louder than the loudest member at the opening service
        a late symptom at a direct dependency may be.

    Returns
    -------
    list of AnomalyGroup
        Ordered by onset; members are indices into ``anomalies``.

    Notes
    -----
    Each anomaly looks up only the places it can link to (its own, its
    neighbours' in its region, its service in other regions), each holding
    one summary per group, and summaries too old to link are dropped, so the
    cost is about linear in the anomalies times the groups found at those
    places, and memory linear in the anomalies.
    """
    order = sorted(
        range(len(anomalies)),
        key=lambda i: (anomalies[i].start_ms, anomalies[i].signal),
    )
    clusters = _cluster_onsets(
        anomalies, order, topology, onset_ms, sync_ms, prompt_ms, max_hops, min_link_z
    )
    return _attach_symptoms(
        anomalies,
        clusters,
        topology,
        quiet_ms,
        onset_ms,
        refire_ms,
        max_symptoms,
        max_places,
        min_link_z,
        max_far_z,
        grace_ms,
        loud_ratio,
        prompt_ms,
    )


def _kind(a: _Located) -> str:
    """What sort of signal moved: the metric group of the anomaly's context
    (``system``, ``application``, ``business``), else its metric name."""
    group = (getattr(a, "context", None) or {}).get("group")
    if group and group != "unknown":
        return str(group)
    return _metric(a)


def _metric(a: _Located) -> str:
    return a.signal.split("{", 1)[0]


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_WHERE = frozenset({"service", "region", "host", "instance"})


def _shape(a: _Located) -> str:
    """The signal without the labels that say where: what moved, wherever it was
    (``error_rate{error_type="timeout"}`` of any service and region)."""
    name, _, rest = a.signal.partition("{")
    labels = sorted((k, v) for k, v in _LABEL.findall(rest) if k not in _WHERE)
    return name + repr(labels)


def _place(a: _Located) -> tuple[str | None, str | None]:
    return (a.service, a.region)


def _cluster_onsets(
    anomalies: Sequence[_Located],
    order: list[int],
    topology: _Topology | None,
    onset_ms: int,
    sync_ms: int,
    prompt_ms: int,
    max_hops: int,
    min_link_z: float,
) -> list[AnomalyGroup]:
    """Step 1 of :func:`group_anomalies`: link onsets that move together."""
    clusters: list[AnomalyGroup] = []
    places: dict[tuple, dict[int, _Seen]] = {}  # place -> cluster -> its members there
    regions_of: dict[str, set[str | None]] = {}  # service -> regions seen
    near_cache: dict[str, dict[str, int]] = {}

    keep_ms = max(onset_ms, sync_ms)

    def recent(place: tuple, ts: int, limit: int):
        slot = places.get(place)
        if not slot:
            return ()
        for cid in [c for c, s in slot.items() if ts - s.start_ms > keep_ms]:
            del slot[cid]  # too old to link to anything still to come
        return [
            (cid, s, ts - s.start_ms)
            for cid, s in slot.items()
            if ts - s.start_ms <= limit
        ]

    for i in order:
        a = anomalies[i]
        links: list[tuple] = []  # (is prompt, rank, -gap, -cluster, reason)

        def offer(rank: int, gap: int, cid: int, why: str) -> None:
            links.append((gap <= prompt_ms, rank, -gap, -cid, why))

        for cid, s, gap in recent(_place(a), a.start_ms, onset_ms):
            if a.service is None:
                why = f"a business signal in the same region as {s.signal}"
            else:
                why = f"same service {a.service!r} and region as {s.signal}"
            offer(3, gap, cid, f"{why}, {gap / 1000:.0f} s later")
        if a.service is not None:
            if a.service not in near_cache:
                near_cache[a.service] = _neighbours(topology, a.service, max_hops)
            for other, hops in near_cache[a.service].items():
                for cid, s, gap in recent((other, a.region), a.start_ms, onset_ms):
                    why = (
                        f"{a.service!r} is {hops} hop(s) from {other!r} in the "
                        f"dependency graph and moved {gap / 1000:.0f} s after "
                        f"{s.signal}"
                    )
                    offer(2, gap, cid, why)
            for region in regions_of.get(a.service, ()):
                if region == a.region:
                    continue
                for cid, s, gap in recent((a.service, region), a.start_ms, sync_ms):
                    why = (
                        f"same service {a.service!r} moved in region {region!r} "
                        f"{gap / 1000:.0f} s before ({s.signal})"
                    )
                    offer(2, gap, cid, why)
            regions_of.setdefault(a.service, set()).add(a.region)
        best = max(links) if links else None
        if best is None:
            cid = len(clusters)
            opened = [f"{a.signal} opened the incident"]
            clusters.append(AnomalyGroup([i], opened, a.start_ms, a.end_ms))
        else:
            cid = -best[3]
            c = clusters[cid]
            c.members.append(i)
            c.reasons.append(f"{a.signal} joined: {best[4]}")
            c.end_ms = max(c.end_ms, a.end_ms)
        if abs(a.peak_z) >= min_link_z:
            _note(places, _place(a), cid, a)
    return clusters


def _attach_symptoms(
    anomalies: Sequence[_Located],
    clusters: list[AnomalyGroup],
    topology: _Topology | None,
    quiet_ms: int,
    onset_ms: int,
    refire_ms: int,
    max_symptoms: int,
    max_places: int,
    min_link_z: float,
    max_far_z: float,
    grace_ms: int,
    loud_ratio: float,
    prompt_ms: int,
) -> list[AnomalyGroup]:
    """Step 2 of :func:`group_anomalies`: small clusters join as late symptoms."""
    groups: list[AnomalyGroup] = []
    places: dict[tuple, dict[int, _Seen]] = {}  # linkable members: place -> group
    regions: dict[str | None, dict[int, _Seen]] = {}  # linkable members, by region
    # linkable members at the service a group opened at: (service, metric) -> group
    # -> region -> summary, for the same signal moving in another region
    at_origin: dict[tuple, dict[int, dict[str | None, _Seen]]] = {}
    fired: dict[str, tuple[int, int, float]] = {}  # signal -> (group, latest end, |z|)
    near_cache: dict[str, dict[str, int]] = {}
    far_cache: dict[str, tuple[str, ...]] = {}
    origin: list[str | None] = []  # group -> the service it opened at
    # linkable members: (service, region, group) -> their metric names, and their
    # signals without the labels of place (see _shape)
    metrics: dict[tuple, set[str]] = {}
    shapes: dict[tuple, set[str]] = {}
    loudest: dict[int, float] = {}  # group -> largest |z| at the service it opened at
    covered: list[set[tuple]] = []  # group -> the places of all its members

    def active(s: _Seen, ts: int) -> bool:
        return s.first_ms <= ts <= s.end_ms + grace_ms

    def links(b: _Located) -> dict[int, tuple[int, str]]:
        """Open groups ``b`` is a late symptom of: group -> (strength, reason)."""
        out: dict[int, tuple[int, str]] = {}
        strong = abs(b.peak_z) >= min_link_z

        def offer(gid: int, rank: int, why: str) -> None:
            is_open = groups[gid].end_ms + quiet_ms >= b.start_ms
            if is_open and rank > out.get(gid, (0, ""))[0]:
                out[gid] = (rank, why)

        prev = fired.get(b.signal)
        if prev is not None and 0 <= b.start_ms - prev[1] <= refire_ms:
            gap = (b.start_ms - prev[1]) / 1000
            if strong and abs(b.peak_z) > _NEW_ONSET_RATIO * prev[2]:
                pass  # a faint signal turned into a loud one: a new onset
            else:
                offer(prev[0], 4, f"the same signal fired again {gap:.0f} s after it ended")
        for gid, s in places.get(_place(b), {}).items():
            if active(s, b.start_ms) and origin[gid] == b.service:
                why = f"same place as {s.end_signal}, where the incident opened"
                offer(gid, 3, f"{why}, still anomalous")
        if b.service is None:
            for gid, s in regions.get(b.region, {}).items():
                if b.region is not None and active(s, b.start_ms):
                    why = f"a business signal in region {b.region!r}"
                    offer(gid, 1, f"{why} while {s.end_signal} was anomalous")
            return out
        if strong:
            metric = _metric(b)
            for gid, by_region in at_origin.get((b.service, metric), {}).items():
                for region, s in by_region.items():
                    if region != b.region and active(s, b.start_ms):
                        why = (
                            f"the same metric at {b.service!r}, where the incident "
                            f"opened, was still anomalous in region {region!r} "
                            f"({s.end_signal})"
                        )
                        offer(gid, 3, why)
                        break
        if b.service not in near_cache:
            near_cache[b.service] = _neighbours(topology, b.service, 1)
        for other in near_cache[b.service]:
            for gid, s in places.get((other, b.region), {}).items():
                if active(s, b.start_ms) and origin[gid] == other:
                    if strong:
                        # down an edge travels load, as any signal of a metric the
                        # caller shows; up an edge, a callee's trouble as the same
                        # signal (its timeouts as the caller's timeouts)
                        if downstream(other, b.service):
                            mine, there = _metric(b), metrics.get((other, b.region, gid), ())
                        else:
                            mine, there = _shape(b), shapes.get((other, b.region, gid), ())
                        if mine not in there:
                            continue  # not what travels along the edge: its own problem
                    prompt = b.start_ms - groups[gid].start_ms <= onset_ms
                    if not prompt and abs(b.peak_z) > loud_ratio * loudest.get(gid, 0.0):
                        continue  # far louder than its supposed cause: its own problem
                    why = (
                        f"{b.service!r} depends on or serves {other!r}, where the "
                        f"incident opened and {s.end_signal} was still anomalous"
                    )
                    offer(gid, 2, why)
        if b.service not in far_cache:
            far_cache[b.service] = _two_steps(topology, b.service)
        for other in far_cache[b.service]:
            if other in near_cache[b.service]:
                continue
            for gid, s in places.get((other, b.region), {}).items():
                if not (active(s, b.start_ms) and origin[gid] == other):
                    continue
                if strong and _kind(b) != "application":
                    continue  # only slowness and errors travel two edges
                prompt = b.start_ms - groups[gid].start_ms <= onset_ms
                if abs(b.peak_z) >= max_far_z and not prompt:
                    continue  # louder than an effect two edges away: its own problem
                why = (
                    f"{b.service!r} is two calls from {other!r}, where the incident "
                    f"opened and {s.end_signal} was still anomalous"
                )
                offer(gid, 1, why)
        if _kind(b) != "application":
            return out
        shared = topology.callees(b.service) if topology is not None else ()
        for mid in shared if b.peak_z > 0 else ():  # slower or failing more
            for o in topology.callers(mid):
                if o == b.service:
                    continue
                for gid in places.get((o, b.region), {}):
                    gap = b.start_ms - groups[gid].start_ms
                    if origin[gid] != o or gap > prompt_ms:
                        continue
                    if _shape(b) not in shapes.get((o, b.region, gid), ()):
                        continue  # not the same trouble: the other caller's own
                    why = (
                        f"{b.service!r} calls {mid!r}, as {o!r} does, where the "
                        f"incident opened {gap / 1000:.0f} s before with the same "
                        "signal"
                    )
                    offer(gid, 1, why)
        if abs(b.peak_z) >= max_far_z:
            return out
        for mid in topology.callees(b.service) if topology is not None else ():
            for gid, s in places.get((mid, b.region), {}).items():
                o = origin[gid]
                if o == b.service or o not in topology.callers(mid):
                    continue
                if active(s, b.start_ms):
                    why = (
                        f"{b.service!r} calls {mid!r}, which {o!r}, where the incident "
                        f"opened, also calls, while {s.end_signal} was still anomalous"
                    )
                    offer(gid, 1, why)
        return out

    def downstream(service: str, other: str) -> bool:
        """Whether ``other`` is only called by ``service`` (not also its caller)."""
        if topology is None:
            return False
        return other in topology.callees(service) and other not in topology.callers(service)

    def note(gid: int, b: _Located) -> None:
        """Make ``b``, a linkable member of group ``gid``, one others can link to."""
        _note(places, _place(b), gid, b)
        metrics.setdefault((*_place(b), gid), set()).add(_metric(b))
        shapes.setdefault((*_place(b), gid), set()).add(_shape(b))
        if b.service is not None and b.service == origin[gid]:
            loudest[gid] = max(loudest.get(gid, 0.0), abs(b.peak_z))
            metric = _metric(b)
            by_region = at_origin.setdefault((b.service, metric), {}).setdefault(gid, {})
            seen = by_region.get(b.region)
            if seen is None:
                by_region[b.region] = _Seen(b.start_ms, b.signal, b.end_ms, b.signal, b.start_ms)
            else:
                seen.add(b)

    for c in clusters:
        best: tuple | None = None  # (weakest link, group onset, group, reason)
        first = anomalies[c.members[0]]  # the cluster's onset; the others came with it
        c_places = {_place(anomalies[m]) for m in c.members}
        small = len(c.members) <= max_symptoms and len(c_places) <= max_places
        for gid, (rank, why) in links(first).items():
            if not small and not (
                c_places <= covered[gid]
                and 2 * len(c.members) <= len(groups[gid].members)
            ):
                continue  # a burst of new onsets, not a new wave where it already is
            cand = (rank, groups[gid].start_ms, gid, why)
            best = max(best or cand, cand)
        if best is None:
            gid = len(groups)
            groups.append(c)
            origin.append(first.service)
            covered.append(set(c_places))
            for m in c.members:
                b = anomalies[m]
                if abs(b.peak_z) >= min_link_z:
                    note(gid, b)
                    _note(regions, b.region, gid, b)
        else:
            gid = best[2]
            g = groups[gid]
            g.members.extend(c.members)
            g.reasons.append(f"{first.signal} joined: {best[3]}")
            g.reasons.extend(c.reasons[1:])
            g.end_ms = max(g.end_ms, c.end_ms)
            covered[gid] |= c_places
            for m in c.members:
                b = anomalies[m]
                if b.service is not None and b.service == origin[gid]:
                    if abs(b.peak_z) >= min_link_z:
                        note(gid, b)  # more of the origin: as good as the first
        for m in c.members:
            b = anomalies[m]
            last_end = max(b.end_ms, fired.get(b.signal, (0, b.end_ms, 0.0))[1])
            fired[b.signal] = (gid, last_end, abs(b.peak_z))
    return groups


def _two_steps(topology: _Topology | None, service: str) -> tuple[str, ...]:
    """Services two calls from ``service`` in one direction: its callers' callers
    and its callees' callees (not the services that share a caller or a callee
    with it, which are two hops apart but not on one path)."""
    if topology is None:
        return ()
    out: dict[str, None] = {}
    for step in (topology.callers, topology.callees):
        for mid in step(service):
            for far in step(mid):
                if far != service:
                    out[far] = None
    return tuple(out)
