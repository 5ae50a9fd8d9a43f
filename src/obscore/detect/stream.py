"""Run a detector over one series as a stream and decide where alerts fire."""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass

import numpy as np

from obscore.detect.base import DEFAULT_DETECTOR, Detector, create
from obscore.detect.ensemble import ZScoreEnsembleDetector
from obscore.detect.robust import _robust_z
from obscore.errors import ObscoreWarning
from obscore.model import sample_table


@dataclass(slots=True)
class StreamResult:
    """Per-row scores in [0, 1] and alert flags, aligned with the input rows."""

    scores: np.ndarray
    alerts: np.ndarray  # bool


def default_detector(name: str | None = None) -> Detector:
    """A new detector for ``obscore detect``: ``name``, or the registry default.

    Parameters
    ----------
    name : str, optional
        A registered detector name (the config's ``detectors.default``);
        None means :data:`obscore.detect.base.DEFAULT_DETECTOR` (novelty).

    Notes
    -----
    Without Numba (the ``numba`` extra) the novelty detector is replaced by
    the z-score ensemble of :mod:`obscore.detect.ensemble`, with a warning.
    On NAB (standard profile, alerts at 0.5) the novelty detector scores
    68.9 and the z-score ensemble -42.3; ``obscore eval nab`` reproduces both.
    """
    name = name or "default"
    wants_novelty = name == "novelty" or (name == "default" and DEFAULT_DETECTOR == "novelty")
    if wants_novelty and importlib.util.find_spec("numba") is None:
        warnings.warn(
            "numba is not installed: obscore detect falls back to the z-score "
            "ensemble; install the numba extra for the novelty detector",
            ObscoreWarning,
            stacklevel=2,
        )
        return ZScoreEnsembleDetector()
    return create(name)


def alert_decisions(
    ts: np.ndarray,
    scores: np.ndarray,
    threshold: float = 0.5,
    cooldown_ms: int = 900_000,
    cooldown_rows: int = 30,
) -> np.ndarray:
    """Fire where the score rises across ``threshold``, at most once per cooldown.

    A score that stays above the threshold fires once, when it crosses.

    The cooldown is the longer of ``cooldown_ms`` (the 15m dedup window) and
    ``cooldown_rows`` rows, so a sparse series is not paged every row.
    """
    fire = np.zeros(len(scores), dtype=bool)
    above = np.nan_to_num(scores, nan=0.0) > threshold
    rising = above & ~np.concatenate([[False], above[:-1]])
    last_t, last_i = None, None
    for i in np.flatnonzero(rising):
        if last_i is not None and (
            ts[i] - last_t <= cooldown_ms or i - last_i <= cooldown_rows
        ):
            continue
        fire[i] = True
        last_t, last_i = ts[i], i
    return fire


def detect_stream(
    ts: np.ndarray, values: np.ndarray, detector: Detector | None = None, threshold: float = 0.5
) -> StreamResult:
    """Score a series row by row (no look-ahead) and mark the alerts.

    ``detector`` defaults to a new :func:`default_detector`; ``threshold`` is
    the declared alert threshold (the config's ``detectors.threshold``).
    NaN values get score 0 and never alert.
    """
    detector = detector or default_detector()
    batch = sample_table(np.zeros(len(ts), np.uint64), ts, values)
    scores = np.asarray(detector.score(batch), dtype=np.float64)
    scores = np.nan_to_num(scores, nan=0.0)
    return StreamResult(scores, alert_decisions(ts, scores, threshold))


# NOTE: batches of at most this many points take the incremental path of
# step_ensemble; longer ones (a catch-up, a replay) go through pandas' rolling
# quantiles, which beat one sort per point there.  Both give the same bits.
_INCREMENTAL_MAX = 64


def step_ensemble(
    detector: ZScoreEnsembleDetector, ts: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Feed one signal's new points to its ensemble; ``(robust_z, score)`` per point.

    Parameters
    ----------
    detector : ZScoreEnsembleDetector
        A detector that sees a single series (id 0), as the pipeline keeps
        one per signal.
    ts : ndarray of int64, shape (n,)
        Increasing, after every point the detector has seen, in ms.
    values : ndarray of float64, shape (n,)
        NaN values score NaN and stay out of the windows.

    Returns
    -------
    robust_z, score : ndarray of float64, shape (n,)
        What ``detector.components`` returns for these rows, bit for bit.

    Notes
    -----
    A short batch on a detector that has seen points before only does the
    work of its new points: the fast z-score kernel steps them, the robust
    baseline of each new point is the sorted window it ends on (median and
    quartiles interpolated as pandas does), and the fast scores kept for the
    last window say whether a fast move happened.  Any other batch goes
    through :meth:`ZScoreEnsembleDetector.components`.
    """
    ts = np.ascontiguousarray(ts, np.int64)
    values = np.ascontiguousarray(values, np.float64)
    fast = detector._fast._states.get(0)
    robust = detector._robust.get(0)
    tail = robust._tails.get(0) if robust is not None else None
    recent = detector._recent.get(0)
    if (
        len(ts) > _INCREMENTAL_MAX
        or len(ts) == 0
        or fast is None
        or tail is None
        or recent is None
        or set(detector._robust) != {0}
    ):
        batch = sample_table(np.zeros(len(ts), np.uint64), ts, values)
        _, zr, score = detector.components(batch)
        return zr, score

    z = np.empty(len(ts))
    fast.update(ts, values, z)
    zr = _robust_step(robust, tail, ts, values)

    prev_ts, prev_z = recent
    all_ts = np.concatenate([prev_ts, ts])
    all_z = np.concatenate([prev_z, z])
    score = _armed_step(
        np.maximum.accumulate(all_ts), all_z, len(prev_ts), zr, fast.window_ms, detector
    )
    cut = np.searchsorted(all_ts, all_ts[-1] - fast.window_ms, side="left")
    detector._recent[0] = (all_ts[cut:].copy(), all_z[cut:].copy())
    return zr, score


def _robust_step(robust, tail, ts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Robust z-scores of new points, updating the detector's kept tail."""
    tail_ts, tail_v = tail
    keep = ~np.isnan(values)
    all_ts = np.concatenate([tail_ts, ts[keep]])
    all_v = np.concatenate([tail_v, values[keep]])
    n_old = len(tail_ts)
    out = np.full(len(ts), np.nan)
    if len(all_ts) > n_old:
        out[keep] = _robust_new(robust, all_ts, all_v, n_old)
    if len(all_ts):
        keep_ms = robust.window_ms + robust.lag_ms
        cut = np.searchsorted(all_ts, all_ts[-1] - keep_ms, side="right")
        robust._tails[0] = (all_ts[cut:].copy(), all_v[cut:].copy())
    return out


def _robust_new(
    robust, all_ts: np.ndarray, all_v: np.ndarray, n_old: int
) -> np.ndarray:
    """``RobustZScoreDetector._robust(all_ts, all_v)[n_old:]``, from sorted windows."""
    acc = np.maximum.accumulate(all_ts)
    new = np.arange(n_old, len(acc))
    # the baseline of a point ends at its lagged row (itself without a lag)
    if robust.lag_ms == 0:
        hi = new  # closed="left": the rows before the point
        lo = np.searchsorted(acc, acc[new] - robust.window_ms, side="left")
    else:
        end = np.searchsorted(acc, acc[new] - robust.lag_ms, side="right") - 1
        hi = end + 1  # closed="right": the rows up to the lagged one
        lo = np.searchsorted(acc, acc[end] - robust.window_ms, side="right")
        lo = np.where(end >= 0, lo, 0)
        hi = np.where(end >= 0, hi, 0)
    width = int((hi - lo).max(initial=0))
    med = np.full(len(new), np.nan)
    q25, q75 = med.copy(), med.copy()
    if width:
        cols = np.arange(width)
        window = all_v[np.minimum(lo[:, None] + cols, len(all_v) - 1)]
        # pandas' rolling windows leave +-Inf out, as NaN; the padding is NaN too
        window[~(cols < (hi - lo)[:, None]) | ~np.isfinite(window)] = np.nan
        window.sort(axis=1)  # NaN sorts last
        count = np.count_nonzero(~np.isnan(window), axis=1)
        ok = count >= max(robust.min_samples, 1)
    if width and ok.any():
        med[ok] = _median(window[ok], count[ok])
        q25[ok] = _quantile(window[ok], count[ok], 0.25)
        q75[ok] = _quantile(window[ok], count[ok], 0.75)
    return _robust_z(all_v[new], med, q75 - q25, robust.rel_floor, robust.count_window_s)


def _median(window: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median of each sorted row's first ``count`` values, as pandas' rolling median."""
    rows = np.arange(len(count))
    mid = count // 2
    upper = window[rows, mid]
    lower = window[rows, np.maximum(mid - 1, 0)]
    return np.where(count % 2 == 1, upper, (upper + lower) / 2)


def _quantile(window: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    """Quantile ``q`` of each sorted row's first ``count`` values, interpolated."""
    rows = np.arange(len(count))
    at = q * (count - 1)
    idx = at.astype(np.intp)
    low = window[rows, idx]
    high = window[rows, np.minimum(idx + 1, count - 1)]
    return np.where(idx == at, low, low + (high - low) * (at - idx))


def _armed_step(
    acc_ts: np.ndarray,
    all_z: np.ndarray,
    n_old: int,
    zr: np.ndarray,
    window_ms: int,
    detector: ZScoreEnsembleDetector,
) -> np.ndarray:
    """``armed_score`` of the new points only (the rows from ``n_old`` on)."""
    z = np.nan_to_num(all_z, nan=0.0)
    zr_f = np.nan_to_num(zr, nan=0.0)
    new = np.arange(n_old, len(acc_ts))
    lo = np.searchsorted(acc_ts, acc_ts[new] - window_ms, side="left")
    score = np.abs(zr_f) / (np.abs(zr_f) + detector.drift)
    for sign in (1.0, -1.0):
        hits = np.concatenate([[0], np.cumsum(sign * z > detector.threshold)])
        recent = (hits[new + 1] - hits[lo]) > 0
        pos = np.maximum(sign * zr_f, 0.0)
        armed = np.maximum(score, pos / (pos + detector.confirm))
        score = np.where(recent, armed, score)
    score[np.isnan(zr)] = np.nan
    return score


def step_ensembles(
    detectors: list[ZScoreEnsembleDetector],
    ts: list[np.ndarray],
    values: list[np.ndarray],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`step_ensemble` over many signals, their new points scored together.

    Parameters
    ----------
    detectors : list of ZScoreEnsembleDetector
        One per signal, each seeing a single series (id 0).
    ts, values : lists of ndarray
        Each signal's new points, as for :func:`step_ensemble`.

    Returns
    -------
    list of (robust_z, score)
        Per signal, what :func:`step_ensemble` returns, bit for bit.

    Notes
    -----
    The signals that can take the incremental path (state kept, at most
    ``_INCREMENTAL_MAX`` new points, no NaN among them, times in order) are
    stepped together: one fast z-score kernel call each, then the robust
    windows and the armed scores of all their new points in a few array
    operations over the signals' kept tails laid end to end.  The others go
    through :func:`step_ensemble` one by one.
    """
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(detectors)
    picked: list[int] = []
    for i, (det, t, v) in enumerate(zip(detectors, ts, values)):
        if _can_batch(det, t, v):
            picked.append(i)
        else:
            out[i] = step_ensemble(det, t, v)
    if picked:
        batch = _Batch([detectors[i] for i in picked], [ts[i] for i in picked],
                       [values[i] for i in picked])  # fmt: skip
        if batch.is_ordered():
            for i, res in zip(picked, batch.step()):
                out[i] = res
        else:
            for i in picked:
                out[i] = step_ensemble(detectors[i], ts[i], values[i])
    return out  # type: ignore[return-value]


def _can_batch(det: ZScoreEnsembleDetector, ts: np.ndarray, values: np.ndarray) -> bool:
    robust = det._robust.get(0)
    return (
        0 < len(ts) <= _INCREMENTAL_MAX
        and 0 in det._fast._states
        and robust is not None
        and len(det._robust) == 1
        and 0 in robust._tails
        and 0 in det._recent
        and not np.isnan(values).any()
    )


class _Batch:
    """Signals' kept tails and new points laid end to end, one segment each.

    Positions are found with one sorted key over all segments: segment
    number times a span wider than any segment's times and windows, plus
    the time; a search never leaves its own segment.
    """

    def __init__(self, detectors, ts, values) -> None:
        self.detectors = detectors
        self.n = np.array([len(t) for t in ts], np.intp)
        self.new_ts = np.ascontiguousarray(np.concatenate(ts), np.int64)
        self.new_v = np.ascontiguousarray(np.concatenate(values), np.float64)
        self.robust = [d._robust[0] for d in detectors]
        self.fast = [d._fast._states[0] for d in detectors]
        tails = [r._tails[0] for r in self.robust]
        recents = [d._recent[0] for d in detectors]
        self.rob = _Segments([t for t, _ in tails], [v for _, v in tails], ts, values)
        self.arm = _Segments([t for t, _ in recents], [z for _, z in recents], ts, None)

    def is_ordered(self) -> bool:
        return self.rob.is_ordered() and self.arm.is_ordered()

    def step(self) -> list[tuple[np.ndarray, np.ndarray]]:
        ends = np.cumsum(self.n)
        starts = ends - self.n
        z = np.empty(len(self.new_ts))
        for fast, a, b in zip(self.fast, starts.tolist(), ends.tolist()):
            fast.update(self.new_ts[a:b], self.new_v[a:b], z[a:b])
        zr = self._robust()
        score = self._armed(z, zr)
        return [(zr[a:b], score[a:b]) for a, b in zip(starts.tolist(), ends.tolist())]

    def _robust(self) -> np.ndarray:
        seg, robust = self.rob, self.robust
        window = np.array([r.window_ms for r in robust], np.int64)
        lag = np.array([r.lag_ms for r in robust], np.int64)
        seg.set_pad(int((window + lag).max()) + 1)
        s, g = seg.point_segment, seg.point_row
        t = seg.ts[g]
        w_p, lag_p = window[s], lag[s]
        # lag 0 (closed="left"): the rows in [t - window, t) before the point
        lo0 = seg.search(s, t - w_p, "left")
        # lag > 0 (closed="right"): rows in (ts[end] - window, ts[end]] of the
        # newest row at or before t - lag
        end = seg.search(s, t - lag_p, "right") - 1
        has_end = end >= seg.starts[s]
        safe_end = np.where(has_end, end, g)
        lo1 = seg.search(s, seg.ts[safe_end] - w_p, "right")
        lo = np.where(lag_p > 0, np.where(has_end, lo1, g), lo0)
        hi = np.where(lag_p > 0, np.where(has_end, safe_end + 1, g), g)

        width = int((hi - lo).max(initial=0))
        med = np.full(len(g), np.nan)
        q25, q75 = med.copy(), med.copy()
        if width:
            cols = np.arange(width)
            window_v = seg.v[np.minimum(lo[:, None] + cols, len(seg.v) - 1)]
            window_v[~(cols < (hi - lo)[:, None]) | ~np.isfinite(window_v)] = np.nan
            window_v.sort(axis=1)
            count = np.count_nonzero(~np.isnan(window_v), axis=1)
            min_samples = np.array([max(r.min_samples, 1) for r in robust])[s]
            ok = count >= min_samples
            if ok.any():
                med[ok] = _median(window_v[ok], count[ok])
                q25[ok] = _quantile(window_v[ok], count[ok], 0.25)
                q75[ok] = _quantile(window_v[ok], count[ok], 0.75)
        rel_floor = np.array([r.rel_floor for r in robust])[s]
        cw = np.array([float(r.count_window_s or 0.0) for r in robust])[s]
        zr = _robust_z(seg.v[g], med, q75 - q25, rel_floor, cw)

        for r, kept in zip(robust, seg.tails(window + lag, "right")):
            r._tails[0] = kept
        return zr

    def _armed(self, z_new: np.ndarray, zr: np.ndarray) -> np.ndarray:
        seg, dets = self.arm, self.detectors
        seg.fill_new(z_new)
        window = np.array([f.window_ms for f in self.fast], np.int64)
        seg.set_pad(int(window.max()) + 1)
        s, g = seg.point_segment, seg.point_row
        lo = seg.search(s, seg.ts[g] - window[s], "left")
        z = np.nan_to_num(seg.v, nan=0.0)
        zr_f = np.nan_to_num(zr, nan=0.0)
        threshold = np.repeat(np.array([d.threshold for d in dets]), seg.lengths)
        drift = np.array([d.drift for d in dets])[s]
        confirm = np.array([d.confirm for d in dets])[s]
        score = np.abs(zr_f) / (np.abs(zr_f) + drift)
        for sign in (1.0, -1.0):
            hits = np.concatenate([[0], np.cumsum(sign * z > threshold)])
            recent = (hits[g + 1] - hits[lo]) > 0
            pos = np.maximum(sign * zr_f, 0.0)
            armed = np.maximum(score, pos / (pos + confirm))
            score = np.where(recent, armed, score)
        score[np.isnan(zr)] = np.nan
        for d, kept in zip(dets, seg.tails(window, "left")):
            d._recent[0] = kept
        return score


class _Segments:
    """Per signal, kept rows then new rows, all signals end to end."""

    def __init__(self, old_ts, old_v, new_ts, new_v) -> None:
        k = len(old_ts)
        self.n_old = np.array([len(t) for t in old_ts], np.intp)
        self.n_new = np.array([len(t) for t in new_ts], np.intp)
        self.lengths = self.n_old + self.n_new
        self.ends = np.cumsum(self.lengths)
        self.starts = self.ends - self.lengths
        self.ts = np.concatenate([a for pair in zip(old_ts, new_ts) for a in pair])
        if new_v is None:  # filled later (fill_new)
            new_v = [np.empty(len(t)) for t in new_ts]
        self.v = np.concatenate([a for pair in zip(old_v, new_v) for a in pair])
        self.segment = np.repeat(np.arange(k), self.lengths)
        self.point_segment = np.repeat(np.arange(k), self.n_new)
        first_new = self.starts + self.n_old
        offset = np.arange(int(self.n_new.sum())) - np.repeat(
            np.cumsum(self.n_new) - self.n_new, self.n_new
        )
        self.point_row = first_new[self.point_segment] + offset

    def is_ordered(self) -> bool:
        """Times never decrease within a segment (then they equal their running max)."""
        if len(self.ts) < 2:
            return True
        falls = np.flatnonzero(np.diff(self.ts) < 0) + 1
        return bool(np.isin(falls, self.starts).all())

    def fill_new(self, values: np.ndarray) -> None:
        self.v[self.point_row] = values

    def set_pad(self, pad: int) -> None:
        self.t0 = int(self.ts.min()) - pad
        self.span = int(self.ts.max()) + pad - self.t0 + 1
        self.key = self.segment.astype(np.int64) * self.span + (self.ts - self.t0)

    def search(self, seg: np.ndarray, t: np.ndarray, side: str) -> np.ndarray:
        """``searchsorted(ts_of_segment, t, side)`` as a row of the whole, per query."""
        query = seg.astype(np.int64) * self.span + (t - self.t0)
        return np.searchsorted(self.key, query, side)

    def tails(self, keep_ms: np.ndarray, side: str) -> list[tuple[np.ndarray, ...]]:
        """Per segment, copies of its rows from ``last ts - keep_ms`` on."""
        last = self.ts[self.ends - 1]
        cut = self.search(np.arange(len(self.ends)), last - keep_ms, side)
        return [
            (self.ts[a:b].copy(), self.v[a:b].copy())
            for a, b in zip(cut.tolist(), self.ends.tolist())
        ]
