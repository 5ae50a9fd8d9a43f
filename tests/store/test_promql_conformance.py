"""Prometheus 2.42's own PromQL test scripts, run on obscore's store.

The scripts (``shared/data/promql/v2.42.0/*.test``, copied from
prometheus/prometheus v2.42.0 ``promql/testdata``) load series, then state
what each query returns.  Every ``eval`` whose query obscore evaluates must
give Prometheus' answer, within the relative 1e-6 of upstream's
``almostEqual``; an eval that raises ``UnsupportedQueryError`` is outside the
supported subset and only counted; an ``eval_fail`` must raise
``PromQLError``.  As upstream does, each instant eval is also run as a range
query (one minute either side, one-minute steps) and its middle step
compared.  Run with ``-s`` to see the per-file counts.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import promql_parser as pp
import pytest

from obscore.errors import UnsupportedQueryError
from obscore.model import SeriesIndex, sample_table
from obscore.store.hot import STALE_NAN, HotStore
from obscore.store.promql import RESULT_TYPE_KEY, PromQLEngine, PromQLError
from obscore.store.query import QueryEngine

FILES = [
    "aggregators.test",
    "functions.test",
    "histograms.test",
    "operators.test",
    "selectors.test",
    "staleness.test",
]

# upstream promql/test.go: epsilon and the smallest normal float64
EPSILON = 1e-6
MIN_NORMAL = 2.2250738585072014e-308

_EVAL = re.compile(r"^eval(?:_(fail|ordered))?\s+instant\s+at\s+(\S+)\s+(.+)$")
_LOAD = re.compile(r"^load\s+(\S+)$")


def almost_equal(a: float, b: float) -> bool:
    """Upstream's comparison: NaN equals NaN, else relative error below 1e-6."""
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    diff = abs(a - b)
    if a == 0 or b == 0 or diff < MIN_NORMAL:
        return diff < EPSILON * MIN_NORMAL
    return diff / (abs(a) + abs(b)) < EPSILON


_UNIT_MS = {
    "ms": 1,
    "s": 1_000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}


def duration_ms(text: str) -> int:
    """A Prometheus duration (``50m``, ``1h30m``, ``0s``) in milliseconds."""
    parts = re.findall(r"(\d+)(ms|[smhdwy])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration")
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


# --- the script format -------------------------------------------------------


def split_series(line: str) -> tuple[str, str]:
    """Split ``name{labels} rest`` (labels may hold spaces) into its two parts."""
    line = line.strip()
    if "{" in line.split()[0] or line.startswith("{"):
        depth, quote, i = 0, None, 0
        for i, ch in enumerate(line):
            if quote:
                if ch == "\\":
                    continue
                if ch == quote and line[i - 1] != "\\":
                    quote = None
            elif ch in "\"'`":
                quote = ch
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    break
        return line[: i + 1], line[i + 1 :].strip()
    head, _, rest = line.partition(" ")
    if "\t" in head:
        head, _, more = head.partition("\t")
        rest = f"{more} {rest}"
    return head, rest.strip()


def series_labels(desc: str) -> dict[str, str]:
    """Labels of a series description, ``__name__`` included."""
    if desc.replace(" ", "") == "{}":
        return {}
    vs = pp.parse(desc)
    labels = {m.name: m.value for m in vs.matchers.matchers}
    if vs.name:
        labels["__name__"] = vs.name
    return {k: v for k, v in labels.items() if v != ""}


def parse_value(text: str) -> float:
    if text == "stale":
        return STALE_NAN
    return float(text)


def expand_values(text: str) -> list[float | None]:
    """The expanding notation: ``a+bxN``, ``a-bxN``, ``axN``, ``_``, ``_xN``, ``stale``.

    None marks a step without a sample.  Increments are added one at a time,
    as upstream's series parser does.
    """
    out: list[float | None] = []
    for item in text.split():
        base, sep, times = item.rpartition("x")
        if not sep or not times.isdigit():
            out.append(None if item == "_" else parse_value(item))
            continue
        n = int(times)
        if base == "_":
            out.extend([None] * n)
            continue
        cut = max(
            (
                i
                for i, ch in enumerate(base)
                if ch in "+-" and i > 0 and base[i - 1] not in "eE"
            ),
            default=None,
        )
        if cut is None:
            out.extend([parse_value(base)] * (n + 1))
            continue
        value, step = parse_value(base[:cut]), float(base[cut:])
        out.append(value)
        for _ in range(n):
            value += step
            out.append(value)
    return out


@dataclass
class Eval:
    line: int
    at_ms: int
    expr: str
    fail: bool
    ordered: bool
    expected: list[str] = field(default_factory=list)


@dataclass
class Load:
    interval_ms: int
    series: list[str] = field(default_factory=list)


def parse_script(path: Path) -> list[Eval | Load | str]:
    """Commands of a test script in order: Load, Eval or the string ``clear``."""
    commands: list[Eval | Load | str] = []
    current: Eval | Load | None = None
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            if not stripped:
                current = None
            continue
        if raw[0] in " \t":
            if current is None:
                raise ValueError(
                    f"{path.name} line {number}: indented line outside a command"
                )
            (current.series if isinstance(current, Load) else current.expected).append(
                stripped
            )
            continue
        current = None
        if stripped == "clear":
            commands.append("clear")
        elif m := _LOAD.match(stripped):
            current = Load(duration_ms(m.group(1)))
            commands.append(current)
        elif m := _EVAL.match(stripped):
            current = Eval(
                number,
                duration_ms(m.group(2)),
                m.group(3),
                fail=m.group(1) == "fail",
                ordered=m.group(1) == "ordered",
            )
            commands.append(current)
        else:
            raise ValueError(f"{path.name} line {number}: unknown command {stripped!r}")
    return commands


# --- running a script --------------------------------------------------------


class Store:
    """An in-memory obscore store that takes any metric name (no config)."""

    def __init__(self) -> None:
        self.index = SeriesIndex()
        self.hot = HotStore(self.index, capacity=8_192)
        self.engine = PromQLEngine(QueryEngine(self.index, self.hot.read, {}))

    def load(self, cmd: Load) -> None:
        defs: dict[tuple, list[float | None]] = {}
        for line in cmd.series:
            desc, values = split_series(line)
            labels = series_labels(desc)
            # a series defined twice in one load keeps its last definition, as upstream
            defs[tuple(sorted(labels.items()))] = expand_values(values)
        ids, ts, vals = [], [], []
        for key, values in defs.items():
            labels = dict(key)
            sid = self.index.add(labels.pop("__name__", ""), labels)
            for k, v in enumerate(values):
                if v is not None:
                    ids.append(sid)
                    ts.append(k * cmd.interval_ms)
                    vals.append(v)
        self.hot.ingest(
            sample_table(np.array(ids, np.uint64), np.array(ts), np.array(vals))
        )


def _rows(table) -> list[tuple[dict[str, str], float, int]]:
    labels = [c for c in table.column_names if c not in ("ts", "value")]
    cols = {c: table[c].to_pylist() for c in labels}
    return [
        ({c: cols[c][i] for c in labels if cols[c][i] is not None}, v, t)
        for i, (t, v) in enumerate(
            zip(table["ts"].to_pylist(), table["value"].to_pylist())
        )
    ]


def compare(ev: Eval, table, at_ms: int | None = None) -> str | None:
    """None when the result matches the expectation, else what differs."""
    is_scalar = (table.schema.metadata or {}).get(RESULT_TYPE_KEY) == b"scalar"
    rows = _rows(table)
    if at_ms is not None:
        rows = [r for r in rows if r[2] == at_ms]
    if (
        ev.expected
        and split_series(ev.expected[0])[1] == ""
        and not ev.expected[0].startswith("{")
    ):
        want = parse_value(ev.expected[0])
        if not is_scalar or len(rows) != 1:
            return f"expected scalar {want}, got {rows}"
        return (
            None
            if almost_equal(want, rows[0][1])
            else f"expected {want}, got {rows[0][1]}"
        )
    expected: dict[tuple, tuple[int, float]] = {}
    for pos, line in enumerate(ev.expected):
        desc, value = split_series(line)
        expected[tuple(sorted(series_labels(desc).items()))] = (pos, parse_value(value))
    seen = set()
    for pos, (labels, value, _) in enumerate(rows):
        key = tuple(sorted(labels.items()))
        if key not in expected:
            return f"unexpected series {labels} {value} in the result"
        want_pos, want = expected[key]
        if ev.ordered and want_pos != pos:
            return f"series {labels} at position {pos}, expected at {want_pos}"
        if not almost_equal(want, value):
            return f"expected {want} for {labels}, got {value}"
        seen.add(key)
    missing = [dict(k) for k in expected if k not in seen]
    return f"expected series {missing} not found" if missing else None


@dataclass
class Report:
    total: int = 0
    in_subset: int = 0
    passed: int = 0
    unsupported: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def _construct(message: str) -> str:
    # "unsupported PromQL subquery 'x[5m:]'" -> "unsupported PromQL subquery"
    return message if "function" in message else message.split(" '")[0]


def run_script(path: Path) -> Report:
    report = Report()
    store = Store()
    for cmd in parse_script(path):
        if cmd == "clear":
            store = Store()
            continue
        if isinstance(cmd, Load):
            store.load(cmd)
            continue
        assert isinstance(cmd, Eval)
        report.total += 1
        where = f"{path.name}:{cmd.line} {cmd.expr}"
        try:
            table = store.engine.instant(cmd.expr, cmd.at_ms)
        except UnsupportedQueryError as exc:
            report.unsupported[_construct(str(exc))] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - every other failure is reported
            report.in_subset += 1
            if cmd.fail and isinstance(exc, PromQLError):
                report.passed += 1
            else:
                report.failures.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        report.in_subset += 1
        if cmd.fail:
            report.failures.append(f"{where}: expected an error, got {_rows(table)}")
            continue
        problem = compare(cmd, table)
        if problem is None and not cmd.ordered:
            try:
                ranged = store.engine.range(
                    cmd.expr,
                    start_ms=cmd.at_ms - 60_000,
                    end_ms=cmd.at_ms + 60_000,
                    step_ms=60_000,
                )
                problem = compare(cmd, ranged, at_ms=cmd.at_ms)
                problem = problem and f"range mode: {problem}"
            except Exception as exc:  # noqa: BLE001
                problem = f"range mode: {type(exc).__name__}: {exc}"
        if problem is None:
            report.passed += 1
        else:
            report.failures.append(f"{where}: {problem}")
    return report


# --- tests -------------------------------------------------------------------


@pytest.fixture(scope="module")
def summary():
    reports: dict[str, Report] = {}
    yield reports
    if not reports:
        return
    print("\nPromQL conformance (Prometheus v2.42.0 test scripts)")
    print(f"{'file':<20}{'evals':>7}{'in subset':>11}{'passed':>8}")
    for name, r in reports.items():
        print(f"{name:<20}{r.total:>7}{r.in_subset:>11}{r.passed:>8}")
    total = Counter()
    for r in reports.values():
        total.update(r.unsupported)
    if total:
        print(
            "outside the subset:",
            ", ".join(f"{k} x{n}" for k, n in total.most_common()),
        )


@pytest.mark.parametrize("name", FILES)
def test_promql_conformance_v2_42(name, shared_data, summary):
    path = shared_data / "promql" / "v2.42.0" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    report = run_script(path)
    summary[name] = report
    assert report.in_subset > 0
    assert not report.failures, f"{len(report.failures)} evals failed:\n" + "\n".join(
        report.failures[:40]
    )


def test_expand_values_follows_upstream_notation():
    values = expand_values("1+2x3 _ 5x1 _x2 -1-1x1 2e+3")
    assert values == [1, 3, 5, 7, None, 5, 5, None, None, -1, -2, 2000.0]
    assert np.isnan(expand_values("stale")[0])


def test_split_series_keeps_spaces_inside_braces():
    assert split_series('{a="x y", b="}"}  3') == ('{a="x y", b="}"}', "3")
    assert split_series("metric\t1 2") == ("metric", "1 2")
    assert series_labels('m{a="1", b=""}') == {"__name__": "m", "a": "1"}
