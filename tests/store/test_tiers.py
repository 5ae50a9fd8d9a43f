"""The on-disk tiers: raw Parquet blocks, warm and cold rollups, retention,
compaction and reads stitched across them (real files in tmp_path)."""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from obscore import Engine
from obscore.config import load_config
from obscore.errors import ConfigError, DroppedDataWarning
from obscore.model import SeriesIndex, sample_table
from obscore.store.blocks import BlockStore, TierSettings, rollup_step
from obscore.store.tiers import fold

DAY = 86_400_000
H = 3_600_000
M = 60_000
T0 = 1_700_000_000_000 // DAY * DAY  # a midnight


def _engine(path, **sections):
    return Engine(path, config=load_config(overrides=sections) if sections else None)


def _series(n=3):
    index = SeriesIndex()
    return index, [index.add("cpu_usage", {"host": f"h{i}", "service": "web"}) for i in range(n)]


def _feed(eng, index, sids, start_ms, n, step_ms, chunk=600):
    """Ingest ``n`` samples per series, all series advancing together; value = sample number."""
    for k in range(0, n, chunk):
        m = min(chunk, n - k)
        ts = start_ms + (k + np.arange(m)) * step_ms
        ids = np.repeat(np.array(sids, np.uint64), m)
        values = np.tile(np.arange(k, k + m, dtype=float), len(sids))
        eng.ingest(sample_table(ids, np.tile(ts, len(sids)), values), index)


def test_raw_blocks_are_sorted_and_encoded_for_time_series(tmp_path):
    eng = _engine(tmp_path)
    index, sids = _series()
    _feed(eng, index, sids, T0, 6 * 360, 10_000)  # 6h at 10s
    blocks = eng.blocks.blocks("raw")
    assert [(b.start_ms - T0) // H for b in blocks] == [0, 2]  # 2h blocks; the last 2h stays hot
    meta = pq.ParquetFile(blocks[0].path).metadata
    cols = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(3)}
    assert "DELTA_BINARY_PACKED" in cols["ts"].encodings
    assert "PLAIN" in cols["value"].encodings
    assert "PLAIN_DICTIONARY" not in cols["value"].encodings
    assert "RLE_DICTIONARY" in cols["series_id"].encodings
    assert {c.compression for c in cols.values()} == {"ZSTD"}
    t = pq.read_table(blocks[0].path)
    assert t.num_rows == 3 * 720
    ids, ts = t["series_id"].to_numpy(), t["ts"].to_numpy()
    assert np.all((ids[1:] > ids[:-1]) | ((ids[1:] == ids[:-1]) & (ts[1:] > ts[:-1])))


def test_flushed_samples_survive_ring_overwrite_and_reopen(tmp_path):
    eng = _engine(tmp_path, store={"hot_capacity": 1000, "block_duration": "1h"})
    index, sids = _series(2)
    n = 5000  # 5x the ring, 14h at 10s
    _feed(eng, index, sids, T0, n, 10_000, chunk=200)
    for sid in sids:
        ts, v = eng._read(sid, T0, T0 + n * 10_000)
        assert v.tolist() == list(map(float, range(n)))
        assert np.array_equal(ts, T0 + np.arange(n) * 10_000)
    t = eng.query("cpu_usage", start_ms=T0, end_ms=T0 + 10 * H, step_ms=H, matchers={"host": "h0"})
    assert t["value"].to_pylist() == [float(360 * k) for k in range(11)]
    # the log holds only what the blocks do not (rewritten as blocks fill)
    assert (tmp_path / "wal.log").stat().st_size < n * 2 * 24 / 2
    eng.close()
    again = _engine(tmp_path, store={"hot_capacity": 1000, "block_duration": "1h"})
    for sid in sids:
        assert again._read(sid, T0, T0 + n * 10_000)[1].tolist() == list(map(float, range(n)))


@pytest.mark.parametrize("shuffled", [False, True], ids=["in_time_order", "shuffled"])
def test_one_batch_of_many_rings_keeps_every_sample(tmp_path, shuffled):
    # 5 rings' worth of two series in one ingest call (a backfill): every
    # sample reaches a block before the ring could overwrite it
    conf = {"store": {"hot_capacity": 1000, "block_duration": "1h"}}
    eng = _engine(tmp_path, **conf)
    index, sids = _series(2)
    n = 5000
    ts = np.tile(T0 + np.arange(n) * 10_000, 2)
    ids = np.repeat(np.array(sids, np.uint64), n)
    values = np.tile(np.arange(n, dtype=float), 2)
    if shuffled:
        order = np.random.default_rng(3).permutation(2 * n)
        ts, ids, values = ts[order], ids[order], values[order]
    result = eng.ingest(sample_table(ids, ts, values), index)
    assert result.stored == 2 * n and result.dropped == {}
    for sid in sids:
        got_ts, got = eng._read(sid, T0, T0 + n * 10_000)
        assert got.tolist() == list(map(float, range(n)))
        assert np.array_equal(got_ts, T0 + np.arange(n) * 10_000)
    # unclosed: the log and the blocks give everything back
    again = _engine(tmp_path, **conf)
    for sid in sids:
        assert again._read(sid, T0, T0 + n * 10_000)[1].tolist() == list(map(float, range(n)))


def test_one_batch_past_the_ring_without_a_data_dir_warns(caplog):
    eng = Engine(config=load_config(overrides={"store": {"hot_capacity": 1000}}))
    index, sids = _series(1)
    n = 1500
    with caplog.at_level(logging.WARNING, logger="obscore.engine"):
        eng.ingest(sample_table(np.full(n, sids[0], np.uint64), T0 + np.arange(n) * 10_000,
                                np.arange(n, dtype=float)), index)
    assert (
        "batch holds 500 more samples of one series than its ring keeps "
        "(store.hot_capacity 1000): the oldest are overwritten; open a data directory "
        "to keep them"
    ) in caplog.text
    assert eng._read(sids[0], T0, T0 + n * 10_000)[1].tolist() == list(map(float, range(500, n)))


def test_unclosed_data_dir_reads_blocks_and_log_back(tmp_path):
    eng = _engine(tmp_path)
    index, sids = _series(2)
    _feed(eng, index, sids, T0, 3000, 10_000)
    del eng  # no close(): as if the process died
    again = _engine(tmp_path)
    assert again._read(sids[1], T0, T0 + 3000 * 10_000)[1].tolist() == list(map(float, range(3000)))


def test_sample_before_a_flushed_block_is_refused_and_the_batch_kept(tmp_path):
    eng = _engine(tmp_path)
    index, sids = _series(1)
    _feed(eng, index, sids, T0, 3 * 360, 10_000)  # 3h: block [0, 2h) flushed
    assert eng.hot.floor(sids[0]) == T0 + 2 * H
    late = sample_table(
        np.full(2, sids[0], np.uint64), np.array([T0 + H, T0 + 3 * H]), np.array([-1.0, 5.0])
    )
    with pytest.warns(
        DroppedDataWarning,
        match=r"1 too_old \(first: cpu_usage\{host=\"h0\",service=\"web\"\} at ts "
        rf"{T0 + H} \(before {T0 + 2 * H}, already flushed to a block\)\)",
    ):
        res = eng.ingest(late)
    assert res.stored == 1
    ts, v = eng._read(sids[0], T0 + H, T0 + 4 * H)
    assert -1.0 not in v.tolist() and v[-1] == 5.0 and ts[-1] == T0 + 3 * H


def test_block_duration_and_retention_come_from_the_config():
    cfg = load_config(
        overrides={"store": {"block_duration": "4h", "warm_step": "10m"}, "retention": {"hot": "2d"}}
    )
    s = TierSettings.from_config(cfg)
    assert (s.block_ms, s.warm_step_ms, s.cold_step_ms) == (4 * H, 10 * M, H)
    assert (s.hot_retention_ms, s.warm_retention_ms, s.cold_retention_ms) == (2 * DAY, 30 * DAY, 365 * DAY)


def test_bad_tier_settings_are_named():
    with pytest.raises(ConfigError, match=r"store\.block_duration: "):
        TierSettings.from_config(load_config(overrides={"store": {"block_duration": "two hours"}}))
    with pytest.raises(ConfigError, match=r"block_duration \(7200000 ms\) and warm_step \(420000 ms\) must divide one day"):
        TierSettings(warm_step_ms=7 * M, cold_step_ms=H)


def test_compaction_downsamples_prunes_and_stitches_hot_warm_and_cold(tmp_path, caplog):
    # 10 days at 1m; raw kept 1d, warm 3d: the range spans cold, warm, raw and hot
    eng = _engine(tmp_path, retention={"hot": "1d", "warm": "3d", "cold": "365d"})
    index, sids = _series(2)
    n = 10 * 1440
    _feed(eng, index, sids, T0, n, M, chunk=1440)
    now = T0 + n * M
    with caplog.at_level(logging.INFO, logger="obscore.store.blocks"):
        result = eng.compact(now_ms=now)
    tiers = {t: eng.blocks.blocks(t) for t in ("raw", "warm", "cold")}
    assert tiers["warm"] and tiers["cold"] and tiers["raw"]
    assert min(b.start_ms for b in tiers["raw"]) >= now - DAY - 2 * H
    assert min(b.start_ms for b in tiers["warm"]) >= now - 3 * DAY - DAY
    assert {b.tier for b in result.pruned} == {"raw", "warm"}
    pruned_msgs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("pruned ")]
    assert len(pruned_msgs) == len(result.pruned)
    assert all(not b.path.exists() for b in result.pruned)

    sid = sids[0]
    ts, v = eng._read(sid, T0, now)
    assert np.all(np.diff(ts) > 0)
    gaps = np.diff(ts)
    # cold: one sample per hour (last at the hour's last ms), then 5m, then 1m
    assert gaps[0] == H and 5 * M in gaps.tolist() and gaps[-1] == M
    minute = (ts - T0) // M
    assert np.array_equal(v, minute.astype(float))  # `last` of each step: its final minute
    cold_end = eng.blocks.blocks("warm")[0].start_ms
    assert np.all(gaps[: np.searchsorted(ts, cold_end) - 1] == H)
    hot_from = eng.hot.floor(sid)
    assert ts[-1] == now - M and ts[-1] >= hot_from  # the newest samples come from the hot tier
    # PromQL sees the stitched series too
    t = eng.query_promql("cpu_usage{host=\"h0\"}", time_ms=T0 + 2 * H - 1)
    assert t["value"].to_pylist() == [119.0]
    eng.close()
    again = _engine(tmp_path, retention={"hot": "1d", "warm": "3d", "cold": "365d"})
    ts2, v2 = again._read(sid, T0, now)
    assert np.array_equal(ts, ts2) and np.array_equal(v, v2)


def test_rollups_are_exact_for_count_sum_min_max_and_counter_increase(tmp_path):
    rng = np.random.default_rng(3)
    ids = np.repeat(np.arange(1, 6, dtype=np.uint64), 1440)
    ts = np.tile(T0 + np.arange(1440) * M + rng.integers(0, M, 1440), 5)
    values = np.cumsum(rng.random(len(ids)))
    raw = sample_table(ids, ts, values)
    store = BlockStore(tmp_path)
    store._add("warm", T0, T0 + DAY, fold(raw, 5 * M))
    got = store.rollup_range("warm", T0, T0 + DAY, H).sort_by([("series_id", "ascending"), ("ts", "ascending")])
    step = raw["ts"].to_numpy() // H * H
    ref = (
        raw.append_column("step", pa.array(step))
        .group_by(["series_id", "step"])
        .aggregate([("value", "count"), ("value", "sum"), ("value", "min"), ("value", "max")])
        .sort_by([("series_id", "ascending"), ("step", "ascending")])
    )
    assert got["ts"].to_pylist() == ref["step"].to_pylist()
    assert got["count"].to_pylist() == ref["value_count"].to_pylist()
    np.testing.assert_allclose(got["sum"].to_numpy(), ref["value_sum"].to_numpy(), rtol=1e-12)
    assert got["min"].to_pylist() == ref["value_min"].to_pylist()
    assert got["max"].to_pylist() == ref["value_max"].to_pylist()
    assert rollup_step(got, H).num_rows == got.num_rows
    with pytest.raises(ValueError, match=r"step_ms 420000 is not a multiple of the warm step 300000 ms"):
        store.rollup_range("warm", T0, T0 + DAY, 7 * M)


def test_recorded_sample_is_in_the_log_when_record_returns(tmp_path):
    eng = Engine(tmp_path)
    eng.record("cpu_usage", {"host": "a", "service": "web"}, 4.5, ts_ms=T0)
    # no flush, no close: the process could die here
    again = Engine(tmp_path)
    t = again.query("cpu_usage", start_ms=T0, end_ms=T0, step_ms=1)
    assert t["value"].to_pylist() == [4.5]


def test_start_runs_compaction_on_its_schedule(tmp_path):
    now = int(time.time() * 1000) // DAY * DAY
    start = now - 3 * DAY
    eng = _engine(tmp_path, retention={"hot": "1d"}, store={"compact_interval": "1s"})
    index, sids = _series(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedDataWarning)
        _feed(eng, index, sids, start, 3 * 1440, M, chunk=1440)
    assert not eng.blocks.blocks("warm")
    eng.start(interval_s=0.05)
    try:
        deadline = time.monotonic() + 20
        while not eng.blocks.blocks("warm") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        eng.stop()
    assert eng.blocks.blocks("warm")
    assert min(b.start_ms for b in eng.blocks.blocks("raw")) >= now - 2 * DAY
