"""The store's speed and size against the named references, each run once.

(a) ``test_ingest_arrow_batches_with_wal``: Arrow batches of 10,000 samples
    (1,000 series x 10 times) into ``Engine(data_dir).ingest`` with the
    write-ahead log fsynced per batch (the default policy), 200 batches (2M
    samples, 2,000 per series at 10s, so raw blocks are cut on the way too),
    3 rounds, each in a fresh data directory.  Reported per round: samples/s
    by the wall clock and by the process's CPU time (all threads: the fsync
    thread only waits), each as a ratio to the 5M/s target.  The run checks
    that it measured the real thing: at least one fsync of the log per batch
    (counted at the log's fsync), every sample back from the store (ring and
    blocks) and again after reopening the directory without ``close`` (log
    replay).  Beside it, the parts alone: the log's append + fsync, and
    ``HotStore.ingest``; and ``fsync_only``, a write of one batch's record
    (240,017 bytes) plus fsync per batch on the same disk, whose median
    bounds the rate any design reaches with an fsync per 10,000 samples.
(b) ``test_disk_bytes_per_sample``: the NAB corpus (58 files, 365,558 rows)
    and the SMD test data (7 machines x 38 columns, ts synthesised at 1m)
    written as raw blocks (2h, as the store writes them) and, in the same
    run, as OpenMetrics text backfilled into a Prometheus TSDB with
    ``promtool tsdb create-blocks-from openmetrics`` (its blocks are 2h too;
    the input is cut into 7-day slices at 2h boundaries, see ``_slices``).
    Reported: bytes per sample of each, and the ratio.  NAB rows that repeat
    a timestamp of their file get the next free millisecond in both stores,
    so both hold every row.
(c) ``test_rollup_range_query``: one day of 1m rollups of 1,000 series in a
    rollup block (1.44M rows), folded to 1h steps per series (count, sum,
    min, max, last): ``BlockStore.rollup_range`` against the same Parquet
    file read with ``pyarrow.parquet`` and aggregated with
    ``pyarrow.compute`` (``Table.group_by(...).aggregate``).

Run: ``python -m pytest benchmarks/test_store.py -p no:cacheprovider -s``.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from obscore import Engine
from obscore.model import SeriesIndex, sample_table
from obscore.store import wal as wal_module
from obscore.store.blocks import BlockStore, TierSettings
from obscore.store.hot import HotStore
from obscore.store.tiers import fold
from obscore.store.wal import WriteAheadLog

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
T0 = 1_700_006_400_000  # a midnight, UTC
DAY = 86_400_000
H = 3_600_000
TARGET_INGEST = 5_000_000


def _report(benchmark, **figures) -> None:
    benchmark.extra_info.update(figures)
    print()
    for key, value in figures.items():
        print(f"  {key}: {value:,.3f}" if isinstance(value, float) else f"  {key}: {value}")


# --- (a) ingest ------------------------------------------------------------------


def _batches(index: SeriesIndex, n_batches: int = 200, n_series: int = 1000, per: int = 10):
    sids = np.array(
        [index.add("cpu_usage", {"host": f"h{i:04d}", "service": "web"}) for i in range(n_series)],
        np.uint64,
    )
    out = []
    for b in range(n_batches):
        ts = T0 + (b * per + np.arange(per)) * 10_000
        out.append(
            sample_table(
                np.tile(sids, per),
                np.repeat(ts, n_series),
                np.random.default_rng(b).random(per * n_series),
            )
        )
    return out


def _same_samples(got, batches) -> bool:
    """True when ``got`` holds exactly the batches' values (as multisets)."""
    want = np.sort(np.concatenate([b["value"].to_numpy() for b in batches]))
    return bool(np.array_equal(np.sort(got), want))


def _engine_values(eng: Engine, index: SeriesIndex) -> np.ndarray:
    return np.concatenate([eng._read(sid, 0, 2**62)[1] for sid in index])


INGEST_PARTS = ["engine", "wal_only", "hot_only", "fsync_only"]


@pytest.mark.parametrize("part", INGEST_PARTS)
def test_ingest_arrow_batches_with_wal(benchmark, tmp_path, monkeypatch, part):
    index = SeriesIndex()
    first, *batches = _batches(index, n_batches=201)
    n = sum(b.num_rows for b in batches)
    syncs: list[float] = []  # seconds per fsync of the log
    real_fsync = wal_module._fsync

    def counted_fsync(fd: int) -> None:
        start = time.perf_counter()
        real_fsync(fd)
        syncs.append(time.perf_counter() - start)

    monkeypatch.setattr(wal_module, "_fsync", counted_fsync)
    rounds: list[tuple[float, float]] = []  # (wall s, cpu s)

    def timed(run) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        rounds.append((time.perf_counter() - wall, time.process_time() - cpu))

    def setup():
        k = len(rounds)
        syncs.clear()
        if part == "engine":
            eng = Engine(tmp_path / f"r{k}")
            eng.ingest(first, index)  # declares the 1,000 series (not timed)
            syncs.clear()

            def run():
                for batch in batches:
                    eng.ingest(batch)

            return (run, eng), {}
        if part == "wal_only":
            wal = WriteAheadLog(tmp_path / f"r{k}.log")
            cols = [tuple(b[c].to_numpy() for c in ("series_id", "ts", "value")) for b in batches]

            def run():
                for ids, ts, values in cols:
                    wal.append_samples(ids, ts, values)

            return (run, wal), {}
        if part == "hot_only":
            hot = HotStore(index)
            hot.ingest(first)

            def run():
                for batch in batches:
                    hot.ingest(batch)

            return (run, hot), {}
        fd = os.open(tmp_path / f"r{k}.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        record = os.urandom(12 + 5 + 24 * batches[0].num_rows)

        def run():
            for _ in batches:
                os.write(fd, record)
                counted_fsync(fd)

        return (run, fd), {}

    def one_round(run, store):
        timed(run)
        # the round measured the real thing
        if part == "engine":
            assert len(syncs) >= len(batches), f"{len(syncs)} log fsyncs for {len(batches)} batches"
            assert _same_samples(_engine_values(store, index), [first, *batches])
            again = Engine(store.data_dir)  # no close(): the log is replayed
            assert _same_samples(_engine_values(again, index), [first, *batches])
        elif part == "wal_only":
            assert len(syncs) >= len(batches)
            assert WriteAheadLog(store.path).replay().n_samples == n
        elif part == "hot_only":
            assert store.samples_stored == n + first.num_rows
        else:
            os.close(store)

    benchmark.pedantic(one_round, setup=setup, rounds=3, iterations=1)
    walls = [w for w, _ in rounds]
    cpus = [c for _, c in rounds]
    figures = {
        "part": part,
        "samples": n,
        "rounds": len(rounds),
        "samples_per_s_wall": [round(n / w) for w in walls],
        "samples_per_s_cpu": [round(n / c) for c in cpus],
        "best_ratio_to_target_5M_wall": n / min(walls) / TARGET_INGEST,
        "best_ratio_to_target_5M_cpu": n / min(cpus) / TARGET_INGEST,
    }
    if syncs:  # the last round's fsyncs
        median = float(np.median(syncs))
        figures.update(
            fsyncs_last_round=len(syncs),
            fsync_median_ms=median * 1000,
            fsync_p90_ms=float(np.percentile(syncs, 90)) * 1000,
            fsync_bound_samples_per_s=batches[0].num_rows / median,
        )
    _report(benchmark, **figures)


# --- (b) disk ----------------------------------------------------------------------


def _nab() -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    out = []
    for path in sorted((SHARED / "nab" / "data").rglob("*.csv")):
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        ts = np.array(
            [
                int(datetime.strptime(r[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp() * 1000)
                for r in rows
            ],
            np.int64,
        )
        values = np.array([float(r[1]) for r in rows])
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
        for i in range(1, len(ts)):  # a repeated timestamp takes the next free ms
            if ts[i] <= ts[i - 1]:
                ts[i] = ts[i - 1] + 1
        out.append(({"corpus": "nab", "file": path.stem}, ts, values))
    return out


def _smd() -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    out = []
    for path in sorted((SHARED / "smd" / "test").glob("*.txt")):
        data = np.loadtxt(path, delimiter=",", ndmin=2)
        ts = T0 + np.arange(len(data), dtype=np.int64) * 60_000
        for col in range(data.shape[1]):
            out.append(({"corpus": "smd", "machine": path.stem, "dim": str(col)}, ts, data[:, col].copy()))
    return out


def _openmetrics(series, path: Path) -> None:
    with open(path, "w") as fh:
        fh.write("# TYPE value gauge\n")
        for labels, ts, values in series:
            text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            fh.writelines(
                f"value{{{text}}} {'NaN' if math.isnan(v) else repr(v)} {t / 1000:.3f}\n"
                for t, v in zip(ts.tolist(), values.tolist())
            )
        fh.write("# EOF\n")


def _slices(series, span_ms: int = 7 * DAY):
    """The series cut into time slices of ``span_ms`` (a multiple of 2h, from 0).

    promtool reads its whole input once per 2h block it writes, so the NAB
    corpus (spread over 19 months) as one file takes it most of an hour.  Its
    blocks start at multiples of 2h, so slices cut there give the very same
    blocks, in minutes.
    """
    lo = min(int(ts[0]) for _, ts, _ in series) // span_ms * span_ms
    hi = max(int(ts[-1]) for _, ts, _ in series)
    for start in range(lo, hi + 1, span_ms):
        part = []
        for labels, ts, values in series:
            a, b = np.searchsorted(ts, [start, start + span_ms])
            if b > a:
                part.append((labels, ts[a:b], values[a:b]))
        if part:
            yield part


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_disk_bytes_per_sample(benchmark, tmp_path):
    if not (SHARED / "nab" / "data").is_dir() or not (SHARED / "smd" / "test").is_dir():
        pytest.skip(f"NAB or SMD data not found under {SHARED}")
    if not os.path.exists(PROMTOOL):
        pytest.skip("promtool not installed (Debian package prometheus)")
    corpora = {"nab": _nab(), "smd": _smd()}
    figures: dict[str, object] = {}

    def run():
        for name, series in corpora.items():
            index = SeriesIndex()
            ids = [index.add("value", labels) for labels, _, _ in series]
            table = sample_table(
                np.concatenate([np.full(len(ts), sid, np.uint64) for sid, (_, ts, _) in zip(ids, series)]),
                np.concatenate([ts for _, ts, _ in series]),
                np.concatenate([v for _, _, v in series]),
            )
            n = table.num_rows
            store = BlockStore(tmp_path / name / "blocks", TierSettings())
            blocks = store.write_raw(table, {})
            ours = sum(b.path.stat().st_size for b in blocks)
            tsdb = tmp_path / name / "tsdb"
            tsdb.mkdir()
            for k, group in enumerate(_slices(series)):
                om = tmp_path / name / f"data{k}.om"
                _openmetrics(group, om)
                done = subprocess.run(
                    [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(om), str(tsdb)],
                    check=False, capture_output=True, text=True, timeout=1800,
                )
                assert done.returncode == 0, done.stderr[-2000:]
                om.unlink()
            theirs = _du(tsdb)
            chunks = sum(p.stat().st_size for p in tsdb.rglob("chunks/*"))
            n_prom_blocks = sum(1 for p in tsdb.iterdir() if p.is_dir())
            # both hold every sample
            back = pa.concat_tables([pq.read_table(b.path) for b in blocks])
            assert back.num_rows == n
            figures.update(
                {
                    f"{name}_samples": n,
                    f"{name}_series": len(series),
                    f"{name}_obscore_blocks": len(blocks),
                    f"{name}_obscore_bytes_per_sample": ours / n,
                    f"{name}_prometheus_blocks": n_prom_blocks,
                    f"{name}_prometheus_bytes_per_sample": theirs / n,
                    f"{name}_prometheus_chunk_bytes_per_sample": chunks / n,
                    f"{name}_ratio_obscore_to_prometheus": ours / theirs,
                }
            )

    benchmark.pedantic(run, rounds=1, iterations=1)
    _report(benchmark, **figures)


# --- (c) rollup range query ----------------------------------------------------


@pytest.fixture(scope="module")
def rollup_day(tmp_path_factory):
    """One day of 1m rollups for 1,000 series in one rollup block."""
    tmp = tmp_path_factory.mktemp("rollups")
    rng = np.random.default_rng(11)
    n_series, per_min = 1000, 6  # samples at 10s
    ids = np.repeat(np.arange(1, n_series + 1, dtype=np.uint64), 1440 * per_min)
    ts = np.tile(T0 + np.arange(1440 * per_min, dtype=np.int64) * 10_000, n_series)
    raw = sample_table(ids, ts, rng.normal(50, 10, len(ids)))
    store = BlockStore(tmp / "blocks", TierSettings(warm_step_ms=60_000))
    block = store._add("warm", T0, T0 + DAY, fold(raw, 60_000))
    return store, block.path


def test_rollup_range_query(benchmark, rollup_day):
    store, path = rollup_day

    def ours():
        return store.rollup_range("warm", T0, T0 + DAY, H)

    def reference():
        t = pq.read_table(path, filters=[("ts", ">=", T0), ("ts", "<", T0 + DAY)])
        step = pa.array(t["ts"].to_numpy() // H * H)
        return (
            t.append_column("step", step)
            .group_by(["series_id", "step"], use_threads=False)  # ordered, for "last"
            .aggregate(
                [("count", "sum"), ("sum", "sum"), ("min", "min"), ("max", "max"), ("last", "last")]
            )
        )

    start = time.perf_counter()
    ref = reference()
    ref_s = time.perf_counter() - start
    start = time.perf_counter()
    got = benchmark.pedantic(ours, rounds=1, iterations=1)
    ours_s = time.perf_counter() - start
    assert got.num_rows == ref.num_rows == 1000 * 24
    ref = ref.sort_by([("series_id", "ascending"), ("step", "ascending")])
    assert got["count"].to_pylist() == ref["count_sum"].to_pylist()
    assert got["last"].to_pylist() == ref["last_last"].to_pylist()
    _report(
        benchmark,
        rows_in=1000 * 1440,
        rows_out=got.num_rows,
        obscore_s=ours_s,
        pyarrow_compute_s=ref_s,
        speedup_obscore_vs_pyarrow=ref_s / ours_s,
    )
