"""Detectors: the protocol, the registry and the built-in detectors."""

from __future__ import annotations

from obscore.detect.base import DEFAULT_DETECTOR, Detector, create, register, registered
from obscore.detect.ensemble import ZScoreEnsembleDetector
from obscore.detect.iforest import IsolationForestDetector
from obscore.detect.novelty import NoveltyDetector
from obscore.detect.plugin import NumbaDetector, register_numba
from obscore.detect.robust import RobustZScoreDetector
from obscore.detect.zscore import ZScoreDetector

__all__ = [
    "DEFAULT_DETECTOR",
    "Detector",
    "IsolationForestDetector",
    "NoveltyDetector",
    "NumbaDetector",
    "RobustZScoreDetector",
    "ZScoreDetector",
    "ZScoreEnsembleDetector",
    "create",
    "register",
    "register_numba",
    "registered",
]
