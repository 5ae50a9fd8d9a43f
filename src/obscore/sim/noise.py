"""Random draws for the simulator, one independent stream per named component.

Every draw has a shape fixed by the platform and the time grid, never by the
incidents. Counts are made from pre-drawn uniforms or normals by inversion,
so adding an incident changes the samples it touches and nothing else: a run
with incidents equals the same seed's run without them outside the incident
windows.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import signal, special


class NoiseSource:
    """Seeded streams of random numbers, one per component name.

    Parameters
    ----------
    seed : int
        Non-negative; the same seed and name give the same numbers.
    """

    __slots__ = ("_seed",)

    def __init__(self, seed: int):
        self._seed = int(seed)

    def generator(self, name: str) -> np.random.Generator:
        """A fresh generator for ``name``, independent of every other name."""
        key = zlib.crc32(name.encode())
        return np.random.default_rng(np.random.SeedSequence([self._seed, key]))

    def normal(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Standard normal draws, float64 of ``shape``."""
        return self.generator(name).standard_normal(shape)

    def uniform(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform draws in [0, 1), float64 of ``shape``."""
        return self.generator(name).random(shape)

    def ar1(
        self, name: str, shape: tuple[int, ...], sd: float, tau_s: float, step_s: float
    ) -> np.ndarray:
        """Stationary AR(1) noise along the last axis.

        Parameters
        ----------
        name : str
        shape : tuple of int
            Time is the last axis.
        sd : float
            Standard deviation of each value.
        tau_s : float
            Correlation time in seconds; the lag-one correlation is
            ``exp(-step_s / tau_s)``, so the noise looks alike at any step.
        step_s : float
            Step width in seconds.

        Returns
        -------
        numpy.ndarray
            float64 of ``shape``, mean 0.
        """
        phi = float(np.exp(-step_s / tau_s))
        eps = self.normal(name, shape)
        gain = np.sqrt(1.0 - phi * phi)
        # Dividing the first innovation by the gain starts the recursion in its
        # stationary distribution instead of at zero.
        eps[..., :1] /= gain
        return sd * signal.lfilter([gain], [1.0, -phi], eps, axis=-1)


def poisson_from_uniform(lam: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Poisson counts with means ``lam`` by inverting the CDF at ``u``.

    Parameters
    ----------
    lam : numpy.ndarray
        Means, float64; negative and NaN values count as 0.
    u : numpy.ndarray
        Uniforms in [0, 1), same shape.

    Returns
    -------
    numpy.ndarray
        float64 whole numbers, same shape.

    Notes
    -----
    Exact below a mean of 50; above it a normal quantile with a skew
    correction (Cornish-Fisher), off by at most one count in practice.
    """
    lam = np.nan_to_num(np.maximum(lam, 0.0), nan=0.0)
    out = np.empty(lam.shape)
    big = lam >= 50.0

    lb = lam[big]
    z = special.ndtri(u[big])
    approx = lb + np.sqrt(lb) * z + (z * z - 1.0) / 6.0
    out[big] = np.maximum(np.floor(approx + 0.5), 0.0)

    ls = lam[~big]
    us = u[~big]
    prob = np.exp(-ls)
    cdf = prob.copy()
    k = np.zeros(ls.shape)
    todo = np.flatnonzero(us > cdf)
    step = 0
    # The mean is below 50, so 200 terms reach the far tail; the cap only
    # guards against a uniform that rounding keeps above the summed CDF.
    while todo.size and step < 200:
        step += 1
        prob[todo] *= ls[todo] / step
        cdf[todo] += prob[todo]
        k[todo] = step
        todo = todo[us[todo] > cdf[todo]]
    out[~big] = k
    return out


def binomial_from_normal(n: np.ndarray, q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Binomial counts from a normal draw ``z``, rounded and kept in [0, n].

    The normal approximation is rough for tiny ``n`` but always valid: the
    result never leaves [0, n], which is what keeps bucket counts cumulative.
    """
    q = np.clip(q, 0.0, 1.0)
    mean = n * q
    sd = np.sqrt(n * q * (1.0 - q))
    return np.clip(np.floor(mean + sd * z + 0.5), 0.0, n)
