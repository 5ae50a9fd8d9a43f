"""The write-ahead log: every acknowledged sample is in the log before the call
that wrote it returns.

A log is a sequence of records, each framed as::

    magic   u32  0x4f425343 ("OBSC")
    length  u32  bytes of the payload
    crc     u32  CRC-32C (Castagnoli) of the payload
    payload      kind u8, then the body

Kinds: 1 = sample batch (``n: u32``, then ``n`` series ids as uint64, ``n``
ts as int64, ``n`` values as float64, little-endian), 2 = series (the JSON
of ``[series_id, name, labels]``).  Logs written before CRC-32C framed their
records with the magic 0x4f425357 ("OBSW") and a zlib CRC-32 of the payload;
such records are still read, and new ones follow them in the new framing.

A sample batch goes to the file with one ``writev`` straight from its column
buffers, its checksum computed over the same buffers: no copy of the batch.

On open the log is replayed up to the first record that is truncated or
fails its checksum; everything before it is kept, the damage is reported
with its byte offset and the number of samples it held (when its header
still says), and the file is cut there so new records follow good ones.

Fsyncs run on a thread of the log's own (see :class:`WriteAheadLog`), so a
caller can overlap its other work with the disk's round trip.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from crc32c import crc32c

logger = logging.getLogger(__name__)

MAGIC = 0x4F425343  # "OBSC": the payload's checksum is CRC-32C
MAGIC_CRC32 = 0x4F425357  # "OBSW": zlib CRC-32, the framing of older logs (read only)
_CHECKSUM = {MAGIC: crc32c, MAGIC_CRC32: zlib.crc32}
_HEADER = struct.Struct("<III")
_SAMPLES_HEAD = struct.Struct("<BI")
_KIND_SAMPLES = 1
_KIND_SERIES = 2
_MAX_PAYLOAD = 1 << 31
_ONE_SAMPLE = struct.Struct("<BIQqd")
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_APPEND

#: How the log syncs its file; tests wrap it to count the syncs.
_fsync = os.fsync


@dataclass(frozen=True, slots=True)
class Damage:
    """Where replay stopped and what was lost."""

    offset: int
    bytes_lost: int
    samples_lost: int | None
    reason: str

    def __str__(self) -> str:
        lost = "an unknown number of" if self.samples_lost is None else str(self.samples_lost)
        return (
            f"write-ahead log damaged at byte {self.offset}: {self.reason}; "
            f"{self.bytes_lost} bytes with {lost} samples dropped, everything before kept"
        )


@dataclass(slots=True)
class Replay:
    """What a replay found: sample batches and series, in log order."""

    batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    series: list[tuple[int, str, dict[str, str]]]
    damage: Damage | None = None

    @property
    def n_samples(self) -> int:
        return sum(len(b[0]) for b in self.batches)


def _column(values: np.ndarray, dtype: str) -> memoryview:
    """The bytes of a column as stored (a view, unless it must be converted)."""
    return memoryview(np.ascontiguousarray(values, dtype=dtype)).cast("B")


def _sample_record(ids: np.ndarray, ts: np.ndarray, values: np.ndarray) -> tuple[list, int]:
    """One framed sample record as a list of buffers, and its size in bytes."""
    n = len(ids)
    if len(ts) != n or len(values) != n:
        raise ValueError(
            f"ids, ts and values must have one length, got {n}, {len(ts)} and {len(values)}"
        )
    head = _SAMPLES_HEAD.pack(_KIND_SAMPLES, n)
    columns = [_column(ids, "<u8"), _column(ts, "<i8"), _column(values, "<f8")]
    crc = crc32c(head)
    for col in columns:
        crc = crc32c(col, crc)
    length = _SAMPLES_HEAD.size + 24 * n
    return [_HEADER.pack(MAGIC, length, crc), head, *columns], _HEADER.size + length


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(MAGIC, len(payload), crc32c(payload)) + payload


def _series_record(sid: int, name: str, labels: dict[str, str]) -> bytes:
    payload = json.dumps([sid, name, labels], separators=(",", ":")).encode("utf-8")
    return _frame(bytes([_KIND_SERIES]) + payload)


def _records(data: bytes) -> Iterator[tuple[int, bytes | None, str]]:
    """Yield ``(offset, payload, "")`` per good record, then ``(offset, None, reason)``."""
    pos, size = 0, len(data)
    while pos < size:
        if size - pos < _HEADER.size:
            yield pos, None, f"truncated record header ({size - pos} of {_HEADER.size} bytes)"
            return
        magic, length, crc = _HEADER.unpack_from(data, pos)
        checksum = _CHECKSUM.get(magic)
        if checksum is None:
            yield pos, None, f"bad record marker 0x{magic:08x}"
            return
        end = pos + _HEADER.size + length
        if length > _MAX_PAYLOAD or end > size:
            yield pos, None, f"truncated record ({size - pos - _HEADER.size} of {length} payload bytes)"
            return
        payload = data[pos + _HEADER.size : end]
        if checksum(payload) != crc:
            yield pos, None, "checksum mismatch"
            return
        yield pos, payload, ""
        pos = end


def _samples_in(data: bytes, offset: int) -> int | None:
    """The sample count a damaged record's header claims, if it can be read."""
    start = offset + _HEADER.size
    if len(data) >= start + 5 and data[start] == _KIND_SAMPLES:
        (n,) = struct.unpack_from("<I", data, start + 1)
        length = _HEADER.unpack_from(data, offset)[1] if len(data) >= offset + _HEADER.size else 0
        if length == 5 + 24 * n:
            return int(n)
    return None


class _Syncer:
    """The fsyncs of one log file, run by a thread of its own.

    Positions count the bytes appended since the log was opened (across
    rewrites).  A caller that must wait asks for the position it reached and
    waits for it; the thread runs the fsync meanwhile.  With an interval, an
    append that finds nothing pending schedules a sync ``interval_s`` later.
    The thread holds no reference to the log, so a log that is dropped
    without ``close`` is collected and its finalizer stops the thread.
    """

    def __init__(self, fd: int, path: Path, interval_ms: int) -> None:
        self.fd = fd
        self.path = path
        self.interval_s = interval_ms / 1000
        self.cond = threading.Condition(threading.Lock())
        self.written = 0  # position: bytes appended so far
        self.synced = 0  # position a finished fsync covered
        self.wanted = 0  # position a caller waits for
        self.due: float | None = None  # monotonic deadline of a scheduled sync
        self.busy = False  # an fsync, or a change of the file, is under way
        self.stopping = False
        self.error: Exception | None = None
        self.n_syncs = 0
        self._thread: threading.Thread | None = None

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="obscore-wal-sync", daemon=True)
            self._thread.start()

    def wrote(self, n_bytes: int, *, sync_now: bool) -> int:
        """Count appended bytes and ask for their sync now or by the interval;
        return the position reached."""
        with self.cond:
            self.written += n_bytes
            if sync_now:
                self.wanted = self.written
            elif self.interval_s > 0 and self.due is None:
                self.due = time.monotonic() + self.interval_s
            else:
                return self.written
            self._start()
            self.cond.notify_all()
            return self.written

    def wait(self, position: int) -> None:
        """Block until a finished fsync covers ``position``."""
        with self.cond:
            while self.synced < position and self.error is None:
                if self.wanted < position:
                    self.wanted = position
                    self._start()
                    self.cond.notify_all()
                self.cond.wait()
        self.check()

    def check(self) -> None:
        """Raise the error of a failed fsync, once one has failed."""
        if self.error is None:
            return
        message = (
            f"write-ahead log {self.path}: fsync failed ({self.error}); samples "
            f"acknowledged since the last good sync may not be on disk; reopen the data directory"
        )
        errno = getattr(self.error, "errno", None)
        raise (OSError(errno, message) if errno else OSError(message)) from self.error

    def _run(self) -> None:
        with self.cond:
            while not self.stopping and self.error is None:
                if self.busy or self.written <= self.synced:
                    self.cond.wait()
                    continue
                if self.wanted <= self.synced:
                    if self.due is None:
                        self.cond.wait()
                        continue
                    left = self.due - time.monotonic()
                    if left > 0:
                        self.cond.wait(left)
                        continue
                self._sync_locked()

    def _sync_locked(self) -> None:
        """Fsync up to the position written so far (called holding ``cond``)."""
        target, fd = self.written, self.fd
        self.busy, self.due = True, None
        self.cond.release()
        error = None
        try:
            _fsync(fd)
        except Exception as exc:  # noqa: BLE001 - handed to every waiter
            error = exc
        finally:
            self.cond.acquire()
        self.busy = False
        self.n_syncs += 1
        if error is None:
            self.synced = max(self.synced, target)
        else:
            self.error = error
            logger.error("wal fsync failed: %s (file %s); the log refuses appends", error, self.path)
        self.cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Keep the thread off the file while the caller changes and syncs it;
        everything written before counts as synced afterwards."""
        with self.cond:
            while self.busy:
                self.cond.wait()
            self.busy = True
            target = self.written
        done = False
        try:
            yield
            done = True
        finally:
            with self.cond:
                self.busy = False
                if done:
                    self.synced = max(self.synced, target)
                    self.due = None
                self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()


def _release(syncer: _Syncer) -> None:
    """Finalizer of a log dropped without ``close``: stop its thread, close its file."""
    syncer.stop()
    if syncer.fd >= 0:
        os.close(syncer.fd)
        syncer.fd = -1


class WriteAheadLog:
    """An append-only log file with a configurable fsync policy.

    Parameters
    ----------
    path : Path
        The log file; created when missing.
    fsync_ms : int
        0 (the default): every sample batch is fsynced before the append
        that wrote it returns (or, with ``wait=False``, before :meth:`wait`
        returns).  A positive value: appends return once written, and a
        background sync runs at most ``fsync_ms`` after the first append it
        has not covered yet.

    Notes
    -----
    What an acknowledged append means:

    - with ``fsync_ms=0``, the batch survives a crash of the process and a
      power loss;
    - with ``fsync_ms=N``, it survives a crash of the process at once (the
      bytes are in the kernel's page cache when the append returns) and a
      power loss from at most ``N`` ms (plus the fsync's own duration) after
      the append on; a power loss before that can lose it.

    A series record (:meth:`append_series`) and a single sample
    (:meth:`append_sample`) are written, not waited for: the next fsync
    covers them (with ``fsync_ms=0``, that of the next sample batch, or
    :meth:`settle` / :meth:`sync`).  A failed fsync is not retried (the
    kernel may have dropped the pages it could not write): the log raises
    ``OSError`` from every later append or wait, and the data directory has
    to be reopened.
    """

    def __init__(self, path: str | Path, fsync_ms: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_ms = int(fsync_ms)
        if self.fsync_ms < 0:
            raise ValueError(f"fsync_ms must be 0 or positive, got {fsync_ms!r}")
        fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        self._sync = _Syncer(fd, self.path, self.fsync_ms)
        self._size = os.fstat(fd).st_size  # bytes in the file
        self._finalizer = weakref.finalize(self, _release, self._sync)
        self.bytes_written = 0

    @property
    def syncs(self) -> int:
        """Fsyncs of the log file run by the background thread so far."""
        return self._sync.n_syncs

    @property
    def synced(self) -> bool:
        """True when every byte appended so far is covered by an fsync."""
        return self._sync.synced >= self._sync.written

    def replay(self) -> Replay:
        """Read every good record; cut the file at the first damaged one."""
        with open(self.path, "rb") as fh:
            data = fh.read()
        out = Replay([], [])
        for offset, payload, reason in _records(data):
            if payload is None:
                out.damage = Damage(offset, len(data) - offset, _samples_in(data, offset), reason)
                logger.error("%s (file %s)", out.damage, self.path)
                with self._sync.exclusive():
                    os.ftruncate(self._sync.fd, offset)
                    _fsync(self._sync.fd)
                self._size = offset
                break
            kind = payload[0]
            if kind == _KIND_SAMPLES:
                (n,) = struct.unpack_from("<I", payload, 1)
                body = memoryview(payload)[5:]
                ids = np.frombuffer(body[: 8 * n], dtype="<u8").astype(np.uint64)
                ts = np.frombuffer(body[8 * n : 16 * n], dtype="<i8").astype(np.int64)
                values = np.frombuffer(body[16 * n : 24 * n], dtype="<f8").astype(np.float64)
                out.batches.append((ids, ts, values))
            elif kind == _KIND_SERIES:
                sid, name, labels = json.loads(payload[1:].decode("utf-8"))
                out.series.append((int(sid), name, labels))
        logger.info(
            "wal replayed: %d samples in %d batches, %d series from %s",
            out.n_samples, len(out.batches), len(out.series), self.path,
        )
        return out

    def _append(self, parts: list, size: int, *, sync_now: bool) -> int:
        """Write one framed record, given as buffers, with one ``writev``."""
        self._sync.check()
        fd = self._sync.fd
        try:
            done = os.writev(fd, parts)
            if done < size:  # short write (full disk, signal): the rest, in order
                rest = memoryview(b"".join(parts))[done:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
        except OSError:
            # a torn record would hide every later one from replay
            os.ftruncate(fd, self._size)
            raise
        self._size += size
        self.bytes_written += size
        return self._sync.wrote(size, sync_now=sync_now)

    def append_samples(
        self, ids: np.ndarray, ts: np.ndarray, values: np.ndarray, *, wait: bool = True
    ) -> int:
        """Append one sample batch as one record and sync it as the policy says.

        Parameters
        ----------
        ids, ts, values : np.ndarray
            The batch's columns (uint64, int64 ms, float64), one length; read
            in place when they are contiguous and little-endian.
        wait : bool
            With ``fsync_ms=0``: True returns once the record is fsynced;
            False starts the fsync and returns, and :meth:`wait` with the
            returned position blocks until it is done, so the caller can do
            other work meanwhile.  With an interval policy it changes nothing.

        Returns
        -------
        int
            The log position after the record, for :meth:`wait`.
        """
        if len(ids) == 0:
            return self._sync.written
        parts, size = _sample_record(ids, ts, values)
        position = self._append(parts, size, sync_now=self.fsync_ms == 0)
        if wait:
            self.wait(position)
        return position

    def wait(self, position: int) -> None:
        """Return once the record that ended at ``position`` is acknowledged:
        fsynced with ``fsync_ms=0``, written (already true) with an interval."""
        if self.fsync_ms == 0:
            self._sync.wait(position)
        else:
            self._sync.check()

    def append_sample(self, sid: int, ts: int, value: float) -> None:
        """Append one sample as its own record, written but not waited for (see
        :meth:`settle`): it survives a crash of the process from here on."""
        frame = _frame(_ONE_SAMPLE.pack(_KIND_SAMPLES, 1, sid, ts, value))
        self._append([frame], len(frame), sync_now=False)

    def append_series(self, sid: int, name: str, labels: dict[str, str]) -> None:
        """Append a series record, written but not waited for: the fsync of
        the sample batch that follows it covers it."""
        frame = _series_record(sid, name, labels)
        self._append([frame], len(frame), sync_now=False)

    def settle(self) -> None:
        """Acknowledge what was written without waiting: fsync it now with
        ``fsync_ms=0``; with an interval the background sync is on its way."""
        if self.fsync_ms == 0:
            self._sync.wait(self._sync.written)
        else:
            self._sync.check()

    def sync(self) -> None:
        """Fsync everything written so far, whatever the policy."""
        self._sync.wait(self._sync.written)

    def rewrite(
        self,
        series: Iterable[tuple[int, str, dict[str, str]]],
        batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> None:
        """Replace the log by these series and sample batches, atomically.

        Used once older samples are safe in blocks: the new log is written to
        a temporary file, synced and renamed over the old one, so a crash
        leaves either log whole.
        """
        tmp = self.path.with_name(self.path.name + ".tmp")
        with self._sync.exclusive():
            with open(tmp, "wb") as fh:
                for sid, name, labels in series:
                    fh.write(_series_record(sid, name, labels))
                for ids, ts, values in batches:
                    for lo in range(0, len(ids), 1 << 20):
                        part = slice(lo, lo + (1 << 20))
                        fh.writelines(_sample_record(ids[part], ts[part], values[part])[0])
                fh.flush()
                _fsync(fh.fileno())
            os.replace(tmp, self.path)
            os.close(self._sync.fd)
            self._sync.fd = os.open(self.path, _OPEN_FLAGS, 0o644)
            self._size = os.fstat(self._sync.fd).st_size
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                _fsync(dfd)
            finally:
                os.close(dfd)
        logger.info("wal rewritten: %d bytes in %s", self._size, self.path)

    def reset(self) -> None:
        """Empty the log, once its contents are safely in a checkpoint."""
        with self._sync.exclusive():
            os.ftruncate(self._sync.fd, 0)
            _fsync(self._sync.fd)
        self._size = 0

    def close(self) -> None:
        """Sync and close the file, and stop the sync thread."""
        self._sync.stop()
        fd, self._sync.fd = self._sync.fd, -1
        if fd >= 0:
            try:
                _fsync(fd)
            finally:
                os.close(fd)
        self._finalizer.detach()
