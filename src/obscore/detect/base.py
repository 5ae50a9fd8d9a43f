"""The detector protocol and the registry of detectors by name.

A detector learns from sample batches and scores them: one float64 per row,
in [0, 1], higher meaning more anomalous; 0.5 is the alerting threshold of
the built-in detectors.  Scoring is causal: the score of a row depends only on
the rows before it (of the same series), and a streaming detector learns each
row after it has scored it.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from obscore.errors import ConfigError
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


def load_plugins(modules: Iterable[str]) -> list[str]:
    """Import the modules that register a researcher's detectors; the names they added.

    Parameters
    ----------
    modules : iterable of str
        Each a module importable from the current directory or the path
        (``my_detectors``, ``lab.detectors``), or the path of a Python file
        (``detectors/mine.py``).  A module imported before is not run again.

    Raises
    ------
    ConfigError
        Naming the module and what went wrong: not found, or the error its
        code raised while importing.
    """
    before = set(_REGISTRY)
    for spec in modules:
        try:
            if spec.endswith(".py") or os.sep in spec:
                _import_file(Path(spec))
            else:
                if "" not in sys.path and os.getcwd() not in sys.path:
                    sys.path.insert(0, os.getcwd())  # as `python -m` would
                importlib.import_module(spec)
        except ConfigError:
            raise
        except ModuleNotFoundError as exc:
            raise ConfigError(f"detector plug-in {spec!r}: no module named {exc.name!r}") from exc
        except Exception as exc:
            raise ConfigError(
                f"detector plug-in {spec!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
    return sorted(set(_REGISTRY) - before)


def _import_file(path: Path) -> None:
    """Import a file as the module its name says, from its folder (as Numba's cache expects)."""
    if not path.is_file():
        raise ConfigError(f"detector plug-in {str(path)!r}: no such file")
    folder, name = str(path.resolve().parent), path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() != path.resolve():
            raise ConfigError(
                f"detector plug-in {str(path)!r}: a module named {name!r} is imported "
                "already; rename the file"
            )
        return
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.import_module(name)
    if Path(getattr(module, "__file__", "") or "").resolve() != path.resolve():
        raise ConfigError(
            f"detector plug-in {str(path)!r}: {name!r} names another module "
            f"({getattr(module, '__file__', 'built in')}); rename the file"
        )


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
