"""RCA evaluation: the metrics on handmade ranks, the layouts, the real datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from obscore.diagnose.evaluate import (
    RcaCase,
    accuracy_at_k,
    average_accuracy,
    chance_accuracy,
    chance_average_accuracy,
    evaluate_cases,
    evaluate_rca,
    read_petshop,
    read_sockshop,
)
from obscore.diagnose.rank import RankConfig, metric_direction, rank_candidates

# --- metrics on handmade ranks ---------------------------------------------


def test_accuracy_at_k_on_handmade_ranks():
    ranks = [1, 2, None, 4]  # None: the cause was not among the candidates
    assert accuracy_at_k(ranks, 1) == 0.25
    assert accuracy_at_k(ranks, 3) == 0.5
    assert accuracy_at_k(ranks, 5) == 0.75
    # Avg@5 = mean(AC@1..AC@5) = (0.25 + 0.5 + 0.5 + 0.75 + 0.75) / 5
    assert average_accuracy(ranks, 5) == pytest.approx(0.55)
    assert np.isnan(accuracy_at_k([], 1))


def test_chance_levels_on_handmade_case_sizes():
    sizes = [4, 10]
    assert chance_accuracy(sizes, 1) == pytest.approx((1 / 4 + 1 / 10) / 2)
    assert chance_accuracy(sizes, 3) == pytest.approx((3 / 4 + 3 / 10) / 2)
    # k = 1..5: 4 candidates give .25 .5 .75 1 1, ten give .1 .. .5
    assert chance_average_accuracy(sizes, 5) == pytest.approx(0.5)


@pytest.mark.parametrize("func", [accuracy_at_k, chance_accuracy])
def test_k_below_one_is_refused(func):
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        func([1, 2], 0)


# --- the ranking on tiny synthetic incidents -----------------------------------


def _tiny_case(rng, *, graph: bool) -> RcaCase:
    """Three services; "db" slows down and its caller "api" slows with it."""
    keys = [
        ("web", "latency"),
        ("api", "latency"),
        ("db", "latency"),
        ("db", "requests"),
    ]
    normal = 10 + rng.normal(size=(200, 4))
    incident = 10 + rng.normal(size=(12, 4))
    incident[4:, 2] += 60  # the cause
    incident[4:, 1] += 80  # its caller, moving even more (it adds its own time)
    return RcaCase(
        name="tiny",
        cause="db",
        normal=normal,
        incident=incident,
        keys=keys,
        onset_row=4,
        graph={"web": ["api"], "api": ["db"], "db": []} if graph else None,
        target="web" if graph else None,
    )


def test_rank_candidates_uses_the_call_graph(rng):
    case = _tiny_case(rng, graph=True)
    ranking = rank_candidates(
        case.normal,
        case.incident,
        case.keys,
        onset_row=4,
        graph=case.graph,
        target="api",
    )
    assert ranking.names[0] == "db"
    assert ranking.candidates[0].metric == "latency"
    assert ranking.candidates[0].evidence["callees_quiet"] == pytest.approx(1.0)
    assert ranking.candidates[1].evidence["callees_quiet"] < 0.1  # api's callee moved
    total = sum(c.confidence for c in ranking.candidates) + ranking.confidence_none
    assert total == pytest.approx(1.0)


def test_rank_candidates_without_graph_follows_the_anomaly(rng):
    case = _tiny_case(rng, graph=False)
    ranking = rank_candidates(case.normal, case.incident, case.keys, onset_row=4)
    assert ranking.names[:2] == ["api", "db"]
    assert "callees_quiet" not in ranking.candidates[0].evidence


def test_rank_candidates_on_a_quiet_window_gives_no_cause_most_confidence(rng):
    keys = [(f"svc{k}", "latency") for k in range(6)]
    ranking = rank_candidates(rng.normal(size=(300, 6)), rng.normal(size=(10, 6)), keys)
    assert ranking.confidence_none > 0.5
    assert max(c.confidence for c in ranking.candidates) < 0.2


def test_rank_candidates_ignores_shifts_present_before_the_onset(rng):
    keys = [("a", "latency"), ("b", "latency")]
    incident = rng.normal(size=(10, 2))
    incident[:, 0] += 50  # shifted all along, not by the incident
    incident[3:, 1] += 20
    ranking = rank_candidates(rng.normal(size=(300, 2)), incident, keys, onset_row=3)
    assert ranking.names[0] == "b"
    # a's 50-sigma shift nets out against its lead-in: below even odds
    assert ranking.candidates[1].evidence["anomalous"] < 0.5


def test_rank_candidates_counts_only_the_harmful_direction(rng):
    keys = [("a", "availability"), ("b", "latency"), ("c", "requests")]
    incident = rng.normal(size=(10, 3))
    incident[:, 0] += 30  # availability up: good news
    incident[:, 1] -= 30  # latency down: good news
    incident[:, 2] -= 8  # traffic either way, at half weight
    ranking = rank_candidates(rng.normal(size=(300, 3)), incident, keys)
    assert ranking.names[0] == "c"
    assert [metric_direction(m) for _, m in keys] == [-1, 1, 0]


def test_rank_candidates_skips_series_too_sparse_in_the_normal_period(rng):
    keys = [("a", "latency"), ("b", "latency")]
    normal = rng.normal(size=(300, 2))
    normal[10:, 0] = np.nan  # seen in 10 of 300 normal rows
    incident = rng.normal(size=(10, 2))
    incident[:, 0] += 100
    incident[:, 1] += 10
    ranking = rank_candidates(normal, incident, keys, config=RankConfig())
    assert ranking.names[0] == "b"


@pytest.mark.parametrize(
    ("normal_shape", "incident_shape", "onset_row", "message"),
    [
        ((50, 3), (10, 2), 0, r"normal must have shape \(n_normal, 2\), got \(50, 3\)"),
        ((50, 2), (10,), 0, r"incident must have shape \(n_rows, 2\), got \(10,\)"),
        ((50, 2), (10, 2), 10, "onset_row must be in 0..9, got 10"),
    ],
)
def test_rank_candidates_rejects_bad_shapes(
    normal_shape, incident_shape, onset_row, message
):
    with pytest.raises(ValueError, match=message):
        rank_candidates(
            np.zeros(normal_shape),
            np.zeros(incident_shape),
            [("a", "x"), ("b", "y")],
            onset_row=onset_row,
        )


def test_evaluate_cases_scores_tiny_cases(rng):
    cases = [_tiny_case(rng, graph=True), _tiny_case(rng, graph=False)]
    report = evaluate_cases(cases, "tiny")
    assert [c.rank for c in report.cases] == [1, 2]
    assert (report.ac1, report.ac3) == (0.5, 1.0)
    assert report.chance_ac1 == pytest.approx(1 / 3)
    assert report.noissue_max_confidence is None
    json.dumps(report.to_dict())  # plain values only


# --- the two folder layouts ------------------------------------------------


def _write_sockshop(root: Path, rng) -> None:
    for rep in ("1", "2"):
        folder = root / "queue-master-cpu" / rep
        folder.mkdir(parents=True)
        for name, shift in (("normal.csv", 0.0), ("anomalous.csv", 90.0)):
            frame = pd.DataFrame(
                {
                    "time": np.arange(60) + 1_650_000_000,
                    "queue-master_cpu": 1 + rng.random(60) + shift,
                    "carts_cpu": 1 + rng.random(60),
                    "carts_lat_50": 5 + rng.random(60),
                }
            )
            frame.to_csv(folder / name, index=False)


def test_read_sockshop_layout_and_evaluate(tmp_path, rng):
    _write_sockshop(tmp_path, rng)
    cases = read_sockshop(tmp_path)
    assert [c.name for c in cases] == ["queue-master-cpu/1", "queue-master-cpu/2"]
    assert cases[0].cause == "queue-master"
    assert cases[0].keys == [
        ("queue-master", "cpu"),
        ("carts", "cpu"),
        ("carts", "lat_50"),
    ]
    report = evaluate_rca(tmp_path, "sockshop1")
    assert report.ac1 == 1.0 and report.chance_ac1 == 0.5


def _write_petshop(root: Path, rng) -> None:
    nodes = ["front", "svc", "db"]
    adjacency = pd.DataFrame(0.0, index=nodes, columns=nodes)
    adjacency.loc["front", "svc"] = adjacency.loc["svc", "db"] = 1.0
    root.mkdir()
    adjacency.to_csv(root / "graph.csv")
    columns = pd.MultiIndex.from_tuples(
        [(n, "latency", "Average") for n in nodes]
        + [(n, "requests", "Sum") for n in nodes],
        names=["microservice", "metric", "statistic"],
    )

    def write(folder: Path, ts: np.ndarray, values: np.ndarray) -> None:
        folder.mkdir(parents=True)
        frame = pd.DataFrame(
            values, index=pd.Index(ts, name="unix_timestamp"), columns=columns
        )
        frame.to_csv(folder / "metrics.csv")

    write(
        root / "noissue",
        1_700_000_000 + 300.0 * np.arange(100),
        1 + rng.random((100, 6)),
    )
    ts = 1_690_000_000 + 300.0 * np.arange(5)
    values = 1 + rng.random((5, 6))
    values[2:, [0, 1, 2]] += [30.0, 30.0, 25.0]  # db slows; its callers follow
    write(root / "test" / "issue_0", ts, values)
    target = {
        "target": {
            "node": "front",
            "metric": "latency",
            "agg": "Average",
            "timestamp": ts[1] + 200,
        },
        "root_cause": {"node": "db", "metric": None},
    }
    (root / "test" / "issue_0" / "target.json").write_text(json.dumps(target))


def test_read_petshop_layout_and_evaluate(tmp_path, rng):
    _write_petshop(tmp_path / "scenario", rng)
    cases = read_petshop(tmp_path)  # the dataset folder, or one scenario
    assert [c.name for c in cases] == ["scenario/test/issue_0"]
    assert [c.name for c in read_petshop(tmp_path / "scenario")] == [
        "scenario/test/issue_0"
    ]
    case = cases[0]
    assert case.cause == "db" and case.target == "front"
    assert case.onset_row == 1  # the row whose 5-minute step holds the timestamp
    assert case.graph == {"front": ["svc"], "svc": ["db"], "db": []}
    assert case.keys[0] == ("front", "latency/Average")
    report = evaluate_rca(tmp_path, "petshop")
    assert report.cases[0].rank == 1
    assert len(report.noissue) == 5  # rows 50, 60, .., 90 of 100


def test_read_layouts_refuse_an_empty_folder(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="no <service>-<fault>/<rep>/anomalous.csv"
    ):
        read_sockshop(tmp_path)
    with pytest.raises(FileNotFoundError, match="no <scenario>/graph.csv"):
        read_petshop(tmp_path)
    with pytest.raises(
        ValueError, match="dataset must be 'sockshop1' or 'petshop', got 'x'"
    ):
        evaluate_rca(tmp_path, "x")  # type: ignore[arg-type]


# --- the real datasets (figures as measured with RankConfig()) ----------------


def test_evaluate_rca_on_sockshop1(shared_data):
    report = evaluate_rca(shared_data / "rca" / "sockshop1", "sockshop1")
    assert len(report.cases) == 20
    # measured: every cause ranked first (target Avg@5 >= 0.99); confidence
    # 0.3 to 0.58, none at 0.8
    assert (report.ac1, report.ac3, report.avg5) == (1.0, 1.0, 1.0)
    assert all(c.rank == 1 for c in report.cases if c.confidence >= 0.8)
    assert report.chance_ac1 == pytest.approx(1 / 13)
    assert report.chance_avg5 == pytest.approx(3 / 13)


def test_evaluate_rca_on_petshop(shared_data):
    report = evaluate_rca(shared_data / "rca" / "petshop", "petshop")
    assert len(report.cases) == 26
    # measured: 25 of 26 first (target >= 0.85; 23 with the earlier weighted
    # score); the miss is a train issue where PetSearch's load balancer, a
    # leaf of the call graph, takes first place and PetSearch second
    assert report.ac1 == pytest.approx(25 / 26)
    assert report.ac3 == 1.0
    assert report.avg5 == pytest.approx(0.992, abs=1e-3)
    assert report.chance_ac1 == pytest.approx(1 / 42)  # 42 nodes in the metrics
    missed = {c.name for c in report.cases if c.rank != 1}
    assert missed <= {f"low_traffic/train/issue_{k}" for k in range(8)}
    # 30 no-fault windows: measured maximum confidence 0.66 (target < 0.8)
    assert len(report.noissue) == 30
    assert report.noissue_max_confidence < 0.7
    # calibration: 2 issues at >= 0.8, both right
    confident = [c for c in report.cases if c.confidence >= 0.8]
    assert all(c.rank == 1 for c in confident)
