"""obscore: an embeddable, high-performance observability engine."""

from __future__ import annotations

import logging

from obscore.errors import (
    CardinalityLimitError,
    ConfigError,
    InvalidSampleError,
    ObscoreError,
    ObscoreWarning,
    SchemaError,
    UnknownMetricError,
)

logging.getLogger("obscore").addHandler(logging.NullHandler())

__version__ = "0.1.0"


def __getattr__(name: str):
    # The engine pulls in every floor; import it on first use only.
    if name == "Engine":
        from obscore.engine import Engine

        return Engine
    raise AttributeError(f"module 'obscore' has no attribute {name!r}")


__all__ = [
    "CardinalityLimitError",
    "ConfigError",
    "Engine",
    "InvalidSampleError",
    "ObscoreError",
    "ObscoreWarning",
    "SchemaError",
    "UnknownMetricError",
]
