"""Detectors registered for the tests of this folder only.

``user_zscore`` is the plug-in example of docs/detectors.md, compiled by Numba,
so that the contract and failure-mode tests run on the plug-in path too.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from obscore.detect.plugin import EXAMPLE_WINDOW, example_window_zscore, register_numba

if importlib.util.find_spec("numba") is not None:
    register_numba(
        "user_zscore", example_window_zscore, np.zeros(4 + EXAMPLE_WINDOW), threshold=3.0
    )
