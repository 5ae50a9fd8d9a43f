"""The write-ahead log: replay, torn tails, flipped bits, and SIGKILL."""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zlib

import numpy as np
import pytest

from obscore import Engine
from obscore.config import load_config
from obscore.errors import DroppedDataWarning
from obscore.model import SeriesIndex, sample_table
from obscore.store import wal as wal_module
from obscore.store.wal import WriteAheadLog

T0 = 1_700_000_000_000


def _batch(sid: int, start: int, n: int):
    ts = T0 + (start + np.arange(n)) * 1_000
    return sample_table(np.full(n, sid, np.uint64), ts, np.arange(start, start + n, dtype=float))


def _three_batches(path):
    wal = WriteAheadLog(path)
    sizes = []
    for k in range(3):
        b = _batch(7, k * 10, 10)
        wal.append_samples(b["series_id"].to_numpy(), b["ts"].to_numpy(), b["value"].to_numpy())
        sizes.append(wal.bytes_written)
    wal.close()
    return sizes


def test_wal_replays_what_was_appended(tmp_path):
    _three_batches(tmp_path / "w.log")
    replay = WriteAheadLog(tmp_path / "w.log").replay()
    assert replay.damage is None and replay.n_samples == 30
    assert np.concatenate([b[2] for b in replay.batches]).tolist() == list(map(float, range(30)))


def test_wal_torn_at_any_byte_of_the_last_record_keeps_the_rest(tmp_path):
    path = tmp_path / "w.log"
    sizes = _three_batches(path)
    full = path.read_bytes()
    for cut in range(sizes[1], sizes[2]):
        path.write_bytes(full[:cut])
        replay = WriteAheadLog(path).replay()
        assert replay.n_samples == 20
        if cut == sizes[1]:
            assert replay.damage is None
            continue
        assert replay.damage.offset == sizes[1]
        assert replay.damage.bytes_lost == cut - sizes[1]
        # the file is cut at the damage so new records follow good ones
        assert path.stat().st_size == sizes[1]


def test_wal_flipped_bit_is_reported_with_offset_and_samples_lost(tmp_path):
    path = tmp_path / "w.log"
    sizes = _three_batches(path)
    data = bytearray(path.read_bytes())
    data[sizes[0] + 40] ^= 0x10  # inside the second record's payload
    path.write_bytes(bytes(data))
    replay = WriteAheadLog(path).replay()
    assert replay.n_samples == 10
    assert str(replay.damage) == (
        f"write-ahead log damaged at byte {sizes[0]}: checksum mismatch; "
        f"{sizes[2] - sizes[0]} bytes with 10 samples dropped, everything before kept"
    )


def test_engine_recovers_unclosed_data_dir_from_the_log(tmp_path):
    eng = Engine(tmp_path)
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "a", "service": "web"})
    eng.ingest(_batch(sid, 0, 50), index)
    eng.gauge("cpu_usage").labels(host="b", service="web").set(9.0, ts_ms=T0)
    eng.flush()
    # no close(): as if the process died here
    again = Engine(tmp_path)
    assert again.hot.read(sid)[1].tolist() == list(map(float, range(50)))
    t = again.query("cpu_usage", matchers={"host": "b"}, start_ms=T0, end_ms=T0, step_ms=1)
    assert t["value"].to_pylist() == [9.0]


def test_engine_opens_a_damaged_log_and_warns(tmp_path):
    eng = Engine(tmp_path)
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "a", "service": "web"})
    eng.ingest(_batch(sid, 0, 10), index)
    eng.ingest(_batch(sid, 10, 10))
    log = tmp_path / "wal.log"
    log.write_bytes(log.read_bytes()[:-7])
    with pytest.warns(DroppedDataWarning, match=r"write-ahead log damaged at byte \d+: truncated record .* 10 samples dropped"):
        again = Engine(tmp_path)
    assert again.hot.read(sid)[1].tolist() == list(map(float, range(10)))



def test_wal_checksum_is_crc32c():
    # the CRC-32C check value of b"123456789" is 0xE3069283 (RFC 3720, B.4)
    magic, length, crc = struct.unpack_from("<III", wal_module._frame(b"123456789"))
    assert (magic, length, crc) == (wal_module.MAGIC, 9, 0xE3069283)


def test_wal_record_holds_the_columns_as_written(tmp_path):
    b = _batch(7, 0, 10)
    path = tmp_path / "w.log"
    wal = WriteAheadLog(path)
    wal.append_samples(b["series_id"].to_numpy(), b["ts"].to_numpy(), b["value"].to_numpy())
    wal.close()
    data = path.read_bytes()
    body = struct.pack("<BI", 1, 10) + b.column("series_id").chunk(0).buffers()[1].to_pybytes()
    body += b["ts"].to_numpy().tobytes() + b["value"].to_numpy().tobytes()
    assert data == struct.pack("<III", wal_module.MAGIC, len(body), wal_module.crc32c(body)) + body


def test_wal_reads_a_log_of_the_older_crc32_framing_then_appends(tmp_path):
    path = tmp_path / "w.log"
    payload = struct.pack("<BIQqd", 1, 1, 7, T0, 1.5)
    path.write_bytes(struct.pack("<III", wal_module.MAGIC_CRC32, len(payload), zlib.crc32(payload)) + payload)
    wal = WriteAheadLog(path)
    assert wal.replay().n_samples == 1
    b = _batch(7, 1, 3)
    wal.append_samples(b["series_id"].to_numpy(), b["ts"].to_numpy(), b["value"].to_numpy())
    wal.close()
    replay = WriteAheadLog(path).replay()
    assert replay.damage is None
    assert np.concatenate([x[2] for x in replay.batches]).tolist() == [1.5, 1.0, 2.0, 3.0]


class _SyncProbe:
    """Wraps the log's fsync: records the file size each finished fsync covered."""

    def __init__(self, monkeypatch, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.fail = fail
        self._real = wal_module._fsync
        monkeypatch.setattr(wal_module, "_fsync", self)

    def __call__(self, fd: int) -> None:
        if self.fail:
            raise OSError(errno.EIO, "Input/output error")
        size = os.fstat(fd).st_size
        self._real(fd)
        self.sizes.append(size)


def test_per_batch_policy_fsyncs_each_batch_before_ingest_returns(tmp_path, monkeypatch):
    probe = _SyncProbe(monkeypatch)
    eng = Engine(tmp_path)
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "a", "service": "web"})
    for k in range(5):
        eng.ingest(_batch(sid, k * 10, 10), index if k == 0 else None)
        size = (tmp_path / "wal.log").stat().st_size
        # os-level evidence: an fsync that covered this batch's bytes had
        # finished when ingest returned
        assert probe.sizes and max(probe.sizes) >= size
    # declaring the series did not cost an fsync of its own
    assert len(probe.sizes) == 5


def test_interval_policy_syncs_in_the_background_without_another_call(tmp_path, monkeypatch):
    probe = _SyncProbe(monkeypatch)
    wal = WriteAheadLog(tmp_path / "w.log", fsync_ms=20)
    b = _batch(7, 0, 100)
    before = time.monotonic()
    wal.append_samples(b["series_id"].to_numpy(), b["ts"].to_numpy(), b["value"].to_numpy())
    after = time.monotonic()
    size = (tmp_path / "w.log").stat().st_size
    sync = wal._sync
    with sync.cond:
        # the sync is scheduled fsync_ms after the write (or already under way)
        assert (sync.due is None and (sync.busy or sync.synced == sync.written)) or (
            before + 0.020 <= sync.due <= after + 0.020
        )
        # no further call: the background thread syncs the batch (a generous
        # bound, only so that a broken thread fails instead of hanging)
        assert sync.cond.wait_for(lambda: sync.synced == sync.written, timeout=60)
    assert probe.sizes == [size]
    wal.close()


def test_interval_policy_does_not_sync_per_append(tmp_path, monkeypatch):
    probe = _SyncProbe(monkeypatch)
    wal = WriteAheadLog(tmp_path / "w.log", fsync_ms=3_600_000)
    for k in range(50):
        b = _batch(7, k * 10, 10)
        wal.append_samples(b["series_id"].to_numpy(), b["ts"].to_numpy(), b["value"].to_numpy())
    assert probe.sizes == [] and not wal.synced  # due in an hour
    wal.sync()
    assert probe.sizes == [(tmp_path / "w.log").stat().st_size] and wal.synced
    wal.close()
    assert WriteAheadLog(tmp_path / "w.log").replay().n_samples == 500


def test_engine_takes_the_interval_policy_from_the_config(tmp_path, monkeypatch):
    probe = _SyncProbe(monkeypatch)
    config = load_config(overrides={"store": {"wal_fsync": "25ms"}})
    eng = Engine(tmp_path, config=config)
    assert eng.wal.fsync_ms == 25
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "a", "service": "web"})
    eng.ingest(_batch(sid, 0, 10), index)
    size = (tmp_path / "wal.log").stat().st_size
    sync = eng.wal._sync
    with sync.cond:
        assert sync.cond.wait_for(lambda: sync.synced == sync.written, timeout=60)
    assert max(probe.sizes) == size


def test_failed_fsync_fails_the_ingest_and_every_later_one(tmp_path, monkeypatch, caplog):
    eng = Engine(tmp_path)
    index = SeriesIndex()
    sid = index.add("cpu_usage", {"host": "a", "service": "web"})
    eng.ingest(_batch(sid, 0, 10), index)
    _SyncProbe(monkeypatch, fail=True)
    with pytest.raises(OSError, match=r"write-ahead log .*wal\.log: fsync failed .*reopen the data directory"):
        eng.ingest(_batch(sid, 10, 10))
    monkeypatch.setattr(wal_module, "_fsync", os.fsync)
    with pytest.raises(OSError, match="fsync failed"):
        eng.ingest(_batch(sid, 20, 10))
    assert "wal fsync failed" in caplog.text
    # the batch before the failure is kept; reopening replays what was written
    again = Engine(tmp_path)
    assert again.hot.read(sid)[1].tolist()[:10] == list(map(float, range(10)))


def test_rewrite_while_a_sync_is_due_leaves_the_log_synced(tmp_path, monkeypatch):
    _SyncProbe(monkeypatch)
    wal = WriteAheadLog(tmp_path / "w.log", fsync_ms=3_600_000)
    b = _batch(7, 0, 10)
    cols = (b["series_id"].to_numpy(), b["ts"].to_numpy(), b["value"].to_numpy())
    wal.append_samples(*cols)
    assert not wal.synced
    wal.rewrite([(7, "cpu_usage", {"host": "a"})], [cols, tuple(c[:0] for c in cols)])
    assert wal.synced
    wal.close()
    replay = WriteAheadLog(tmp_path / "w.log").replay()
    assert replay.n_samples == 10 and replay.series == [(7, "cpu_usage", {"host": "a"})]


WRITER = textwrap.dedent(
    """
    import sys
    import time
    import numpy as np
    from obscore import Engine
    from obscore.model import SeriesIndex, sample_table
    eng = Engine(sys.argv[1])
    index = SeriesIndex()
    sids = [index.add("cpu_usage", {"host": f"h{i}", "service": "s"}) for i in range(20)]
    k = int(sys.argv[2])
    first = True
    stop = k + 15  # stay well inside the hot tier's 8640 samples per series
    while k < stop:
        n = 500
        ids = np.array(sids, np.uint64)[np.arange(n) % 20]
        ts = 1_700_000_000_000 + k * 1_000 + np.arange(n) // 20
        eng.ingest(sample_table(ids, ts, np.full(n, float(k))), index if first else None)
        first = False
        print(k, flush=True)
        k += 1
        time.sleep(0.005)
    time.sleep(60)
    """
)


@pytest.mark.slow
def test_sigkill_during_ingest_loses_no_acknowledged_sample(tmp_path):
    rng = np.random.default_rng(7)
    acked: set[int] = set()
    started = 0
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(started)],
            stdout=subprocess.PIPE, text=True,
        )
        # wait for the first acknowledgement, then kill at a random moment
        first = proc.stdout.readline()
        assert first, "the writer died before acknowledging anything"
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        done = [int(first)] + [int(x) for x in out.split()]
        acked.update(done)
        started = max(done) + 2  # the batch after the last ack may or may not be in
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedDataWarning)  # a torn tail is expected
        eng = Engine(tmp_path)
    table = eng.hot.read_table()
    values = set(table["value"].to_numpy().astype(int).tolist())
    assert acked <= values, f"lost acknowledged batches {sorted(acked - values)[:5]}"
    # nothing invented: every stored value belongs to a batch that was started
    counts = np.bincount(table["value"].to_numpy().astype(int))
    assert all(counts[v] == 500 for v in values)


TIERED_WRITER = textwrap.dedent(
    """
    import sys
    import time
    import numpy as np
    from obscore import Engine
    from obscore.config import load_config
    from obscore.model import SeriesIndex, sample_table
    # 1m blocks and a 1s out-of-order window: blocks are cut and the log is
    # rewritten every few batches, so kills land in those steps too
    config = load_config(overrides={"store": {
        "block_duration": "1m", "warm_step": "1m", "cold_step": "1m",
        "out_of_order_window": "1s"}})
    eng = Engine(sys.argv[1], config=config)
    mode, k = sys.argv[3], int(sys.argv[2])
    index = SeriesIndex()
    sids = [index.add("cpu_usage", {"host": f"h{i}", "service": "s"}) for i in range(20)]
    stop = k + 15
    while k < stop:
        ts = 1_700_000_000_000 + k * 10_000 + np.arange(25) * 400
        if mode == "record":
            for i in range(500):
                eng.record("cpu_usage", {"host": f"h{i % 20}", "service": "s"}, float(k), int(ts[i // 20]))
            if k % 3 == 0:
                eng.flush()  # into the hot tier, where blocks are cut
        else:
            ids = np.array(sids, np.uint64)[np.arange(500) % 20]
            eng.ingest(sample_table(ids, np.repeat(ts, 20), np.full(500, float(k))), index)
        print(k, flush=True)
        k += 1
        time.sleep(0.005)
    time.sleep(60)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["record", "ingest"])
def test_sigkill_while_blocks_are_cut_loses_no_acknowledged_sample(tmp_path, mode):
    rng = np.random.default_rng(11)
    acked: set[int] = set()
    started = 0
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-c", TIERED_WRITER, str(tmp_path), str(started), mode],
            stdout=subprocess.PIPE, text=True,
        )
        first = proc.stdout.readline()
        assert first, "the writer died before acknowledging anything"
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        done = [int(first)] + [int(x) for x in out.split()]
        acked.update(done)
        started = max(done) + 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedDataWarning)
        eng = Engine(tmp_path)
    assert eng.blocks.blocks("raw"), "no block was cut: the test did not test blocks"
    values = []
    for sid in eng.index:
        values.append(eng._read(sid, 0, 2**62)[1])
    values = np.concatenate(values).astype(int)
    assert acked <= set(values.tolist()), f"lost acknowledged batches {sorted(acked - set(values.tolist()))[:5]}"
    counts = np.bincount(values)
    # nothing invented and nothing twice: a stored batch is whole (a record
    # batch cut by the kill may be partial, but never beyond 500)
    stored = set(values.tolist())
    if mode == "ingest":
        assert all(counts[v] == 500 for v in stored), {v: int(counts[v]) for v in stored if counts[v] != 500}
    else:
        over = {v: int(counts[v]) for v in stored if counts[v] > 500}
        assert not over, f"batches stored more than once: {over}"
        short = {v: int(counts[v]) for v in acked if counts[v] != 500}
        assert not short, f"acknowledged batches not whole: {short}"

