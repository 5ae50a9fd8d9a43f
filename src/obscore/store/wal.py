"""The write-ahead log: every acknowledged sample is on disk before the call
that wrote it returns.

A log is a sequence of records, each framed as::

    magic   u32  0x4f425357 ("OBSW")
    length  u32  bytes of the payload
    crc     u32  CRC-32 of the payload
    payload      kind u8, then the body

Kinds: 1 = sample batch (``n: u32``, then ``n`` series ids as uint64, ``n``
ts as int64, ``n`` values as float64, little-endian), 2 = series (the JSON
of ``[series_id, name, labels]``).

On open the log is replayed up to the first record that is truncated or
fails its checksum; everything before it is kept, the damage is reported
with its byte offset and the number of samples it held (when its header
still says), and the file is cut there so new records follow good ones.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MAGIC = 0x4F425357
_HEADER = struct.Struct("<III")
_KIND_SAMPLES = 1
_KIND_SERIES = 2
_MAX_PAYLOAD = 1 << 31
_ONE_SAMPLE = struct.Struct("<BIQqd")


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


def _encode_samples(ids: np.ndarray, ts: np.ndarray, values: np.ndarray) -> bytes:
    n = len(ids)
    return b"".join(
        (
            struct.pack("<BI", _KIND_SAMPLES, n),
            np.ascontiguousarray(ids, dtype="<u8").tobytes(),
            np.ascontiguousarray(ts, dtype="<i8").tobytes(),
            np.ascontiguousarray(values, dtype="<f8").tobytes(),
        )
    )


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _records(data: bytes) -> Iterator[tuple[int, bytes | None, str]]:
    """Yield ``(offset, payload, "")`` per good record, then ``(offset, None, reason)``."""
    pos, size = 0, len(data)
    while pos < size:
        if size - pos < _HEADER.size:
            yield pos, None, f"truncated record header ({size - pos} of {_HEADER.size} bytes)"
            return
        magic, length, crc = _HEADER.unpack_from(data, pos)
        if magic != MAGIC:
            yield pos, None, f"bad record marker 0x{magic:08x}"
            return
        end = pos + _HEADER.size + length
        if length > _MAX_PAYLOAD or end > size:
            yield pos, None, f"truncated record ({size - pos - _HEADER.size} of {length} payload bytes)"
            return
        payload = data[pos + _HEADER.size : end]
        if zlib.crc32(payload) != crc:
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


class WriteAheadLog:
    """An append-only log file with a configurable fsync policy.

    Parameters
    ----------
    path : Path
        The log file; created when missing.
    fsync_ms : int
        0 syncs after every append (per batch, the default); a positive value
        syncs at most that often, trading the last ``fsync_ms`` of samples on
        a power loss (not on a process crash: written bytes survive a kill)
        for speed.
    """

    def __init__(self, path: str | Path, fsync_ms: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_ms = int(fsync_ms)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._last_sync = time.monotonic()
        self._unsynced = False
        self.bytes_written = 0

    def replay(self) -> Replay:
        """Read every good record; cut the file at the first damaged one."""
        with open(self.path, "rb") as fh:
            data = fh.read()
        out = Replay([], [])
        for offset, payload, reason in _records(data):
            if payload is None:
                out.damage = Damage(offset, len(data) - offset, _samples_in(data, offset), reason)
                logger.error("%s (file %s)", out.damage, self.path)
                os.ftruncate(self._fd, offset)
                os.fsync(self._fd)
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

    def _write(self, payload: bytes, sync: bool = True) -> None:
        frame = _frame(payload)
        view = memoryview(frame)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.bytes_written += len(frame)
        if not sync:
            self._unsynced = True
            return
        now = time.monotonic()
        if self.fsync_ms == 0 or (now - self._last_sync) * 1000 >= self.fsync_ms:
            os.fsync(self._fd)
            self._last_sync = now
            self._unsynced = False

    def append_samples(
        self, ids: np.ndarray, ts: np.ndarray, values: np.ndarray, *, sync: bool = True
    ) -> None:
        """Append one sample batch as one record (and sync per the policy).

        With ``sync=False`` the record is written to the file (it survives a
        crash of the process) and synced with the next synced append or
        :meth:`sync`.
        """
        if len(ids):
            self._write(_encode_samples(ids, ts, values), sync)

    def append_sample(self, sid: int, ts: int, value: float) -> None:
        """Append one sample as its own record, written but not synced (see
        :meth:`settle`): it survives a crash of the process from here on."""
        self._write(_ONE_SAMPLE.pack(_KIND_SAMPLES, 1, sid, ts, value), sync=False)

    def settle(self) -> None:
        """Sync records written with ``sync=False``, as the fsync policy says."""
        if not self._unsynced:
            return
        now = time.monotonic()
        if self.fsync_ms == 0 or (now - self._last_sync) * 1000 >= self.fsync_ms:
            self.sync()

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
        with open(tmp, "wb") as fh:
            for sid, name, labels in series:
                payload = json.dumps([sid, name, labels], separators=(",", ":")).encode("utf-8")
                fh.write(_frame(bytes([_KIND_SERIES]) + payload))
            for ids, ts, values in batches:
                for lo in range(0, len(ids), 1 << 20):
                    hi = lo + (1 << 20)
                    fh.write(_frame(_encode_samples(ids[lo:hi], ts[lo:hi], values[lo:hi])))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._unsynced = False
        logger.info("wal rewritten: %d bytes in %s", self.path.stat().st_size, self.path)

    def append_series(self, sid: int, name: str, labels: dict[str, str]) -> None:
        payload = json.dumps([sid, name, labels], separators=(",", ":")).encode("utf-8")
        self._write(bytes([_KIND_SERIES]) + payload)

    def reset(self) -> None:
        """Empty the log, once its contents are safely in a checkpoint."""
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)

    def sync(self) -> None:
        os.fsync(self._fd)
        self._last_sync = time.monotonic()
        self._unsynced = False

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
