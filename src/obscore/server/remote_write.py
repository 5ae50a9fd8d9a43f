"""Prometheus remote-write 1.0: a snappy-compressed ``WriteRequest`` protobuf.

The message is small enough to read by hand, so obscore needs no generated
protobuf code.  The fields read (numbers from ``prompb/remote.proto`` and
``prompb/types.proto``)::

    WriteRequest   1: repeated TimeSeries   3: repeated MetricMetadata
    TimeSeries     1: repeated Label        2: repeated Sample
                   (3: exemplars and 4: native histograms are skipped)
    Label          1: string name           2: string value
    Sample         1: double value          2: int64 timestamp (ms)
    MetricMetadata 1: enum type  2: string metric_family_name  4: help  5: unit

Unknown fields are skipped as protobuf requires; anything that does not parse
raises :class:`RemoteWriteError` naming the byte offset, and nothing of the
request is kept.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import numpy as np

# MetricMetadata.MetricType numbers -> obscore metric kinds (None: gauge-like).
METADATA_TYPES = {1: "counter", 2: "gauge", 3: "histogram", 5: "summary"}

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_DOUBLE = struct.Struct("<d")


class RemoteWriteError(ValueError):
    """A remote-write body that is not a valid compressed ``WriteRequest``."""


@dataclass(slots=True)
class WriteRequest:
    """The decoded request: one entry per time series, in arrival order.

    ``series`` holds ``(name, labels)``; ``counts[i]`` samples of series ``i``
    sit in ``ts`` and ``values`` one series after the other.
    """

    series: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return len(self.ts)

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(series position, ts, value)`` arrays, one row per sample."""
        pos = np.repeat(np.arange(len(self.counts), dtype=np.int64), self.counts)
        return pos, np.array(self.ts, np.int64), np.array(self.values, np.float64)


def decompress(body: bytes, max_bytes: int) -> bytes:
    """Undo remote-write's snappy block compression, refusing oversized output.

    The uncompressed length heads the block as a varint, so a bomb is refused
    before any memory is spent on it.
    """
    import cramjam

    try:
        length, _ = _varint(body, 0, len(body))
    except RemoteWriteError:
        raise RemoteWriteError(
            "snappy: the body does not start with a length"
        ) from None
    if length > max_bytes:
        raise RemoteWriteError(
            f"snappy: the body would decompress to {length} bytes, more than the "
            f"limit of {max_bytes}"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as exc:
        raise RemoteWriteError(f"snappy: {exc}") from None


def decode(buf: bytes) -> WriteRequest:
    """Decode an uncompressed ``WriteRequest``.

    Raises
    ------
    RemoteWriteError
        On a truncated or malformed message, a wrong wire type, text that is
        not UTF-8, a series without ``__name__``, or a bad label name.
    """
    out = WriteRequest()
    pos, end = 0, len(buf)
    while pos < end:
        fnum, wtype, pos = _key(buf, pos, end)
        if fnum == 1 and wtype == 2:
            start, stop = _span(buf, pos, end)
            _timeseries(buf, start, stop, out)
            pos = stop
        elif fnum == 3 and wtype == 2:
            start, stop = _span(buf, pos, end)
            _metadata(buf, start, stop, out)
            pos = stop
        else:
            pos = _skip(buf, pos, end, wtype)
    return out


def _timeseries(buf: bytes, pos: int, end: int, out: WriteRequest) -> None:
    at = pos
    labels: dict[str, str] = {}
    n = 0
    while pos < end:
        fnum, wtype, pos = _key(buf, pos, end)
        if fnum == 1 and wtype == 2:
            start, stop = _span(buf, pos, end)
            name, text = _label(buf, start, stop)
            if name in labels:
                raise RemoteWriteError(
                    f"offset {start}: label {name!r} repeated in one series"
                )
            labels[name] = text
            pos = stop
        elif fnum == 2 and wtype == 2:
            start, stop = _span(buf, pos, end)
            ts, value = _sample(buf, start, stop)
            out.ts.append(ts)
            out.values.append(value)
            n += 1
            pos = stop
        else:
            pos = _skip(buf, pos, end, wtype)
    name = labels.pop("__name__", "")
    if not _METRIC_NAME.match(name):
        raise RemoteWriteError(
            f"offset {at}: series has no valid __name__ (got {name!r})"
        )
    for label in labels:
        if not _LABEL_NAME.match(label) or label.startswith("__"):
            raise RemoteWriteError(f"offset {at}: label name {label!r} is not valid")
    out.series.append((name, labels))
    out.counts.append(n)


def _label(buf: bytes, pos: int, end: int) -> tuple[str, str]:
    name = value = ""
    while pos < end:
        fnum, wtype, pos = _key(buf, pos, end)
        if fnum in (1, 2) and wtype == 2:
            start, stop = _span(buf, pos, end)
            text = _text(buf, start, stop)
            if fnum == 1:
                name = text
            else:
                value = text
            pos = stop
        else:
            pos = _skip(buf, pos, end, wtype)
    return name, value


def _sample(buf: bytes, pos: int, end: int) -> tuple[int, float]:
    ts, value = 0, 0.0
    while pos < end:
        fnum, wtype, pos = _key(buf, pos, end)
        if fnum == 1 and wtype == 1:
            if pos + 8 > end:
                raise RemoteWriteError(f"offset {pos}: sample value truncated")
            value = _DOUBLE.unpack_from(buf, pos)[0]
            pos += 8
        elif fnum == 2 and wtype == 0:
            raw, pos = _varint(buf, pos, end)
            ts = raw - (1 << 64) if raw >= 1 << 63 else raw
        else:
            pos = _skip(buf, pos, end, wtype)
    return ts, value


def _metadata(buf: bytes, pos: int, end: int, out: WriteRequest) -> None:
    mtype, family = 0, ""
    while pos < end:
        fnum, wtype, pos = _key(buf, pos, end)
        if fnum == 1 and wtype == 0:
            mtype, pos = _varint(buf, pos, end)
        elif fnum == 2 and wtype == 2:
            start, stop = _span(buf, pos, end)
            family = _text(buf, start, stop)
            pos = stop
        else:
            pos = _skip(buf, pos, end, wtype)
    if family and mtype in METADATA_TYPES:
        out.kinds[family] = METADATA_TYPES[mtype]


# --- wire format ---------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise RemoteWriteError(f"offset {pos}: varint truncated")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise RemoteWriteError(f"offset {pos}: varint longer than 10 bytes")


def _key(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    at = pos
    key, pos = _varint(buf, pos, end)
    fnum, wtype = key >> 3, key & 7
    if fnum == 0:
        raise RemoteWriteError(f"offset {at}: field number 0 is not valid")
    return fnum, wtype, pos


def _span(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    length, pos = _varint(buf, pos, end)
    if pos + length > end:
        raise RemoteWriteError(
            f"offset {pos}: field of {length} bytes runs past the end of its message"
        )
    return pos, pos + length


def _text(buf: bytes, start: int, stop: int) -> str:
    try:
        return buf[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteWriteError(f"offset {start}: text is not valid UTF-8") from None


def _skip(buf: bytes, pos: int, end: int, wtype: int) -> int:
    if wtype == 0:
        return _varint(buf, pos, end)[1]
    if wtype == 1:
        pos += 8
    elif wtype == 2:
        return _span(buf, pos, end)[1]
    elif wtype == 5:
        pos += 4
    else:
        raise RemoteWriteError(f"offset {pos}: wire type {wtype} is not supported")
    if pos > end:
        raise RemoteWriteError(f"offset {end}: fixed-width field truncated")
    return pos


# --- encoding, for tests and for clients written in Python ------------------------


def _put_varint(out: bytearray, n: int) -> None:
    n &= (1 << 64) - 1
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _put_field(out: bytearray, fnum: int, payload: bytes) -> None:
    _put_varint(out, fnum << 3 | 2)
    _put_varint(out, len(payload))
    out += payload


def encode(
    series: list[tuple[dict[str, str], list[tuple[int, float]]]],
    metadata: dict[str, str] | None = None,
) -> bytes:
    """Encode ``[(labels with __name__, [(ts_ms, value), ...]), ...]`` as a ``WriteRequest``.

    ``metadata`` maps metric family names to their kind (``counter``,
    ``gauge``, ``histogram``, ``summary``), sent as ``MetricMetadata``.

    >>> decode(encode([({"__name__": "up"}, [(1000, 1.0)])])).series
    [('up', {})]
    >>> decode(encode([], {"jobs": "counter"})).kinds
    {'jobs': 'counter'}
    """
    out = bytearray()
    numbers = {kind: n for n, kind in METADATA_TYPES.items()}
    for family, kind in (metadata or {}).items():
        meta = bytearray(b"\x08")
        _put_varint(meta, numbers[kind])
        _put_field(meta, 2, family.encode())
        _put_field(out, 3, bytes(meta))
    for labels, samples in series:
        ts_buf = bytearray()
        for name, text in sorted(labels.items()):
            lab = bytearray()
            _put_field(lab, 1, name.encode())
            _put_field(lab, 2, text.encode())
            _put_field(ts_buf, 1, bytes(lab))
        for ts, value in samples:
            smp = bytearray(b"\x09") + _DOUBLE.pack(value)
            smp.append(0x10)
            _put_varint(smp, ts)
            _put_field(ts_buf, 2, bytes(smp))
        _put_field(out, 1, bytes(ts_buf))
    return bytes(out)


def compress(buf: bytes) -> bytes:
    """Snappy block compression, as remote-write senders use."""
    import cramjam

    return bytes(cramjam.snappy.compress_raw(buf))
