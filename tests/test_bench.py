"""The regression guard of ``obscore bench``: ratios against a baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from obscore import bench
from obscore.cli import main


def _result(name: str, ours: float, reference: float) -> bench.Result:
    return bench.Result(name, 1000, ours, reference)


def test_check_flags_a_ratio_more_than_25_percent_below_baseline():
    results = {
        "zscore": _result("zscore", 700.0, 100.0),  # 7.0 against 8.0: within 25%
        "rollup": _result("rollup", 500.0, 100.0),  # 5.0 against 10.0: regression
    }
    problems = bench.check(results, {"zscore": 8.0, "rollup": 10.0, "ringbuf": 4.0})
    assert problems == ["rollup: ratio 5.00 is below 7.50 (baseline 10.00 less 25%)"]


def test_check_passes_at_the_floor_and_ignores_skipped_kernels():
    results = {"zscore": _result("zscore", 600.0, 100.0)}
    assert bench.check(results, {"zscore": 8.0, "iforest": 6.0}) == []


def test_baseline_round_trips_through_the_json_of_obscore_bench(tmp_path):
    path = tmp_path / "baseline.json"
    results = {"histogram": _result("histogram", 40.0, 10.0)}
    path.write_text(json.dumps({k: r.as_dict() for k, r in results.items()}))
    assert bench.load_baseline(path) == {"histogram": 4.0}


def test_baseline_uses_this_machines_profile_or_the_lowest_of_all(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"profiles": {
        "fast box": {"ratios": {"histogram": {"ratio": 14.0}, "zscore": {"ratio": 5.0}}},
        "slow box": {"ratios": {"histogram": {"ratio": 10.0}, "zscore": {"ratio": 6.0}}},
    }}))
    assert bench.load_baseline(path, profile="fast box") == {"histogram": 14.0, "zscore": 5.0}
    # a machine of an unknown kind is held to what every known kind met
    assert bench.load_baseline(path, profile="new box") == {"histogram": 10.0, "zscore": 5.0}


def test_save_baseline_replaces_only_this_profile(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"histogram": {"ours": 8.0, "reference": 1.0, "ratio": 8.0}}))
    results = {"histogram": _result("histogram", 120.0, 10.0)}
    assert bench.save_baseline(path, results, profile="this box") == "this box"
    assert bench.load_baseline(path, profile="this box") == {"histogram": 12.0}
    # the flat file it replaced is kept as the profile "unnamed"
    assert bench.load_baseline(path, profile="unnamed") == {"histogram": 8.0}
    assert bench.machine_profile()  # names at least the architecture


def test_committed_baseline_names_known_kernels():
    root = Path(__file__).resolve().parents[1]
    baseline = bench.load_baseline(root / "benchmarks" / "baseline.json")
    assert set(baseline) <= set(bench.CASES)
    assert all(ratio > 0 for ratio in baseline.values())


def test_every_case_agrees_with_its_reference_on_small_data():
    # The correctness half of each benchmark, at a size that runs in a test.
    for case in bench.CASES.values():
        if case.check is None or bench.missing_packages(case):
            continue
        case.check(case.setup(20_000))


def test_bench_command_writes_ratios_and_checks(tmp_path, capsys):
    out = tmp_path / "ratios.json"
    assert main(["bench", "-q", "--kernels", "histogram", "--repeat", "1", "--json", str(out)]) == 0
    ratios = json.loads(out.read_text())
    assert set(ratios) == {"histogram"} and ratios["histogram"]["ratio"] > 0
    # A baseline far above any real ratio must fail the check.
    high = tmp_path / "high.json"
    high.write_text(json.dumps({"histogram": {"ratio": 1e6}}))
    assert main(["bench", "-q", "--kernels", "histogram", "--repeat", "1", "--check", str(high)]) == 1
    assert "REGRESSION histogram: ratio" in capsys.readouterr().out


def test_bench_rejects_an_unknown_kernel():
    with pytest.raises(KeyError, match="unknown benchmark 'nope'"):
        bench.run(["nope"])
