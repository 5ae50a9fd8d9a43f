"""Adaptive sampling of histogram observations.

Recording every request latency costs a random draw and a bucket search per
request; most of the time a tenth of them tells the same story.
:class:`AdaptiveSampler` keeps each observation with probability
``baseline_rate`` (0.1 by default) and switches to ``burst_rate`` (1.0) while
something is happening: the observation rate jumped above its recent
baseline, or the engine asked for full detail (say, on a latency anomaly).

:class:`SampledHistogram` adds every kept observation with weight
``1 / rate``, so its bucket counts, count and sum are unbiased estimates of
the unsampled ones (Horvitz-Thompson), whatever the rate was at the time.
It also keeps the sum of squared weights per bucket, from which the
standard error of each bucket count follows.

The burst trigger
-----------------
Time is cut into windows (``window_ms``, 1 s by default).  When a window
closes, its observation rate (estimated from the kept observations and
their weights) is compared with the baseline, an exponentially weighted
mean of the rates of calm windows (half-life ``half_life_windows``):

- a burst starts when the rate exceeds ``enter_factor`` (3) times the
  baseline, counting at least ``min_count`` observations in the window, once
  ``warmup_windows`` windows have set the baseline.  A window whose count
  passes that bar before it closes starts the burst at once;
- a burst ends after ``exit_windows`` (3) windows in a row below
  ``exit_factor`` (1.5) times the baseline, and not before ``min_burst_ms``.
  The gap between the two factors and the hold keep it from flapping;
- a burst that lasts ``max_burst_ms`` ends and its rate becomes the new
  baseline: traffic that stays high is the new normal, not a burst;
- the baseline does not learn from windows spent in a rate burst.

:meth:`AdaptiveSampler.trigger` forces a burst for a while (or until
:meth:`AdaptiveSampler.release`), independently of the rate.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from obscore._native.histogram import HistogramCell
from obscore.errors import ConfigError

logger = logging.getLogger(__name__)

# A kept observation asks the sampler to look at the clock with this
# probability, so about every 64th kept observation; reusing the draw that
# decided to keep it costs one comparison.
_TICK_ODDS = 1.0 / 64
# observe_many hands this many values at a time, ticking in between, so a
# burst that starts inside a long batch takes effect inside it.
_CHUNK = 1 << 14


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Burst(NamedTuple):
    """One burst: when it started and ended (ms of the sampler's clock), and why."""

    start_ms: int
    end_ms: int | None
    reason: str


class AdaptiveSampler:
    """Decide the sampling rate of histogram observations.

    Parameters
    ----------
    baseline_rate : float
        Probability of keeping an observation outside bursts, in (0, 1].
    burst_rate : float
        Probability during a burst, in [baseline_rate, 1].
    window_ms : int
        Width of the windows over which the observation rate is measured.
    enter_factor : float
        A window above this multiple of the baseline rate starts a burst.
    exit_factor : float
        Windows below this multiple (at most ``enter_factor``) count towards
        ending it.
    exit_windows : int
        Calm windows in a row that end a burst.
    half_life_windows : float
        Half-life of the baseline's exponentially weighted mean, in windows.
    warmup_windows : int
        Windows measured before a rate burst can start.
    min_count : float
        Fewest (estimated) observations in a window for it to start a burst.
    min_burst_ms : int
        Shortest rate burst.
    max_burst_ms : int
        Longest rate burst; its rate then becomes the baseline.
    clock : callable, optional
        Returns the time in ms; ``time.monotonic_ns() // 1_000_000`` by
        default.  Tests pass a simulated clock.
    seed : int, optional
        Seeds the random draws of the histograms made by :meth:`histogram`.

    Notes
    -----
    The sampler reads the clock about every 64th kept observation, not on
    every call, so a window closes on the first such look after its end (or
    on a call to :meth:`tick`).  At low rates call :meth:`tick` from a timer
    to keep the windows on time.  Methods may be called from several
    threads; the histograms' hot paths take no lock.

    Examples
    --------
    >>> sampler = AdaptiveSampler(seed=7)
    >>> hist = sampler.histogram([10.0, 50.0, 100.0])
    >>> hist.observe(42.0)
    >>> sampler.rate, sampler.in_burst
    (0.1, False)
    >>> sampler.trigger(reason="latency anomaly")
    >>> sampler.rate
    1.0
    """

    def __init__(
        self,
        baseline_rate: float = 0.1,
        burst_rate: float = 1.0,
        *,
        window_ms: int = 1_000,
        enter_factor: float = 3.0,
        exit_factor: float = 1.5,
        exit_windows: int = 3,
        half_life_windows: float = 30.0,
        warmup_windows: int = 5,
        min_count: float = 30.0,
        min_burst_ms: int = 5_000,
        max_burst_ms: int = 300_000,
        clock: Callable[[], int] | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0.0 < baseline_rate <= 1.0:
            raise ConfigError(f"baseline_rate must be in (0, 1], got {baseline_rate!r}")
        if not baseline_rate <= burst_rate <= 1.0:
            raise ConfigError(
                f"burst_rate must be in [baseline_rate = {baseline_rate!r}, 1], "
                f"got {burst_rate!r}"
            )
        if not 1.0 <= exit_factor <= enter_factor:
            raise ConfigError(
                f"factors must satisfy 1 <= exit_factor <= enter_factor, got "
                f"exit_factor {exit_factor!r} and enter_factor {enter_factor!r}"
            )
        for name, value in (
            ("window_ms", window_ms),
            ("exit_windows", exit_windows),
            ("half_life_windows", half_life_windows),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")
        if not 0 <= min_burst_ms <= max_burst_ms:
            raise ConfigError(
                f"need 0 <= min_burst_ms <= max_burst_ms, got {min_burst_ms!r} "
                f"and {max_burst_ms!r}"
            )
        self.baseline_rate = float(baseline_rate)
        self.burst_rate = float(burst_rate)
        self.window_ms = int(window_ms)
        self.enter_factor = float(enter_factor)
        self.exit_factor = float(exit_factor)
        self.exit_windows = int(exit_windows)
        self.half_life_windows = float(half_life_windows)
        self.warmup_windows = int(warmup_windows)
        self.min_count = float(min_count)
        self.min_burst_ms = int(min_burst_ms)
        self.max_burst_ms = int(max_burst_ms)
        self.clock = clock if clock is not None else _monotonic_ms
        self.bursts: deque[Burst] = deque(maxlen=256)

        self._seeds = np.random.SeedSequence(seed)
        self._lock = threading.Lock()
        self._histograms: weakref.WeakSet[SampledHistogram] = weakref.WeakSet()
        self._weight = 1.0 / self.baseline_rate
        self._baseline: float | None = None  # observations per second
        self._n_windows = 0
        self._window_start = self.clock()
        self._window_count = 0.0  # estimated observations so far in the window
        self._rate_burst_start: int | None = None
        self._calm_windows = 0
        self._forced_until: float | None = None
        self._forced_reason = ""

    # --- state ---------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """Probability of keeping an observation now."""
        return 1.0 / self._weight

    @property
    def weight(self) -> float:
        """Weight of an observation kept now, ``1 / rate``."""
        return self._weight

    @property
    def in_burst(self) -> bool:
        """A burst is on: observations are kept at ``burst_rate``."""
        return bool(self.bursts) and self.bursts[-1].end_ms is None

    @property
    def baseline(self) -> float | None:
        """Baseline observation rate (per second), None before the first window."""
        return self._baseline

    def _burst_reason(self) -> str | None:
        if self._forced_until is not None:
            return self._forced_reason
        if self._rate_burst_start is not None:
            return "rate"
        return None

    # --- histograms ----------------------------------------------------------------

    def histogram(
        self, bounds: Sequence[float], *, seed: int | None = None
    ) -> SampledHistogram:
        """A new histogram sampled by this sampler.

        Parameters
        ----------
        bounds : sequence of float
            Finite, strictly increasing bucket upper bounds; ``+Inf`` is implied.
        seed : int, optional
            Seed of its random draws; by default the next one derived from the
            sampler's seed.
        """
        if seed is None:
            seed = int(self._seeds.spawn(1)[0].generate_state(1)[0])
        return SampledHistogram(bounds, self, seed=seed)

    def _attach(self, hist: SampledHistogram) -> None:
        with self._lock:
            self._histograms.add(hist)
            hist._weight = self._weight

    # --- the trigger ---------------------------------------------------------------

    def trigger(
        self, duration_ms: int | None = None, *, reason: str = "external"
    ) -> None:
        """Keep observations at ``burst_rate`` for a while, or until released.

        Parameters
        ----------
        duration_ms : int, optional
            How long the burst lasts from now; None holds it until
            :meth:`release`.  A second call extends or shortens it.
        reason : str
            Recorded in :attr:`bursts` and the log, e.g. ``"latency anomaly"``.
        """
        with self._lock:
            now = self.clock()
            self._forced_until = math.inf if duration_ms is None else now + duration_ms
            self._forced_reason = reason
            self._apply(now)

    def release(self) -> None:
        """End a burst started by :meth:`trigger` (a rate burst goes on)."""
        with self._lock:
            self._forced_until = None
            self._apply(self.clock())

    # --- measuring the rate --------------------------------------------------------

    def tick(self, now_ms: int | None = None) -> None:
        """Look at the clock: close the window when it is over, re-decide the rate.

        Histograms do this on about every 64th kept observation; call it from
        a timer when observations are few.  Returns at once when another
        thread is ticking.
        """
        self._tick(now_ms, None)

    def _tick(self, now_ms: int | None, hist: SampledHistogram | None) -> None:
        if not self._lock.acquire(blocking=False):
            return
        try:
            now = self.clock() if now_ms is None else now_ms
            if hist is not None:
                self._window_count += hist._take_count()
            elapsed = now - self._window_start
            if elapsed >= self.window_ms:
                for h in self._histograms:
                    self._window_count += h._take_count()
                self._close_window(now, elapsed)
            elif self._would_enter(self._window_count * 1000.0 / self.window_ms):
                self._rate_burst_start = now
                self._calm_windows = 0
            self._apply(now)
        finally:
            self._lock.release()

    def _would_enter(self, rate: float) -> bool:
        return (
            self._rate_burst_start is None
            and self._baseline is not None
            and self._n_windows >= self.warmup_windows
            and self._window_count >= self.min_count
            and rate > self.enter_factor * self._baseline
        )

    def _close_window(self, now: int, elapsed: int) -> None:
        rate = self._window_count * 1000.0 / elapsed
        start = self._rate_burst_start
        if start is not None:
            assert self._baseline is not None
            calm = rate < self.exit_factor * self._baseline
            self._calm_windows = self._calm_windows + 1 if calm else 0
            held = now - start
            if held >= self.max_burst_ms:
                logger.info(
                    "sampling: rate %.1f/s held for %d ms; taken as the new baseline",
                    rate,
                    held,
                )
                self._baseline = rate
                self._rate_burst_start = None
            elif self._calm_windows >= self.exit_windows and held >= self.min_burst_ms:
                self._rate_burst_start = None
        elif self._would_enter(rate):
            self._rate_burst_start = now
            self._calm_windows = 0
        else:
            if self._baseline is None:
                self._baseline = rate
            else:
                # A plain mean over the first windows, so that one noisy
                # window does not set the baseline for the next half-life.
                alpha = 1.0 - 0.5 ** (
                    elapsed / (self.half_life_windows * self.window_ms)
                )
                alpha = max(alpha, 1.0 / (self._n_windows + 1))
                self._baseline += alpha * (rate - self._baseline)
            self._n_windows += 1
        self._window_start = now
        self._window_count = 0.0

    def _apply(self, now: int) -> None:
        """Set the weight that the state calls for, on every histogram."""
        if self._forced_until is not None and now >= self._forced_until:
            self._forced_until = None
        reason = self._burst_reason()
        weight = 1.0 / (self.burst_rate if reason is not None else self.baseline_rate)
        was_burst = self.bursts and self.bursts[-1].end_ms is None
        if reason is not None and not was_burst:
            self.bursts.append(Burst(now, None, reason))
            logger.info(
                "sampling: burst started (%s), rate %.3g", reason, self.burst_rate
            )
        elif reason is None and was_burst:
            self.bursts[-1] = self.bursts[-1]._replace(end_ms=now)
            logger.info("sampling: burst ended, rate %.3g", self.baseline_rate)
        if weight != self._weight:
            self._weight = weight
            for h in self._histograms:
                h._weight = weight


class SampledHistogram:
    """A classic histogram fed through an :class:`AdaptiveSampler`.

    Use :meth:`AdaptiveSampler.histogram` to make one.

    Parameters
    ----------
    bounds : sequence of float
        Finite, strictly increasing bucket upper bounds; ``+Inf`` is implied.
    sampler : AdaptiveSampler
        Decides the rate; it is told about every kept observation in bulk.
    seed : int, optional
        Seed of the random draws.

    Notes
    -----
    Estimates, not counts: :attr:`bucket_counts`, :attr:`count` and
    :attr:`sum` are floats, unbiased whatever the rate was at each
    observation.  :attr:`standard_errors` gives, per bucket, the estimated
    standard error of its count.  NaN observations are sampled like the
    others, then counted in :attr:`n_nan` and left out of every bucket and
    of the sum.  A value goes to the first bucket whose bound is >= the
    value (Prometheus' ``le``); +Inf goes to the last bucket and -Inf to
    the first.  Not thread-safe: observe one histogram from one thread.
    """

    __slots__ = (
        "__weakref__",
        "_add",
        "_add_square",
        "_bounds",
        "_bounds_array",
        "_cell",
        "_random",
        "_reported",
        "_rng",
        "_sampler",
        "_squares",
        "_weight",
    )

    def __init__(
        self,
        bounds: Sequence[float],
        sampler: AdaptiveSampler,
        *,
        seed: int | None = None,
    ) -> None:
        bounds_array = np.array(bounds, dtype=np.float64)
        if (
            bounds_array.ndim != 1
            or not np.isfinite(bounds_array).all()
            or (np.diff(bounds_array) <= 0).any()
        ):
            raise ConfigError(
                f"bounds must be finite and strictly increasing, got {list(bounds)!r}"
            )
        self._bounds = bounds_array.tolist()
        self._bounds_array = bounds_array
        # Kept observations go to two kernel cells: one adds the weights w
        # (counts, sum, NaN tally), the other w * w (for the standard errors).
        self._cell = HistogramCell(bounds_array)
        self._squares = HistogramCell(bounds_array)
        self._add = self._cell.observe_weighted
        self._add_square = self._squares.observe_weighted
        self._reported = 0.0
        self._random = random.Random(seed).random
        self._rng = np.random.default_rng(seed)
        self._sampler = sampler
        self._weight = sampler.weight
        sampler._attach(self)

    def observe(self, value: float) -> None:
        """Record one value, or skip it, as the sampler's current rate says."""
        w = self._weight
        x = self._random() * w
        if x >= 1.0:
            return
        self._add(value, w)  # NaN: counted in n_nan, left out of the rest
        self._add_square(value, w * w)
        if x < _TICK_ODDS:
            self._sampler._tick(None, self)

    def observe_many(self, values: Sequence[float] | np.ndarray) -> None:
        """Record a batch of values, each kept or skipped as by :meth:`observe`.

        Parameters
        ----------
        values : array-like of float64, shape (n,)
            Observed values; NaN counted in :attr:`n_nan`, as by :meth:`observe`.
        """
        values = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            w = self._weight
            kept = np.ascontiguousarray(chunk[self._rng.random(len(chunk)) * w < 1.0])
            self._cell.observe_many(kept, np.full(len(kept), w))
            self._squares.observe_many(kept, np.full(len(kept), w * w))
            self._sampler._tick(None, self)

    def _take_count(self) -> float:
        """Estimated observations since the last call (the sampler's tally)."""
        total = self._cell.count
        delta, self._reported = total - self._reported, total
        return delta

    # --- estimates -----------------------------------------------------------------

    @property
    def bounds(self) -> tuple[float, ...]:
        return tuple(self._bounds)

    @property
    def bucket_counts(self) -> np.ndarray:
        """Estimated count per bucket (not cumulative), float64, last is +Inf."""
        return np.array(self._cell.bucket_counts, dtype=np.float64)

    @property
    def cumulative_counts(self) -> np.ndarray:
        """Estimated ``_bucket`` values, float64, as Prometheus writes them."""
        return np.cumsum(self._cell.bucket_counts)

    @property
    def count(self) -> float:
        """Estimated number of (non-NaN) observations."""
        return float(self._cell.count)

    @property
    def sum(self) -> float:
        """Estimated sum of the (non-NaN) observations."""
        return float(self._cell.sum)

    @property
    def n_nan(self) -> int:
        """NaN observations kept (not weighted); in no bucket and not in the sum."""
        return int(self._cell.n_nan)

    @property
    def standard_errors(self) -> np.ndarray:
        """Estimated standard error of each bucket count, float64.

        The sum over kept observations of ``w * (w - 1)`` estimates the
        variance of a bucket's count; it is 0 for buckets filled at rate 1.
        """
        counts = np.asarray(self._cell.bucket_counts, dtype=np.float64)
        squares = np.asarray(self._squares.bucket_counts, dtype=np.float64)
        return np.sqrt(np.maximum(squares - counts, 0.0))
