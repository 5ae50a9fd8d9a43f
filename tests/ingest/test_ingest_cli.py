"""``obscore ingest`` on real files: CSV (both layouts), Parquet, Arrow IPC and
expositions; ``--dry-run`` exit codes; the byte progress bar."""

from __future__ import annotations

import io
import sys

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from obscore import Engine
from obscore.cli import main
from obscore.ingest.files import SampleFile, read_csv, sniff_file_format

T0 = 1_700_000_000_000

LONG = pa.table(
    {
        "ts": pa.array([T0, T0 + 10_000, T0, T0 + 10_000], pa.int64()),
        "metric": ["cpu_usage", "cpu_usage", "memory_usage", "memory_usage"],
        "host": ["a", "a", "b", "b"],
        "service": ["web", "web", "db", None],
        "value": [1.5, 2.5, 1e9, float("nan")],
    }
)


def _config(tmp_path, *names: str):
    """A config declaring ``names`` as gauges without labels."""
    path = tmp_path / "obscore.toml"
    path.write_text(
        "".join(f'[[metrics]]\nname = "{n}"\nkind = "gauge"\n\n' for n in names)
    )
    return path


def _stored(data_dir, config=None) -> list[tuple[str, dict, int, float]]:
    """Every stored sample of a data directory as (name, labels, ts, value),
    read back through PromQL range selectors (whatever tier holds them)."""
    engine = Engine(data_dir, config=config)
    out = []
    for name in engine.index.metric_names:
        table = engine.query_promql(f"{name}[{SPAN_DAYS}d]", time_ms=READ_AT_MS)
        labels = [c for c in table.column_names if c not in ("__name__", "ts", "value")]
        rows = table.to_pylist()
        out.extend(
            (name, {k: r[k] for k in labels if r[k]}, r["ts"], r["value"]) for r in rows
        )
    engine.close()
    return sorted(out, key=lambda r: (r[0], sorted(r[1].items()), r[2]))


# Every sample of these tests lies in the SPAN_DAYS before READ_AT_MS.
READ_AT_MS = 2_000_000_000_000  # 2033
SPAN_DAYS = 10_000


def _write_long(tmp_path) -> dict[str, object]:
    csv_path = tmp_path / "long.csv"
    csv_path.write_text(
        "ts,metric,host,service,value\n"
        f"{T0},cpu_usage,a,web,1.5\n"
        f"{T0 + 10_000},cpu_usage,a,web,2.5\n"
        f"{T0 // 1000},memory_usage,b,db,1e9\n"  # epoch seconds
        f"{T0 // 1000 + 10},memory_usage,b,,NaN\n"  # empty label: absent
    )
    pq.write_table(LONG, tmp_path / "long.parquet")
    with ipc.new_file(tmp_path / "long.arrow", LONG.schema) as w:
        w.write_table(LONG)
    with ipc.new_stream(tmp_path / "long.arrows", LONG.schema) as w:
        w.write_table(LONG)
    return {p.suffix: p for p in tmp_path.glob("long.*")}


def test_long_layout_reads_alike_from_csv_parquet_and_arrow(tmp_path, capsys):
    files = _write_long(tmp_path)
    results = {}
    for suffix, path in files.items():
        assert main(["ingest", "--dry-run", str(path)]) == 0
        data = tmp_path / f"data{suffix}"
        assert main(["ingest", str(path), "--data", str(data), "-q"]) == 0
        results[suffix] = _stored(data)
    out = capsys.readouterr().out
    assert f"{files['.csv']}: valid csv (long layout), 4 samples of 3 series" in out
    assert f"{files['.parquet']}: valid parquet (long layout)" in out
    assert f"{files['.arrows']}: 4 samples stored, 0 dropped" in out

    expected = results[".parquet"]
    assert [r[:3] for r in expected] == [
        ("cpu_usage", {"host": "a", "service": "web"}, T0),
        ("cpu_usage", {"host": "a", "service": "web"}, T0 + 10_000),
        ("memory_usage", {"host": "b"}, T0 + 10_000),
        ("memory_usage", {"host": "b", "service": "db"}, T0),
    ]
    for suffix, rows in results.items():
        assert [r[:3] for r in rows] == [r[:3] for r in expected], suffix
        values = np.array([r[3] for r in rows])
        np.testing.assert_array_equal(values, [1.5, 2.5, np.nan, 1e9])


def test_format_is_recognised_by_content_before_the_name(tmp_path, capsys):
    disguised = tmp_path / "samples.dat"
    pq.write_table(LONG, disguised)
    prom = tmp_path / "metrics.txt"
    prom.write_text(
        '# TYPE cpu_usage gauge\ncpu_usage{host="a",service="web"} 3 1700000000000\n'
    )
    headerless = tmp_path / "series"
    headerless.write_text("1700000000,1\n1700000010,2\n")

    assert sniff_file_format(disguised.read_bytes()[:64], disguised.name) == "parquet"
    paths = [str(disguised), str(prom), str(headerless)]
    assert main(["ingest", "--dry-run", *paths]) == 0
    out = capsys.readouterr().out
    assert f"{disguised}: valid parquet (long layout), 4 samples" in out
    assert f"{prom}: valid prometheus (exposition layout), 1 samples" in out
    assert f"{headerless}: valid csv (narrow layout), 2 samples of 1 series" in out

    # --format overrides what the content says
    assert main(["ingest", "--dry-run", "--format", "csv", str(disguised)]) == 2
    assert f"{disguised} line 1: invalid UTF-8 at byte " in capsys.readouterr().err


def test_dry_run_exits_2_naming_file_line_and_reason(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "timestamp,value\n"
        "2014-04-01 00:00:00,1\n"
        "\n"
        "2014-04-01 00:05:00,x\n"  # line 4
        "2014-04-01 00:10:00,3,4\n"  # line 5
        "yesterday,5\n"  # line 6
        "2014-04-01 00:20:00,\n"  # line 7
        "2014-04-01 00:25:00,7\n"
    )
    good = tmp_path / "good.csv"
    good.write_text("timestamp,value\n2014-04-01 00:00:00,1\n")

    assert main(["ingest", "--dry-run", "--declare", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert f"{good}: valid csv (narrow layout), 1 samples of 1 series" in captured.out
    assert captured.err.splitlines() == [
        f"{bad} line 4: value 'x' is not a number; row skipped",
        f"{bad} line 5: expected 2 fields, found 3: '2014-04-01 00:10:00,3,4'; "
        "row skipped",
        f"{bad} line 6: timestamp 'yesterday' is not a date, epoch seconds or "
        "milliseconds; row skipped",
        f"{bad} line 7: value is empty; row skipped",
        f"{bad}: invalid csv: 4 bad rows of 6",
    ]
    assert main(["ingest", "--dry-run", "--strict", str(bad)]) == 2
    assert capsys.readouterr().err == f"{bad} line 4: value 'x' is not a number\n"

    table = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"ts": [T0, None], "value": [1.0, 2.0]}), table)
    assert main(["ingest", "--dry-run", str(table)]) == 2
    assert f"{table} row 2: timestamp is empty; row skipped" in capsys.readouterr().err

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert main(["ingest", "--dry-run", str(empty)]) == 2
    assert capsys.readouterr().err == (
        f"{empty} line 1: the file is empty; expected a header or rows\n"
    )
    nothing = tmp_path / "nothing.parquet"
    pq.write_table(pa.table({"a": [1]}), nothing)
    assert main(["ingest", "--dry-run", str(nothing)]) == 2
    assert f"{nothing} schema: columns ['a'] fit no layout" in capsys.readouterr().err

    header = tmp_path / "header.csv"
    header.write_text("when,level\n1,2\n")
    assert main(["ingest", "--dry-run", str(header)]) == 2
    assert capsys.readouterr().err == (
        f"{header} line 1: columns ['when', 'level'] fit no layout; expected "
        "'timestamp,value' or 'ts,metric,<labels...>,value'\n"
    )


def test_ingest_keeps_good_rows_and_counts_the_bad_ones(tmp_path, capsys):
    path = tmp_path / "room-temp.csv"
    path.write_text(
        "timestamp,value\n"
        "2014-04-01 00:00:00,20.5\n"
        "2014-04-01 00:05:00,oops\n"
        "2014-04-01T00:10:00Z,21.5\n"
    )
    data = tmp_path / "data"
    assert main(["ingest", str(path), "--data", str(data), "-q"]) == 2
    assert (
        f"{path}: undeclared metrics ['room_temp'] were dropped; declare them in the "
        "config or pass --declare" in capsys.readouterr().err
    )
    config = _config(tmp_path, "room_temp")
    args = ["ingest", str(path), "--data", str(data), "--config", str(config), "-q"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"{path}: 2 samples stored, 1 dropped (1 bad_row)" in captured.out
    assert f"{path} line 3: value 'oops' is not a number; row skipped" in captured.err
    start = int(np.datetime64("2014-04-01T00:00", "ms").astype(np.int64))
    assert _stored(data, config) == [
        ("room_temp", {}, start, 20.5),
        ("room_temp", {}, start + 600_000, 21.5),
    ]

    # --strict refuses the whole file; --metric names the series
    strict = tmp_path / "strict"
    args = ["ingest", str(path), "--data", str(strict), "--metric", "hall", "--declare"]
    assert main([*args, "--strict", "-q"]) == 2
    assert _stored(strict) == []
    assert main([*args, "-q"]) == 0
    assert [r[0] for r in _stored(strict)] == ["hall", "hall"]


def test_a_file_of_nothing_but_bad_lines_fails_not_stores_nothing(tmp_path, capsys):
    # Read as an exposition, a CSV is all bad lines: once "0 stored, 0 dropped", rc 0.
    path = tmp_path / "nab.csv"
    path.write_text("timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,2\n")
    data = tmp_path / "data"
    args = ["ingest", "--format", "prometheus", str(path), "--data", str(data), "-q"]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert f"{path}: 0 samples stored, 3 dropped (3 bad_row)" in captured.out
    assert f"{path} line 1: " in captured.err

    prom = tmp_path / "mixed.prom"
    prom.write_text(
        "# TYPE cpu_usage gauge\n"
        'cpu_usage{host="a",service="web"} 1 1700000000000\n'
        "cpu_usage{host= 2\n"
        'cpu_usage{host="b",service="web"} 3 1700000000000\n'
    )
    assert main(["ingest", str(prom), "--data", str(data), "-q"]) == 0
    captured = capsys.readouterr()
    assert f"{prom}: 2 samples stored, 1 dropped (1 bad_row)" in captured.out
    assert f"{prom} line 3: " in captured.err


def test_standard_input_is_read_and_sniffed(tmp_path, capsys, monkeypatch):
    body = b"ts,metric,host,service,value\n1700000000000,cpu_usage,a,web,4\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(body)))
    assert main(["ingest", "--dry-run", "-"]) == 0
    out = capsys.readouterr().out
    assert "-: valid csv (long layout), 1 samples of 1 series" in out


def test_progress_bar_counts_bytes_of_large_inputs(tmp_path, capsys):
    path = tmp_path / "big.csv"
    n = 60_000
    ts = T0 + 1000 * np.arange(n)
    path.write_text(
        "ts,metric,host,service,value\n"
        + "".join(f"{t},cpu_usage,h{t % 7},web,{t % 97}.25\n" for t in ts.tolist())
    )
    assert path.stat().st_size > 1 << 21
    assert main(["ingest", "--dry-run", str(path)]) == 0
    err = capsys.readouterr().err
    size_mib = path.stat().st_size / 2**20
    assert f"{size_mib:.2f}M/{size_mib:.2f}M" in err  # tqdm's total, in MiB

    small = tmp_path / "small.csv"
    small.write_text("ts,value\n1700000000,1\n")
    assert main(["ingest", "--dry-run", "--declare", str(small)]) == 0
    assert capsys.readouterr().err == ""  # no bar for small inputs


def test_sample_file_resolves_lines_past_skipped_and_blank_rows(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("timestamp,value\n\n1,2,3\n\n2,2\n3,bad\n")
    reader = SampleFile(path)
    rows = sum(b.num_rows for b in reader.batches())
    assert (rows, reader.n_rows, reader.layout) == (1, 3, "narrow")
    assert [(p.line, p.reason) for p in reader.problems] == [
        (3, "expected 2 fields, found 3: '1,2,3'"),
        (6, "value 'bad' is not a number"),
    ]


def test_nab_files_from_shared_data_ingest_whole(tmp_path, capsys, shared_data):
    nab = shared_data / "nab" / "data"
    assert len(list(nab.glob("*/*.csv"))) == 58
    assert main(["ingest", "--dry-run", "-q", str(nab)]) == 0  # a folder is walked
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 58
    assert sum(int(line.split(", ")[1].split()[0]) for line in out) == 365_558

    # The file that once gave "0 samples stored, 0 dropped": 4,032 rows, 11 of
    # them repeat a timestamp with another value (the store's conflict rule).
    path = nab / "realKnownCause" / "ec2_request_latency_system_failure.csv"
    name = "ec2_request_latency_system_failure"
    config = _config(tmp_path, name)
    data = tmp_path / "data"
    args = ["ingest", str(path), "--data", str(data), "--config", str(config), "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{path}: 4021 samples stored, 11 dropped (11 conflict)" in out
    series = read_csv(path)
    first = {}
    for t, v in zip(series.ts.tolist(), series.values.tolist()):
        first.setdefault(t, v)
    stored = _stored(data, config)
    assert [(r[2], r[3]) for r in stored] == sorted(first.items())


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        (b"PAR1\x15\x04", "x.csv", "parquet"),
        (b"ARROW1\x00\x00", "x", "arrow"),
        (b"\xff\xff\xff\xff\x10\x00", "x", "arrow"),
        (b"timestamp,value\n", "x", "csv"),
        (b"1,2\n", "x.prom", "csv"),
        (b'up{job="a",x="b"} 1\n', "x", "exposition"),
        (b"# HELP up Up.\n", "up.csv", "csv"),
        (b"up 1\n", "x.txt", "exposition"),
    ],
)
def test_sniff_file_format(head, name, expected):
    assert sniff_file_format(head, name) == expected


def test_dry_run_loads_and_validates_the_config(tmp_path, capsys):
    path = tmp_path / "nan.csv"
    path.write_text("timestamp,value\n2014-04-01 00:00:00,NaN\n")
    missing = tmp_path / "nonexist.toml"
    assert main(["ingest", "--dry-run", "--config", str(missing), str(path)]) == 2
    assert capsys.readouterr().err == (
        f"obscore ingest: cannot read config {str(missing)!r}: No such file or directory\n"
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[detectors]\nthreshold = 2\n')
    assert main(["ingest", "--dry-run", "--config", str(bad), str(path)]) == 2
    assert capsys.readouterr().err == (
        f"obscore ingest: {bad}, detectors.threshold: 2 is outside [0, 1]\n"
    )
    good = _config(tmp_path, "nan")
    assert main(["ingest", "--dry-run", "--config", str(good), str(path)]) == 0


def test_exact_repeats_are_counted_by_the_dry_run_and_the_store_alike(tmp_path, capsys):
    path = tmp_path / "dup.csv"
    path.write_text(
        "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:00:10,2\n"
        "2020-01-01 00:00:10,2\n2020-01-01 00:00:20,3\n"
    )
    assert main(["ingest", "--dry-run", str(path)]) == 0
    assert (
        f"{path}: valid csv (narrow layout), 4 samples of 1 series "
        "(1 exact repeats, which are stored once)"
    ) in capsys.readouterr().out
    args = ["ingest", str(path), "--data", str(tmp_path / "d"), "--metric", "cpu_usage"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{path}: 3 samples stored, 0 dropped, 1 exact repeats of stored samples" in out
    assert main(args) == 0  # the same file again: nothing new, nothing lost
    out = capsys.readouterr().out
    assert f"{path}: 0 samples stored, 0 dropped, 4 exact repeats of stored samples" in out


def test_rows_of_undeclared_metrics_are_dropped_and_the_rest_kept(tmp_path, capsys):
    path = tmp_path / "long.csv"
    path.write_text(
        "ts,metric,host,service,value\n"
        f"{T0},cpu_usage,a,web,1\n{T0},room_temp,a,web,20\n{T0 + 10_000},cpu_usage,a,web,2\n"
    )
    assert main(["ingest", "--dry-run", str(path)]) == 0
    assert capsys.readouterr().err == (
        f"{path}: undeclared metrics ['room_temp'] would be dropped; declare them in "
        "the config or pass --declare\n"
    )
    data = tmp_path / "data"
    assert main(["ingest", str(path), "--data", str(data), "-q"]) == 0
    captured = capsys.readouterr()
    assert f"{path}: 2 samples stored, 1 dropped (1 unknown_metric)" in captured.out
    assert "undeclared metrics ['room_temp'] were dropped" in captured.err
    assert [(n, v) for n, _, _, v in _stored(data)] == [("cpu_usage", 1.0), ("cpu_usage", 2.0)]


def test_a_file_that_stores_nothing_and_drops_rows_fails(tmp_path, capsys):
    path = tmp_path / "cpu_usage.csv"
    path.write_text(f"timestamp,value\n{T0 + 3_600_000},1\n")
    late = tmp_path / "late.csv"
    late.write_text(f"timestamp,value\n{T0},1\n")  # an hour before: too old
    data = tmp_path / "data"
    assert main(["ingest", str(path), "--data", str(data), "--metric", "cpu_usage"]) == 0
    assert main(["ingest", str(late), "--data", str(data), "--metric", "cpu_usage"]) == 2
    assert f"{late}: 0 samples stored, 1 dropped (1 too_old)" in capsys.readouterr().out
    # all rows repeats of stored samples: nothing refused, nothing to fail
    assert main(["ingest", str(path), "--data", str(data), "--metric", "cpu_usage"]) == 0


def test_nothing_to_read_makes_no_data_directory(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    data = tmp_path / "data"
    assert main(["ingest", str(tmp_path / "nosuch.csv"), "--data", str(data)]) == 2
    assert main(["ingest", str(tmp_path / "empty"), "--data", str(data)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path / 'nosuch.csv'}: no such file",
        f"{tmp_path / 'empty'}: no sample files in this folder (.arrow, .arrows, .csv, "
        ".feather, .ipc, .om, .parquet, .pq, .prom)",
    ]
    assert not data.exists()


def test_metric_is_needed_for_stdin_and_refused_for_a_table_that_names_its_own(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"timestamp,value\n1780000000,1\n")))
    assert main(["ingest", "--dry-run", "-"]) == 2
    assert capsys.readouterr().err == (
        "- line 1: a 'timestamp,value' table read from standard input needs --metric NAME "
        "(a file's name gives it otherwise)\n"
    )
    path = tmp_path / "long.csv"
    path.write_text(f"ts,metric,host,value\n{T0},cpu_usage,a,1\n")
    assert main(["ingest", "--dry-run", "--metric", "memory_usage", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"{path} line 1: --metric 'memory_usage' names the metric of a 'timestamp,value' "
        "table; this one has a 'metric' column, which names each row's\n"
    )


@pytest.mark.parametrize("first", ["2026-01-01T00:00:00Z", "1767225600"], ids=["iso", "epoch"])
def test_timestamp_past_int64_is_a_bad_row_after_an_iso_or_epoch_row(tmp_path, capsys, first):
    # After an ISO row the rows were parsed one at a time, and this one raised
    # OverflowError (rc 1, nothing stored); after an epoch row it was a bad row.
    path = tmp_path / "big.csv"
    path.write_text(f"timestamp,value\n{first},5\n99999999999999999999,6\n1767225660,7\n")
    args = ["ingest", str(path), "--data", str(tmp_path / "d"), "--metric", "cpu_usage", "-q"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert f"{path}: 2 samples stored, 1 dropped (1 bad_row)" in captured.out
    why = "'99999999999999999999'" if first.endswith("Z") else "1e+20"
    assert captured.err == (
        f"{path} line 3: timestamp {why} does not fit int64 milliseconds; row skipped\n"
    )
    start = 1_767_225_600_000
    assert [r[2:] for r in _stored(tmp_path / "d")] == [(start, 5.0), (start + 60_000, 7.0)]


def test_a_far_future_row_is_dropped_and_the_series_takes_later_files(tmp_path, capsys, caplog):
    # It was stored ("2 samples stored", rc 0) and every normal sample of the
    # series after it was dropped as too_old.
    path = tmp_path / "fut.csv"
    path.write_text("timestamp,value\n1780000000,1\n17800000400000000,10\n")
    data = tmp_path / "d8"
    args = ["ingest", "--data", str(data), "--metric", "cpu_usage", "-q"]
    assert main([*args, str(path)]) == 0
    assert f"{path}: 1 samples stored, 1 dropped (1 too_far_ahead)" in capsys.readouterr().out
    assert "cpu_usage{} at ts 17800000400000000 (" in caplog.text
    assert "the limit is 600000 ms (store.max_future)" in caplog.text
    later = tmp_path / "next.csv"
    later.write_text("timestamp,value\n1780000060,2\n")
    assert main([*args, str(later)]) == 0
    assert f"{later}: 1 samples stored, 0 dropped" in capsys.readouterr().out
    assert [r[2:] for r in _stored(data)] == [(1_780_000_000_000, 1.0), (1_780_000_060_000, 2.0)]
