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

The buckets of one histogram go together: the ``<name>_bucket`` series that
differ only in ``le`` share one slot, so a histogram is admitted or refused
whole, never cut to some of its buckets (which would make its quantiles
wrong).  For this the guard keeps the label sets of the admitted bucket
groups, which is bounded by the limits.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Container, Mapping
from typing import Literal, NamedTuple

import numpy as np

from obscore.errors import CardinalityLimitError, ConfigError, ObscoreWarning
from obscore.model import SeriesIndex

logger = logging.getLogger(__name__)

#: Reasons a sample is dropped for, as counted in :attr:`CardinalityGuard.dropped`.
PER_METRIC = "series_limit_per_metric"
TOTAL = "series_limit_total"


class CardinalityWarning(ObscoreWarning):
    """Samples of a metric are dropped because a series limit was reached."""


class Admission(NamedTuple):
    """What :meth:`CardinalityGuard.admit_batch` decided for one batch."""

    admitted: list[int]  # ids of new series to create, in first-seen order
    keep: np.ndarray | None  # bool per row, None when every row stays
    refused: dict[int, tuple[str, int]]  # id -> (reason, rows), first-seen order


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
    directory counts what it holds with :meth:`count_existing`.  A histogram
    counts one slot per label set under ``<name>_bucket`` (all its buckets),
    one under ``<name>_sum`` and one under ``<name>_count``.  The guard is
    not thread-safe; the engine calls it under its own lock, or from one
    thread.

    Examples
    --------
    >>> guard = CardinalityGuard(per_metric=2, total=10)
    >>> [guard.admit("req_total", {"id": str(i)}) for i in range(3)]
    [True, True, False]
    >>> guard.dropped
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
        self._groups: set[tuple[str, tuple[tuple[str, str], ...]]] = set()

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
            Its label set.
        n_samples : int
            Samples dropped with the series when it is refused.

        Returns
        -------
        bool
            True when the series fits (or joins a bucket group that holds a
            slot); the caller must then create it.  False when it was
            refused: its samples are counted as dropped.

        Raises
        ------
        CardinalityLimitError
            When refused and ``on_limit`` is ``"raise"``.
        """
        return self.claim(name, labels, n_samples) is None

    def claim(
        self, name: str, labels: Mapping[str, str], n_samples: int = 1
    ) -> str | None:
        """:meth:`admit`, telling why a series was refused.

        Returns
        -------
        str or None
            None when the series fits; else the reason its samples are
            counted under, :data:`PER_METRIC` or :data:`TOTAL`.
        """
        group = _bucket_group(name, labels)
        if group is not None and group in self._groups:
            return None
        held = self.series.get(name, 0)
        if held < self.limit_of(name) and self.n_series < self.total:
            self.series[name] = held + 1
            self.n_series += 1
            if group is not None:
                self._groups.add(group)
            return None
        reason = PER_METRIC if held >= self.limit_of(name) else TOTAL
        self._refuse(name, labels, reason, n_samples)
        return reason

    def release(self, name: str, labels: Mapping[str, str]) -> None:
        """Give back the slot of a series the caller removed.

        For histogram buckets the first release of a group frees its slot;
        releasing its other buckets does nothing more.
        """
        group = _bucket_group(name, labels)
        if group is not None:
            if group not in self._groups:
                return
            self._groups.discard(group)
        held = self.series.get(name, 0)
        if held <= 1:
            self.series.pop(name, None)
        else:
            self.series[name] = held - 1
        self.n_series -= min(held, 1)

    def count_existing(self, index: SeriesIndex) -> None:
        """Count the series of ``index`` as held, limits or not (on reopening)."""
        for sid in index:
            name, labels = index.name(sid), index.labels(sid)
            group = _bucket_group(name, labels)
            if group is not None:
                if group in self._groups:
                    continue
                self._groups.add(group)
            self.series[name] = self.series.get(name, 0) + 1
            self.n_series += 1

    # --- a batch at a time ---------------------------------------------------------

    def admit_batch(
        self,
        series_ids: np.ndarray,
        index: SeriesIndex,
        known: Container[int],
    ) -> Admission:
        """Admit the new series of a sample batch; say which rows to keep.

        Parameters
        ----------
        series_ids : ndarray of uint64, shape (n,)
            The batch's ``series_id`` column.
        index : SeriesIndex
            Names and labels of the batch's series; may hold more.
        known : container of int
            Series the caller holds already (its own index).

        Returns
        -------
        Admission
            ``admitted``: ids of the series admitted, which the caller must
            now create; ``keep``: False on the rows of refused series (their
            samples counted as dropped), or None when every row may stay;
            ``refused``: the reason and the number of rows of each refused
            series.

        Notes
        -----
        Only ids of the batch are looked at, so the cost follows the batch,
        not the index.  New series are admitted in the order they first
        appear.  Ids neither known nor in ``index`` are left to the caller.
        """
        uniq, first, counts = np.unique(
            series_ids, return_index=True, return_counts=True
        )
        order = np.argsort(first, kind="stable")
        admitted: list[int] = []
        refused: dict[int, tuple[str, int]] = {}
        for sid, n in zip(uniq[order].tolist(), counts[order].tolist()):
            if sid in known or sid not in index:
                continue
            reason = self.claim(index.name(sid), index.labels(sid), n)
            if reason is None:
                admitted.append(sid)
            else:
                refused[sid] = (reason, n)
        if not refused:
            return Admission(admitted, None, refused)
        keep = ~np.isin(series_ids, np.fromiter(refused, np.uint64, len(refused)))
        return Admission(admitted, keep, refused)

    # --- reporting -----------------------------------------------------------------

    def _refuse(
        self, name: str, labels: Mapping[str, str], reason: str, n: int
    ) -> None:
        # A refusal past the first of a metric only counts: it is the path a
        # runaway label takes a million times, so it builds no message.
        if self.on_limit == "raise":
            raise CardinalityLimitError(
                self._message(name, labels, reason).removesuffix("; sample dropped")
            )
        if n:
            key = (name, reason)
            self.dropped[key] = self.dropped.get(key, 0) + n
        if name not in self._warned:
            self._warned.add(name)
            message = self._message(name, labels, reason)
            logger.warning(
                "%s (later samples of this metric are counted, not logged)", message
            )
            warnings.warn(message, CardinalityWarning, stacklevel=3)

    def limit_text(self, name: str, reason: str) -> str:
        """The limit a series of ``name`` refused for ``reason`` would exceed,
        in words: ``the limit of 10000 series`` (per metric) or ``the total
        limit of 1000000 series``."""
        if reason == PER_METRIC:
            return f"the limit of {self.limit_of(name)} series"
        return f"the total limit of {self.total} series"

    def _message(self, name: str, labels: Mapping[str, str], reason: str) -> str:
        return (
            f"metric {name!r}: label set {dict(labels)!r} would exceed "
            f"{self.limit_text(name, reason)}; sample dropped"
        )


def _bucket_group(
    name: str, labels: Mapping[str, str]
) -> tuple[str, tuple[tuple[str, str], ...]] | None:
    """The key shared by the buckets of one histogram series, or None."""
    if not name.endswith("_bucket") or "le" not in labels:
        return None
    return name, tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
