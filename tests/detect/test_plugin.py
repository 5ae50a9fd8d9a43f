"""The plug-in path: a plain Python update function compiled by Numba."""

from __future__ import annotations

import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from obscore.detect import create, registered
from obscore.detect import plugin as plugin_module
from obscore.detect.plugin import (
    EXAMPLE_WINDOW,
    NumbaDetector,
    compile_update,
    example_window_zscore,
    register_numba,
)
from obscore.errors import ConfigError
from obscore.model import sample_table

pytestmark = pytest.mark.numba
numba = pytest.importorskip("numba")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "detectors.md"


def _batch(values, sid=0, step=60_000):
    values = np.asarray(values, dtype=np.float64)
    ts = np.arange(len(values), dtype=np.int64) * step
    return sample_table(np.full(len(values), sid, np.uint64), ts, values)


def last_value_jump(state, ts, value):
    """Raw score: distance from the previous value (state: [seen, previous])."""
    jump = abs(value - state[1]) if state[0] > 0 else 0.0
    state[0], state[1] = 1.0, value
    return jump


def nan_during_warmup(state, ts, value):
    state[0] += 1
    return np.nan if state[0] < 3 else value


def test_user_zscore_is_registered_and_matches_pandas_rolling_moments(rng):
    # conftest.py registers the docs example as user_zscore
    assert "user_zscore" in registered()
    values = rng.normal(size=2000) * 1e3 + 5e4
    values[1500] += 25e3
    ours = create("user_zscore").score(_batch(values)).to_numpy()
    roll = pd.Series(values).rolling(EXAMPLE_WINDOW)
    z = (values - roll.mean().shift(1)) / roll.std().shift(1)
    expected = np.abs(z) / (np.abs(z) + 3.0)
    k = EXAMPLE_WINDOW + 1
    np.testing.assert_allclose(ours[k:], expected[k:], rtol=1e-7, atol=1e-9)
    assert ours[1500] > 0.85


def test_raw_scores_are_normalised_at_the_threshold():
    register_numba("jump", last_value_jump, np.zeros(2), threshold=2.0)
    s = create("jump").score(_batch([0.0, 2.0, 2.0, -4.0, np.inf])).to_numpy()
    np.testing.assert_allclose(s, [0.0, 0.5, 0.0, 6 / 8, 1.0])
    assert create("jump", threshold=6.0).score(_batch([0.0, 6.0])).to_numpy()[1] == 0.5


def test_nan_values_score_nan_and_leave_the_state_alone():
    det = NumbaDetector("jump", last_value_jump, np.zeros(2), threshold=1.0)
    s = det.score(_batch([1.0, np.nan, np.nan, 3.0])).to_numpy()
    assert np.isnan(s[1:3]).all()
    assert s[3] == pytest.approx(2 / 3)  # the jump from 1, the last real value


def test_a_nan_raw_score_means_no_evidence():
    det = NumbaDetector("warm", nan_during_warmup, np.zeros(1))
    np.testing.assert_array_equal(det.score(_batch([5.0, 5.0, 1.0])).to_numpy(), [0, 0, 0.5])


def test_an_already_jitted_function_is_used_as_it_is():
    jitted = numba.njit(last_value_jump)
    compiled, loop = compile_update(jitted)
    assert compiled is jitted
    plain = NumbaDetector("a", last_value_jump, np.zeros(2)).score(_batch([1.0, 4.0]))
    same = NumbaDetector("b", jitted, np.zeros(2)).score(_batch([1.0, 4.0]))
    assert plain.equals(same)


def test_compiled_code_is_kept_by_function_and_options():
    first = compile_update(last_value_jump)
    assert compile_update(last_value_jump) is first
    other = compile_update(last_value_jump, {"nopython": True, "nogil": True, "cache": False})
    assert other is not first
    assert not any(opts.get("fastmath") for opts in [plugin_module.NUMBA_OPTIONS])


def test_series_keep_their_own_state_and_the_detector_pickles():
    det = NumbaDetector("jump", last_value_jump, np.zeros(2))
    table = sample_table(
        np.array([1, 2, 1, 2], np.uint64), np.array([0, 0, 1, 1]), np.array([0.0, 10.0, 1.0, 10.0])
    )
    np.testing.assert_allclose(det.score(table).to_numpy(), [0.0, 0.0, 0.5, 0.0])
    clone = pickle.loads(pickle.dumps(det))
    later = _batch([4.0], sid=1)
    assert det.score(later).equals(clone.score(later))


def test_bad_parameters_are_refused_at_registration():
    with pytest.raises(ConfigError, match=r"plug-in detector 'bad': threshold=0 is out of range"):
        register_numba("bad", last_value_jump, np.zeros(2), threshold=0)
    with pytest.raises(ConfigError, match=r"plug-in detector 'bad': the initial state must be"):
        register_numba("bad", last_value_jump, np.zeros((2, 2)))
    assert "bad" not in registered()


def test_missing_numba_names_the_extra(monkeypatch):
    monkeypatch.setattr(plugin_module, "_COMPILED", {})
    monkeypatch.setitem(sys.modules, "numba", None)
    det = NumbaDetector("jump", last_value_jump, np.zeros(2))
    with pytest.raises(ImportError, match=r"install the numba extra"):
        det.score(_batch([1.0]))


def test_the_docs_example_runs_and_is_the_shipped_example(rng):
    text = DOCS.read_text("utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "register_numba" in b)
    # a module of its own, from no file (so Numba keeps no disk cache of it)
    space: dict = {"__name__": "docs_detectors_example"}
    exec(compile(example, f"<{DOCS.name}>", "exec"), space)  # noqa: S102 - our own docs
    values = rng.normal(size=500)
    values[400] = 30.0
    docs = create("my_zscore").score(_batch(values)).to_numpy()
    shipped = create("user_zscore").score(_batch(values)).to_numpy()
    np.testing.assert_allclose(docs, shipped, atol=1e-12)


_JUMP_MODULE = '''
import numpy as np
from obscore.detect import register_numba


def jump(state, ts, value):
    r = abs(value - state[0]) if state[1] else 0.0
    state[0], state[1] = value, 1.0
    return r


register_numba("{name}", jump, np.zeros(2), threshold=2.0)
'''


def test_plugins_run_from_two_folders_do_not_break_each_other(tmp_path):
    """A compiled loop cached beside obscore would name the first folder's module,
    and the second run, which cannot import it, failed loading that cache."""
    import subprocess
    import sys

    rows = ["timestamp,value"] + [f"2014-04-01 00:{m:02d}:00,{m % 2}" for m in range(20)]
    for name in ("jump_a", "jump_b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / f"{name}_mod.py").write_text(_JUMP_MODULE.format(name=name))
        (folder / "a.csv").write_text("\n".join(rows) + "\n")
        run = subprocess.run(
            [sys.executable, "-m", "obscore.cli", "detect", "a.csv", "--out", "out",
             "-q", "--plugin", f"{name}_mod", "--detector", name],
            cwd=folder, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        scored = (folder / "out" / "a.csv").read_text().splitlines()
        assert scored[2].split(",")[2] == "0.333333"  # |1 - 0| / (1 + 2)
