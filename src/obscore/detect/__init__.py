"""Detectors: the protocol, the registry and the built-in detectors."""

from __future__ import annotations

from obscore.detect.base import Detector, create, register, registered
from obscore.detect.ensemble import DefaultDetector
from obscore.detect.iforest import IsolationForestDetector
from obscore.detect.novelty import NoveltyDetector as NoveltyDetector
from obscore.detect.robust import RobustZScoreDetector
from obscore.detect.zscore import ZScoreDetector

__all__ = [
    "DefaultDetector",
    "Detector",
    "IsolationForestDetector",
    "RobustZScoreDetector",
    "ZScoreDetector",
    "create",
    "register",
    "registered",
]
