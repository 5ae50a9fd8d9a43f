"""One default detector: the registry, the config, obscore detect and eval nab agree."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from obscore.cli import main
from obscore.config import load_config
from obscore.detect import DEFAULT_DETECTOR, create
from obscore.detect.evaluate import NabCorpus, evaluate_nab, load_nab
from obscore.detect.stream import default_detector, detect_stream
from obscore.errors import ConfigError
from obscore.ingest.files import read_csv


def _series_csv(path, n=400):
    rng = np.random.default_rng(3)
    values = 10 + rng.normal(size=n)
    values[-1] = 60.0
    rows = ["timestamp,value"] + [
        f"2014-04-{1 + i // 288:02d} {(i % 288) // 12:02d}:{(i % 12) * 5:02d}:00,{float(v)!r}"
        for i, v in enumerate(values)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def _scores(out_file):
    with out_file.open() as fh:
        return np.array([float(r["anomaly_score"]) for r in csv.DictReader(fh)])


def test_registry_config_and_obscore_detect_share_one_default():
    assert DEFAULT_DETECTOR == "novelty"
    assert load_config().detector == "novelty"
    assert load_config().detect_threshold == 0.5
    assert create("default").name == default_detector().name == "novelty"


def test_config_chooses_the_detector_of_obscore_detect(tmp_path):
    src = _series_csv(tmp_path / "a.csv")
    conf = tmp_path / "obscore.toml"
    conf.write_text('[detectors]\ndefault = "zscore"\n')
    out = str(tmp_path / "z")
    assert main(["detect", str(src), "--out", out, "--config", str(conf), "-q"]) == 0
    assert main(["detect", str(src), "--out", str(tmp_path / "d"), "-q"]) == 0
    series = read_csv(src)
    for folder, name in (("z", "zscore"), ("d", "novelty")):
        expected = detect_stream(series.ts, series.values, create(name)).scores
        np.testing.assert_allclose(_scores(tmp_path / folder / "a.csv"), expected, atol=1e-6)


def test_detect_refuses_an_unknown_detector_naming_the_registered_ones(tmp_path, capsys):
    src = _series_csv(tmp_path / "a.csv")
    assert main(["detect", str(src), "--out", str(tmp_path / "o"), "--detector", "nope", "-q"]) == 2
    assert "no detector named 'nope'; registered: default" in capsys.readouterr().err


def test_a_detector_name_that_is_not_a_string_is_a_config_error(tmp_path):
    conf = tmp_path / "obscore.toml"
    conf.write_text("[detectors]\ndefault = 3\n")
    with pytest.raises(ConfigError, match=r"detectors.default: expected a detector name, got 3"):
        load_config(conf)


def test_detect_alerts_at_the_configured_threshold(tmp_path):
    src = _series_csv(tmp_path / "a.csv")
    conf = tmp_path / "obscore.toml"
    conf.write_text("[detectors]\nthreshold = 0.999\n")
    out = str(tmp_path / "o")
    assert main(["detect", str(src), "--out", out, "--config", str(conf), "-q"]) == 0
    with (tmp_path / "o" / "a.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert not any(r["alert"] == "1" for r in rows if float(r["anomaly_score"]) <= 0.999)


def test_eval_nab_of_default_is_the_novelty_detector_beside_published_scores(shared_data):
    nab = load_nab(shared_data / "nab")
    names = ["artificialWithAnomaly/art_daily_jumpsup.csv"]
    corpus = NabCorpus(
        nab.root, names, {n: nab.ts[n] for n in names}, {n: nab.layouts[n] for n in names},
        nab.profiles, nab.thresholds,
    )
    via_default = evaluate_nab(corpus, "default", alert_thresholds=(0.5,))
    via_novelty = evaluate_nab(corpus, "novelty", alert_thresholds=(0.5,))
    assert via_default["profiles"]["standard"] == via_novelty["profiles"]["standard"]
    assert set(via_default["published"]) >= {"ARTime"}


def _tiny_nab(shared_data, root):
    """A NAB folder of one file: the real file, its windows, the real profiles."""
    name = "artificialWithAnomaly/art_daily_jumpsup.csv"
    nab = shared_data / "nab"
    (root / "data" / "artificialWithAnomaly").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "config").mkdir()
    shutil.copy(nab / "data" / name, root / "data" / name)
    shutil.copy(nab / "config" / "profiles.json", root / "config" / "profiles.json")
    windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
    (root / "labels" / "combined_windows.json").write_text(json.dumps({name: windows[name]}))
    return root


def test_eval_nab_without_a_flag_runs_the_configured_detector(shared_data, tmp_path, capsys):
    root = _tiny_nab(shared_data, tmp_path / "nab")
    assert main(["eval", "nab", str(root), "-q"]) == 0
    assert "NAB, detector 'novelty', declared threshold 0.5" in capsys.readouterr().out
    conf = tmp_path / "obscore.toml"
    conf.write_text('[detectors]\ndefault = "zscore"\nthreshold = 0.7\n')
    assert main(["eval", "nab", str(root), "--config", str(conf), "-q"]) == 0
    assert "NAB, detector 'zscore', declared threshold 0.7" in capsys.readouterr().out
