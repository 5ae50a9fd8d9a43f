"""Series limits: refuse a new series before anything is allocated for it.

A label that takes a fresh value per request (a request id, a user id, a
pod name in a crash loop) creates a series per sample, and every series
costs an index entry, a ring buffer and rollup rows.  :class:`CardinalityGuard`
caps the series per metric and in total.  The engine asks it once per series
it does not know yet; a sample whose series would pass a limit is dropped and
counted, and each metric gets one warning.

The guard remembers counts, not series: a refused series costs nothing, and
its next sample is asked about again (and admitted, if a slot was released
in the meantime).
"""

from __future__ import annotations

import logging
from collections.abc import Container, Mapping
from typing import Literal

import numpy as np

from obscore.errors import CardinalityLimitError, ConfigError, ObscoreWarning
from obscore.model import SeriesIndex

logger = logging.getLogger(__name__)

#: Reasons a sample is dropped for, as counted in :attr:`CardinalityGuard.dropped`.
PER_METRIC = "series_limit_per_metric"
TOTAL = "series_limit_total"


class CardinalityWarning(ObscoreWarning):
    """Samples of a metric are dropped because a series limit was reached."""


class CardinalityGuard:
    """Decide whether a new series may be created under per-metric and total limits.

    Parameters
    ----------
    per_metric : int
        Most series one metric name may have.
    total : int
        Most series across all metrics.
    overrides : mapping, optional
        Per-metric limits that replace ``per_metric`` for the metrics named.
    on_limit : {"drop", "raise"}
        ``"drop"`` (the default) counts the sample as dropped and warns once
        per metric; ``"raise"`` raises :class:`CardinalityLimitError`.

    Notes
    -----
    The caller keeps the series and asks the guard only about series it does
    not hold yet (:meth:`admit`, :meth:`admit_batch`), and tells it about
    series it removes (:meth:`release`).  An engine that reopens a data
    directory counts what it holds with :meth:`count_existing`.  Histograms
    count each ``_bucket``, ``_sum`` and ``_count`` series under its own
    name.  The guard is not thread-safe; the engine calls it under its own
    lock, or from one thread.

    Examples
    --------
    >>> guard = CardinalityGuard(per_metric=2, total=10)
    >>> [guard.admit("req_total", {"id": str(i)}) for i in range(3)]  # doctest: +SKIP
    [True, True, False]
    >>> guard.dropped  # doctest: +SKIP
    {('req_total', 'series_limit_per_metric'): 1}
    """

    def __init__(
        self,
        per_metric: int,
        total: int,
        *,
        overrides: Mapping[str, int] | None = None,
        on_limit: Literal["drop", "raise"] = "drop",
    ) -> None:
        for name, value in (("per_metric", per_metric), ("total", total)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative int, got {value!r}")
        if on_limit not in ("drop", "raise"):
            raise ConfigError(f"on_limit must be 'drop' or 'raise', got {on_limit!r}")
        self.per_metric = per_metric
        self.total = total
        self.overrides = dict(overrides or {})
        self.on_limit = on_limit
        self.n_series = 0
        self.series: dict[str, int] = {}
        self.dropped: dict[tuple[str, str], int] = {}
        self._warned: set[str] = set()

    def limit_of(self, name: str) -> int:
        """Series limit of one metric."""
        return self.overrides.get(name, self.per_metric)

    @property
    def n_dropped(self) -> int:
        """Samples dropped so far, over every metric and reason."""
        return sum(self.dropped.values())

    # --- one series at a time ------------------------------------------------------

    def admit(self, name: str, labels: Mapping[str, str], n_samples: int = 1) -> bool:
        """Claim a slot for a series the caller does not hold yet.

        Parameters
        ----------
        name : str
            Metric (sample) name of the series.
        labels : mapping
            Its label set, only used in the warning.
        n_samples : int
            Samples dropped with the series when it is refused.

        Returns
        -------
        bool
            True when the series fits and was counted; the caller must then
            create it.  False when it was refused: its samples are counted as
            dropped.

        Raises
        ------
        CardinalityLimitError
            When refused and ``on_limit`` is ``"raise"``.
        """
        held = self.series.get(name, 0)
        if held < self.limit_of(name) and self.n_series < self.total:
            self.series[name] = held + 1
            self.n_series += 1
            return True
        reason = PER_METRIC if held >= self.limit_of(name) else TOTAL
        self._refuse(name, labels, reason, n_samples)
        return False

    def release(self, name: str, n: int = 1) -> None:
        """Give back the slots of ``n`` series of ``name`` that were removed."""
        held = self.series.get(name, 0)
        n = min(n, held)
        if n == held:
            self.series.pop(name, None)
        else:
            self.series[name] = held - n
        self.n_series -= n

    def count_existing(self, index: SeriesIndex) -> None:
        """Count the series of ``index`` as held, limits or not (on reopening)."""
        for sid in index:
            name = index.name(sid)
            self.series[name] = self.series.get(name, 0) + 1
        self.n_series += len(index)

    # --- a batch at a time ---------------------------------------------------------

    def admit_batch(
        self,
        series_ids: np.ndarray,
        index: SeriesIndex,
        known: Container[int],
    ) -> np.ndarray | None:
        """Admit the new series of a sample batch; say which rows to keep.

        Parameters
        ----------
        series_ids : ndarray of uint64, shape (n,)
            The batch's ``series_id`` column.
        index : SeriesIndex
            Names and labels of the batch's series not in ``known``.
        known : container of int
            Series the caller holds already (its own index).

        Returns
        -------
        ndarray of bool, shape (n,), or None
            False on the rows of refused series, whose samples are counted as
            dropped; None when every row may be kept (the common case, with
            no allocation).  Series neither known nor in ``index`` are left
            to the caller.

        Notes
        -----
        New series are admitted in the order they first appear in the batch.
        """
        new_ids = [sid for sid in index if sid not in known]
        if not new_ids:
            return None
        uniq, first, counts = np.unique(series_ids, return_index=True, return_counts=True)
        in_batch = np.isin(uniq, np.array(new_ids, dtype=np.uint64))
        order = np.argsort(first[in_batch], kind="stable")
        refused: list[int] = []
        for sid, n in zip(uniq[in_batch][order].tolist(), counts[in_batch][order].tolist()):
            if not self.admit(index.name(sid), index.labels(sid), n):
                refused.append(sid)
        if not refused:
            return None
        return ~np.isin(series_ids, np.array(refused, dtype=np.uint64))

    # --- reporting -----------------------------------------------------------------

    def _refuse(self, name: str, labels: Mapping[str, str], reason: str, n: int) -> None:
        if reason == PER_METRIC:
            limit = f"the limit of {self.limit_of(name)} series"
        else:
            limit = f"the total limit of {self.total} series"
        message = (
            f"metric {name!r}: label set {dict(labels)!r} would exceed {limit}; "
            f"sample dropped"
        )
        if self.on_limit == "raise":
            raise CardinalityLimitError(message.removesuffix("; sample dropped"))
        key = (name, reason)
        self.dropped[key] = self.dropped.get(key, 0) + n
        if name not in self._warned:
            self._warned.add(name)
            logger.warning("%s (later samples of this metric are counted, not logged)", message)
            warnings.warn(message, CardinalityWarning, stacklevel=3)
