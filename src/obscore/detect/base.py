"""The detector protocol and the registry of detectors by name.

A detector learns from sample batches and scores them: one float64 per row,
in [0, 1], higher meaning more anomalous; 0.5 is the alerting threshold of
the built-in detectors.  Scoring is causal: the score of a row depends only on
the rows before it (of the same series), and a streaming detector learns each
row after it has scored it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from obscore.model import as_sample_table

_REGISTRY: dict[str, Callable[..., Detector]] = {}

# The detector the name ``default`` stands for: the best NAB score of the
# built-in detectors (novelty 68.9 on the standard profile, the z-score
# ensemble -42.3).  ``obscore detect`` and ``obscore eval nab`` use the
# configured ``detectors.default``, which ships as this name.
DEFAULT_DETECTOR = "novelty"


@runtime_checkable
class Detector(Protocol):
    """What every detector offers; see the module docstring for the contract."""

    name: str

    def update(self, batch: Any) -> None:
        """Learn from a sample batch without scoring it."""

    def score(self, batch: Any) -> pa.Array:
        """Score each row of a sample batch, in row order (float64 in [0, 1])."""


def register(name: str, factory: Callable[..., Detector] | None = None):
    """Register a detector factory under ``name``; usable as a decorator."""

    def _do(f: Callable[..., Detector]) -> Callable[..., Detector]:
        _REGISTRY[name] = f
        return f

    return _do(factory) if factory is not None else _do


def create(name: str, **params: Any) -> Detector:
    """A new detector by registered name (``default``: :data:`DEFAULT_DETECTOR`).

    Raises
    ------
    KeyError
        If no detector is registered under ``name``; the message lists the
        registered names.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"no detector named {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        ) from None
    return factory(**params)


def registered() -> list[str]:
    """The registered detector names, sorted."""
    return sorted(_REGISTRY)


@register("default")
def _default(**params: Any) -> Detector:
    return create(DEFAULT_DETECTOR, **params)


def z_to_score(z: np.ndarray, threshold: float) -> np.ndarray:
    """Map |z| to [0, 1] so that |z| == threshold gives 0.5; NaN stays NaN."""
    a = np.abs(z)
    return a / (a + threshold)


def split_series(batch: Any):
    """Yield ``(series_id, row_positions, ts, values)`` per series of a batch."""
    table = as_sample_table(batch)
    ids = table["series_id"].to_numpy()
    ts = table["ts"].to_numpy()
    values = table["value"].to_numpy()
    if len(ids) == 0:
        return
    uniq, inverse = np.unique(ids, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    for k, sid in enumerate(uniq.tolist()):
        rows = order[bounds[k] : bounds[k + 1]]
        yield sid, rows, np.ascontiguousarray(ts[rows]), np.ascontiguousarray(values[rows])
