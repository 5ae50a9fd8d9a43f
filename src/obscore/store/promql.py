"""PromQL text queries over obscore's store.

:class:`PromQLEngine` parses PromQL with the ``promql-parser`` package and
evaluates it with the semantics of Prometheus 2.42 on the series of a
:class:`~obscore.store.query.QueryEngine`.  Evaluation is vectorized over the
evaluation times: every instant vector is a (series x steps) matrix of values
with a mask saying which series has a sample at which step.

Supported: vector and range selectors with ``=``, ``!=``, ``=~``, ``!~``
matchers (``__name__`` included) and ``offset``; number and string literals;
unary minus; arithmetic, comparison (with ``bool``) and set operators with
``on``/``ignoring`` and ``group_left``/``group_right``; every aggregation of
Prometheus 2.42 with ``by``/``without``; the functions listed in
:data:`FUNCTIONS`.  Anything else raises
:class:`~obscore.errors.UnsupportedQueryError` naming the construct.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import promql_parser as pp
import pyarrow as pa

from obscore._native.histogram import hist_quantile
from obscore.errors import ObscoreError, UnsupportedQueryError
from obscore.model import LabelSet
from obscore.store.hot import STALE_NAN
from obscore.store.query import (
    DEFAULT_LOOKBACK_MS,
    RANGE_FUNCTIONS,
    Matcher,
    QueryEngine,
    Windows,
    apply_range_function,
    compile_label_regex,
    instant_lookup,
    quantile_of,
)

RESULT_TYPE_KEY = b"promql_result_type"
MAX_STEPS = 11_000

NAME = "__name__"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STALE_BITS = np.array(STALE_NAN).view(np.uint64)[()]
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_ARITHMETIC = ("+", "-", "*", "/", "%", "^")  # these drop __name__; atan2 keeps it
_COMPARISON = ("==", "!=", ">", "<", ">=", "<=")
_SET = ("and", "or", "unless")
# promql_parser's enums are not hashable, so this is a list of pairs
_MATCH_OPS = [
    (pp.MatchOp.Equal, "="),
    (pp.MatchOp.NotEqual, "!="),
    (pp.MatchOp.Re, "=~"),
    (pp.MatchOp.NotRe, "!~"),
]


# holt_winters is a Prometheus 2 function that promql-parser (which follows
# Prometheus 3) no longer knows; the registration is process-wide and additive.
try:
    pp.register_extra_functions(
        [
            pp.Function(
                "holt_winters",
                [pp.ValueType.Matrix, pp.ValueType.Scalar, pp.ValueType.Scalar],
                pp.ValueType.Vector,
            )
        ]
    )
except ValueError:  # already known to this version of promql-parser
    pass


class PromQLError(ObscoreError, ValueError):
    """A PromQL query that is malformed or fails the way Prometheus fails it."""


# --- values ------------------------------------------------------------------


@dataclass(slots=True)
class _Scalar:
    values: np.ndarray  # float64, one per step


@dataclass(slots=True)
class _String:
    value: str


@dataclass(slots=True)
class _Vector:
    labels: list[LabelSet]  # one per row, __name__ included where kept
    values: np.ndarray  # float64 (rows, steps)
    present: np.ndarray  # bool (rows, steps): the row has a sample at the step
    sample_ts: np.ndarray | None = None  # int64 (rows, steps), selectors only
    order: list[int] | None = None  # row order of an instant result (sort, topk)


@dataclass(slots=True)
class _Matrix:
    labels: list[LabelSet]
    ts: list[np.ndarray]
    values: list[np.ndarray]


def _stack(rows: Sequence[np.ndarray], n_steps: int, dtype=np.float64) -> np.ndarray:
    return (
        np.vstack(rows).astype(dtype) if rows else np.zeros((0, n_steps), dtype=dtype)
    )


def _settle(labels, values, present, *, whole: bool = False) -> _Vector:
    """Merge rows with equal label sets, failing as Prometheus does on a clash.

    Two rows with one label set may not both hold a sample at one step (or,
    with ``whole``, anywhere in the result: range-vector functions check the
    whole matrix).
    """
    values = np.asarray(values, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    if not labels:
        return _Vector(
            [], values.reshape(0, values.shape[-1]), present.reshape(values.shape)
        )
    rows: dict[LabelSet, list[int]] = {}
    for i in np.flatnonzero(present.any(axis=1)):
        rows.setdefault(labels[i], []).append(int(i))
    out_labels, out_values, out_present = [], [], []
    for key, idx in rows.items():
        if len(idx) > 1 and (whole or (present[idx].sum(axis=0) > 1).any()):
            raise PromQLError(
                f"vector cannot contain metrics with the same labelset {_fmt_labels(key)}"
            )
        out_labels.append(key)
        pick = np.argmax(present[idx], axis=0)
        out_values.append(values[idx][pick, np.arange(values.shape[1])])
        out_present.append(present[idx].any(axis=0))
    n_steps = values.shape[1]
    return _Vector(
        out_labels, _stack(out_values, n_steps), _stack(out_present, n_steps, bool)
    )


def _fmt_labels(labels: LabelSet) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in labels.items_tuple) + "}"


# --- helpers -----------------------------------------------------------------


def _ms(delta: timedelta | None) -> int:
    return 0 if delta is None else delta // timedelta(milliseconds=1)


def _unwrap(node):
    while isinstance(node, pp.ParenExpr):
        node = node.expr
    return node


def parse_promql(text: str) -> pp.Expr:
    """Parse PromQL text into a ``promql_parser`` expression tree.

    Raises
    ------
    PromQLError
        With the parser's message when the text is not valid PromQL.
    """
    try:
        return pp.parse(text)
    except (ValueError, TypeError) as exc:
        raise PromQLError(f"cannot parse PromQL {text!r}: {exc}") from None
    except BaseException as exc:  # a panic inside promql-parser
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise PromQLError(f"cannot parse PromQL {text!r}: {exc}") from None


def _parse_le(text: str) -> float | None:
    """A bucket bound the way Go's ``strconv.ParseFloat`` reads it; None if not a number."""
    if "_" in text or text != text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return float.fromhex(text)
    except ValueError:
        return None


def _format_value(value: float) -> str:
    # Go's strconv.FormatFloat(v, 'f', -1, 64): shortest digits, no exponent.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return np.format_float_positional(value, trim="-")


def _elementwise(
    op: str, lhs: np.ndarray, rhs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Value and keep-mask of a binary operator; comparisons keep the left value."""
    with np.errstate(all="ignore"):
        if op == "+":
            return lhs + rhs, np.ones(np.shape(lhs), dtype=bool)
        if op == "-":
            value = lhs - rhs
        elif op == "*":
            value = lhs * rhs
        elif op == "/":
            value = np.true_divide(lhs, rhs)
        elif op == "%":
            value = np.fmod(lhs, rhs)
        elif op == "^":
            value = np.power(lhs, rhs)
        elif op == "atan2":
            value = np.arctan2(lhs, rhs)
        else:
            keep = {
                "==": np.equal, "!=": np.not_equal, ">": np.greater,
                "<": np.less, ">=": np.greater_equal, "<=": np.less_equal,
            }[op](lhs, rhs)  # fmt: skip
            return np.broadcast_to(lhs, np.shape(keep)).astype(np.float64), keep
    return value, np.ones(np.shape(value), dtype=bool)


def _go_int64(value: float) -> int:
    if not -(2.0**63) <= value < 2.0**63:
        raise PromQLError(f"scalar value {value!r} overflows int64")
    return int(value)


# --- instant-vector functions ------------------------------------------------


def _sgn(x: np.ndarray) -> np.ndarray:
    return np.where(x < 0, -1.0, np.where(x > 0, 1.0, x))


_MATH: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs, "ceil": np.ceil, "floor": np.floor, "exp": np.exp,
    "sqrt": np.sqrt, "ln": np.log, "log2": np.log2, "log10": np.log10,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin,
    "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh,
    "tanh": np.tanh, "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh,
    "rad": lambda x: x * math.pi / 180, "deg": lambda x: x * 180 / math.pi,
    "sgn": _sgn,
}  # fmt: skip


def _date_part(part: str, seconds: np.ndarray) -> np.ndarray:
    """Calendar fields (UTC) of Unix seconds, truncated to whole seconds as Go does."""
    finite = np.isfinite(seconds)
    secs = np.trunc(np.where(finite, seconds, 0)).astype(np.int64)
    moment = secs.astype("datetime64[s]")
    day = moment.astype("datetime64[D]")
    month = moment.astype("datetime64[M]")
    year = moment.astype("datetime64[Y]")
    in_day = (moment - day).astype(np.int64)
    if part == "year":
        out = year.astype(np.int64) + 1970
    elif part == "month":
        out = month.astype(np.int64) % 12 + 1
    elif part == "day_of_month":
        out = (day - month.astype("datetime64[D]")).astype(np.int64) + 1
    elif part == "day_of_year":
        out = (day - year.astype("datetime64[D]")).astype(np.int64) + 1
    elif part == "day_of_week":
        out = (day.astype(np.int64) + 4) % 7  # 1970-01-01 was a Thursday
    elif part == "hour":
        out = in_day // 3600
    elif part == "minute":
        out = in_day % 3600 // 60
    else:  # days_in_month
        out = (
            (month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")
        ).astype(np.int64)
    return np.where(finite, out.astype(np.float64), np.nan)


_DATE = (
    "year",
    "month",
    "day_of_month",
    "day_of_year",
    "day_of_week",
    "hour",
    "minute",
    "days_in_month",
)

FUNCTIONS = tuple(
    sorted(
        {
            *RANGE_FUNCTIONS,
            *_MATH,
            *_DATE,
            "absent",
            "absent_over_time",
            "clamp",
            "clamp_max",
            "clamp_min",
            "histogram_quantile",
            "label_join",
            "label_replace",
            "pi",
            "round",
            "scalar",
            "sort",
            "sort_desc",
            "time",
            "timestamp",
            "vector",
        }
    )
)
AGGREGATIONS = (
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "quantile",
    "topk",
    "bottomk",
    "count_values",
)


def _expand_template(template: str, match: re.Match[str]) -> str:
    """Go's ``regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``.

    A group that does not exist, or did not take part in the match, expands to
    the empty string.
    """

    def group(ref: re.Match[str]) -> str:
        if ref.group(0) == "$$":
            return "$"
        name = ref.group(1) or ref.group(2)
        key: int | str = int(name) if name.isdigit() else name
        try:
            return match.group(key) or ""
        except (IndexError, KeyError):
            return ""

    return re.sub(r"\$\$|\$\{([A-Za-z0-9_]+)\}|\$([A-Za-z0-9_]+)", group, template)


# --- the evaluator -----------------------------------------------------------


class _Evaluator:
    def __init__(
        self,
        source: QueryEngine,
        evals: np.ndarray,
        lookback_ms: int,
        subquery_step_ms: int,
        bounds: tuple[int, int] | None = None,
    ) -> None:
        self.source = source
        self.evals = evals
        self.n = len(evals)
        self.lookback_ms = lookback_ms
        self.subquery_step_ms = subquery_step_ms
        # start() and end() of the query, for '@'; subqueries keep the outer ones
        self.bounds = bounds or (int(evals[0]), int(evals[-1]))

    def eval(self, node):
        if isinstance(node, pp.ParenExpr):
            return self.eval(node.expr)
        if isinstance(node, pp.NumberLiteral):
            return _Scalar(np.full(self.n, float(node.val)))
        if isinstance(node, pp.StringLiteral):
            return _String(node.val)
        if isinstance(node, pp.VectorSelector):
            return self.selector(node)
        if isinstance(node, pp.MatrixSelector):
            return self.matrix(node)
        if isinstance(node, pp.UnaryExpr):
            return self.negate(node)
        if isinstance(node, pp.BinaryExpr):
            return self.binary(node)
        if isinstance(node, pp.AggregateExpr):
            return self.aggregate(node)
        if isinstance(node, pp.Call):
            return self.call(node)
        if isinstance(node, pp.SubqueryExpr):
            return self.matrix(node)
        raise UnsupportedQueryError(
            f"unsupported PromQL expression {type(node).__name__} {node.prettify()!r}"
        )

    def _vector(self, node, what: str) -> _Vector:
        value = self.eval(node)
        if not isinstance(value, _Vector):
            raise PromQLError(
                f"{what} needs an instant vector, got {node.prettify()!r}"
            )
        return value

    def _scalar(self, node, what: str) -> np.ndarray:
        value = self.eval(node)
        if not isinstance(value, _Scalar):
            raise PromQLError(f"{what} needs a scalar, got {node.prettify()!r}")
        return value.values

    def _string(self, node, what: str) -> str:
        value = self.eval(node)
        if not isinstance(value, _String):
            raise PromQLError(f"{what} needs a string, got {node.prettify()!r}")
        return value.value

    # --- selectors -------------------------------------------------------------

    def _matchers(self, vs: pp.VectorSelector) -> list[Matcher]:
        if vs.matchers.or_matchers:
            raise UnsupportedQueryError(
                f"unsupported PromQL 'or' matchers in {vs.prettify()!r}"
            )
        out = [Matcher(NAME, "=", vs.name)] if vs.name else []
        for m in vs.matchers.matchers:
            try:
                op = next(text for kind, text in _MATCH_OPS if kind == m.op)
                out.append(Matcher(m.name, op, m.value))
            except ValueError as exc:
                raise PromQLError(str(exc)) from None
        return out

    def _at_ms(self, node) -> int | None:
        """The time an '@' modifier pins the node to, or None without one."""
        if node.at is None:
            return None
        if node.at.type == pp.AtModifierType.Start:
            return self.bounds[0]
        if node.at.type == pp.AtModifierType.End:
            return self.bounds[1]
        try:
            moment = node.at.at
        except BaseException as exc:  # promql-parser panics on times before 1970
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise UnsupportedQueryError(
                f"unsupported PromQL modifier '@' before 1970 in {node.prettify()!r}"
            ) from None
        return (moment - _EPOCH) // timedelta(milliseconds=1)

    def selector(self, vs: pp.VectorSelector) -> _Vector:
        at_ms = self._at_ms(vs)
        pinned = self.evals if at_ms is None else np.full(self.n, at_ms)
        refs = pinned - _ms(vs.offset)
        if self.n == 1:
            return self._selector_at(vs, int(refs[0]))
        labels, values, present, sample_ts = [], [], [], []
        for sid, lab in self.source.series(self._matchers(vs)):
            ts, v = self.source.read(sid, refs.min() - self.lookback_ms, refs.max())
            idx, ok = instant_lookup(ts, v, refs, self.lookback_ms)
            if not ok.any():
                continue
            labels.append(lab)
            values.append(np.where(ok, v[idx], 0.0))
            present.append(ok)
            sample_ts.append(np.where(ok, ts[idx], 0))
        return _Vector(
            labels,
            _stack(values, self.n),
            _stack(present, self.n, bool),
            _stack(sample_ts, self.n, np.int64),
        )

    def _selector_at(self, vs: pp.VectorSelector, ref: int) -> _Vector:
        """The selector at one reference time: what :func:`instant_lookup`
        gives, one scalar lookup per series instead of array operations."""
        # NOTE: the array path spent ~42 us a series on one evaluation time (a
        # dozen NumPy calls on one-element arrays); this one ~15 us, most of it
        # the read.  The instant 'max by (shard)' over 100 series of
        # benchmarks/test_server_load.py: 5.9 -> 3.4 ms CPU for the whole query.
        labels, values, sample_ts = [], [], []
        start = ref - self.lookback_ms
        for sid, lab in self.source.series(self._matchers(vs)):
            ts, v = self.source.read(sid, start, ref)
            i = int(ts.searchsorted(ref, side="right")) - 1
            if i < 0 or ts[i] < start:
                continue
            bits = np.asarray(v, np.float64)[i : i + 1].view(np.uint64)[0]
            if bits == _STALE_BITS:
                continue
            labels.append(lab)
            values.append(v[i])
            sample_ts.append(ts[i])
        rows = len(labels)
        return _Vector(
            labels,
            np.array(values, np.float64).reshape(rows, 1),
            np.ones((rows, 1), bool),
            np.array(sample_ts, np.int64).reshape(rows, 1),
        )

    def windows(self, node) -> list[tuple[LabelSet, Windows]]:
        """The windows of every series of a range selector or subquery."""
        node = _unwrap(node)
        if isinstance(node, pp.SubqueryExpr):
            return self._subquery(node)
        if not isinstance(node, pp.MatrixSelector):
            raise PromQLError(f"expected a range vector, got {node.prettify()!r}")
        vs = node.vector_selector
        window_ms, offset_ms = _ms(node.range), _ms(vs.offset)
        at_ms = self._at_ms(vs)
        ends = self.evals if at_ms is None else np.array([at_ms])
        out = []
        for sid, lab in self.source.series(self._matchers(vs)):
            first = int(ends.min()) - offset_ms - window_ms
            ts, v = self.source.read(sid, first, int(ends.max()) - offset_ms)
            w = Windows.of(ts, v, self.evals, window_ms, offset_ms, at_ms=at_ms)
            out.append((lab, w))
        return out

    def _subquery(self, node: pp.SubqueryExpr) -> list[tuple[LabelSet, Windows]]:
        """Evaluate the inner query at aligned steps; its results are the samples."""
        window_ms, offset_ms = _ms(node.range), _ms(node.offset)
        step_ms = _ms(node.step) or self.subquery_step_ms
        at_ms = self._at_ms(node)
        ends = self.evals if at_ms is None else np.array([at_ms])
        first = int(ends.min()) - offset_ms - window_ms
        start = -(-first // step_ms) * step_ms  # the first multiple of the step
        inner_evals = np.arange(start, int(ends.max()) - offset_ms + 1, step_ms)
        if len(inner_evals) > MAX_STEPS * 100:
            raise PromQLError(
                f"subquery {node.prettify()!r} would take {len(inner_evals)} steps; "
                "use a larger subquery step"
            )
        out: list[tuple[LabelSet, Windows]] = []
        if len(inner_evals) == 0:
            return out
        inner = _Evaluator(
            self.source,
            inner_evals,
            self.lookback_ms,
            self.subquery_step_ms,
            self.bounds,
        ).eval(node.expr)
        if not isinstance(inner, _Vector):
            raise PromQLError(
                f"subquery needs an instant vector, got {node.prettify()!r}"
            )
        for lab, values, present in zip(inner.labels, inner.values, inner.present):
            if present.any():
                w = Windows.of(
                    inner_evals[present],
                    values[present],
                    self.evals,
                    window_ms,
                    offset_ms,
                    at_ms=at_ms,
                )
                out.append((lab, w))
        return out

    def matrix(self, node) -> _Matrix:
        if self.n != 1:
            raise PromQLError(
                f"a range query cannot return the range vector {node.prettify()!r}; "
                "wrap it in a function such as rate()"
            )
        series = self.windows(node)
        out = _Matrix([], [], [])
        for lab, w in series:
            lo, hi = int(w.lo[0]), int(w.hi[0])
            if hi > lo:
                out.labels.append(lab)
                out.ts.append(w.ts[lo:hi])
                out.values.append(w.v[lo:hi])
        return out

    # --- operators -------------------------------------------------------------

    def negate(self, node: pp.UnaryExpr):
        value = self.eval(node.expr)
        if isinstance(value, _Scalar):
            return _Scalar(-value.values)
        if not isinstance(value, _Vector):
            raise PromQLError(
                f"unary minus needs a scalar or vector, got {node.prettify()!r}"
            )
        labels = [lab.without(NAME) for lab in value.labels]
        return _settle(labels, -value.values, value.present, whole=True)

    def binary(self, node: pp.BinaryExpr):
        op = str(node.op)
        mod = node.modifier
        if mod is not None and (
            mod.fill_values.lhs is not None or mod.fill_values.rhs is not None
        ):
            raise UnsupportedQueryError(
                f"unsupported PromQL fill modifier in {node.prettify()!r}"
            )
        lhs, rhs = self.eval(node.lhs), self.eval(node.rhs)
        return_bool = bool(mod is not None and mod.return_bool)
        if isinstance(lhs, _Scalar) and isinstance(rhs, _Scalar):
            value, keep = _elementwise(op, lhs.values, rhs.values)
            return _Scalar(keep.astype(np.float64) if op in _COMPARISON else value)
        if isinstance(lhs, _Vector) and isinstance(rhs, _Scalar):
            return self._vector_scalar(op, lhs, rhs.values, False, return_bool)
        if isinstance(lhs, _Scalar) and isinstance(rhs, _Vector):
            return self._vector_scalar(op, rhs, lhs.values, True, return_bool)
        if not (isinstance(lhs, _Vector) and isinstance(rhs, _Vector)):
            raise PromQLError(f"operator {op!r} needs scalars or instant vectors")
        on, names, include = False, [], []
        card = pp.VectorMatchCardinality.ManyToMany if op in _SET else None
        if mod is not None:
            card = mod.card
            if mod.matching is not None:
                on = mod.matching.type == pp.LabelModifierType.Include
                names = list(mod.matching.labels)
            include = list(mod.group_labels or [])
        if op in _SET:
            return self._set_operation(op, lhs, rhs, on, names)
        card = card or pp.VectorMatchCardinality.OneToOne
        return self._vector_vector(op, lhs, rhs, card, on, names, include, return_bool)

    def _vector_scalar(self, op, vec: _Vector, scalar, swap: bool, return_bool: bool):
        lhs, rhs = vec.values, np.broadcast_to(scalar, vec.values.shape)
        if swap:
            lhs, rhs = rhs, lhs
        value, keep = _elementwise(op, lhs, rhs)
        if op in _COMPARISON and swap:
            value = rhs
        if return_bool:
            value, keep = keep.astype(np.float64), np.ones_like(keep)
        labels = vec.labels
        if op in _ARITHMETIC or return_bool:
            labels = [lab.without(NAME) for lab in labels]
        return _settle(labels, value, vec.present & keep)

    @staticmethod
    def _signature(on: bool, names: Sequence[str]) -> Callable[[LabelSet], tuple]:
        keep = set(names)
        if on:
            return lambda lab: tuple(kv for kv in lab.items_tuple if kv[0] in keep)
        keep.add(NAME)
        return lambda lab: tuple(kv for kv in lab.items_tuple if kv[0] not in keep)

    def _set_operation(self, op, lhs: _Vector, rhs: _Vector, on, names) -> _Vector:
        sig = self._signature(on, names)
        l_sigs, r_sigs = (
            [sig(lab) for lab in lhs.labels],
            [sig(lab) for lab in rhs.labels],
        )
        r_any: dict[tuple, np.ndarray] = {}
        for s, row in zip(r_sigs, rhs.present):
            r_any[s] = r_any.get(s, False) | row
        none = np.zeros(self.n, dtype=bool)
        if op == "and":
            present = [row & r_any.get(s, none) for s, row in zip(l_sigs, lhs.present)]
            return _settle(lhs.labels, lhs.values, _stack(present, self.n, bool))
        if op == "unless":
            present = [row & ~r_any.get(s, none) for s, row in zip(l_sigs, lhs.present)]
            return _settle(lhs.labels, lhs.values, _stack(present, self.n, bool))
        l_any: dict[tuple, np.ndarray] = {}
        for s, row in zip(l_sigs, lhs.present):
            l_any[s] = l_any.get(s, False) | row
        r_present = [row & ~l_any.get(s, none) for s, row in zip(r_sigs, rhs.present)]
        return _settle(
            lhs.labels + rhs.labels,
            np.vstack([lhs.values, rhs.values]),
            np.vstack([lhs.present, _stack(r_present, self.n, bool)]),
        )

    def _vector_vector(
        self, op, lhs, rhs, card, on, names, include, return_bool
    ) -> _Vector:
        if card == pp.VectorMatchCardinality.ManyToMany:
            raise PromQLError(
                f"many-to-many matching is only allowed for set operators, not {op!r}"
            )
        swapped = card == pp.VectorMatchCardinality.OneToMany
        many, one = (rhs, lhs) if swapped else (lhs, rhs)
        sig = self._signature(on, names)
        many_sigs, one_sigs = (
            [sig(lab) for lab in many.labels],
            [sig(lab) for lab in one.labels],
        )
        both = many.present.any(axis=0) & one.present.any(axis=0)
        one_by_sig: dict[tuple, list[int]] = {}
        for k, s in enumerate(one_sigs):
            one_by_sig.setdefault(s, []).append(k)
        for s, ks in one_by_sig.items():
            if len(ks) > 1 and ((one.present[ks].sum(axis=0) > 1) & both).any():
                side = "left" if swapped else "right"
                raise PromQLError(
                    f"found duplicate series for the match group {dict(s)!r} on the {side} "
                    "hand-side of the operation; many-to-many matching not allowed: "
                    "matching labels must be unique on one side"
                )
        labels, values, kept, groups = [], [], [], []
        for i, s in enumerate(many_sigs):
            for k in one_by_sig.get(s, ()):
                both_present = many.present[i] & one.present[k]
                if not both_present.any():
                    continue
                vl, vr = (
                    (one.values[k], many.values[i])
                    if swapped
                    else (many.values[i], one.values[k])
                )
                value, keep = _elementwise(op, vl, vr)
                if return_bool:
                    value, keep = keep.astype(np.float64), np.ones_like(keep)
                lab = self._result_labels(
                    many.labels[i], one.labels[k], op, card, on, names, include
                )
                labels.append(lab.without(NAME) if return_bool else lab)
                values.append(value)
                kept.append(both_present & keep)
                groups.append(
                    s if card == pp.VectorMatchCardinality.OneToOne else (s, labels[-1])
                )
        by_group: dict[object, np.ndarray] = {}
        for g, row in zip(groups, kept):
            by_group[g] = by_group.get(g, 0) + row.astype(np.int64)
        if any((count > 1).any() for count in by_group.values()):
            if card == pp.VectorMatchCardinality.OneToOne:
                raise PromQLError(
                    "multiple matches for labels: many-to-one matching must be explicit "
                    "(group_left/group_right)"
                )
            raise PromQLError(
                "multiple matches for labels: grouping labels must ensure unique matches"
            )
        return _settle(labels, _stack(values, self.n), _stack(kept, self.n, bool))

    @staticmethod
    def _result_labels(
        many: LabelSet, one: LabelSet, op, card, on, names, include
    ) -> LabelSet:
        out = dict(many.items_tuple)
        if op in _ARITHMETIC:
            out.pop(NAME, None)
        if card == pp.VectorMatchCardinality.OneToOne:
            if on:
                out = {k: v for k, v in out.items() if k in names}
            else:
                for n in names:
                    out.pop(n, None)
        for n in include:
            if one.get(n):
                out[n] = one[n]
            else:
                out.pop(n, None)
        return LabelSet(out)

    # --- aggregations ----------------------------------------------------------

    def aggregate(self, node: pp.AggregateExpr) -> _Vector:
        op = str(node.op).lower()
        if op not in AGGREGATIONS:
            raise UnsupportedQueryError(f"unsupported PromQL aggregation {op!r}")
        mod = node.modifier
        without = mod is not None and mod.type == pp.AggModifierType.Without
        grouping = sorted(mod.labels) if mod is not None else []
        param = None if node.param is None else self.eval(node.param)
        vec = self._vector(node.expr, f"aggregation {op!r}")
        if op == "count_values":
            if not isinstance(param, _String):
                raise PromQLError(
                    "count_values needs a string label name as its parameter"
                )
            return self._count_values(vec, param.value, grouping, without)
        ks = q = np.zeros(self.n)
        if op in ("quantile", "topk", "bottomk"):
            if not isinstance(param, _Scalar):
                raise PromQLError(f"aggregation {op!r} needs a scalar parameter")
            ks = q = param.values

        def key_of(lab: LabelSet) -> LabelSet:
            return lab.without(*grouping, NAME) if without else lab.only(grouping)

        groups: dict[LabelSet, list[int]] = {}
        for i, lab in enumerate(vec.labels):
            groups.setdefault(key_of(lab), []).append(i)
        if op in ("topk", "bottomk"):
            return self._top(vec, groups, ks, op == "topk")
        labels, values = [], []
        present: list = []  # of bool rows (numpy stubs type any() loosely)
        for key, rows in groups.items():
            if op == "quantile":
                value = np.full(self.n, np.nan)
                for j in range(self.n):
                    sample = vec.values[rows, j][vec.present[rows, j]]
                    value[j] = quantile_of(float(q[j]), sample)
            else:
                value = self._fold(op, vec.values[rows], vec.present[rows])
            labels.append(key)
            values.append(value)
            present.append(vec.present[rows].any(axis=0))
        return _settle(labels, _stack(values, self.n), _stack(present, self.n, bool))

    def _fold(self, op: str, values: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Fold one group's rows in order, step by step, as Prometheus' aggregation does."""
        seen = np.zeros(self.n, dtype=bool)
        value, mean, count = np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)
        with np.errstate(all="ignore"):
            for x, here in zip(values, present):
                first, more = here & ~seen, here & seen
                count = np.where(first, 1.0, count + more)
                if op == "sum":
                    value = np.where(first, x, np.where(more, value + x, value))
                elif op == "avg":
                    hold = np.isinf(mean) & (
                        (np.isinf(x) & ((mean > 0) == (x > 0)))
                        | (~np.isinf(x) & ~np.isnan(x))
                    )
                    step = mean + (x / count - mean / count)
                    mean = np.where(first, x, np.where(more & ~hold, step, mean))
                elif op in ("min", "max"):
                    better = (value > x) if op == "min" else (value < x)
                    value = np.where(
                        first | (more & (better | np.isnan(value))), x, value
                    )
                elif op in ("stddev", "stdvar"):
                    delta = x - mean
                    new_mean = mean + delta / count
                    value = np.where(
                        first,
                        0.0,
                        np.where(more, value + delta * (x - new_mean), value),
                    )
                    mean = np.where(first, x, np.where(more, new_mean, mean))
                seen |= here
            if op == "avg":
                return mean
            if op in ("count", "group"):
                return count if op == "count" else np.ones(self.n)
            if op == "stdvar":
                return value / count
            if op == "stddev":
                return np.sqrt(value / count)
            return value

    def _top(self, vec: _Vector, groups, ks: np.ndarray, largest: bool) -> _Vector:
        present = np.zeros_like(vec.present)
        order: list[int] = []
        for j in range(self.n):
            k = _go_int64(float(ks[j]))
            if k < 1:
                continue
            sign = -1.0 if largest else 1.0
            for rows in groups.values():
                # NaN ranks last; among equal values the earlier series wins,
                # among NaNs the later one (Prometheus' heap keeps them so).
                ranked = sorted(
                    (1, 0.0, -i) if math.isnan(x) else (0, sign * x, i)
                    for i, x in (
                        (i, vec.values[i, j]) for i in rows if vec.present[i, j]
                    )
                )
                chosen = [abs(i) for _, _, i in ranked[:k]]
                present[chosen, j] = True
                order.extend(chosen)
        out = _Vector(vec.labels, vec.values, present)
        out.order = order if self.n == 1 else None
        return out

    def _count_values(
        self, vec: _Vector, label: str, grouping, without: bool
    ) -> _Vector:
        if not _LABEL_NAME.match(label):
            raise PromQLError(f"invalid label name {label!r} in count_values")
        grouping = sorted({*grouping, label}) if not without else grouping
        counts: dict[LabelSet, np.ndarray] = {}
        for i, lab in enumerate(vec.labels):
            for j in np.flatnonzero(vec.present[i]):
                tagged = lab.with_(**{label: _format_value(float(vec.values[i, j]))})
                key = (
                    tagged.without(*grouping, NAME)
                    if without
                    else tagged.only(grouping)
                )
                counts.setdefault(key, np.zeros(self.n))[j] += 1
        labels = list(counts)
        values = _stack([counts[k] for k in labels], self.n)
        return _settle(labels, values, values > 0)

    # --- functions -------------------------------------------------------------

    def call(self, node: pp.Call):
        name = node.func.name
        args = list(node.args)
        if name not in FUNCTIONS:
            raise UnsupportedQueryError(f"unsupported PromQL function {name!r}")
        if name in RANGE_FUNCTIONS or name == "absent_over_time":
            return self._range_call(name, args)
        if name in _MATH:
            vec = self._vector(args[0], name)
            with np.errstate(all="ignore"):
                values = _MATH[name](vec.values)
            return self._drop_name(vec, values)
        if name in _DATE:
            if not args:
                secs = np.trunc(self.evals / 1000)
                return _Vector(
                    [LabelSet()],
                    _date_part(name, secs)[None, :],
                    np.ones((1, self.n), dtype=bool),
                )
            vec = self._vector(args[0], name)
            return self._drop_name(vec, _date_part(name, vec.values))
        handler = getattr(self, f"_fn_{name}")
        return handler(args)

    def _drop_name(self, vec: _Vector, values: np.ndarray, present=None) -> _Vector:
        labels = [lab.without(NAME) for lab in vec.labels]
        return _settle(labels, values, vec.present if present is None else present)

    def _range_call(self, name: str, args) -> _Vector:
        at = 1 if name == "quantile_over_time" else 0
        series = self.windows(args[at])
        params = [self._scalar(a, name) for i, a in enumerate(args) if i != at]
        labels, values, present = [], [], []
        for lab, w in series:
            if name == "absent_over_time":
                values.append(np.ones(self.n))
                present.append(w.count > 0)
                continue
            try:
                out, ok = apply_range_function(name, w, params)
            except ValueError as exc:
                raise PromQLError(str(exc)) from None
            labels.append(lab if name == "last_over_time" else lab.without(NAME))
            values.append(out)
            present.append(ok)
        if name == "absent_over_time":
            seen = np.any(_stack(present, self.n, bool), axis=0)
            return _Vector(
                [self._absent_labels(args[at])], np.ones((1, self.n)), ~seen[None, :]
            )
        return _settle(
            labels, _stack(values, self.n), _stack(present, self.n, bool), whole=True
        )

    @staticmethod
    def _absent_labels(node) -> LabelSet:
        node = _unwrap(node)
        if isinstance(node, pp.MatrixSelector):
            node = node.vector_selector
        if not isinstance(node, pp.VectorSelector):
            return LabelSet()
        out: dict[str, str] = {}
        dropped = []
        for m in node.matchers.matchers:
            if m.name == NAME:
                continue
            if m.op == pp.MatchOp.Equal and m.name not in out:
                out[m.name] = m.value
            else:
                dropped.append(m.name)
        return LabelSet({k: v for k, v in out.items() if k not in dropped})

    def _fn_absent(self, args) -> _Vector:
        vec = self._vector(args[0], "absent")
        missing = np.logical_not(np.asarray(vec.present.any(axis=0)))
        return _Vector(
            [self._absent_labels(args[0])], np.ones((1, self.n)), missing[None, :]
        )

    def _fn_vector(self, args) -> _Vector:
        values = self._scalar(args[0], "vector")
        return _Vector(
            [LabelSet()], values[None, :].copy(), np.ones((1, self.n), dtype=bool)
        )

    def _fn_scalar(self, args) -> _Scalar:
        vec = self._vector(args[0], "scalar")
        single = vec.present.sum(axis=0) == 1
        picked = np.where(vec.present, vec.values, 0.0).sum(axis=0)
        return _Scalar(np.where(single, picked, np.nan))

    def _fn_time(self, args) -> _Scalar:
        return _Scalar(self.evals / 1000)

    def _fn_pi(self, args) -> _Scalar:
        return _Scalar(np.full(self.n, math.pi))

    def _fn_timestamp(self, args) -> _Vector:
        vec = self._vector(args[0], "timestamp")
        ts = np.broadcast_to(self.evals, vec.values.shape)
        if (
            isinstance(_unwrap(args[0]), pp.VectorSelector)
            and vec.sample_ts is not None
        ):
            ts = vec.sample_ts  # a selector's samples keep their own time
        return self._drop_name(vec, ts / 1000)

    def _fn_round(self, args) -> _Vector:
        vec = self._vector(args[0], "round")
        nearest = self._scalar(args[1], "round") if len(args) > 1 else np.ones(self.n)
        with np.errstate(all="ignore"):
            inverse = 1.0 / nearest
            values = np.floor(vec.values * inverse + 0.5) / inverse
        return self._drop_name(vec, values)

    def _fn_clamp(self, args) -> _Vector:
        vec = self._vector(args[0], "clamp")
        lo, hi = self._scalar(args[1], "clamp"), self._scalar(args[2], "clamp")
        values = np.maximum(lo, np.minimum(hi, vec.values))
        return self._drop_name(vec, values, vec.present & ~(hi < lo))

    def _fn_clamp_min(self, args) -> _Vector:
        vec = self._vector(args[0], "clamp_min")
        return self._drop_name(
            vec, np.maximum(self._scalar(args[1], "clamp_min"), vec.values)
        )

    def _fn_clamp_max(self, args) -> _Vector:
        vec = self._vector(args[0], "clamp_max")
        return self._drop_name(
            vec, np.minimum(self._scalar(args[1], "clamp_max"), vec.values)
        )

    def _fn_sort(self, args, descending: bool = False) -> _Vector:
        vec = self._vector(args[0], "sort_desc" if descending else "sort")
        if self.n == 1:
            rows = [i for i in range(len(vec.labels)) if vec.present[i, 0]]
            finite = [i for i in rows if not math.isnan(vec.values[i, 0])]
            nans = [i for i in rows if math.isnan(vec.values[i, 0])]
            finite.sort(key=lambda i: vec.values[i, 0], reverse=descending)
            vec = _Vector(vec.labels, vec.values, vec.present, order=finite + nans)
        return vec

    def _fn_sort_desc(self, args) -> _Vector:
        return self._fn_sort(args, descending=True)

    def _fn_label_replace(self, args) -> _Vector:
        vec = self._vector(args[0], "label_replace")
        dst, template, src, pattern = (
            self._string(a, "label_replace") for a in args[1:5]
        )
        try:
            regex = compile_label_regex(pattern)
        except ValueError:
            raise PromQLError(
                f"invalid regular expression in label_replace(): {pattern}"
            ) from None
        if not _LABEL_NAME.match(dst):
            raise PromQLError(
                f"invalid destination label name in label_replace(): {dst}"
            )
        labels = []
        for lab in vec.labels:
            match = regex.fullmatch(lab.get(src, ""))
            if match is not None:
                value = _expand_template(template, match)
                lab = lab.without(dst)
                lab = lab.with_(**{dst: value}) if value else lab
            labels.append(lab)
        return _settle(labels, vec.values, vec.present)

    def _fn_label_join(self, args) -> _Vector:
        vec = self._vector(args[0], "label_join")
        dst, sep, *srcs = (self._string(a, "label_join") for a in args[1:])
        for name in (dst, *srcs):
            if not _LABEL_NAME.match(name):
                raise PromQLError(f"invalid label name in label_join(): {name}")
        labels = []
        for lab in vec.labels:
            value = sep.join(lab.get(s, "") for s in srcs)
            lab = lab.without(dst)
            labels.append(lab.with_(**{dst: value}) if value else lab)
        return _settle(labels, vec.values, vec.present)

    def _fn_histogram_quantile(self, args) -> _Vector:
        q = self._scalar(args[0], "histogram_quantile")
        vec = self._vector(args[1], "histogram_quantile")
        groups: dict[tuple, list[tuple[int, float]]] = {}
        for i, lab in enumerate(vec.labels):
            bound = _parse_le(lab.get("le", ""))
            if bound is not None:
                key = (lab.without("le", NAME), lab.get(NAME, ""))
                groups.setdefault(key, []).append((i, bound))
        labels, values, present = [], [], []
        for (lab, _), members in groups.items():
            rows = np.array([i for i, _ in members])
            bounds = np.array([b for _, b in members])
            value = np.full(self.n, np.nan)
            for j in np.flatnonzero(vec.present[rows].any(axis=0)):
                here = vec.present[rows, j]
                value[j] = _bucket_quantile(
                    float(q[j]), bounds[here], vec.values[rows[here], j]
                )
            labels.append(lab)
            values.append(value)
            present.append(vec.present[rows].any(axis=0))
        return _settle(labels, _stack(values, self.n), _stack(present, self.n, bool))


def _bucket_quantile(q: float, bounds: np.ndarray, counts: np.ndarray) -> float:
    """histogram_quantile of one histogram: sort, merge equal bounds, interpolate."""
    order = np.argsort(bounds, kind="stable")
    bounds, counts = bounds[order], counts[order]
    merged, starts = np.unique(bounds, return_index=True)
    if len(merged) < len(bounds):
        counts = np.add.reduceat(counts, starts)
        bounds = merged
    return float(
        hist_quantile(q, np.ascontiguousarray(bounds), np.ascontiguousarray(counts))
    )


# --- results -----------------------------------------------------------------


def _table(value, evals: np.ndarray, instant: bool) -> pa.Table:
    """The long result table: one string column per label, then ts and value."""
    if isinstance(value, _String):
        raise UnsupportedQueryError("unsupported PromQL result type 'string'")
    if isinstance(value, _Scalar):
        table = pa.table(
            {"ts": pa.array(evals, pa.int64()), "value": pa.array(value.values)}
        )
        return table.replace_schema_metadata({RESULT_TYPE_KEY: b"scalar"})
    if isinstance(value, _Matrix):
        keys = value.labels
        ts_parts, v_parts = value.ts, value.values
        kind = b"matrix"
    else:
        rows = list(range(len(value.labels)))
        if instant and value.order is not None:
            rows = value.order
        elif not instant:
            rows.sort(key=lambda i: value.labels[i].items_tuple)
        keys, ts_parts, v_parts = [], [], []
        for i in rows:
            here = value.present[i]
            if here.any():
                keys.append(value.labels[i])
                ts_parts.append(evals[here])
                v_parts.append(value.values[i][here])
        kind = b"vector"
    names = sorted({k for key in keys for k in key})
    counts = [len(t) for t in ts_parts]
    columns = {
        n: pa.array(
            [key.get(n) for key, c in zip(keys, counts) for _ in range(c)], pa.string()
        )
        for n in names
    }
    columns["ts"] = pa.array(
        np.concatenate(ts_parts) if ts_parts else np.empty(0, np.int64)
    )
    columns["value"] = pa.array(np.concatenate(v_parts) if v_parts else np.empty(0))
    table = pa.table(
        columns,
        schema=pa.schema(
            [
                *(pa.field(n, pa.string()) for n in names),
                pa.field("ts", pa.int64()),
                pa.field("value", pa.float64()),
            ]
        ),
    )
    return table.replace_schema_metadata({RESULT_TYPE_KEY: kind})


class PromQLEngine:
    """Evaluate PromQL text on the series a :class:`QueryEngine` reads.

    Parameters
    ----------
    source : QueryEngine
        Where series are selected and read.
    lookback_ms : int
        How far back an instant selector looks for a sample (5 minutes).
    subquery_step_ms : int
        Step of a subquery that gives none (``x[1h:]``); Prometheus uses its
        global evaluation interval, one minute by default.

    Notes
    -----
    Semantics are those of Prometheus 2.42, checked against its own test
    scripts and against a live 2.42 server.  Not evaluated (they raise
    :class:`~obscore.errors.UnsupportedQueryError`): native histograms,
    string results, ``@`` before 1970 and functions beyond :data:`FUNCTIONS`.
    In a range query, ``@`` pins a selector's window to one time at every
    step (Prometheus lets the window of ``predict_linear`` and the date
    functions drift with the step there).  Where Prometheus leaves an answer to chance, obscore
    picks a fixed one: among equal values ``topk``/``bottomk`` keep the
    earlier series, and a bucket count of NaN makes ``histogram_quantile``
    NaN.  Date functions give NaN for non-finite input.

    Results are long Arrow tables: one string column per label (null where
    a series lacks it), then ``ts`` (int64 ms) and ``value`` (float64).  The
    schema metadata key ``promql_result_type`` says ``vector``, ``scalar`` or
    ``matrix`` (a range selector at the top of an instant query; its ``ts``
    are the samples' own).  Instant results keep Prometheus' order (``sort``,
    ``topk``); range results are ordered by label set, then ts.
    """

    def __init__(
        self,
        source: QueryEngine,
        *,
        lookback_ms: int = DEFAULT_LOOKBACK_MS,
        subquery_step_ms: int = 60_000,
    ) -> None:
        self.source = source
        self.lookback_ms = int(lookback_ms)
        self.subquery_step_ms = int(subquery_step_ms)

    def _evaluate(self, text: str, evals: np.ndarray):
        expr = parse_promql(text)
        evaluator = _Evaluator(
            self.source, evals, self.lookback_ms, self.subquery_step_ms
        )
        return evaluator.eval(expr)

    def instant(self, text: str, time_ms: int) -> pa.Table:
        """Evaluate ``text`` at one time.

        Raises
        ------
        PromQLError
            When the text does not parse or evaluation fails as it would in
            Prometheus (clashing label sets, many-to-many matching, ...).
        UnsupportedQueryError
            When the query uses a construct obscore does not evaluate.
        """
        evals = np.array([int(time_ms)], dtype=np.int64)
        value = self._evaluate(text, evals)
        return _table(value, evals, instant=True)

    def range(self, text: str, *, start_ms: int, end_ms: int, step_ms: int) -> pa.Table:
        """Evaluate ``text`` at ``start_ms, start_ms + step_ms, ... <= end_ms``.

        Raises
        ------
        ValueError
            When the step is not positive, the end precedes the start or the
            query would exceed 11,000 steps.
        PromQLError, UnsupportedQueryError
            As for :meth:`instant`.
        """
        if step_ms <= 0:
            raise ValueError(f"step_ms must be positive, got {step_ms!r}")
        if end_ms < start_ms:
            raise ValueError(f"end_ms {end_ms} is before start_ms {start_ms}")
        if (end_ms - start_ms) // step_ms + 1 > MAX_STEPS:
            raise ValueError(
                f"range query of {(end_ms - start_ms) // step_ms + 1} steps exceeds the "
                f"limit of {MAX_STEPS}; use a larger step_ms"
            )
        evals = np.arange(int(start_ms), int(end_ms) + 1, int(step_ms), dtype=np.int64)
        value = self._evaluate(text, evals)
        if isinstance(value, _Matrix):
            raise PromQLError(
                "a range query needs an instant vector or scalar expression"
            )
        return _table(value, evals, instant=False)
