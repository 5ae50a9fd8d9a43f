"""The obscore command, run in-process on real files."""

from __future__ import annotations

import csv

import pytest

from obscore.cli import main


def test_detect_writes_one_row_per_input_row_and_names_bad_lines(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    rows = ["timestamp,value"] + [f"2014-04-01 {h:02d}:{m:02d}:00,{10 + (m % 7) * 0.1}" for h in range(10) for m in range(0, 60, 5)]
    rows.insert(50, "2014-04-01 04:07:00,oops")  # becomes line 51
    rows.append("2014-04-01 10:00:00,500")  # a spike at the end
    (src / "a.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(["detect", str(src), "--out", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    assert f"{src / 'a.csv'} line 51: value 'oops' is not a number; row skipped" in captured.err
    with (out / "a.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(rows) - 2  # header and the bad row
    assert list(table[0]) == ["timestamp", "value", "anomaly_score", "alert"]
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in table)
    assert table[-1]["alert"] == "1"
    assert "ALERT" in captured.out


@pytest.mark.slow
def test_demo_runs_end_to_end_and_writes_a_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--hours", "12", "-q"]) == 0
    text = capsys.readouterr().out
    assert "Detected 3 of 3 injected incidents" in text
    report = (out / "report.md").read_text()
    assert "## Injected incidents and their diagnosis" in report
    assert len(list(out.glob("incident_*.png"))) == 3
    html = (out / "report.html").read_text(encoding="utf-8")  # the dashboard as a file
    assert '<script id="report-data" type="application/json">' in html
    assert "/static/" not in html
