"""The plug-in path: a per-sample update function, compiled by Numba, as a detector.

A researcher writes one function in plain Python::

    def update(state, ts, value):
        ...  # read and change state in place
        return raw_score

with ``state`` a float64 array of the series' own memory (``float64[:]``),
``ts`` the sample's time (int64 milliseconds) and ``value`` its value
(float64, never NaN), returning a float: how anomalous the sample is, higher
meaning more, 0 meaning not at all.  :func:`register_numba` compiles it with
Numba (a function already compiled with ``numba.njit`` is taken as it is),
runs it over each series of a sample batch inside one compiled loop and
registers the result in the detector registry under a name, so that
``create(name)``, ``obscore eval nab --detector name`` and the config's
``detectors.default`` can use it.

What obscore adds around the user's function:

- one state per series, a copy of the initial state given at registration;
- NaN values are not passed to the function: they score NaN and leave the
  state as it was;
- the raw score ``r`` is normalised to ``|r| / (|r| + threshold)`` in [0, 1],
  so ``threshold`` (a raw score) maps to 0.5, the alerting threshold; a raw
  score of +-inf gives 1 and a NaN raw score (say, during a warm-up) gives 0;
- scoring is causal and chunk-proof by construction: each sample is scored
  with the state its series had after the samples before it.

The Numba options of this module live in :data:`NUMBA_OPTIONS`.  Numba is
imported when a detector is first compiled; without it the error names the
``numba`` extra.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from obscore.detect.base import register, split_series
from obscore.errors import ConfigError

# The one place for the Numba options of the plug-in path.  No fastmath: the
# compiled loop tests for NaN, and fastmath would let it assume there is none.
# ``cache`` applies where the function lives in a file Numba can write a cache
# beside; a function typed into a REPL is compiled without it.
NUMBA_OPTIONS: dict[str, bool] = {"nopython": True, "nogil": True, "cache": True}

# compiled (update, loop) by (user function, options): a function registered
# twice, or detectors made many times from one registration, compile once
_COMPILED: dict[tuple[Any, tuple[tuple[str, bool], ...]], tuple[Any, Any]] = {}


def _numba():
    try:
        import numba
    except ImportError:
        raise ImportError(
            "plug-in detectors are compiled by Numba, which is not installed; "
            "install the numba extra: pip install 'obscore[numba]'"
        ) from None
    return numba


def is_jitted(update: Any) -> bool:
    """Whether ``update`` is already a Numba dispatcher (``numba.njit`` output)."""
    return hasattr(update, "py_func") and hasattr(update, "signatures")


def _can_cache(func: Callable[..., Any]) -> bool:
    code = getattr(func, "__code__", None)
    return code is not None and os.path.isfile(code.co_filename)


def compile_update(
    update: Callable[..., float], options: dict[str, bool] | None = None
) -> tuple[Any, Any]:
    """The compiled update function and the compiled loop that drives it.

    Parameters
    ----------
    update : callable
        ``update(state: float64[:], ts: int64, value: float64) -> float``, in
        plain Python or already compiled by Numba (then used as it is).
    options : dict, optional
        Numba options for a plain function; default :data:`NUMBA_OPTIONS`.

    Returns
    -------
    (dispatcher, dispatcher)
        The compiled update and the loop ``loop(update, state, ts, values,
        out, threshold)``; both are kept per ``(update, options)``.

    Raises
    ------
    ImportError
        If Numba is not installed.
    """
    opts = dict(NUMBA_OPTIONS if options is None else options)
    key = (update, tuple(sorted(opts.items())))
    hit = _COMPILED.get(key)
    if hit is not None:
        return hit
    numba = _numba()
    if is_jitted(update):
        compiled = update
    else:
        if opts.get("cache") and not _can_cache(update):
            opts["cache"] = False
        compiled = numba.jit(**opts)(update)
    # The loop is never cached: its signature holds the user's function, so a
    # cache index beside this file would name every plug-in module run on the
    # machine, and loading it fails (ModuleNotFoundError) in any process that
    # cannot import one of them, such as a run from another directory.
    loop_opts = {**NUMBA_OPTIONS, **opts, "cache": False}
    loop = numba.jit(**loop_opts)(_plugin_loop)
    _COMPILED[key] = (compiled, loop)
    return compiled, loop


def _plugin_loop(update, state, ts, values, out, threshold):
    """Score each sample of one series with ``update``; compiled by Numba."""
    for i in range(len(values)):
        v = values[i]
        if v != v:
            out[i] = np.nan
            continue
        r = abs(update(state, ts[i], v))
        if r != r:
            out[i] = 0.0
        elif r == np.inf:
            out[i] = 1.0
        else:
            out[i] = r / (r + threshold)
    return len(values)


class NumbaDetector:
    """A detector made from a per-sample update function; see the module docstring.

    Parameters
    ----------
    name : str
        The detector's name (its registry name when made by
        :func:`register_numba`).
    update : callable
        ``update(state, ts, value) -> raw score``, plain Python or jitted.
    initial_state : array-like of float64, or int
        The state of a new series (copied), or its length (zeros).
    threshold : float
        The raw score that maps to 0.5, > 0.
    options : dict, optional
        Numba options; default :data:`NUMBA_OPTIONS`.

    Raises
    ------
    ConfigError
        If ``threshold`` is not positive or the initial state is not a
        non-empty one-dimensional array.

    Notes
    -----
    The detector pickles with its states and the update function (by
    reference, like any function); the compiled code is not pickled but
    found again, or compiled, on the first scoring after unpickling.
    """

    def __init__(
        self,
        name: str,
        update: Callable[..., float],
        initial_state: Any,
        threshold: float = 1.0,
        options: dict[str, bool] | None = None,
    ) -> None:
        if not (isinstance(threshold, (int, float)) and threshold > 0 and math.isfinite(threshold)):
            raise ConfigError(
                f"plug-in detector {name!r}: threshold={threshold!r} is out of range; "
                f"expected a finite number > 0"
            )
        if isinstance(initial_state, (int, np.integer)):
            initial_state = np.zeros(int(initial_state))
        initial = np.array(initial_state, dtype=np.float64)
        if initial.ndim != 1 or len(initial) == 0:
            raise ConfigError(
                f"plug-in detector {name!r}: the initial state must be a non-empty "
                f"1-d float64 array, got shape {initial.shape}"
            )
        self.name = name
        self.update_function = update
        self.initial_state = initial
        self.threshold = float(threshold)
        self.options = dict(NUMBA_OPTIONS if options is None else options)
        self._states: dict[int, np.ndarray] = {}

    def scores(self, batch: Any) -> np.ndarray:
        """Scores per row in [0, 1] (NaN for NaN values), learning as it goes."""
        compiled, loop = compile_update(self.update_function, self.options)
        n = batch.num_rows if hasattr(batch, "num_rows") else len(batch)
        out = np.full(n, np.nan)
        for sid, rows, ts, values in split_series(batch):
            state = self._states.get(sid)
            if state is None:
                state = self._states[sid] = self.initial_state.copy()
            scored = np.empty(len(values))
            loop(compiled, state, ts.astype(np.int64, copy=False), values, scored, self.threshold)
            out[rows] = scored
        return out

    def update(self, batch: Any) -> None:
        self.scores(batch)

    def score(self, batch: Any) -> pa.Array:
        return pa.array(self.scores(batch), type=pa.float64())


# --- the example of docs/detectors.md: a user's z-score, written in plain Python ---

EXAMPLE_WINDOW = 30


def example_window_zscore(state, ts, value):
    """A z-score against the last 30 samples: the plug-in example of the docs.

    ``state`` holds ``[count, mean, m2, next slot, the last 30 values...]``
    (34 float64); the moments of the window are kept up to date by adding
    the new value and removing the one it replaces.  The standard deviation
    is floored at ``1e-9 * max(1, |mean|)``, so a constant window followed by
    a different value gives a large, finite z.  Not registered by default.
    """
    n, mean, m2 = state[0], state[1], state[2]
    z = 0.0
    if n >= 2:
        std = max(math.sqrt(max(m2, 0.0) / (n - 1)), 1e-9 * max(1.0, abs(mean)))
        z = (value - mean) / std
    slot = int(state[3])
    if n == EXAMPLE_WINDOW:  # the window is full: remove the oldest value
        old = state[4 + slot]
        shrunk = mean - (old - mean) / (n - 1)
        m2 -= (old - mean) * (old - shrunk)
        mean, n = shrunk, n - 1
    state[4 + slot] = value
    state[3] = (slot + 1) % EXAMPLE_WINDOW
    n += 1
    delta = value - mean
    mean += delta / n
    state[0], state[1], state[2] = n, mean, m2 + delta * (value - mean)
    return z


def register_numba(
    name: str,
    update: Callable[..., float],
    initial_state: Any,
    threshold: float = 1.0,
    options: dict[str, bool] | None = None,
) -> Callable[..., NumbaDetector]:
    """Register a per-sample update function as the detector ``name``.

    Parameters
    ----------
    name : str
        Registry name; an existing name is replaced.
    update, initial_state, threshold, options
        As for :class:`NumbaDetector`; ``threshold`` and ``options`` are the
        defaults of the detectors made, which ``create(name, threshold=...)``
        may override.

    Returns
    -------
    callable
        The registered factory: ``factory(**overrides) -> NumbaDetector``.

    Raises
    ------
    ConfigError
        If the parameters are invalid (checked here, not at first use).

    Examples
    --------
    A z-score against everything seen so far (Welford's running moments):

    >>> import numpy as np
    >>> from obscore.detect import create
    >>> from obscore.model import sample_table
    >>> def running_z(state, ts, value):
    ...     n, mean, m2 = state[0], state[1], state[2]
    ...     z = 0.0
    ...     if n >= 2 and m2 > 0:
    ...         z = (value - mean) / np.sqrt(m2 / (n - 1))
    ...     n += 1
    ...     delta = value - mean
    ...     mean += delta / n
    ...     state[0], state[1], state[2] = n, mean, m2 + delta * (value - mean)
    ...     return z
    >>> _ = register_numba("running_z", running_z, np.zeros(3), threshold=4.0)
    >>> values = np.r_[np.sin(np.arange(99.0)), 40.0]
    >>> batch = sample_table(np.zeros(100, np.uint64), np.arange(100) * 1000, values)
    >>> scores = create("running_z").score(batch).to_numpy()
    >>> bool(scores[:-1].max() < 0.5 < scores[-1])
    True
    """
    NumbaDetector(name, update, initial_state, threshold, options)  # validate now

    def factory(**overrides: Any) -> NumbaDetector:
        params = {"threshold": threshold, "options": options, **overrides}
        return NumbaDetector(name, update, initial_state, **params)

    factory.__name__ = f"numba_{name}"
    factory.__doc__ = f"Plug-in detector {name!r} from {getattr(update, '__name__', update)!r}."
    return register(name, factory)
