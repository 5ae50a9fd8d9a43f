"""Fixtures for the kernel tests: seeded generators and the shared test data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

# tests/reference.py holds the oracles; make it importable as `reference`
# whether or not a tests/conftest.py puts tests/ on the path.
_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

SHARED_DATA = Path(
    os.environ.get("OBSCORE_SHARED_DATA", _TESTS.parents[1] / "shared" / "data")
)


@pytest.fixture
def rng() -> np.random.Generator:
    """A generator with a fixed seed, fresh for each test."""
    return np.random.default_rng(20240611)


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder (../shared/data); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}; set OBSCORE_SHARED_DATA")
    return SHARED_DATA
