"""Helpers for the kernel tests; the seeded ``rng`` comes from tests/conftest.py."""

from __future__ import annotations

import doctest
import sys
from pathlib import Path
from types import ModuleType

import pytest

# tests/reference.py holds the oracles; make it importable as `reference`
# (pytest puts only this folder on sys.path for these test modules).
_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))


@pytest.fixture
def run_doctests():
    """Run the docstring examples of a compiled module; return (failed, attempted).

    pytest's doctest collection does not reach into extension modules, so
    the examples are found object by object here.
    """

    def run(module: ModuleType) -> tuple[int, int]:
        finder = doctest.DocTestFinder(exclude_empty=True)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for name in sorted(dir(module)):
            obj = getattr(module, name)
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            globs = dict(vars(module))  # examples see the module namespace
            for test in finder.find(obj, name=f"{module.__name__}.{name}", globs=globs):
                runner.run(test)
        failed, attempted = runner.summarize(verbose=False)
        return failed, attempted

    return run
