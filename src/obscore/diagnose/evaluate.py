"""Evaluate root-cause ranking on labelled fault cases: AC@k, Avg@k, chance.

Two folder layouts are read, so any folder laid out the same way can be
evaluated too:

``sockshop1`` (RCD's Sock Shop cases)
    ``<service>-<fault>/<rep>/normal.csv`` and ``anomalous.csv``: a ``time``
    column (unix seconds) and one column per ``<container>_<metric>``.  The
    cause is ``<service>``; the candidates are the containers.  The two
    files were recorded hours apart, so the whole anomalous file is the
    incident (onset row 0) and the normal file is the reference period.
``petshop`` (Amazon's PetShop dataset)
    ``<scenario>/graph.csv`` (call graph adjacency, caller rows, callee
    columns), ``<scenario>/noissue/metrics.csv`` (normal operation) and
    ``<scenario>/{train,test}/issue_<n>/{metrics.csv,target.json}``.
    ``metrics.csv`` has three header rows (node, metric, statistic) over a
    ``unix_timestamp`` index; ``target.json`` names the target node and
    timestamp and the root-cause node.  The onset row is the row whose step
    holds the target timestamp; the rows before it are the lead-in.  The
    path may be the dataset folder (every scenario in it) or one scenario.

AC@k is the share of cases whose cause is ranked in the top k; Avg@k the
mean of AC@1..AC@k; chance is the same figure for a uniformly random
ranking of each case's candidates.  On PetShop the ``noissue`` data also
gives cases without a cause (see :func:`read_petshop_noissue`), on which the
highest confidence given to any candidate is reported.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from obscore.diagnose.rank import RankConfig, Ranking, rank_candidates

logger = logging.getLogger(__name__)

Dataset = Literal["sockshop1", "petshop"]


@dataclass(frozen=True, slots=True)
class RcaCase:
    """One labelled incident in the form :func:`rank_candidates` takes.

    ``cause`` is ``""`` for a window without a fault.
    """

    name: str
    cause: str
    normal: np.ndarray
    incident: np.ndarray
    keys: list[tuple[str, str]]
    onset_row: int = 0
    graph: Mapping[str, Sequence[str]] | None = None
    target: str | None = None


@dataclass(frozen=True, slots=True)
class CaseResult:
    """How one case was ranked; ``rank`` is 1-based, None if the cause is no candidate."""

    name: str
    cause: str
    rank: int | None
    n_candidates: int
    top: list[str]
    confidence: float
    confidence_none: float


@dataclass(frozen=True, slots=True)
class RcaEvaluation:
    """Accuracy of a ranking over a dataset's cases, with chance levels."""

    dataset: str
    cases: list[CaseResult]
    ac1: float
    ac3: float
    avg5: float
    chance_ac1: float
    chance_ac3: float
    chance_avg5: float
    noissue: list[CaseResult]

    @property
    def noissue_max_confidence(self) -> float | None:
        """Highest confidence given to any candidate on a no-fault window."""
        return max((c.confidence for c in self.noissue), default=None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, figures first."""
        out = {
            "dataset": self.dataset,
            "n_cases": len(self.cases),
            "ac1": self.ac1,
            "ac3": self.ac3,
            "avg5": self.avg5,
            "chance_ac1": self.chance_ac1,
            "chance_ac3": self.chance_ac3,
            "chance_avg5": self.chance_avg5,
            "noissue_cases": len(self.noissue),
            "noissue_max_confidence": self.noissue_max_confidence,
        }
        out["cases"] = [asdict(c) for c in self.cases]
        out["noissue"] = [asdict(c) for c in self.noissue]
        return out


def accuracy_at_k(ranks: Sequence[int | None], k: int) -> float:
    """AC@k: share of cases whose cause is ranked ``k`` or better.

    Parameters
    ----------
    ranks : sequence of int or None
        1-based rank of the cause in each case; None when it was not ranked.
    k : int
        Positive.

    Returns
    -------
    float
        In [0, 1]; NaN for no cases.

    Raises
    ------
    ValueError
        If ``k`` is smaller than 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k!r}")
    if not ranks:
        return float("nan")
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def average_accuracy(ranks: Sequence[int | None], k: int = 5) -> float:
    """Avg@k: the mean of AC@1 .. AC@k."""
    return float(np.mean([accuracy_at_k(ranks, j) for j in range(1, k + 1)]))


def chance_accuracy(n_candidates: Sequence[int], k: int) -> float:
    """AC@k of a uniformly random ranking: the mean of ``min(k, n) / n``."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k!r}")
    if not n_candidates:
        return float("nan")
    return float(np.mean([min(k, n) / n if n else 0.0 for n in n_candidates]))


def chance_average_accuracy(n_candidates: Sequence[int], k: int = 5) -> float:
    """Avg@k of a uniformly random ranking."""
    return float(np.mean([chance_accuracy(n_candidates, j) for j in range(1, k + 1)]))


def read_sockshop(path: str | Path) -> list[RcaCase]:
    """Read every ``<service>-<fault>/<rep>/`` case under ``path``.

    Raises
    ------
    FileNotFoundError
        If no case folder is found.
    """
    root = Path(path)
    cases = []
    for folder in sorted(
        p for p in root.glob("*/*") if (p / "anomalous.csv").is_file()
    ):
        normal = pd.read_csv(folder / "normal.csv")
        incident = pd.read_csv(folder / "anomalous.csv")
        columns = [c for c in normal.columns if c != "time"]
        keys = [_split_sockshop_column(c) for c in columns]
        cases.append(
            RcaCase(
                name=f"{folder.parent.name}/{folder.name}",
                cause=folder.parent.name.rsplit("-", 1)[0],
                normal=normal[columns].to_numpy(dtype=float),
                incident=incident.reindex(columns=columns).to_numpy(dtype=float),
                keys=keys,
            )
        )
    if not cases:
        raise FileNotFoundError(
            f"no <service>-<fault>/<rep>/anomalous.csv under {str(root)!r}"
        )
    return cases


def _split_sockshop_column(column: str) -> tuple[str, str]:
    container, _, metric = column.partition("_")
    return container, metric


def read_petshop(
    path: str | Path, splits: Sequence[str] = ("train", "test")
) -> list[RcaCase]:
    """Read every issue of every scenario under ``path`` (or of ``path`` itself).

    Raises
    ------
    FileNotFoundError
        If no scenario folder (one holding ``graph.csv``) is found.
    """
    cases = []
    for scenario in _petshop_scenarios(path):
        graph = _read_graph(scenario / "graph.csv")
        normal = _read_petshop_metrics(scenario / "noissue" / "metrics.csv")
        for split in splits:
            issues = sorted((scenario / split).glob("issue_*"), key=_issue_number)
            for issue in issues:
                frame = _read_petshop_metrics(issue / "metrics.csv")
                target = json.loads((issue / "target.json").read_text())
                columns = list(frame.columns)
                cases.append(
                    RcaCase(
                        name=f"{scenario.name}/{split}/{issue.name}",
                        cause=target["root_cause"]["node"],
                        normal=normal.reindex(columns=columns).to_numpy(dtype=float),
                        incident=frame.to_numpy(dtype=float),
                        keys=columns,
                        onset_row=_onset_row(frame.index.to_numpy(float), target),
                        graph=graph,
                        target=target["target"]["node"],
                    )
                )
    return cases


def read_petshop_noissue(
    path: str | Path, window_rows: int = 5, every_rows: int = 10
) -> list[RcaCase]:
    """Windows of normal operation cut like issue windows, for false alarms.

    From half-way through each scenario's ``noissue`` data, every
    ``every_rows`` rows a window of ``window_rows`` rows is cut, with onset
    row 1 as in the issue windows; its reference period is everything
    before the window (a live system knows only the past).  The target is
    the scenario's most frequent issue target.  This follows the dataset's
    own specificity check (split the normal data, analyse the second part),
    with more and shorter windows.
    """
    cases = []
    for scenario in _petshop_scenarios(path):
        graph = _read_graph(scenario / "graph.csv")
        frame = _read_petshop_metrics(scenario / "noissue" / "metrics.csv")
        targets = Counter(
            json.loads(p.read_text())["target"]["node"]
            for p in scenario.glob("*/issue_*/target.json")
        )
        target = targets.most_common(1)[0][0] if targets else None
        values = frame.to_numpy(dtype=float)
        n = len(values)
        for start in range(n // 2, n - window_rows + 1, every_rows):
            cases.append(
                RcaCase(
                    name=f"{scenario.name}/noissue/rows_{start}",
                    cause="",
                    normal=values[:start],
                    incident=values[start : start + window_rows],
                    keys=list(frame.columns),
                    onset_row=1,
                    graph=graph,
                    target=target,
                )
            )
    return cases


def _petshop_scenarios(path: str | Path) -> list[Path]:
    root = Path(path)
    if (root / "graph.csv").is_file():
        return [root]
    scenarios = sorted(p.parent for p in root.glob("*/graph.csv"))
    if not scenarios:
        raise FileNotFoundError(f"no <scenario>/graph.csv under {str(root)!r}")
    return scenarios


def _issue_number(path: Path) -> int:
    tail = path.name.rpartition("_")[2]
    return int(tail) if tail.isdigit() else -1


def _read_graph(path: Path) -> dict[str, list[str]]:
    adjacency = pd.read_csv(path, index_col=0)
    return {
        str(caller): [str(c) for c in adjacency.columns[row.to_numpy() != 0]]
        for caller, row in adjacency.iterrows()
    }


def _read_petshop_metrics(path: Path) -> pd.DataFrame:
    """Rows by unix second; columns as (node, "metric/statistic") pairs."""
    frame = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    frame.columns = pd.Index(
        [(node, f"{metric}/{stat}") for node, metric, stat in frame.columns]
    )
    return frame.sort_index()


def _onset_row(ts_s: np.ndarray, target: Mapping[str, Any]) -> int:
    """The row whose step holds the target timestamp (the first row if it precedes)."""
    t0 = float(target["target"]["timestamp"])
    step = float(np.median(np.diff(ts_s))) if len(ts_s) > 1 else 0.0
    after = np.nonzero(ts_s + step > t0)[0]
    return int(after[0]) if len(after) else len(ts_s) - 1


def read_cases(path: str | Path, dataset: Dataset) -> list[RcaCase]:
    """The labelled cases of ``path`` read in ``dataset``'s layout."""
    if dataset == "sockshop1":
        return read_sockshop(path)
    if dataset == "petshop":
        return read_petshop(path)
    raise ValueError(f"dataset must be 'sockshop1' or 'petshop', got {dataset!r}")


def rank_case(case: RcaCase, config: RankConfig | None = None) -> Ranking:
    """Run :func:`rank_candidates` on one case."""
    return rank_candidates(
        case.normal,
        case.incident,
        case.keys,
        onset_row=case.onset_row,
        graph=case.graph,
        target=case.target,
        config=config,
    )


def _result(case: RcaCase, ranking: Ranking) -> CaseResult:
    names = ranking.names
    rank = names.index(case.cause) + 1 if case.cause in names else None
    top = ranking.candidates[0].confidence if ranking.candidates else 0.0
    return CaseResult(
        case.name, case.cause, rank, len(names), names[:5], top, ranking.confidence_none
    )


def evaluate_cases(
    cases: Sequence[RcaCase],
    dataset: str = "",
    noissue: Sequence[RcaCase] = (),
    config: RankConfig | None = None,
) -> RcaEvaluation:
    """Rank every case and score the rankings.

    Parameters
    ----------
    cases : sequence of RcaCase
        Labelled cases (a non-empty ``cause`` each).
    dataset : str
        Name carried into the result.
    noissue : sequence of RcaCase
        Windows without a fault; only their confidences are reported.
    config : RankConfig, optional
        One configuration for every case.

    Returns
    -------
    RcaEvaluation
    """
    results = [_result(case, rank_case(case, config)) for case in cases]
    quiet = [_result(case, rank_case(case, config)) for case in noissue]
    ranks = [r.rank for r in results]
    sizes = [r.n_candidates for r in results]
    logger.info(
        "rca evaluation %s: %d cases, %d no-fault windows",
        dataset,
        len(results),
        len(quiet),
    )
    return RcaEvaluation(
        dataset=dataset,
        cases=results,
        ac1=accuracy_at_k(ranks, 1),
        ac3=accuracy_at_k(ranks, 3),
        avg5=average_accuracy(ranks, 5),
        chance_ac1=chance_accuracy(sizes, 1),
        chance_ac3=chance_accuracy(sizes, 3),
        chance_avg5=chance_average_accuracy(sizes, 5),
        noissue=quiet,
    )


def evaluate_rca(
    path: str | Path, dataset: Dataset, config: RankConfig | None = None
) -> RcaEvaluation:
    """Evaluate the ranking of :mod:`obscore.diagnose.rank` on a dataset folder.

    Parameters
    ----------
    path : str or Path
        A folder in the ``sockshop1`` or ``petshop`` layout (module docstring).
    dataset : {"sockshop1", "petshop"}
        The layout to read.
    config : RankConfig, optional
        Ranking configuration; the default serves both datasets.

    Returns
    -------
    RcaEvaluation
        AC@1, AC@3, Avg@5 and chance levels; for PetShop also the no-fault
        windows with their confidences.

    Raises
    ------
    ValueError
        If ``dataset`` is not one of the two names.
    FileNotFoundError
        If ``path`` holds no case in that layout.
    """
    cases = read_cases(path, dataset)
    noissue = read_petshop_noissue(path) if dataset == "petshop" else []
    return evaluate_cases(cases, dataset, noissue, config)


@dataclass(frozen=True, slots=True)
class SmdSegment:
    """One labelled anomaly of an SMD machine and how its dimensions were ranked.

    ``start`` and ``end`` are 0-based inclusive test-row indices; ``dims``
    the 1-based dimensions of ``interpretation_label/``; ``hit100`` and
    ``hit150`` the HitRate of this segment.
    """

    machine: str
    start: int
    end: int
    dims: list[int]
    top: list[int]
    hit100: float
    hit150: float


#: Rows before an SMD segment used as its recent past (one day of minutes).
SMD_RECENT_ROWS = 1440

#: Smallest standard deviation of a dimension (SMD is scaled to [0, 1]).
SMD_MIN_SD = 0.01


def rank_dimensions(
    train: np.ndarray, segment: np.ndarray, recent: np.ndarray | None = None
) -> np.ndarray:
    """Dimensions of a multivariate segment, most deviating first.

    A dimension's deviation from a reference period is the mean of its peak
    and its mean ``|x - median| / sd`` over the segment's rows, with the
    reference's median and standard deviation (at least
    :data:`SMD_MIN_SD`): the peak catches a short burst, the mean a
    sustained shift, and a dimension that does both ranks above one that
    only spikes once.  Its score is the deviation from the training
    (normal) data, or, with ``recent`` (the rows just before the segment, at
    least 10), the geometric mean of that and the deviation from
    ``recent``: a cause dimension departs both from its normal behaviour
    and from what it did just before, and the geometric mean keeps a
    dimension far off on one reference and barely off on the other below
    one clearly off on both.  Non-finite values score 0.

    Parameters
    ----------
    train : ndarray, shape (n_train, n_dims)
    segment : ndarray, shape (n_rows, n_dims)
    recent : ndarray, shape (n_recent, n_dims), optional

    Returns
    -------
    ndarray of int64
        0-based dimension indices, best first (ties in index order).

    Raises
    ------
    ValueError
        If the shapes disagree or ``train`` or ``segment`` is empty.
    """
    train = np.asarray(train, dtype=float)
    segment = np.asarray(segment, dtype=float)
    if train.ndim != 2 or segment.ndim != 2 or train.shape[1] != segment.shape[1]:
        raise ValueError(
            f"train and segment must be 2-d with the same columns, got {train.shape} and {segment.shape}"
        )
    if len(train) == 0 or len(segment) == 0:
        raise ValueError(f"train and segment must have rows, got {len(train)} and {len(segment)}")
    score = _deviation(train, segment)
    if recent is not None:
        recent = np.asarray(recent, dtype=float)
        if recent.ndim != 2 or recent.shape[1] != segment.shape[1]:
            raise ValueError(
                f"recent must be 2-d with {segment.shape[1]} columns, got {recent.shape}"
            )
        if len(recent) >= 10:
            score = np.sqrt(score * _deviation(recent, segment))
    return np.argsort(-score, kind="stable").astype(np.int64)


def _deviation(reference: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Per column, (peak + mean) / 2 over rows of |x - median| / sd of ``reference``.

    Rows with a non-finite value are left out of that column; a column with
    none finite scores 0.
    """
    with warnings_ignored():
        med = np.nanmedian(reference, axis=0)
        sd = np.fmax(np.nan_to_num(np.nanstd(reference, axis=0)), SMD_MIN_SD)
        z = np.abs(segment - med) / sd
        z = np.where(np.isfinite(z), z, np.nan)
        score = 0.5 * (np.nanmax(z, axis=0) + np.nanmean(z, axis=0))
    return np.where(np.isfinite(score), score, 0.0)


def hit_rate(ranked: Sequence[int], truth: Sequence[int], percent: float) -> float:
    """HitRate@P%: the share of ``truth`` among the first ``floor(P% * |truth|)`` of ``ranked``.

    Raises
    ------
    ValueError
        If ``truth`` is empty or ``percent`` is not positive.
    """
    if not truth:
        raise ValueError("truth must name at least one dimension")
    if percent <= 0:
        raise ValueError(f"percent must be positive, got {percent!r}")
    k = int(np.floor(percent / 100.0 * len(truth) + 1e-9))
    return len(set(ranked[:k]) & set(truth)) / len(set(truth))


def read_interpretation_labels(path: str | Path) -> list[tuple[int, int, list[int]]]:
    """``start-end:d1,d2,...`` lines as (start, end, 1-based dims).

    Raises
    ------
    ValueError
        Naming the file and line of a malformed entry.
    """
    out = []
    text = Path(path).read_text(encoding="utf-8")
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            span, dims = line.strip().split(":")
            start, end = (int(v) for v in span.split("-"))
            out.append((start, end, [int(d) for d in dims.split(",") if d.strip()]))
        except ValueError:
            raise ValueError(f"{path}, line {n}: expected 'start-end:d1,d2,...', got {line.strip()!r}") from None
    return out


def evaluate_smd_rca(path: str | Path, machines: Sequence[str] | None = None) -> dict[str, Any]:
    """HitRate@100% and @150% of :func:`rank_dimensions` on SMD's interpretation labels.

    Each labelled segment is ranked against the machine's training data and
    the :data:`SMD_RECENT_ROWS` test rows before it.

    Parameters
    ----------
    path : str or Path
        An SMD folder: ``train/<m>.txt``, ``test/<m>.txt`` and
        ``interpretation_label/<m>.txt`` (the row ranges are read as 0-based
        inclusive test rows).
    machines : sequence of str, optional
        Machine names; by default every machine with all three files.

    Returns
    -------
    dict
        ``hitrate@100%`` and ``hitrate@150%`` averaged over all segments,
        the same per machine, and the per-segment rows.

    Raises
    ------
    FileNotFoundError
        If no machine has the three files.
    """
    root = Path(path)
    if machines is None:
        machines = sorted(
            p.stem for p in (root / "interpretation_label").glob("*.txt")
            if (root / "train" / p.name).is_file() and (root / "test" / p.name).is_file()
        )
    if not machines:
        raise FileNotFoundError(f"no machine with train/, test/ and interpretation_label/ files under {str(root)!r}")
    segments: list[SmdSegment] = []
    per_machine = {}
    for m in machines:
        train = np.loadtxt(root / "train" / f"{m}.txt", delimiter=",", ndmin=2)
        test = np.loadtxt(root / "test" / f"{m}.txt", delimiter=",", ndmin=2)
        mine = []
        for start, end, dims in read_interpretation_labels(root / "interpretation_label" / f"{m}.txt"):
            if not 0 <= start <= end < len(test):
                logger.warning("smd %s: segment %d-%d outside the %d test rows, skipped", m, start, end, len(test))
                continue
            recent = test[max(0, start - SMD_RECENT_ROWS) : start]
            order = [int(d) + 1 for d in rank_dimensions(train, test[start : end + 1], recent)]
            mine.append(SmdSegment(m, start, end, dims, order[:10], hit_rate(order, dims, 100), hit_rate(order, dims, 150)))
        segments += mine
        per_machine[m] = {
            "segments": len(mine),
            "hitrate@100%": float(np.mean([s.hit100 for s in mine])) if mine else float("nan"),
            "hitrate@150%": float(np.mean([s.hit150 for s in mine])) if mine else float("nan"),
        }
    return {
        "dataset": "smd",
        "segments": len(segments),
        "hitrate@100%": float(np.mean([s.hit100 for s in segments])) if segments else float("nan"),
        "hitrate@150%": float(np.mean([s.hit150 for s in segments])) if segments else float("nan"),
        "machines": per_machine,
        "per_segment": [asdict(s) for s in segments],
    }


class warnings_ignored:
    """Silence RuntimeWarnings of all-NaN columns (they score 0)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)
        self._err = np.seterr(all="ignore")
        return self

    def __exit__(self, *exc):
        np.seterr(**self._err)
        return self._ctx.__exit__(*exc)
