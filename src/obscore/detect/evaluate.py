"""Score detections with the rules of the Numenta Anomaly Benchmark (NAB).

NAB labels each file with anomaly windows and scores a detector's alerts
row by row, per file, under a cost profile:

- The first rows of a file are a probationary (learning) period and are not
  scored: ``min(floor(0.15 * rows), 750)`` rows.
- A window is located by its start and end timestamps, which are timestamps
  of rows of the file; the window holds the rows from the first row at its
  start to the first row at its end, both included.
- Inside a window only the earliest alert counts.  Its reward is the scaled
  sigmoid ``2 / (1 + exp(5 y)) - 1`` of its position ``y`` relative to the
  window end, ``y = -(end_row - row + 1) / window_rows``, divided by the
  reward at ``y = -1`` so that an alert on the first row earns the full
  true-positive weight.  A window without an alert costs the false-negative
  weight.
- An alert outside every window is a false positive.  Before the first
  window it costs the full false-positive weight; after a window it costs
  the false-positive weight times the scaled sigmoid of its distance past
  the end of the preceding window, ``(row - end_row) / (window_rows - 1)``,
  which is nearly free right after the window and the full weight from
  three window widths on.
- The raw score of the corpus is the sum over files.  It is normalised to
  100 for the perfect detector (every window found on its first row, no
  false positive: the number of windows times the true-positive weight) and
  to 0 for the null detector (no alert at all: minus the false-negative
  weight per scored window).

:func:`score_corpus` scores alerts that are given; :func:`sweep_thresholds`
scores every threshold on anomaly scores at once; :func:`load_nab`,
:func:`score_detector_outputs` and :func:`evaluate_nab` work on a checkout of
the NAB data (``data/``, ``labels/``, ``config/``, ``results/``).
:func:`evaluate_smd` scores the isolation forest on the Server Machine
Dataset with point-wise and point-adjusted precision, recall and F1.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from obscore.errors import ConfigError

logger = logging.getLogger(__name__)

PROBATIONARY_PERCENT = 0.15
# NAB caps the probationary period at 15% of 5000 rows.
PROBATIONARY_MAX_ROWS = 750

# Beyond this many widths past a window a false positive costs its full weight.
_FAR_PAST_WINDOW = 3.0


@dataclass(frozen=True, slots=True)
class Profile:
    """The cost weights of one NAB scoring profile.

    Parameters
    ----------
    name : str
        The profile name, e.g. ``"standard"``.
    tp_weight : float
        Reward of a window found on its first row.
    fp_weight : float
        Cost of a false positive far from any window.
    fn_weight : float
        Cost of a window without an alert.
    """

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


# The three profiles of NAB's config/profiles.json (NAB v1.1).
NAB_PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", 1.0, 0.11, 1.0),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", 1.0, 0.11, 2.0),
}


@dataclass(frozen=True, slots=True)
class FileLayout:
    """Where each row of one file stands relative to its labelled windows.

    Attributes
    ----------
    name : str
        The file, as named in the labels (``category/file.csv``).
    window : np.ndarray
        int64 per row: the index of the window holding the row, -1 outside.
    weight : np.ndarray
        float64 per row: inside a window the reward of an alert there, in
        (0, 1], before the true-positive weight; outside, the cost factor of
        a false positive there, in [-1, 0), before the false-positive weight.
    n_probationary : int
        Leading rows that are not scored.
    n_windows : int
        Windows in the labels of the file.
    """

    name: str
    window: np.ndarray
    weight: np.ndarray
    n_probationary: int
    n_windows: int

    @property
    def n_rows(self) -> int:
        return len(self.window)

    @property
    def scored_windows(self) -> int:
        """Windows with at least one row after the probationary period."""
        tail = self.window[self.n_probationary :]
        return len(np.unique(tail[tail >= 0]))


@dataclass(frozen=True, slots=True)
class FileScore:
    """The NAB score of one file under one profile.

    ``tp``, ``fp``, ``fn`` and ``tn`` count scored rows (after the
    probationary period): alerted rows inside and outside windows, and rows
    without an alert inside and outside windows.
    """

    name: str
    score: float
    tp: int
    tn: int
    fp: int
    fn: int
    rows: int
    windows: int
    detected_windows: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "tp": self.tp,
            "tn": self.tn,
            "fp": self.fp,
            "fn": self.fn,
            "rows": self.rows,
            "windows": self.windows,
            "detected_windows": self.detected_windows,
        }


@dataclass(frozen=True, slots=True)
class CorpusScore:
    """The NAB score of a set of files under one profile.

    Attributes
    ----------
    profile : str
        The profile name.
    raw : float
        Sum of the per-file scores.
    null : float
        Raw score of the detector that never alerts.
    perfect : float
        Raw score of the detector that finds every window on its first row.
    score : float
        ``100 * (raw - null) / (perfect - null)``: 0 for the null detector,
        100 for the perfect one.
    threshold : float or None
        The threshold the alerts came from, when known.
    files : dict of str to FileScore
        Per file, in the order given.
    """

    profile: str
    raw: float
    null: float
    perfect: float
    score: float
    threshold: float | None = None
    files: dict[str, FileScore] = field(default_factory=dict)

    def to_dict(self, files: bool = True) -> dict[str, Any]:
        """A JSON-able dict; ``files=False`` leaves out the per-file scores."""
        out: dict[str, Any] = {
            "profile": self.profile,
            "score": self.score,
            "raw": self.raw,
            "null": self.null,
            "perfect": self.perfect,
            "threshold": self.threshold,
            "tp": sum(f.tp for f in self.files.values()),
            "fp": sum(f.fp for f in self.files.values()),
            "windows": sum(f.windows for f in self.files.values()),
            "detected_windows": sum(f.detected_windows for f in self.files.values()),
        }
        if files:
            out["files"] = {name: f.to_dict() for name, f in self.files.items()}
        return out


@dataclass(frozen=True, slots=True)
class ThresholdSweep:
    """The raw corpus score at every distinct threshold, highest first.

    ``raw[k]`` is the raw score when the rows whose anomaly score is at least
    ``thresholds[k]`` alert; the first entry (threshold ``inf``) has no alert.
    """

    profile: str
    thresholds: np.ndarray
    raw: np.ndarray
    null: float
    perfect: float

    @property
    def scores(self) -> np.ndarray:
        """The normalised scores, aligned with ``thresholds``."""
        return _normalise(self.raw, self.null, self.perfect)

    @property
    def best(self) -> tuple[float, float]:
        """``(threshold, normalised score)`` of the best threshold with alerts.

        The entry without alerts (score 0) is left out unless it is the only
        one, so a detector worse than the null one shows how much worse.
        Ties go to the highest threshold, as in NAB's optimiser.
        """
        k = int(np.argmax(self.raw[1:])) + 1 if len(self.raw) > 1 else 0
        return float(self.thresholds[k]), float(self.scores[k])


# --- the rules ---


def probationary_length(n_rows: int, percent: float = PROBATIONARY_PERCENT) -> int:
    """Rows at the start of a file that NAB does not score.

    Parameters
    ----------
    n_rows : int
        Rows in the file.
    percent : float
        Fraction of the file given to learning (NAB: 0.15).

    Returns
    -------
    int
        ``min(floor(percent * n_rows), percent * 5000)``: 750 rows at most.
    """
    return int(min(math.floor(percent * n_rows), percent * 5000))


def scaled_sigmoid(position: np.ndarray) -> np.ndarray:
    """NAB's reward curve: ``2 / (1 + exp(5 y)) - 1``, and -1 from ``y = 3`` on.

    Parameters
    ----------
    position : np.ndarray
        float64 positions relative to a window end, in window widths:
        negative inside the window, positive past it; ``inf`` is allowed.

    Returns
    -------
    np.ndarray
        float64 in [-1, 1], decreasing in ``position``: 0.9866 at -1, 0 at 0.

    Examples
    --------
    >>> scaled_sigmoid(np.array([-1.0, 0.0, 3.0])).round(4).tolist()
    [0.9866, 0.0, -1.0]
    """
    y = np.asarray(position, dtype=np.float64)
    with np.errstate(over="ignore"):
        out = 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0
    return np.where(y >= _FAR_PAST_WINDOW, -1.0, out)


_MAX_REWARD = float(scaled_sigmoid(np.array(-1.0)))


def locate_windows(
    ts: np.ndarray, windows: Sequence[tuple[int, int]], name: str = "<series>"
) -> FileLayout:
    """Place the labelled windows of one file on its rows.

    Parameters
    ----------
    ts : np.ndarray
        int64 ms per row, in file order; repeated timestamps are allowed.
    windows : sequence of (int, int)
        ``(start_ms, end_ms)`` per window, sorted and not overlapping; each
        limit must be the timestamp of a row.
    name : str
        The file, for error messages.

    Returns
    -------
    FileLayout
        The window of each row and the reward or cost factor of an alert there.

    Raises
    ------
    ValueError
        If a window limit is not the timestamp of a row (after the previous
        window), or the windows are unsorted or overlap.

    Notes
    -----
    Past a one-row window there is no width to measure the distance in, so
    every false positive after it costs the full weight (NAB itself divides
    by zero there).  When a timestamp repeats, a limit is the first row at
    that time after the previous window.
    """
    ts = np.asarray(ts, dtype=np.int64)
    n = len(ts)
    window = np.full(n, -1, dtype=np.int64)
    position = np.full(n, np.inf)  # before any window: a full-cost false positive
    first_free, prev_end = 0, None
    for k, (start, end) in enumerate(windows):
        if end < start or (prev_end is not None and start <= prev_end):
            raise ValueError(
                f"{name}: window {k} [{start}, {end}] must end after it starts and "
                f"start after the previous window ends ({prev_end})"
            )
        lo = _first_row_at(ts, start, first_free, name, k, "start")
        hi = _first_row_at(ts, end, lo, name, k, "end")
        width = hi - lo + 1
        rows = np.arange(lo, hi + 1)
        window[lo : hi + 1] = k
        position[lo : hi + 1] = -(hi - rows + 1) / width
        # past the window, until the next one takes over
        after = np.arange(hi + 1, n)
        with np.errstate(divide="ignore"):
            position[hi + 1 :] = (after - hi) / float(width - 1)
        first_free, prev_end = hi + 1, end
    curve = scaled_sigmoid(position)
    weight = np.where(window >= 0, curve / _MAX_REWARD, curve)
    return FileLayout(name, window, weight, probationary_length(n), len(windows))


def _first_row_at(
    ts: np.ndarray, at: int, lo: int, name: str, k: int, which: str
) -> int:
    hits = np.flatnonzero(ts[lo:] == at)
    if len(hits) == 0:
        raise ValueError(
            f"{name}: the {which} of window {k}, {_iso(at)!r}, is not the timestamp "
            f"of any row from row {lo} on; window limits must be row timestamps"
        )
    return lo + int(hits[0])


def score_file(layout: FileLayout, alerts: np.ndarray, profile: Profile) -> FileScore:
    """Score the alerts of one file.

    Parameters
    ----------
    layout : FileLayout
        From :func:`locate_windows`.
    alerts : np.ndarray
        bool per row, aligned with the rows of ``layout``.
    profile : Profile
        The cost weights.

    Returns
    -------
    FileScore
        The raw NAB score of the file and the row counts.

    Raises
    ------
    ValueError
        If ``alerts`` does not have one entry per row.
    """
    alerts = np.asarray(alerts, dtype=bool)
    if alerts.shape != (layout.n_rows,):
        raise ValueError(
            f"{layout.name}: expected {layout.n_rows} alert flags (one per row), "
            f"got shape {alerts.shape}"
        )
    p = layout.n_probationary
    alert, window, weight = alerts[p:], layout.window[p:], layout.weight[p:]
    inside = window >= 0

    false_pos = alert & ~inside
    fp_score = profile.fp_weight * float(weight[false_pos].sum())
    # rows are in file order, so the first alert of a window is its earliest
    hit = alert & inside
    _, first = np.unique(window[hit], return_index=True)
    rewards = np.maximum(profile.tp_weight * weight[hit][first], -profile.fn_weight)
    n_windows = len(np.unique(window[inside]))
    fn_score = -profile.fn_weight * (n_windows - len(first))

    return FileScore(
        name=layout.name,
        score=fp_score + float(rewards.sum()) + fn_score,
        tp=int(hit.sum()),
        tn=int((~alert & ~inside).sum()),
        fp=int(false_pos.sum()),
        fn=int((~alert & inside).sum()),
        rows=layout.n_rows,
        windows=n_windows,
        detected_windows=len(first),
    )


def score_corpus(
    detections: Mapping[str, tuple[Any, Any]],
    windows: Mapping[str, Sequence[tuple[Any, Any]]],
    profile: Profile | str = "standard",
    *,
    threshold: float | None = None,
) -> CorpusScore:
    """Score the alerts of several files and normalise the total.

    Parameters
    ----------
    detections : mapping of str to (ts, alerts)
        Per file name: the timestamps of its rows (int64 ms, ``datetime64``,
        or date strings such as ``"2014-04-10 07:15:00"``, UTC) and a bool
        (or 0/1) alert flag per row.
    windows : mapping of str to sequence of (start, end)
        The labelled windows per file name, as :func:`load_windows` returns
        them or as date strings.  Every file in ``detections`` must be there.
    profile : Profile or str
        The cost weights, or the name of a NAB profile.
    threshold : float, optional
        Recorded in the result when the alerts came from a threshold.

    Returns
    -------
    CorpusScore
        Per-file raw scores and the normalised total.  The null and perfect
        scores count the windows of the files given; the normalised score is
        NaN when none of them has a window.

    Raises
    ------
    KeyError
        If a file has no windows entry or the profile name is unknown.
    ValueError
        If ts and alerts differ in length or a window limit is not a row
        timestamp.
    """
    profile = _as_profile(profile)
    layouts, alerts = {}, {}
    for name, (ts, flags) in detections.items():
        if name not in windows:
            raise KeyError(f"no labelled windows for {name!r}; label every file scored")
        ts_ms = to_ms(ts)
        flags = np.asarray(flags).astype(bool)
        if len(flags) != len(ts_ms):
            raise ValueError(
                f"{name}: {len(ts_ms)} timestamps but {len(flags)} alert flags"
            )
        limits = [(to_ms_scalar(a), to_ms_scalar(b)) for a, b in windows[name]]
        layouts[name] = locate_windows(ts_ms, limits, name)
        alerts[name] = flags
    return _score_layouts(layouts, alerts, profile, threshold)


def _score_layouts(
    layouts: Mapping[str, FileLayout],
    alerts: Mapping[str, np.ndarray],
    profile: Profile,
    threshold: float | None = None,
) -> CorpusScore:
    files = {name: score_file(layouts[name], alerts[name], profile) for name in layouts}
    null, perfect = _bounds(layouts.values(), profile)
    raw = float(sum(f.score for f in files.values()))
    score = float(_normalise(np.array(raw), null, perfect))
    return CorpusScore(profile.name, raw, null, perfect, score, threshold, files)


def _bounds(layouts: Any, profile: Profile) -> tuple[float, float]:
    """Raw scores of the null detector and of the perfect one."""
    layouts = list(layouts)
    null = -profile.fn_weight * sum(lay.scored_windows for lay in layouts)
    perfect = profile.tp_weight * sum(lay.n_windows for lay in layouts)
    return float(null), float(perfect)


def _normalise(raw: np.ndarray, null: float, perfect: float) -> np.ndarray:
    if perfect == null:
        # no window in any file scored: the scale is undefined
        return np.full(np.shape(raw), np.nan)
    return 100.0 * (np.asarray(raw, dtype=np.float64) - null) / (perfect - null)


def sweep_thresholds(
    layouts: Mapping[str, FileLayout],
    scores: Mapping[str, np.ndarray],
    profile: Profile | str = "standard",
) -> ThresholdSweep:
    """The corpus score at every threshold on the anomaly scores, in one pass.

    A row alerts when its anomaly score is at least the threshold; NaN never
    alerts.

    Parameters
    ----------
    layouts : mapping of str to FileLayout
        Per file, from :func:`locate_windows`.
    scores : mapping of str to np.ndarray
        float64 anomaly scores per row of each file in ``layouts``.
    profile : Profile or str
        The cost weights, or the name of a NAB profile.

    Returns
    -------
    ThresholdSweep
        Every distinct score as a threshold, highest first, with its raw and
        normalised corpus score.

    Notes
    -----
    Lowering the threshold adds rows in decreasing score order; each row adds
    its false-positive cost, or raises the reward of its window when it is
    earlier than the window's earliest alert so far.  The running sum of these
    changes is the raw score at each threshold.
    """
    import pandas as pd

    profile = _as_profile(profile)
    score_parts, window_parts, weight_parts = [], [], []
    offset = 0
    for name, layout in layouts.items():
        s = np.asarray(scores[name], dtype=np.float64)
        if s.shape != (layout.n_rows,):
            raise ValueError(
                f"{name}: expected {layout.n_rows} anomaly scores (one per row), "
                f"got shape {s.shape}"
            )
        p = layout.n_probationary
        w = layout.window[p:]
        score_parts.append(s[p:])
        window_parts.append(np.where(w >= 0, w + offset, -1))
        weight_parts.append(layout.weight[p:])
        offset += layout.n_windows
    s = np.concatenate(score_parts) if score_parts else np.empty(0)
    w = np.concatenate(window_parts) if window_parts else np.empty(0, np.int64)
    wt = np.concatenate(weight_parts) if weight_parts else np.empty(0)

    keep = ~np.isnan(s)
    s, w, wt = s[keep], w[keep], wt[keep]
    order = np.argsort(-s, kind="stable")
    s, w, wt = s[order], w[order], wt[order]
    inside = w >= 0
    delta = np.where(inside, 0.0, profile.fp_weight * wt)
    # best reward per window so far, as the threshold falls
    reward = pd.Series(np.maximum(profile.tp_weight * wt[inside], -profile.fn_weight))
    best = reward.groupby(w[inside]).cummax()
    before = best.groupby(w[inside]).shift(1).fillna(-profile.fn_weight)
    delta[inside] = (best - before).to_numpy()

    null, perfect = _bounds(layouts.values(), profile)
    running = null + np.cumsum(delta)
    # a threshold takes in all rows tied at its score: keep the last of each run
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    thresholds = np.concatenate([[np.inf], s[last]])
    raw = np.concatenate([[null], running[last]])
    return ThresholdSweep(profile.name, thresholds, raw, null, perfect)


# --- the NAB data ---


def to_ms(ts: Any) -> np.ndarray:
    """Timestamps as int64 ms: from int64 ms, ``datetime64`` or date strings (UTC)."""
    arr = np.asarray(ts)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "M":
        return arr.astype("datetime64[ms]").astype(np.int64)
    if arr.dtype.kind in "UO":
        text = np.char.replace(arr.astype(str), " ", "T")
        return text.astype("datetime64[ms]").astype(np.int64)
    raise TypeError(
        f"timestamps must be int64 ms, datetime64 or strings, got {arr.dtype}"
    )


def to_ms_scalar(value: Any) -> int:
    """One timestamp as int64 ms (see :func:`to_ms`)."""
    return int(to_ms(np.array([value]))[0])


def _iso(ms: int) -> str:
    return str(np.datetime64(int(ms), "ms")).replace("T", " ")


def load_windows(path: str | Path) -> dict[str, list[tuple[int, int]]]:
    """Read NAB's ``combined_windows.json``: ``(start_ms, end_ms)`` per window."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        name: [(to_ms_scalar(a), to_ms_scalar(b)) for a, b in limits]
        for name, limits in raw.items()
    }


def load_profiles(path: str | Path) -> dict[str, Profile]:
    """Read NAB's ``profiles.json`` into :class:`Profile` objects by name.

    Raises
    ------
    ConfigError
        If a profile lacks a weight of its ``CostMatrix``.
    """
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    out = {}
    for name, spec in raw.items():
        try:
            costs = spec["CostMatrix"]
            weights = [float(costs[k]) for k in ("tpWeight", "fpWeight", "fnWeight")]
        except KeyError as exc:
            raise ConfigError(
                f"{path}: profile {name!r} lacks CostMatrix weight {exc}"
            ) from None
        out[name] = Profile(name, *weights)
    return out


def load_thresholds(path: str | Path) -> dict[str, dict[str, float]]:
    """Read NAB's ``thresholds.json``: detector -> profile -> threshold."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    return {
        det: {prof: float(v["threshold"]) for prof, v in by_profile.items()}
        for det, by_profile in raw.items()
    }


def _as_profile(profile: Profile | str) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return NAB_PROFILES[profile]
    except KeyError:
        raise KeyError(
            f"no NAB profile named {profile!r}; known: {', '.join(NAB_PROFILES)}"
        ) from None


@dataclass(slots=True)
class NabCorpus:
    """The NAB files, their windows and the scoring configuration.

    Attributes
    ----------
    root : Path
        The NAB folder (holding ``data/``, ``labels/``, ``config/``).
    names : list of str
        The labelled files, ``category/file.csv``, sorted.
    ts : dict of str to np.ndarray
        int64 ms per row of each file.
    layouts : dict of str to FileLayout
        The windows placed on the rows of each file.
    profiles : dict of str to Profile
    thresholds : dict of str to dict of str to float
        detector -> profile -> threshold of the published scores (empty when
        ``config/thresholds.json`` is absent).
    """

    root: Path
    names: list[str]
    ts: dict[str, np.ndarray]
    layouts: dict[str, FileLayout]
    profiles: dict[str, Profile]
    thresholds: dict[str, dict[str, float]]

    @property
    def n_rows(self) -> int:
        return sum(len(t) for t in self.ts.values())


def load_nab(nab_dir: str | Path) -> NabCorpus:
    """Read the NAB timestamps, windows, profiles and thresholds.

    Parameters
    ----------
    nab_dir : str or Path
        A NAB folder with ``data/<category>/<name>.csv``,
        ``labels/combined_windows.json`` and ``config/profiles.json``
        (``config/thresholds.json`` optional).

    Returns
    -------
    NabCorpus

    Raises
    ------
    FileNotFoundError
        If the labels, the profiles or a labelled data file is missing.
    """
    import pandas as pd

    root = Path(nab_dir)
    windows = load_windows(root / "labels" / "combined_windows.json")
    profiles = load_profiles(root / "config" / "profiles.json")
    thresholds_path = root / "config" / "thresholds.json"
    thresholds = load_thresholds(thresholds_path) if thresholds_path.exists() else {}

    names = sorted(windows)
    ts, layouts = {}, {}
    for name in names:
        frame = pd.read_csv(root / "data" / name, usecols=["timestamp"])
        stamps = pd.to_datetime(frame["timestamp"], format="ISO8601").to_numpy()
        ts[name] = stamps.astype("datetime64[ms]").astype(np.int64)
        layouts[name] = locate_windows(ts[name], windows[name], name)
    n_rows = sum(len(t) for t in ts.values())
    logger.info("nab corpus read: %d files, %d rows from %s", len(names), n_rows, root)
    return NabCorpus(root, names, ts, layouts, profiles, thresholds)


def _as_corpus(nab: str | Path | NabCorpus) -> NabCorpus:
    return nab if isinstance(nab, NabCorpus) else load_nab(nab)


def read_detector_outputs(
    results_dir: str | Path, detector_name: str, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Read a detector's published per-row ``anomaly_score`` for each file.

    Parameters
    ----------
    results_dir : str or Path
        NAB's ``results/`` folder, holding
        ``<detector>/<category>/<detector>_<name>.csv[.gz]``.
    detector_name : str
        The detector folder, e.g. ``"numenta"``.
    names : sequence of str
        The files, ``category/file.csv``.

    Returns
    -------
    dict of str to np.ndarray
        float64 anomaly scores per row, per file.

    Raises
    ------
    FileNotFoundError
        If the outputs of a file are missing.
    """
    import pandas as pd

    folder = Path(results_dir) / detector_name
    out = {}
    for name in names:
        category, base = name.split("/", 1)
        stem = folder / category / f"{detector_name}_{base}"
        path = stem.with_name(stem.name + ".gz")
        if not path.exists():
            path = stem
        if not path.exists():
            raise FileNotFoundError(
                f"no outputs of detector {detector_name!r} for {name!r}: "
                f"looked for {path} and {path}.gz"
            )
        frame = pd.read_csv(path, usecols=["anomaly_score"])
        out[name] = frame["anomaly_score"].to_numpy(dtype=np.float64)
    return out


def score_detector_outputs(
    results_dir: str | Path,
    detector_name: str,
    thresholds: Mapping[str, float] | None = None,
    *,
    nab: str | Path | NabCorpus | None = None,
) -> dict[str, CorpusScore]:
    """Score a detector's published anomaly scores under every profile.

    Parameters
    ----------
    results_dir : str or Path
        NAB's ``results/`` folder (see :func:`read_detector_outputs`).
    detector_name : str
        The detector folder, e.g. ``"numenta"``.
    thresholds : mapping of str to float, optional
        Threshold per profile name; a row alerts when its anomaly score is at
        least the threshold.  By default the detector's entry of NAB's
        ``config/thresholds.json``.
    nab : str, Path or NabCorpus, optional
        The NAB folder or the corpus already read; by default the parent of
        ``results_dir``.

    Returns
    -------
    dict of str to CorpusScore
        Per profile name.

    Raises
    ------
    KeyError
        If no threshold is known for the detector or a profile.
    """
    corpus = _as_corpus(nab if nab is not None else Path(results_dir).parent)
    if thresholds is None:
        try:
            thresholds = corpus.thresholds[detector_name]
        except KeyError:
            raise KeyError(
                f"no thresholds for detector {detector_name!r} in "
                f"{corpus.root / 'config' / 'thresholds.json'}; pass thresholds="
            ) from None
    scores = read_detector_outputs(results_dir, detector_name, corpus.names)
    for name in corpus.names:
        if len(scores[name]) != len(corpus.ts[name]):
            raise ValueError(
                f"{detector_name} outputs for {name!r} have {len(scores[name])} rows, "
                f"the data file has {len(corpus.ts[name])}"
            )

    out = {}
    for pname, profile in corpus.profiles.items():
        if pname not in thresholds:
            raise KeyError(
                f"no threshold for profile {pname!r} of detector {detector_name!r}"
            )
        t = float(thresholds[pname])
        alerts = {name: scores[name] >= t for name in corpus.names}
        out[pname] = _score_layouts(corpus.layouts, alerts, profile, t)
    return out


# --- running a detector over NAB ---


def _nab_root(path: str | Path) -> Path:
    """The NAB folder, given it or its ``data/`` folder."""
    path = Path(path)
    if (path / "labels").is_dir():
        return path
    if path.name == "data" and (path.parent / "labels").is_dir():
        return path.parent
    raise FileNotFoundError(
        f"{path} is not a NAB folder: expected labels/combined_windows.json and "
        f"data/<category>/<name>.csv under it"
    )


def evaluate_nab(
    data_dir: str | Path | NabCorpus,
    detector_name: str = "default",
    threshold: float = 0.5,
    progress: Callable[[str], None] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    alert_thresholds: Sequence[float] = tuple(round(0.05 * k, 2) for k in range(1, 20)),
) -> dict[str, Any]:
    """Run a registered detector over the NAB files as streams and score it.

    Each file is one series, read with :func:`obscore.ingest.files.read_csv`
    and scored by a new detector from :func:`obscore.detect.create` in one
    causal pass; its alerts are :func:`obscore.detect.stream.alert_decisions`
    at ``threshold`` (a rising crossing, at most one per cooldown).

    Parameters
    ----------
    data_dir : str, Path or NabCorpus
        The NAB folder (or its ``data/`` folder, or the corpus already read).
    detector_name : str
        A registered detector name.
    threshold : float
        The detector's declared alerting threshold on its scores.
    progress : callable, optional
        Called with the file name after each file (e.g. to advance a bar).
    params : mapping, optional
        Keyword arguments for the detector factory.
    alert_thresholds : sequence of float
        Thresholds tried for the alert decisions (``best_alerts``).

    Returns
    -------
    dict
        JSON-able.  ``profiles[<profile>]`` holds ``alerts`` (the NAB score of
        the alert decisions at ``threshold``), ``rows_above`` (every row whose
        score is at least ``threshold`` alerting, the way NAB thresholds
        anomaly scores), ``best`` (the best threshold on the scores, swept
        over every distinct score, and its normalised score), ``best_alerts``
        (the best of ``alert_thresholds`` for the alert decisions) and
        ``files`` (the raw score of each file's alert decisions).
        ``runtime_s`` is the wall time of the whole run and ``detect_s`` that
        of reading and scoring the files.

    Raises
    ------
    KeyError
        If no detector is registered under ``detector_name``.
    ValueError
        If a data file yields another number of rows or other timestamps than
        the corpus (a row the CSV reader skipped).
    """
    from obscore.detect.base import create
    from obscore.detect.stream import alert_decisions
    from obscore.ingest.files import read_csv
    from obscore.model import sample_table

    started = time.perf_counter()
    if isinstance(data_dir, NabCorpus):
        corpus = data_dir
    else:
        corpus = load_nab(_nab_root(data_dir))
    create(detector_name, **(params or {}))  # fail before reading anything

    scores, alerts = {}, {}
    for name in corpus.names:
        series = read_csv(corpus.root / "data" / name)
        if not np.array_equal(series.ts, corpus.ts[name]):
            raise ValueError(
                f"{name}: the CSV reader kept {len(series.ts)} rows of "
                f"{len(corpus.ts[name])} (or read other timestamps); "
                f"NAB scores every row"
            )
        detector = create(detector_name, **(params or {}))
        ids = np.zeros(len(series.ts), np.uint64)
        batch = sample_table(ids, series.ts, series.values)
        s = np.nan_to_num(np.asarray(detector.score(batch), dtype=np.float64), nan=0.0)
        scores[name] = s
        alerts[name] = alert_decisions(series.ts, s, threshold)
        logger.debug("nab %s: %d rows, %d alerts", name, len(s), alerts[name].sum())
        if progress is not None:
            progress(name)
    detect_s = time.perf_counter() - started

    tried = {
        t: {n: alert_decisions(corpus.ts[n], scores[n], t) for n in corpus.names}
        for t in alert_thresholds
    }
    above = {name: scores[name] >= threshold for name in corpus.names}
    profiles = {}
    for pname, profile in corpus.profiles.items():
        fired = _score_layouts(corpus.layouts, alerts, profile, threshold)
        at_rows = _score_layouts(corpus.layouts, above, profile, threshold)
        best_t, best_score = sweep_thresholds(corpus.layouts, scores, profile).best
        grid = {
            t: _score_layouts(corpus.layouts, a, profile, t).score
            for t, a in tried.items()
        }
        grid_t = max(grid, key=lambda t: (grid[t], t)) if grid else None
        profiles[pname] = {
            "alerts": fired.to_dict(files=False),
            "rows_above": at_rows.to_dict(files=False),
            "best": {"threshold": best_t, "score": best_score},
            "best_alerts": {"threshold": grid_t, "score": grid.get(grid_t)},
            "files": {name: f.score for name, f in fired.files.items()},
        }
    runtime_s = time.perf_counter() - started
    logger.info(
        "nab %s: %d files, %d rows in %.1f s", detector_name, len(corpus.names),
        corpus.n_rows, runtime_s,
    )
    return {
        "benchmark": "NAB",
        "detector": detector_name,
        "params": dict(params or {}),
        "threshold": threshold,
        "files": len(corpus.names),
        "rows": corpus.n_rows,
        "alerts": int(sum(int(a.sum()) for a in alerts.values())),
        "detect_s": detect_s,
        "runtime_s": runtime_s,
        "profiles": profiles,
        "published": load_published(corpus.root),
    }


def load_published(nab_dir: str | Path, top: int = 3) -> dict[str, dict[str, float]]:
    """The ``top`` published detectors of ``final_results.json`` by standard score.

    Returns an empty dict when the NAB folder has no ``final_results.json``;
    the rest of the file's detectors are left out.
    """
    path = Path(nab_dir) / "final_results.json"
    if not path.exists():
        return {}
    final = json.loads(path.read_text("utf-8"))
    ranked = sorted(final.items(), key=lambda kv: -float(kv[1].get("standard", -math.inf)))
    return {name: {k: float(v) for k, v in scores.items()} for name, scores in ranked[:top]}


# --- SMD: point-wise and point-adjusted precision, recall, F1 ---


def _segments(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, stops)`` of the runs of True in a bool array (stop exclusive)."""
    edges = np.diff(np.concatenate([[0], labels.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def point_adjust(predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mark a whole labelled segment as predicted when any of its rows is.

    Parameters
    ----------
    predicted, labels : np.ndarray
        bool per row, same length.

    Returns
    -------
    np.ndarray
        bool per row: ``predicted`` with every labelled segment that holds a
        predicted row filled in.

    Examples
    --------
    >>> predicted = np.array([0, 0, 1, 0, 0], bool)
    >>> point_adjust(predicted, np.array([0, 1, 1, 1, 0], bool)).tolist()
    [False, True, True, True, False]
    """
    predicted = np.asarray(predicted, dtype=bool)
    labels = np.asarray(labels, dtype=bool)
    out = predicted.copy()
    starts, stops = _segments(labels)
    # rows between segments are masked out, so each sum covers one segment
    inside = (predicted & labels).astype(np.int64)
    hits = np.add.reduceat(inside, starts) if len(starts) else []
    for a, b, h in zip(starts, stops, hits):
        if h:
            out[a:b] = True
    return out


def precision_recall_f1(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of bool predictions (0 where undefined)."""
    predicted = np.asarray(predicted, dtype=bool)
    labels = np.asarray(labels, dtype=bool)
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn
    }


def best_f1(scores: np.ndarray, labels: np.ndarray, adjusted: bool) -> dict[str, float]:
    """The best F1 over every threshold on ``scores`` (row alerts at >= it).

    With ``adjusted``, a labelled segment counts as found at a threshold when
    its highest score reaches it (point adjustment).  This is an oracle: the
    threshold is chosen on the test labels.
    """
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    labels = np.asarray(labels, dtype=bool)
    normal = scores[~labels]
    if adjusted:
        starts, stops = _segments(labels)
        masked = np.where(labels, scores, -np.inf)
        peak = np.maximum.reduceat(masked, starts) if len(starts) else np.empty(0)
        pos_score, pos_weight = peak, (stops - starts).astype(np.float64)
    else:
        pos_score, pos_weight = scores[labels], np.ones(int(labels.sum()))
    n_pos = pos_weight.sum()
    # candidate thresholds: every distinct score, highest first
    cand = np.unique(np.concatenate([normal, pos_score]))[::-1]
    cand = cand[np.isfinite(cand)]
    if len(cand) == 0 or n_pos == 0:
        return {"threshold": float("nan"), "precision": 0.0, "recall": 0.0, "f1": 0.0}
    pos_order = np.argsort(-pos_score, kind="stable")
    tp = np.concatenate([[0.0], np.cumsum(pos_weight[pos_order])])
    tp = tp[np.searchsorted(-pos_score[pos_order], -cand, side="right")]
    fp = np.searchsorted(-np.sort(normal)[::-1], -cand, side="right").astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = tp / n_pos
        f1 = 2 * precision * recall / (precision + recall)
    f1 = np.nan_to_num(f1, nan=0.0)
    k = int(np.argmax(f1))
    return {
        "threshold": float(cand[k]),
        "precision": float(precision[k]),
        "recall": float(recall[k]),
        "f1": float(f1[k]),
    }


def evaluate_smd(
    data_dir: str | Path,
    machines: Sequence[str] | None = None,
    threshold: float = 0.5,
    progress: Callable[[str], None] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the isolation forest per machine of SMD and score its test rows.

    Parameters
    ----------
    data_dir : str or Path
        The SMD folder: ``train/<m>.txt`` and ``test/<m>.txt`` (comma-separated
        rows of scaled metrics, one row per minute) and ``test_label/<m>.txt``
        (one 0/1 per test row).
    machines : sequence of str, optional
        Machine names such as ``"machine-1-2"``; by default every machine
        with a test label file.  Machines whose train or test file is missing
        are listed under ``missing`` and skipped.
    threshold : float
        The declared threshold of the detector's scores (a row alerts at a
        score above it).
    progress : callable, optional
        Called with the machine name after each machine.
    params : mapping, optional
        Keyword arguments for :class:`~obscore.detect.iforest.IsolationForestDetector`.

    Returns
    -------
    dict
        JSON-able.  Per machine under ``machines``: ``point`` and ``adjusted``
        precision, recall and F1 at ``threshold``, ``best_point`` and
        ``best_adjusted`` (the best F1 over all thresholds, an oracle on the
        test labels), rows and seconds; ``average`` holds the mean of each
        figure over the machines.

    Raises
    ------
    FileNotFoundError
        If no machine can be evaluated.
    ValueError
        If a test file and its labels differ in length.
    """
    from obscore.detect.iforest import IsolationForestDetector

    started = time.perf_counter()
    root = Path(data_dir)
    if machines is None:
        machines = sorted(p.stem for p in (root / "test_label").glob("*.txt"))
    results: dict[str, Any] = {}
    missing = []
    for machine in machines:
        parts = ("train", "test", "test_label")
        paths = [root / part / f"{machine}.txt" for part in parts]
        absent = [str(p) for p in paths if not p.exists()]
        if absent:
            missing.append(machine)
            logger.warning("smd %s: skipped, missing %s", machine, ", ".join(absent))
            continue
        t0 = time.perf_counter()
        train, test = (np.loadtxt(p, delimiter=",", ndmin=2) for p in paths[:2])
        labels = np.loadtxt(paths[2], dtype=np.int64).astype(bool)
        if len(labels) != len(test):
            raise ValueError(
                f"smd {machine}: {len(test)} test rows but {len(labels)} labels"
            )
        detector = IsolationForestDetector(**(params or {}))
        detector.fit_matrix(train.T)
        scores = detector.score_matrix(test.T)
        alerts = scores > threshold
        results[machine] = {
            "rows": len(test),
            "anomalous_rows": int(labels.sum()),
            "segments": len(_segments(labels)[0]),
            "point": precision_recall_f1(alerts, labels),
            "adjusted": precision_recall_f1(point_adjust(alerts, labels), labels),
            "best_point": best_f1(scores, labels, adjusted=False),
            "best_adjusted": best_f1(scores, labels, adjusted=True),
            "seconds": time.perf_counter() - t0,
        }
        if progress is not None:
            progress(machine)
    if not results:
        raise FileNotFoundError(
            f"no SMD machine with train, test and test_label files under {root}"
        )

    average: dict[str, dict[str, float]] = {}
    for key in ("point", "adjusted", "best_point", "best_adjusted"):
        average[key] = {
            m: float(np.mean([r[key][m] for r in results.values()]))
            for m in ("precision", "recall", "f1")
        }
    return {
        "benchmark": "SMD",
        "detector": "iforest",
        "params": dict(params or {}),
        "threshold": threshold,
        "machines": results,
        "missing": missing,
        "average": average,
        "runtime_s": time.perf_counter() - started,
    }
