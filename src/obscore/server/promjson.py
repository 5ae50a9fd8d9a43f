"""Prometheus HTTP API shapes: read its parameters, write its JSON.

The answers follow Prometheus 2.42's ``/api/v1`` byte for byte where a client
could notice: sample values are strings in Go's shortest format (``'f'``, or
``'e'`` for the very small and very large; ``"+Inf"``, ``"NaN"``), times are
seconds with at most three decimals, and errors carry ``errorType``
(``bad_data`` for a bad parameter or query, ``execution`` for a query that
fails while it runs).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

import pyarrow as pa

from obscore.alert.route import parse_rfc3339
from obscore.durations import parse_duration
from obscore.errors import ConfigError

# Prometheus refuses a range query of more than 11,000 steps.
MAX_POINTS = 11_000

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\Z")


class ApiError(Exception):
    """A request the API answers with an error object.

    Parameters
    ----------
    status : int
        HTTP status.
    error_type : str
        Prometheus' ``errorType``: ``bad_data``, ``execution``, ``not_found``...
    message : str
        The ``error`` text.
    """

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def body(self) -> dict[str, str]:
        return {"status": "error", "errorType": self.error_type, "error": self.message}


def format_value(value: float) -> str:
    """A sample value of a vector or matrix as Prometheus 2.42 writes it.

    Go's ``strconv.FormatFloat`` with the shortest digits, in format ``'e'``
    when ``0 < |value| < 1e-6`` or ``|value| >= 1e21`` and ``'f'`` otherwise
    (the cut-offs of Prometheus' ``jsonutil.MarshalValue``); a negative zero
    keeps its sign.  Scalars are written differently: :func:`format_scalar`.

    >>> [format_value(v) for v in (2.0, 0.1, 1e-06, 1.5e-07, 1e21, -0.0)]
    ['2', '0.1', '0.000001', '1.5e-07', '1e+21', '-0']
    >>> [format_value(v) for v in (5e-324, float("-inf"), float("nan"))]
    ['5e-324', '-Inf', 'NaN']
    """
    size = abs(value)
    if size != 0 and (size < 1e-6 or (size >= 1e21 and not math.isinf(size))):
        sign, digits, exponent = Decimal(repr(float(value))).as_tuple()
        assert isinstance(exponent, int)  # finite
        text = "".join(map(str, digits)).rstrip("0") or "0"
        power = exponent + len(digits) - 1
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        exp_sign = "-" if power < 0 else "+"
        return f"{'-' if sign else ''}{mantissa}e{exp_sign}{abs(power):02d}"
    return format_scalar(value)


def format_scalar(value: float) -> str:
    """A scalar result's value as Prometheus writes it: ``FormatFloat(v, 'f', -1, 64)``.

    >>> [format_scalar(v) for v in (2.0, 1.5e-07, 1e22, float("inf"), float("nan"))]
    ['2', '0.00000015', '10000000000000000000000', '+Inf', 'NaN']
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(float(value))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_ts(ts_ms: int) -> int | float:
    """Seconds since the epoch as Prometheus writes a sample time.

    >>> format_ts(1_500), format_ts(2_000)
    (1.5, 2)
    """
    sec, frac = divmod(int(ts_ms), 1000)
    return sec if frac == 0 else round(ts_ms / 1000, 3)


def parse_time(text: str | None, name: str, default_ms: int | None = None) -> int:
    """Milliseconds from a Prometheus time parameter (unix seconds or RFC 3339).

    Raises
    ------
    ApiError
        400 ``bad_data`` when the text is neither.
    """
    if text is None or text == "":
        if default_ms is None:
            raise ApiError(400, "bad_data", f"missing parameter {name!r}")
        return default_ms
    if _NUMBER.match(text.strip()):
        seconds = float(text)
        if not math.isfinite(seconds) or abs(seconds) > 9.2e15:
            raise ApiError(
                400, "bad_data", f"invalid parameter {name!r}: {text!r} is out of range"
            )
        return round(seconds * 1000)
    try:
        ms = parse_rfc3339(text)
    except ValueError:
        ms = None
    if ms is None:
        raise ApiError(
            400,
            "bad_data",
            f"invalid parameter {name!r}: cannot parse {text!r} to a valid timestamp",
        )
    return ms


def parse_step(text: str | None) -> int:
    """Milliseconds from a ``step`` parameter: float seconds or a duration."""
    if text is None or text == "":
        raise ApiError(400, "bad_data", "missing parameter 'step'")
    text = text.strip()
    try:
        if _NUMBER.match(text):
            ms = round(float(text) * 1000)
        else:
            ms = parse_duration(text)
    except (ConfigError, ValueError, OverflowError):
        raise ApiError(
            400,
            "bad_data",
            f"invalid parameter 'step': cannot parse {text!r} to a valid duration",
        ) from None
    if ms <= 0:
        raise ApiError(
            400,
            "bad_data",
            "invalid parameter 'step': zero or negative query resolution step widths "
            "are not accepted. Try a positive integer",
        )
    return ms


def check_range(start_ms: int, end_ms: int, step_ms: int) -> None:
    """Refuse what Prometheus refuses: an end before the start, too many steps."""
    if end_ms < start_ms:
        raise ApiError(
            400,
            "bad_data",
            "invalid parameter 'end': end timestamp must not be before start time",
        )
    if (end_ms - start_ms) // step_ms > MAX_POINTS:
        raise ApiError(
            400,
            "bad_data",
            "exceeded maximum resolution of 11,000 points per timeseries. "
            "Try decreasing the query resolution (?step=XX)",
        )


def _label_columns(table: pa.Table) -> list[str]:
    return [n for n in table.column_names if n not in ("ts", "value")]


def _series_rows(table: pa.Table) -> dict[tuple[tuple[str, str], ...], list[int]]:
    """Row numbers of each label set, in order of first appearance."""
    names = _label_columns(table)
    cols = [table[n].to_pylist() for n in names]
    out: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i in range(table.num_rows):
        key = tuple((n, c[i]) for n, c in zip(names, cols) if c[i] not in (None, ""))
        out.setdefault(key, []).append(i)
    return out


def count_series(table: pa.Table) -> int:
    """How many label sets a query result holds."""
    names = _label_columns(table)
    if not names or table.num_rows == 0:
        return min(table.num_rows, 1)
    return table.select(names).group_by(names).aggregate([]).num_rows


def result_type(table: pa.Table) -> str:
    meta = table.schema.metadata or {}
    return meta.get(b"promql_result_type", b"vector").decode()


def query_data(table: pa.Table, *, is_range: bool) -> dict[str, Any]:
    """The ``data`` object of a query answer from ``Engine.query_promql``'s table.

    A range query always answers a matrix, as in Prometheus; an instant
    query answers its own result type.
    """
    rtype = "matrix" if is_range else result_type(table)
    ts = table["ts"].to_pylist()
    values = table["value"].to_pylist()
    if rtype == "scalar":
        if not ts:
            return {"resultType": "scalar", "result": None}
        return {
            "resultType": "scalar",
            "result": [format_ts(ts[0]), format_scalar(values[0])],
        }
    result: list[dict[str, Any]] = []
    for key, rows in _series_rows(table).items():
        metric = dict(key)
        if rtype == "vector":
            for i in rows:
                result.append(
                    {
                        "metric": metric,
                        "value": [format_ts(ts[i]), format_value(values[i])],
                    }
                )
        else:
            rows = sorted(rows, key=ts.__getitem__) if is_range else rows
            points = [[format_ts(ts[i]), format_value(values[i])] for i in rows]
            result.append({"metric": metric, "values": points})
    if rtype == "matrix" and is_range:
        result.sort(key=lambda s: sorted(s["metric"].items()))
    return {"resultType": rtype, "result": result}


def success(data: Any, warnings: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        body["warnings"] = warnings
    return body


class Params:
    """Request parameters from the URL and a form body, as Go's ``FormValue`` reads them.

    Form fields come first, then URL parameters; ``get`` gives the first value.
    """

    def __init__(
        self, query: list[tuple[str, str]], form: list[tuple[str, str]]
    ) -> None:
        self._pairs = [*form, *query]

    def get(self, name: str) -> str | None:
        return next((v for k, v in self._pairs if k == name), None)

    def getlist(self, name: str) -> list[str]:
        return [v for k, v in self._pairs if k == name]
