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


def _csv(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


SPIKE = "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,500\n"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[metrics]]\nname = "x"\nkind = "guage"\n',
         ", metric 'x': 'guage' is not a valid metric kind; expected one of "
         "['counter', 'gauge', 'histogram']"),
        ('[store]\nout_of_order_window = "-5m"\n',
         ", store.out_of_order_window: '-5m' is not a duration; use e.g. '5m' or '300s'"),
        ("[store\n", ": Expected ']' at the end of a table declaration (at line 1, column 7)"),
        ("[limits]\nseries_per_metrc = 5\n",
         ", limits.series_per_metrc: unknown key; did you mean 'series_per_metric'? "
         "(known: series_per_metric, series_total)"),
    ],
    ids=["bad_kind", "negative_duration", "broken_toml", "unknown_key"],
)
def test_a_bad_config_is_one_line_and_exit_2_not_a_traceback(tmp_path, capsys, toml, message):
    conf = _csv(tmp_path / "bad.toml", toml)
    src = _csv(tmp_path / "spike.csv", SPIKE)
    for argv in (["detect", str(src), "--out", str(tmp_path / "o"), "-q"], ["ingest", "--dry-run", str(src)]):
        assert main([*argv, "--config", str(conf)]) == 2
        command = argv[0]
        assert capsys.readouterr().err == f"obscore {command}: {conf}{message}\n"


def test_detect_reports_missing_inputs_and_unusable_out_folders(tmp_path, capsys):
    src = _csv(tmp_path / "spike.csv", SPIKE)
    missing = tmp_path / "doesnotexist.csv"
    assert main(["detect", "-q", str(missing), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == f"{missing}: no such file\n"

    assert main(["detect", "-q", str(src), "--out", str(src)]) == 2
    assert capsys.readouterr().err == f"obscore detect: --out {src} is not a folder\n"
    assert main(["detect", "-q", str(src), "--out", "/proc/nope"]) == 2
    assert capsys.readouterr().err == (
        "obscore detect: --out /proc/nope cannot be made: No such file or directory\n"
    )
    assert main(["detect", "-q", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"obscore detect: --out {tmp_path} would overwrite the input {src}; give another folder\n"
    )
    assert src.read_text() == SPIKE


def test_detect_fails_on_files_without_samples_as_ingest_does(tmp_path, capsys):
    empty = _csv(tmp_path / "empty.csv", "")
    header = _csv(tmp_path / "header.csv", "timestamp,value\n")
    bad = _csv(tmp_path / "bad.csv", "timestamp,value\n2014-04-01 00:00:00,x\nfoo,1\n")
    binary = _csv(tmp_path / "bin.csv", b"timestamp,value\n2014-04-01 00:00:00,1\n\xff\xfe,2\n")
    out = tmp_path / "out"
    for path, err in [
        (empty, f"{empty} line 1: the file is empty; expected a header or rows\n"),
        (header, f"{header}: no samples to score\n"),
        (bad, f"{bad} line 2: value 'x' is not a number; row skipped\n"
              f"{bad} line 3: timestamp 'foo' is not a date, epoch seconds or milliseconds; "
              "row skipped\n"
              f"{bad}: no samples to score: 2 bad rows of 2\n"),
        (binary, f"{binary} line 3: invalid UTF-8 at byte 38\n"),
    ]:
        assert main(["detect", "-q", str(path), "--out", str(out)]) == 2, path
        captured = capsys.readouterr()
        assert captured.err == err
        assert captured.out == f"0 files, 0 alerts, {2 if path == bad else 0} bad rows; results in {out}\n"
        assert not (out / path.name).exists()


def test_detect_caps_the_bad_rows_shown_and_writes_lf_line_endings(tmp_path, capsys):
    from obscore.cli import _PROBLEMS_SHOWN

    rows = [f"{1396310400 + 300 * i},{i % 5}" for i in range(50)] + ["x,1"] * (_PROBLEMS_SHOWN + 7)
    src = _csv(tmp_path / "many.csv", "timestamp,value\n" + "\n".join(rows) + "\n")
    assert main(["detect", "-q", str(src), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == _PROBLEMS_SHOWN + 1
    assert err[0] == (
        f"{src} line 52: timestamp 'x' is not a date, epoch seconds or milliseconds; row skipped"
    )
    assert err[-1] == f"{src}: 7 more bad rows"
    data = (tmp_path / "o" / "many.csv").read_bytes()
    assert b"\r" not in data
    assert data.splitlines()[:2] == [
        b"timestamp,value,anomaly_score,alert", b"2014-04-01 00:00:00,0.0,0.000000,0"
    ]


@pytest.mark.parametrize(
    ("argv", "err"),
    [
        (["eval", "nab", "/nonexistent"],
         "obscore eval: /nonexistent is not a NAB folder: [Errno 2] No such file or directory: "
         "'/nonexistent/labels/combined_windows.json'\n"),
        (["eval", "rca", "--dataset", "petshop", "/nonexistent"],
         "obscore eval: /nonexistent: no such file or directory\n"),
        (["bench", "-q", "--kernels", "nope"],
         "obscore bench: unknown kernels ['nope']; known: iforest, iforest_2threads, zscore, "
         "histogram, histogram_observe, rollup, rollup_polars, ringbuf\n"),
        (["bench", "-q", "--handicap", "zscore=abc"],
         "obscore bench: --handicap 'zscore=abc': expected KERNEL=N with a known kernel and N a "
         "positive integer; known: iforest, iforest_2threads, zscore, histogram, "
         "histogram_observe, rollup, rollup_polars, ringbuf\n"),
        (["bench", "-q", "--kernels", "histogram", "--check", "/nonexistent.json"],
         "obscore bench: --check /nonexistent.json: No such file or directory\n"),
        (["demo", "-q", "--hours", "3"],
         "obscore demo: --hours must be at least 7, got 3: the demo injects 3 incidents of up to "
         "60 min, 60 min apart, after a warm-up of a quarter of the span\n"),
        (["demo", "-q", "--hours", "0"],
         "obscore demo: --hours must be at least 7, got 0: the demo injects 3 incidents of up to "
         "60 min, 60 min apart, after a warm-up of a quarter of the span\n"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_bad_arguments_are_one_line_and_exit_2(capsys, argv, err):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == err
    assert captured.out == ""


def test_eval_nab_refuses_an_unknown_detector_as_detect_does(capsys):
    from obscore.detect import registered

    assert main(["eval", "nab", "--detector", "no_such_detector", "/nonexistent"]) == 2
    known = ", ".join(registered())
    assert capsys.readouterr().err == (
        f"obscore eval: no detector named 'no_such_detector'; registered: {known}\n"
    )


def test_eval_smd_of_a_folder_without_machines_is_one_line(tmp_path, capsys):
    assert main(["eval", "smd", str(tmp_path), "-q"]) == 2
    assert capsys.readouterr().err == (
        f"obscore eval: no SMD machine with train, test and test_label files under {tmp_path}\n"
    )


def test_eval_grouping_runs_the_seeds_asked_for(capsys):
    import json

    assert main(["eval", "grouping", "-", "--cases", "2", "--seed", "37", "--json", "-q"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["runs"] == 2
    assert [r["seed"] for r in result["per_run"]] == [37, 38]
    assert main(["eval", "grouping", "-", "--cases", "1", "--seed", "37", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("grouping over 1 runs (seeds 37-37): ")
    assert lines[-1].startswith("worst run: seed 37, precision ")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cases", "0"], "--cases must be at least 1, got 0"),
        (["--seed", "-1"], "--seed must be 0 or more, got -1"),
    ],
)
def test_eval_grouping_refuses_no_runs_and_negative_seeds(flags, message, capsys):
    assert main(["eval", "grouping", "-", "-q", *flags]) == 2
    assert capsys.readouterr().err == f"obscore eval: {message}\n"


def test_bench_check_reads_a_broken_baseline_before_timing(tmp_path, capsys, monkeypatch):
    from obscore import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("timed before the check"))
    baseline = _csv(tmp_path / "base.json", "{\n")
    assert main(["bench", "-q", "--check", str(baseline)]) == 2
    assert capsys.readouterr().err == (
        f"obscore bench: --check {baseline}: not a baseline file (Expecting property name "
        "enclosed in double quotes: line 2 column 1 (char 2))\n"
    )


@pytest.mark.parametrize("port", ["99999", "-1", "0", "http"])
def test_serve_port_must_be_1_to_65535(capsys, port):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--port", port])
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"obscore serve: error: argument --port: {port!r} is not a port; expected an integer "
        "from 1 to 65535"
    )


def test_serve_prints_one_startup_line(capsys, monkeypatch):
    import obscore.server

    monkeypatch.setattr(obscore.server, "serve", lambda app, host, port, token=None: None)
    assert main(["serve", "--port", "19464"]) == 0
    assert capsys.readouterr().err == "obscore serve: listening on http://127.0.0.1:19464\n"


@pytest.mark.parametrize("command", ["replay", "report"])
def test_a_missing_data_directory_is_named_not_created(command, tmp_path, capsys):
    typo = tmp_path / "obscore-dta"
    assert main([command, "--data", str(typo)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"obscore {command}: data directory {str(typo)!r} does not exist"
    )
    assert not typo.exists()


def test_detect_says_when_a_file_goes_back_in_time(tmp_path, capsys):
    rows = ["timestamp,value"] + [f"2014-04-01 00:{m:02d}:00,{10 + m % 3}" for m in range(60)]
    rows[31], rows[32] = rows[32], rows[31]  # 00:31 before 00:30
    src = tmp_path / "a.csv"
    src.write_text("\n".join(rows) + "\n")
    assert main(["detect", str(src), "--out", str(tmp_path / "out"), "-q"]) == 0
    assert (
        f"{src}: 1 of 60 rows go back in time (the first: 2014-04-01 00:30:00 after "
        "2014-04-01 00:31:00); scored in file order, as a stream arrives"
    ) in capsys.readouterr().err
    assert len((tmp_path / "out" / "a.csv").read_text().splitlines()) == 61


_PLUGIN = '''
import numpy as np
import pyarrow as pa
from obscore.detect import register


class Flat:
    name = "{name}"

    def update(self, batch):
        pass

    def score(self, batch):
        return pa.array(np.zeros(batch.num_rows))


register("{name}", lambda **params: Flat())
'''


def _nab_like(path):
    rows = ["timestamp,value"] + [f"2014-04-01 00:{m:02d}:00,{10 + m % 3}" for m in range(60)]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("how", ["module", "file", "config"])
def test_detect_imports_a_researchers_plugin(how, tmp_path, monkeypatch, capsys):
    import sys

    name = f"flat_{how}"
    (tmp_path / f"{name}_mod.py").write_text(_PLUGIN.format(name=name))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, f"{name}_mod", raising=False)
    csv_path = _nab_like(tmp_path / "a.csv")
    args = ["detect", str(csv_path), "--out", str(tmp_path / "out"), "-q"]
    if how == "module":
        args += ["--plugin", f"{name}_mod", "--detector", name]
    elif how == "file":
        args += ["--plugin", str(tmp_path / f"{name}_mod.py"), "--detector", name]
    else:
        (tmp_path / "c.toml").write_text(
            f'[detectors]\nplugins = ["{name}_mod"]\ndefault = "{name}"\n'
        )
        args += ["--config", str(tmp_path / "c.toml")]
    assert main(args) == 0, capsys.readouterr().err
    rows = (tmp_path / "out" / "a.csv").read_text().splitlines()
    assert len(rows) == 61 and all(r.endswith(",0.000000,0") for r in rows[1:])
    monkeypatch.delitem(sys.modules, f"{name}_mod", raising=False)


def test_a_plugin_that_cannot_be_imported_is_named(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    csv_path = _nab_like(tmp_path / "a.csv")
    base = ["detect", str(csv_path), "--out", str(tmp_path / "out"), "-q"]
    for plugin, message in [
        ("no_such_plugin", "detector plug-in 'no_such_plugin': no module named 'no_such_plugin'"),
        ("gone.py", "detector plug-in 'gone.py': no such file"),
        ("broken_plugin", "detector plug-in 'broken_plugin' failed to import: RuntimeError: boom"),
    ]:
        assert main([*base, "--plugin", plugin]) == 2
        assert capsys.readouterr().err.strip() == f"obscore detect: {message}"
    assert main(["eval", "nab", str(tmp_path), "--plugin", "no_such_plugin"]) == 2
    assert "no module named 'no_such_plugin'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_times_are_seconds_or_milliseconds_as_ingest_reads_them(tmp_path, capsys):
    from obscore import Engine

    data = tmp_path / "d"
    Engine(data).close()
    args = ["event", "--data", str(data), "--service", "db", "--kind", "deploy"]
    assert main([*args, "--at", "1780000000"]) == 0
    assert main([*args, "--at", "1780000000000"]) == 0  # the same time in ms
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2026-05-28 20:26:40") and out[1].startswith("2026-05-28 20:26:40")
    for bad in ("99999999999999999999", "-5", "inf"):
        assert main([*args, "--at", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"obscore event: {bad!r} is") and "\n" not in err
        assert main(["replay", "--data", str(data), "--from", bad]) == 2
        assert capsys.readouterr().err.startswith(f"obscore replay: {bad!r} is")


@pytest.mark.parametrize("command", ["demo", "report"])
def test_an_out_that_is_a_file_is_refused_before_any_work(command, tmp_path, capsys):
    from obscore import Engine

    with Engine(tmp_path / "d") as engine:  # a store with a range to report on
        cpu = engine.gauge("cpu_usage").labels(host="h", service="s", region="r")
        cpu.set(1.0, ts_ms=1_780_000_000_000)
        cpu.set(2.0, ts_ms=1_780_000_060_000)
    taken = tmp_path / "notes.md"
    taken.write_text("mine\n")
    extra = ["--data", str(tmp_path / "d")] if command == "report" else []
    assert main([command, *extra, "--out", str(taken)]) == 2
    assert capsys.readouterr().err == f"obscore {command}: --out {taken} is not a folder\n"
    assert taken.read_text() == "mine\n"


@pytest.mark.parametrize("command", ["replay", "report"])
def test_a_folder_that_holds_no_store_is_not_written_into(command, tmp_path, capsys):
    (tmp_path / "a.csv").write_text("timestamp,value\n1780000000,1\n")
    assert main([command, "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"obscore {command}: {str(tmp_path)!r} is not an obscore data directory "
        "(no wal.log or series.parquet in it)\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]


def test_serve_on_a_taken_port_says_so_without_claiming_to_listen(tmp_path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--data", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err == (
        f"obscore serve: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_a_dropped_data_warning_is_one_line_without_obscores_source(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "obscore.toml"
    config.write_text("[limits]\nseries_per_metric = 2\n")
    path = tmp_path / "many.csv"
    path.write_text(
        "ts,metric,host,service,value\n"
        + "".join(f"1780000000,cpu_usage,h{i},web,1\n" for i in range(3))
    )
    run = subprocess.run(
        [sys.executable, "-m", "obscore.cli", "ingest", str(path), "--data",
         str(tmp_path / "d"), "--config", str(config), "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{path}: 2 samples stored, 1 dropped (1 series_limit_per_metric)\n"
    (line,) = run.stderr.splitlines()
    assert line.startswith("WARNING obscore.ingest.limits: metric 'cpu_usage': label set")
